#pragma once
// Making a .torrent (BEP 3 v1, BEP 12 tiers, BEP 19 web seeds) from what the front end found
// on disk and hashed. Pure: no I/O.
//
// The info dictionary holds exactly what mktorrent writes for the same inputs (`length` or
// `files`, `name`, `piece length`, `pieces`, and `private` only when set), so the same
// content in the same order with the same piece length gives mktorrent's info-hash.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.hpp"

namespace pw {

// Piece lengths a user may ask for: powers of two in this range. Below 16 KiB a piece is
// smaller than a block; above 64 MiB a single bad byte costs too much to fetch again.
inline constexpr std::uint32_t kMinPieceLength = 16u << 10;
inline constexpr std::uint32_t kMaxPieceLength = 64u << 20;
// The largest length choose_piece_length picks on its own.
inline constexpr std::uint32_t kMaxChosenPieceLength = 16u << 20;
// choose_piece_length's aim: at most this many pieces.
inline constexpr std::uint64_t kTargetPieceCount = 2048;

struct NewFile {
    // Path elements below the torrent's folder; empty for a single-file torrent.
    std::vector<std::string> path;
    std::uint64_t length = 0;
};

struct NewTorrent {
    std::string name;
    // A single-file torrent has `length` in its info and exactly one NewFile with an empty
    // path; otherwise `files` lists them in the order given (see sort_like_mktorrent).
    bool single_file = false;
    std::vector<NewFile> files;
    std::uint32_t piece_length = 0;
    // 20 bytes of SHA-1 per piece, in piece order.
    std::string piece_hashes;
    // Tiers of announce URLs (BEP 12). A lone URL gives `announce` only; more give
    // `announce` (the first URL of the first tier) and `announce-list`.
    std::vector<std::vector<std::string>> trackers;
    // BEP 19 `url-list`: a string for one, a list for several.
    std::vector<std::string> web_seeds;
    bool is_private = false;
    std::string comment;     // omitted when empty
    std::string created_by;  // omitted when empty
    std::optional<std::int64_t> creation_date;  // seconds since the epoch; omitted when unset
};

// The .torrent's bytes (canonical bencode). Refuses what a reader would refuse or misread:
// an empty or unusable name or path element ("", ".", "..", one with '/' or NUL), no files,
// two files at one path or a file where another needs a folder, a total size of 0, more
// files or a longer file than core/metainfo accepts, a piece length outside
// [kMinPieceLength, kMaxPieceLength] or not a power of two, a piece hash count that does not
// match the total size, empty tiers or URLs.
Result<std::string> build_torrent(const NewTorrent& torrent);

// Sorts files the way mktorrent lists them: by the whole relative path joined with '/',
// compared as bytes (strcmp), not element by element: "a.txt" (0x2e) comes before "a/b"
// (0x2f), which comes before "a0" (0x30). Byte order, not the locale's: "B" before "a".
void sort_like_mktorrent(std::vector<NewFile>& files);

// The piece length when the user gives none: the smallest power of two from kMinPieceLength
// up to kMaxChosenPieceLength that makes at most kTargetPieceCount pieces (so 1025 to 2048
// pieces between 16 MiB and 32 GiB of content; fewer below, more above).
std::uint32_t choose_piece_length(std::uint64_t total_size);

// Whether a user may ask for this piece length: a power of two in [kMinPieceLength,
// kMaxPieceLength].
Status check_piece_length(std::uint64_t piece_length);

// A piece size as a user types it: a number of bytes, or a number with a binary suffix K, M
// or G (any case, optionally followed by "B" or "iB": "256K", "1M", "1MiB", "16384"), then
// checked with check_piece_length.
Result<std::uint32_t> parse_piece_size(std::string_view text);

// "256 KiB", "16 MiB", "100 B": exact binary units when the size is a whole number of them.
std::string describe_size(std::uint64_t bytes);

}  // namespace pw
