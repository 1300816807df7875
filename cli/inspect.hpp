#pragma once
#include <iosfwd>
#include <string>

#include "core/metainfo.hpp"

namespace pw::cli {

struct InspectOptions {
    std::string torrent_path;
    bool json = false;
};

// Human-readable summary in the manner of transmission-show.
void print_summary(const Torrent& torrent, std::ostream& out);
// One JSON object: name, total_size, piece_length, piece_count, info_hash, private,
// trackers (list of tiers), files [{path, length, offset}].
void print_json(const Torrent& torrent, std::ostream& out);

// "1.50 MiB": sizes as inspect and create print them.
std::string human_size(std::uint64_t bytes);

// Returns the process exit code; errors go to stderr as one line.
int run_inspect(const InspectOptions& options);

}  // namespace pw::cli
