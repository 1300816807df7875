#pragma once
// `piecework create PATH -o FILE.torrent`: lists a file or a folder, hashes its pieces on
// every core and writes a .torrent whose info-hash is mktorrent's for the same content and
// piece length. The bytes come from core/torrent_builder.hpp; this is the I/O around it.
#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <iosfwd>
#include <string>
#include <vector>

#include "core/result.hpp"

namespace pw::cli {

struct CreateOptions {
    std::string path;
    std::string output;
    std::vector<std::string> trackers;  // announce URLs, each a tier of its own (BEP 12)
    std::string piece_size;             // as typed ("256K"); empty: chosen from the total size
    bool is_private = false;
    std::string comment;
    std::vector<std::string> web_seeds;  // BEP 19
    bool no_date = false;
    bool force = false;  // replace an existing output file
};

// What `piecework create --help` says after the options: the rules nobody can guess.
extern const char* const kCreateHelp;

// One file found under PATH.
struct ContentFile {
    std::vector<std::string> path;  // below the torrent's folder; empty for a single file
    std::string disk_path;          // PATH/... through the links followed, to open it by
    std::uint64_t length = 0;
    std::uint64_t offset = 0;  // in the torrent's byte stream
    // What the listing saw: a file replaced before it is hashed is an error, not a torrent
    // that describes other bytes.
    dev_t device = 0;
    ino_t inode = 0;
};

struct Content {
    std::string name;
    bool single_file = false;
    std::vector<ContentFile> files;  // in the torrent's order (mktorrent's)
    std::uint64_t total_size = 0;
    std::vector<std::string> skipped;  // sockets, FIFOs and devices left out, one line each
};

// Lists PATH: a regular file, or a folder's regular files in mktorrent's order (byte order
// of the whole path below PATH), hidden ones included, empty folders left out, empty files
// kept. Symlinks below PATH are followed when they resolve inside PATH (the file is listed
// under the link's name, as mktorrent does); one that resolves outside PATH, dangles, or
// leads back into a folder that contains it is an error. PATH itself may be a symlink.
// Errors name the path and fit on one line; nothing to share (no files, or only empty
// ones) is an error too.
Result<Content> scan_content(const std::string& path);

// The SHA-1 of every piece, concatenated: `threads` threads (at least 1), each taking runs
// of pieces in turn and reading them with pread, a piece possibly spanning files. Memory:
// one piece per thread. progress(bytes hashed so far) is called on the calling thread about
// every 200 ms and once at the end. A file that changed since the listing is an error.
Result<std::string> hash_pieces(const Content& content, std::uint32_t piece_length,
                                unsigned threads,
                                const std::function<void(std::uint64_t)>& progress = {});

// Writes `bytes` to a temporary file beside `path`, syncs it, then renames it into place:
// never a half-written .torrent under the final name. Without `force` an existing file is
// never replaced, not even one that appears while we hash.
Status write_file_atomically(const std::string& path, const std::string& bytes, bool force);

// Returns the process exit code. On success prints a summary line and the info-hash to
// `out`; on failure one line to `err`. Progress goes to `err` while standard error is a
// terminal.
int run_create(const CreateOptions& options, std::ostream& out, std::ostream& err);

}  // namespace pw::cli
