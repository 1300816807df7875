#pragma once
// `piecework keygen OUT`: a CURVE key pair for one stage (or one kind of stage) of a
// deployment across machines. See docs/security.md.
#include <iosfwd>
#include <string>

#include "core/result.hpp"

namespace pw::cli {

struct KeygenOptions {
    std::string out;   // writes OUT.key and OUT.pub
    std::string name;  // the name on the public line; default: OUT's file name
    bool force = false;  // replace existing files
};

struct KeyFiles {
    std::string secret_path;
    std::string public_path;
    std::string public_line;  // "KEY NAME": what goes on the allow-list
};

// OUT.key holds the Z85 secret key, mode 0600 from the moment it exists; OUT.pub holds the
// allow-list line, so `cat keys/*.pub > keys/allow` makes the deployment's list.
Result<KeyFiles> write_key_files(const KeygenOptions& options);

// Returns the process exit code; prints the allow-list line on success, one error line else.
int run_keygen(const KeygenOptions& options, std::ostream& out, std::ostream& err);

}  // namespace pw::cli
