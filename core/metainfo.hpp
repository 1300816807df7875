#pragma once
// Metainfo (.torrent, BEP 3, BEP 12 announce-list): parsing and validation are pure; only
// read_torrent_file touches the file system.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/bencode.hpp"
#include "core/result.hpp"
#include "core/sha1.hpp"
#include "core/units.hpp"

namespace pw {

struct FileEntry {
    // Path relative to the torrent's folder (multi-file) or the name itself (single-file; see
    // Torrent::relative_path for the path below the download directory), '/'-separated,
    // already sanitized (see sanitize_path_element below): no
    // "..", ".", empty or absolute elements, no backslash, NUL or control characters, no
    // element over 255 bytes, unique among the torrent's files.
    std::string path;
    // The path elements as the torrent gave them (for display); never used to open files.
    std::vector<std::string> original_path;
    std::uint64_t length = 0;
    // Offset of the file's first byte in the torrent's concatenated byte stream.
    std::uint64_t offset = 0;
    bool pad = false;  // BEP 47 padding file: never written
};

// One contiguous piece of a torrent byte range that falls inside one file.
struct FileSpan {
    std::size_t file_index = 0;
    std::uint64_t file_offset = 0;
    std::uint64_t length = 0;
    friend bool operator==(const FileSpan&, const FileSpan&) = default;
};

struct MetainfoLimits {
    std::uint64_t max_piece_length = 512ull << 20;
    std::uint64_t max_file_length = 1ull << 48;
    std::size_t max_files = 1'000'000;
    std::size_t max_path_element = 255;
};

// Whether a Torrent keeps the piece hashes: a process that never checks a piece forgets
// them (20 bytes a piece, 5 MB at 262,144 pieces, held for the whole run).
enum class PieceHashes { keep, forget };

class Torrent {
public:
    // Parses and validates a whole .torrent file's bytes.
    static Result<Torrent> parse(std::string_view bytes, const MetainfoLimits& limits = {},
                                 PieceHashes hashes = PieceHashes::keep);
    // Parses and validates an info dictionary alone (what stages receive, and what BEP 9
    // fetches from peers); its info-hash is the SHA-1 of exactly these bytes. No trackers,
    // comment or dates: those live outside the info dictionary.
    static Result<Torrent> parse_info(std::string_view info_bytes, const MetainfoLimits& limits = {},
                                      PieceHashes hashes = PieceHashes::keep);

    const std::string& name() const { return name_; }
    const Sha1Digest& info_hash() const { return info_hash_; }
    // The exact bytes of the info dictionary as they stood in the file; empty once the piece
    // hashes are forgotten (they are the bulk of it).
    const std::string& info_bytes() const { return info_bytes_; }
    // Tiers of announce URLs (BEP 12); a lone "announce" becomes one tier of one URL.
    const std::vector<std::vector<std::string>>& trackers() const { return trackers_; }
    bool is_private() const { return private_; }
    std::uint32_t piece_length() const { return piece_length_; }
    std::uint32_t piece_count() const { return piece_count_; }
    std::uint64_t total_size() const { return total_size_; }
    // All zero for an index beyond the torrent. Calling it after forget_piece_hashes() is a
    // bug (std::logic_error), never a digest that fails every piece.
    Sha1Digest piece_hash(PieceIndex index) const;
    // The info dictionary is never empty ("de" at least), so its bytes tell.
    bool has_piece_hashes() const { return !info_bytes_.empty(); }
    // Frees the info dictionary's bytes, which hold the hashes; everything else stays. For a
    // process done checking pieces (the writer, after the files already on disk).
    void forget_piece_hashes();
    // Length of one piece: piece_length() except for a shorter last piece.
    std::uint32_t piece_size(PieceIndex index) const;
    // True when the torrent has a "files" list (files sit in a folder named name()).
    bool is_multi_file() const { return multi_file_; }
    const std::vector<FileEntry>& files() const { return files_; }
    // Warnings tolerated while parsing (unsorted keys, renamed paths, ...).
    const std::vector<std::string>& warnings() const { return warnings_; }
    const std::string& comment() const { return comment_; }
    const std::string& created_by() const { return created_by_; }
    std::int64_t creation_date() const { return creation_date_; }

    // The file spans covering [offset, offset + length) of the torrent, in order. Zero-length
    // files never appear. The range must lie inside total_size().
    std::vector<FileSpan> map_range(std::uint64_t offset, std::uint64_t length) const;
    // The same for one whole piece.
    std::vector<FileSpan> map_piece(PieceIndex index) const;
    // Path of a file relative to the download directory: name()/path for multi-file torrents,
    // name() itself (sanitized) for single-file ones.
    std::string relative_path(std::size_t file_index) const;

private:
    // The info dictionary's part of parsing; `info_raw` is its exact encoding.
    static Result<Torrent> parse_info_dict(const bencode::Value& info, std::string_view info_raw,
                                           std::vector<std::string> warnings,
                                           const MetainfoLimits& limits, PieceHashes hashes);

    std::string name_;
    Sha1Digest info_hash_{};
    std::string info_bytes_;
    std::vector<std::vector<std::string>> trackers_;
    bool private_ = false;
    std::uint32_t piece_length_ = 0;
    std::size_t piece_hashes_offset_ = 0;  // in info_bytes_
    std::uint32_t piece_count_ = 0;
    std::uint64_t total_size_ = 0;
    bool multi_file_ = false;
    std::vector<FileEntry> files_;
    std::vector<std::string> warnings_;
    std::string comment_;
    std::string created_by_;
    std::int64_t creation_date_ = 0;
};

// Reads a .torrent file from disk (refusing files over 64 MiB) and parses it.
Result<Torrent> read_torrent_file(const std::string& path, const MetainfoLimits& limits = {});
// The bytes of a .torrent file, with the same checks (a regular file, at most 64 MiB), for
// whoever must pass the file on exactly as it stands.
Result<std::string> read_torrent_bytes(const std::string& path);

// Path sanitization, deterministic so every stage that parses the same bytes agrees:
//  - each torrent path element is also split on '/', so "/etc/x" or "a/../b" cannot smuggle
//    separators; then every piece goes through sanitize_path_element and empty results
//    (from "", ".", "..") are dropped, which also makes absolute paths relative;
//  - a file whose path sanitizes to nothing is called "file";
//  - the torrent name is one element (a '/' in it becomes '_'); when unusable it falls back
//    to the info-hash in hex;
//  - collisions are settled in file order, the later file yielding: a final element that
//    names an earlier file or folder, or a folder element that names an earlier file, gets
//    the first free ".<n>" before its extension ("file.txt" -> "file.1.txt", file "a" then
//    "a/b" -> "a.1/b");
//  - every renaming (except of BEP 47 pad files) is recorded in warnings().
// Hence no FileEntry::path can leave the torrent's folder, nor that folder the download one.
//
// Makes one path element safe: control characters (below 0x20 and 0x7f), NUL, backslash and
// '/' become '_'; "", "." and ".." give an empty result (unusable); elements over
// max_length bytes are shortened keeping their extension (at most 16 bytes after the last
// dot) and never split a UTF-8 sequence.
std::string sanitize_path_element(std::string_view element, std::size_t max_length = 255);

}  // namespace pw
