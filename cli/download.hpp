#pragma once
#include <string>
#include <vector>

namespace pw::cli {

struct DownloadOptions {
    std::string torrent_path;
    std::string output_dir = ".";
    std::vector<std::string> peers;  // HOST:PORT, added without a tracker
    unsigned workers = 1;
    bool quiet = false;
    std::string log_level = "warn";
    // Where the stage executables are; defaults to the folder of the running piecework.
    std::string bin_dir;
};

// Starts the five stages as local processes over ipc:// in a private runtime folder,
// supervises them, and returns the exit code (0 once every piece is verified and written).
int run_download(const DownloadOptions& options);

}  // namespace pw::cli
