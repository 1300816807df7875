#include "cli/keygen.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <ostream>

#include "core/bus/security.hpp"

namespace pw::cli {

namespace {

// Created with its final mode, so a secret is never readable by others, not even briefly.
Status write_new_file(const std::string& path, const std::string& text, mode_t mode, bool force) {
    const int flags = O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW | (force ? O_TRUNC : O_EXCL);
    const int fd = ::open(path.c_str(), flags, mode);
    if (fd < 0) {
        const char* hint = errno == EEXIST ? " (exists; --force replaces it)" : "";
        return make_error(path + ": " + std::strerror(errno) + hint);
    }
    // An older file kept its mode through O_TRUNC.
    const bool written = ::fchmod(fd, mode) == 0 &&
                         ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
    const int saved = errno;
    const bool closed = ::close(fd) == 0;
    if (!written || !closed) return make_error(path + ": " + std::strerror(written ? errno : saved));
    return ok_status();
}

}  // namespace

Result<KeyFiles> write_key_files(const KeygenOptions& options) {
    if (options.out.empty()) return make_error("no output name given");
    std::string name = options.name;
    if (name.empty()) name = std::filesystem::path(options.out).filename().string();
    if (name.empty() || name.find_first_of(" \t\r\n#") != std::string::npos) {
        return make_error("'" + name + "' cannot be a key name (no spaces or '#'); use --name");
    }
    auto pair = bus::make_key_pair();
    if (!pair) return pair.error();
    KeyFiles files{options.out + ".key", options.out + ".pub", pair->public_key + " " + name};
    if (Status s = write_new_file(files.secret_path, pair->secret_key + "\n", 0600, options.force); !s) {
        return s.error();
    }
    if (Status s = write_new_file(files.public_path, files.public_line + "\n", 0644, options.force); !s) {
        return s.error();
    }
    return files;
}

int run_keygen(const KeygenOptions& options, std::ostream& out, std::ostream& err) {
    auto files = write_key_files(options);
    if (!files) {
        err << "piecework keygen: " << files.error().describe() << "\n";
        return 1;
    }
    out << files->public_line << "\n";
    return 0;
}

}  // namespace pw::cli
