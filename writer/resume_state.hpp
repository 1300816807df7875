#pragma once
// The writer's record of which pieces are durable on disk, kept between runs.
//
// The record is only a shortcut: it is trusted when every file still has the size and mtime
// it had when the record was saved, and otherwise the files are hashed again (PieceChecker).
// It is saved atomically (temp file, fsync, rename, fsync of the folder), so a crash at any
// moment leaves either the previous record or the new one, never a torn mix.
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/metainfo.hpp"
#include "core/sha1.hpp"
#include "core/result.hpp"
#include "core/units.hpp"
#include "writer/unique_fd.hpp"

namespace pw::writer {

// One bit per piece, the high bit of the first byte for piece 0: the peer wire's layout, which
// the orchestrator reads too.
class PieceBits {
public:
    explicit PieceBits(std::uint32_t piece_count);
    // Nullopt when the length is wrong or a spare bit past the last piece is set.
    static std::optional<PieceBits> from_bytes(std::uint32_t piece_count, std::string_view bytes);

    void set(PieceIndex piece);
    bool test(PieceIndex piece) const;
    std::uint32_t count() const { return count_; }
    std::uint32_t piece_count() const { return piece_count_; }
    const std::string& bytes() const { return bytes_; }

private:
    std::uint32_t piece_count_;
    std::uint32_t count_ = 0;
    std::string bytes_;
};

// A file as it stood: existing or not, its size and its modification time.
struct FileStamp {
    bool exists = false;
    std::uint64_t size = 0;
    std::int64_t mtime_ns = 0;
    friend bool operator==(const FileStamp&, const FileStamp&) = default;
};

struct ResumeRecord {
    PieceBits done;
    std::vector<FileStamp> files;  // one per torrent file, in the torrent's order
};

// Bencoded: {"version": 1, "info-hash": 20 bytes, "pieces": bits, "files": [{"size", "mtime"}]}
// (a missing file has size -1).
std::string encode_resume(const ResumeRecord& record, const Torrent& torrent);
// Refuses anything that is not a record of exactly this torrent (hash, piece and file counts).
Result<ResumeRecord> decode_resume(std::string_view bytes, const Torrent& torrent);

// Replaces dir/name so that a reader, even after a crash, sees the old or the new content.
Status replace_file_atomically(const std::string& dir, const std::string& name,
                               std::string_view content);

// Stamps of every file of the torrent below root_fd (pad files: never present).
std::vector<FileStamp> stamp_files(int root_fd, const Torrent& torrent);

// Hashes pieces from whatever files exist below root_fd, one piece at a time through one
// reusable buffer (memory: one piece). Missing files and short files just fail the pieces
// they hold.
class PieceChecker {
public:
    PieceChecker(const Torrent& torrent, int root_fd);
    // Every piece; `keep_going` is asked before the first and then every 20 ms or so (between
    // pieces), and stops the check when false.
    std::optional<PieceBits> check_all(const std::function<bool()>& keep_going);
    bool check(PieceIndex piece);

private:
    bool read_span(std::size_t file_index, std::uint64_t offset, std::uint8_t* out,
                   std::uint64_t length);

    const Torrent* torrent_;
    int root_fd_;
    std::vector<std::uint8_t> buffer_;
    Sha1Hasher hasher_;
    // The file read last: pieces come in order, so this is nearly always the one needed next.
    std::optional<std::size_t> open_index_;
    UniqueFd open_fd_;
};

// Cuts files longer than the torrent says to their length: bytes past the end belong to no
// piece, and a download must end byte-identical to the torrent's content.
Status trim_oversized_files(int root_fd, const Torrent& torrent);

// The writer's piece of resume: what is durable, loaded or rebuilt at start, saved later.
class ResumeBook {
public:
    // `state_dir` is created when missing; the record is `<info-hash hex>.resume` inside it.
    ResumeBook(const Torrent& torrent, int root_fd, std::string state_dir);

    struct Start {
        bool trusted = false;  // the saved record held; nothing was hashed
        std::string reason;    // why the files were checked again (empty when trusted)
    };
    // Loads the record and trusts it when every file is as it was saved; otherwise trims
    // oversized files and hashes every piece, then saves the result. Nullopt when
    // `keep_going` stopped the check.
    std::optional<Start> start(const std::function<bool()>& keep_going);

    const PieceBits& done() const { return done_; }
    void mark_done(PieceIndex piece) { done_.set(piece); }
    // Stamps the files as they are now and saves them with the done pieces. Pieces written
    // but not yet synced are not in done(), so a stamp taken after their write is harmless.
    Status save();
    const std::string& path() const { return path_; }

private:
    const Torrent* torrent_;
    int root_fd_;
    std::string state_dir_;
    std::string file_name_;
    std::string path_;
    PieceBits done_;
};

}  // namespace pw::writer
