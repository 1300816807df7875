#pragma once
// The writer's record of which pieces are durable on disk, kept between runs.
//
// The record is only a shortcut: it is trusted when every file still has the size and mtime
// it had when the record was saved, and otherwise the files are hashed again (PieceChecker).
// It is saved atomically (temp file, fsync, rename, fsync of the folder), so a crash at any
// moment leaves either the previous record or the new one, never a torn mix.
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/atomic_file.hpp"
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
    void reset(PieceIndex piece);
    bool test(PieceIndex piece) const;
    // Sets every piece `other` has (of the same piece count; others are ignored).
    void merge(const PieceBits& other);
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

// The record's file name for a torrent: `<info-hash hex>.resume`.
std::string record_name(const Sha1Digest& info_hash);
// Deletes a torrent's record in `state_dir` (and a temp file a crash left beside it); a
// missing one is no error.
Status remove_record(const std::string& state_dir, const Sha1Digest& info_hash);

// Stamps of every file of the torrent below root_fd (pad files: never present).
std::vector<FileStamp> stamp_files(int root_fd, const Torrent& torrent);

// A torrent's piece hashes alone, 20 bytes a piece: what a check needs, kept after the info
// dictionary itself (the hashes and the file list again, in bencode) is forgotten.
class PieceDigests {
public:
    PieceDigests() = default;
    // Copies the hashes of `torrent`, which must still have them.
    explicit PieceDigests(const Torrent& torrent);
    const Sha1Digest& operator[](PieceIndex piece) const { return digests_.at(piece.get()); }
    std::size_t size() const { return digests_.size(); }

private:
    std::vector<Sha1Digest> digests_;
};

// Hashes pieces from whatever files exist below root_fd, one piece at a time through one
// reusable buffer (memory: one piece). Missing files and short files just fail the pieces
// they hold.
class PieceChecker {
public:
    // `torrent` and `hashes` must outlive the checker.
    PieceChecker(const Torrent& torrent, const PieceDigests& hashes, int root_fd);
    // Every piece; `keep_going` is asked before the first and then every 20 ms or so (between
    // pieces), and stops the check when false.
    std::optional<PieceBits> check_all(const std::function<bool()>& keep_going);
    bool check(PieceIndex piece);
    // The files whose bytes are in the parts file `parts_fd` (at their torrent offsets; see
    // PieceStore::set_unwanted) rather than below root_fd. The descriptor stays the caller's.
    void use_parts(int parts_fd, std::vector<bool> in_parts) {
        parts_fd_ = parts_fd;
        in_parts_ = std::move(in_parts);
    }
    // Closes the file read last (reopened when needed again).
    void release() {
        open_fd_.reset();
        open_index_.reset();
    }

private:
    bool read_span(std::size_t file_index, std::uint64_t offset, std::uint8_t* out,
                   std::uint64_t length);

    const Torrent* torrent_;
    const PieceDigests* hashes_;
    int root_fd_;
    std::vector<std::uint8_t> buffer_;
    Sha1Hasher hasher_;
    // The file read last: pieces come in order, so this is nearly always the one needed next.
    std::optional<std::size_t> open_index_;
    UniqueFd open_fd_;
    int parts_fd_ = -1;
    std::vector<bool> in_parts_;
};

// Every piece of a torrent hashed, a slice at a time: the writer's loop gives each check it
// runs a few milliseconds per turn, so other torrents keep writing and heartbeats flow.
class SlicedCheck {
public:
    // `torrent` and `hashes` must outlive the check.
    SlicedCheck(const Torrent& torrent, const PieceDigests& hashes, int root_fd);
    // Hashes pieces in order until `deadline` has passed (at least one piece a call) or every
    // piece is checked; true once every piece is. The file read last is closed at the end of
    // each call: a check holds no descriptor between its slices.
    bool run_until(std::chrono::steady_clock::time_point deadline);
    bool finished() const { return next_ >= verified_.piece_count(); }
    // The pieces that verified so far.
    const PieceBits& verified() const { return verified_; }
    std::uint32_t checked() const { return next_; }
    PieceChecker& checker() { return checker_; }

private:
    PieceChecker checker_;
    PieceBits verified_;
    std::uint32_t next_ = 0;
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
        std::string reason;    // why the files must be checked again (empty when trusted)
    };
    // Loads the record and trusts it when it parses, names this torrent and every file's
    // existence, size and mtime are as it was saved: done() is then its pieces. Otherwise
    // done() stays empty and `reason` says why the files must be checked (trim_oversized_files,
    // then every piece, then replace() and save()).
    Start load();
    // All of a start in one call: load(), and when the record is not trusted, trims oversized
    // files, hashes every piece with `hashes` and saves the result. Nullopt when `keep_going`
    // stopped the check.
    std::optional<Start> start(const PieceDigests& hashes, const std::function<bool()>& keep_going);
    // The same with the torrent's own piece hashes (it must still have them).
    std::optional<Start> start(const std::function<bool()>& keep_going);

    const PieceBits& done() const { return done_; }
    void mark_done(PieceIndex piece) { done_.set(piece); }
    // A piece found changed on disk (a read for a peer failed its hash): no longer done, so the
    // next save, ResumeState and write of it say so.
    void mark_not_done(PieceIndex piece) { done_.reset(piece); }
    // The pieces a check found (and those written since it began).
    void replace(PieceBits done) { done_ = std::move(done); }
    // Stamps the files as they are now and saves them with the done pieces. Pieces written
    // but not yet synced are not in done(), so a stamp taken after their write is harmless.
    Status save();
    // Deletes the record (and a temp file a crash left beside it); a missing one is no error.
    Status remove();
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
