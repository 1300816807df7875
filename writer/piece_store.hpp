#pragma once
// Writes verified pieces into the torrent's files below the download directory.
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/metainfo.hpp"
#include "core/result.hpp"
#include "writer/open_file_cache.hpp"
#include "writer/unique_fd.hpp"

namespace pw::writer {

inline constexpr std::size_t kDefaultOpenFiles = 64;

struct StoreOptions {
    // The budget of open files shared by every store of the process (one cache, least
    // recently used file closed first, whichever store it belongs to). Null: the store gets a
    // cache of its own of `max_open_files`.
    std::shared_ptr<OpenFileCache> open_files = nullptr;
    std::size_t max_open_files = kDefaultOpenFiles;
    // Write pieces whose memory, file offset and length are block-aligned with O_DIRECT: the
    // device reads them from the caller's memory, so the bytes are never copied into the page
    // cache (the largest CPU cost of writing on a VM whose free memory the host takes back) and
    // a download does not push the rest of the machine's cache out. Unaligned pieces (frames
    // from another machine, a last piece, files that start mid-block) and file systems without
    // O_DIRECT are written through the page cache.
    bool direct_io = true;
};

// The alignment O_DIRECT asks of memory, file offset and length on every block device we know
// (512 or 4096 byte logical blocks); a device wanting more fails the write with EINVAL, and the
// store then writes through the page cache from there on.
inline constexpr std::size_t kDirectIoAlignment = 4096;

// How reading a piece back from the files went (PieceStore::read_piece).
enum class ReadStatus {
    ok,
    // A file of the piece is missing or shorter than the torrent says: what was written is
    // no longer there.
    missing,
    failed,  // an I/O error; the bytes may well be there
};

struct ReadResult {
    ReadStatus status = ReadStatus::ok;
    std::string why;  // empty when ok
};

// One whole piece to write and where its bytes are.
struct PieceBytes {
    PieceIndex index;
    std::span<const std::uint8_t> bytes;
};

class PieceStore {
public:
    // Opens the download directory, creating it when missing (following symbolic links: the
    // user chose it). `torrent` must outlive the store.
    static Result<PieceStore> open(const Torrent& torrent, const std::string& download_dir,
                                   StoreOptions options = {});
    // A store in the folder `folder` (opened by the caller, below a download root); `shown` is
    // its path for messages.
    PieceStore(const Torrent& torrent, UniqueFd folder, std::string shown, StoreOptions options);
    // Closes its files (unsynced writes are not synced: sync() first to keep them).
    ~PieceStore();
    PieceStore(PieceStore&& other) noexcept;
    PieceStore& operator=(PieceStore&& other) noexcept;
    PieceStore(const PieceStore&) = delete;
    PieceStore& operator=(const PieceStore&) = delete;

    // Zero-length files get no piece, so they are made here, once (existing ones are kept);
    // files that go to the parts file are not.
    Status create_empty_files();

    // --- files not wanted ---
    // Where the bytes of files nobody wants go: one sparse file outside the download folder
    // (in the writer's state folder), each byte at its offset in the torrent, so a piece that
    // straddles a wanted and an unwanted file is written whole and read back whole, and the
    // unwanted file is never created. Set before the first write; opened on first use.
    void set_parts_path(std::string path) { parts_path_ = std::move(path); }
    const std::string& parts_path() const { return parts_path_; }
    // The files not wanted, by the torrent's file index (shorter: the rest wanted). A file that
    // is not wanted and not on disk goes to the parts file from now on; one on disk already
    // (wanted before) keeps being written in place. A file wanted again that went to the parts
    // file is created and gets its bytes of the pieces `have` names from the parts file (the
    // pieces that are durable or waiting for their sync), so wanting it costs no download.
    Status set_unwanted(const std::vector<bool>& unwanted, const std::function<bool(PieceIndex)>& have);
    // Whether file `file_index`'s bytes go to the parts file.
    bool in_parts(std::size_t file_index) const {
        return file_index < in_parts_.size() && in_parts_[file_index];
    }
    // The parts file's descriptor (-1 when there is none); for the check's reads.
    int parts_fd();
    const std::vector<bool>& parts_files() const { return in_parts_; }
    // Writes one whole piece into its files (pad files skipped). Files are created on first
    // use at their full length, preallocated where the file system can (sparse where not).
    // The bytes are not durable until sync().
    Status write_piece(PieceIndex index, std::span<const std::uint8_t> bytes);
    // Writes several whole pieces as write_piece does, one status per piece in order. Parts
    // that continue one another in a file go out in one pwritev, so a batch of small pieces
    // costs a few system calls rather than one or more per piece.
    std::vector<Status> write_pieces(std::span<const PieceBytes> pieces);
    // Reads one whole piece from its files into `out` (exactly the piece's size): several
    // preads when it spans files, zeros for pad files. Files are opened read-only below the
    // store's folder (O_NOFOLLOW on every element, nothing created) and kept open within the
    // same open-file budget as the files being written. Nothing is hashed here.
    ReadResult read_piece(PieceIndex index, std::span<std::uint8_t> out);
    // Pieces read so far by read_piece (with at least one pread).
    std::uint64_t pieces_read() const { return pieces_read_; }

    // Makes everything written so far durable (fdatasync of every file touched since the last
    // sync). An error means some written piece may be lost; write it again.
    Status sync();

    // Closes the store's open files (without syncing them; the folder stays open).
    void close_files() { release_files(); }
    // Closes the store's files, then deletes the parts file and exactly the torrent's files (pad files are never
    // there) and then the folders the torrent's layout implies (a multi-file torrent's own
    // folder and its subfolders), each only when empty, deepest first. Everything is opened
    // below the store's folder with O_NOFOLLOW; the store's folder itself and what lies above
    // it are never touched. Goes on past a file it cannot delete; the error names them all.
    Status delete_files();

    // This store's share of the open-file budget in use.
    std::size_t open_file_count() const { return open_files_->size_of(owner_); }
    // Whether aligned pieces still bypass the page cache (false once the file system refused).
    bool direct_io() const { return direct_io_; }
    int root_fd() const { return root_.get(); }

private:
    void release_files();

    // Where one piece's bytes go, pad files left out; `piece` is its place in write_pieces.
    struct Chunk {
        std::size_t file_index = 0;
        std::uint64_t file_offset = 0;
        std::span<const std::uint8_t> bytes;
        std::size_t piece = 0;
    };
    Status check_piece(const PieceBytes& piece) const;
    void add_chunks(const PieceBytes& piece, std::size_t position, std::vector<Chunk>& chunks) const;
    // Chunks that continue one another in one file, at most IOV_MAX of them.
    Status write_run(std::span<const Chunk> run);
    // The same into the parts file (chunk.file_offset is then the torrent offset).
    Status write_parts_run(std::span<const Chunk> run);
    Result<int> open_parts();
    // Reads `length` bytes at torrent offset `offset` from the parts file; false when they
    // are not there (no parts file, or it ends before them).
    Result<bool> read_parts(std::uint64_t offset, std::uint8_t* out, std::uint64_t length);
    // Puts the file's descriptor in the mode this run can use; false when direct I/O is out.
    void choose_mode(OpenFile& file, bool aligned);
    Result<OpenFile*> file_for_writing(std::size_t file_index);
    // A read-only descriptor of an existing file (nullptr: it is missing).
    Result<OpenFile*> file_for_reading(std::size_t file_index);
    // Closes the least recently used file of the budget when it is full (syncing it first
    // when it holds unsynced writes).
    void make_room();
    std::string describe(std::size_t file_index, const std::string& what, int error) const;

    const Torrent* torrent_;
    std::string download_dir_;
    UniqueFd root_;
    std::shared_ptr<OpenFileCache> open_files_;
    std::uint64_t owner_ = 0;  // this store's files in open_files_; 0 once moved from
    // Its read-only descriptors (read_piece), a second owner in the same budget: a file
    // written with O_DIRECT cannot be read into unaligned memory through the same descriptor.
    std::uint64_t read_owner_ = 0;
    std::uint64_t pieces_read_ = 0;
    bool direct_io_;
    std::string parts_path_;
    UniqueFd parts_;
    bool parts_dirty_ = false;
    std::vector<bool> in_parts_;  // by file index
};

}  // namespace pw::writer
