#include "writer/piece_store.hpp"

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <set>
#include <tuple>
#include <utility>

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "writer/safe_open.hpp"
#include "writer/text.hpp"

namespace pw::writer {

namespace {

// The file at its full length from the start, its blocks reserved: a disk without room for
// the torrent shows at once, pieces arriving in random order do not fragment the file, and
// ext4 writes into blocks it already has instead of reserving delayed-allocation blocks page
// by page (about 10% less kernel CPU per byte written). Where the file system cannot
// preallocate, or has no room for the whole file now, the file is made sparse instead: blocks
// come as pieces arrive, and a full disk shows up as a failed write of the piece that did not
// fit, which the orchestrator retries later.
int allocate(int fd, std::uint64_t length) {
    if (::fallocate(fd, 0, 0, static_cast<off_t>(length)) == 0) return 0;
    if (::ftruncate(fd, static_cast<off_t>(length)) != 0) return errno;
    return 0;
}

constexpr std::size_t kMaxPartsPerWrite = IOV_MAX;

// pwritev until everything is written: it may be interrupted or write less than asked. `parts`
// and `offset` are advanced past what made it, so a caller can go on where a write stopped.
int write_all(int fd, std::span<iovec>& parts, std::uint64_t& offset) {
    while (!parts.empty()) {
        const int count = static_cast<int>(std::min<std::size_t>(parts.size(), kMaxPartsPerWrite));
        const ssize_t written = ::pwritev(fd, parts.data(), count, static_cast<off_t>(offset));
        if (written < 0) {
            if (errno == EINTR) continue;
            return errno;
        }
        if (written == 0) return EIO;  // no progress and no error: give up rather than spin
        auto left = static_cast<std::uint64_t>(written);
        offset += left;
        while (left > 0) {
            iovec& part = parts.front();
            if (left >= part.iov_len) {
                left -= part.iov_len;
                parts = parts.subspan(1);
            } else {
                part.iov_base = static_cast<std::uint8_t*>(part.iov_base) + left;
                part.iov_len -= left;
                left = 0;
            }
        }
    }
    return 0;
}

bool aligned_for_direct_io(std::uint64_t value) { return value % kDirectIoAlignment == 0; }

// How many of the first parts O_DIRECT can write from `offset` on: each must start and end on
// an aligned address, and then every part starts at an aligned file offset too.
std::size_t aligned_prefix(std::span<const iovec> parts, std::uint64_t offset) {
    if (!aligned_for_direct_io(offset)) return 0;
    const auto unaligned = std::find_if(parts.begin(), parts.end(), [](const iovec& part) {
        return !aligned_for_direct_io(reinterpret_cast<std::uintptr_t>(part.iov_base)) ||
               !aligned_for_direct_io(part.iov_len);
    });
    return static_cast<std::size_t>(unaligned - parts.begin());
}

// O_DIRECT is one of the few flags F_SETFL may change on an open file.
int set_direct(int fd, bool direct) {
    const int flags = ::fcntl(fd, F_GETFL);
    if (flags < 0) return errno;
    const int wanted = direct ? (flags | O_DIRECT) : (flags & ~O_DIRECT);
    if (wanted != flags && ::fcntl(fd, F_SETFL, wanted) != 0) return errno;
    return 0;
}

int sync_data(int fd) {
    while (::fdatasync(fd) != 0) {
        if (errno != EINTR) return errno;
    }
    return 0;
}

}  // namespace

Result<PieceStore> PieceStore::open(const Torrent& torrent, const std::string& download_dir,
                                    StoreOptions options) {
    auto root = open_download_dir(download_dir);
    if (!root) return root.error();
    return PieceStore(torrent, std::move(root.value()), download_dir, std::move(options));
}

PieceStore::PieceStore(const Torrent& torrent, UniqueFd folder, std::string shown,
                       StoreOptions options)
    : torrent_(&torrent), download_dir_(std::move(shown)), root_(std::move(folder)),
      open_files_(options.open_files ? std::move(options.open_files)
                                     : std::make_shared<OpenFileCache>(options.max_open_files)),
      owner_(open_files_->new_owner()), read_owner_(open_files_->new_owner()),
      direct_io_(options.direct_io) {}

PieceStore::~PieceStore() { release_files(); }

PieceStore::PieceStore(PieceStore&& other) noexcept
    : torrent_(other.torrent_), download_dir_(std::move(other.download_dir_)),
      root_(std::move(other.root_)), open_files_(other.open_files_),
      owner_(std::exchange(other.owner_, 0)), read_owner_(std::exchange(other.read_owner_, 0)),
      pieces_read_(other.pieces_read_), direct_io_(other.direct_io_),
      parts_path_(std::move(other.parts_path_)), parts_(std::move(other.parts_)),
      parts_dirty_(other.parts_dirty_), in_parts_(std::move(other.in_parts_)) {}

PieceStore& PieceStore::operator=(PieceStore&& other) noexcept {
    if (this == &other) return *this;
    release_files();
    torrent_ = other.torrent_;
    download_dir_ = std::move(other.download_dir_);
    root_ = std::move(other.root_);
    open_files_ = other.open_files_;
    owner_ = std::exchange(other.owner_, 0);
    read_owner_ = std::exchange(other.read_owner_, 0);
    pieces_read_ = other.pieces_read_;
    direct_io_ = other.direct_io_;
    parts_path_ = std::move(other.parts_path_);
    parts_ = std::move(other.parts_);
    parts_dirty_ = other.parts_dirty_;
    in_parts_ = std::move(other.in_parts_);
    return *this;
}

void PieceStore::release_files() {
    if (owner_ != 0 && open_files_) open_files_->close_all(owner_);
    if (read_owner_ != 0 && open_files_) open_files_->close_all(read_owner_);
}

std::string PieceStore::describe(std::size_t file_index, const std::string& what, int error) const {
    return what + " '" + torrent_->relative_path(file_index) + "' in '" + download_dir_ +
           "': " + std::strerror(error);
}

Status PieceStore::create_empty_files() {
    const auto& files = torrent_->files();
    for (std::size_t i = 0; i < files.size(); ++i) {
        if (files[i].length != 0 || files[i].pad || in_parts(i)) continue;
        auto opened = open_below(root_.get(), torrent_->relative_path(i));
        if (!opened) return make_error(opened.error().message + " (in '" + download_dir_ + "')");
    }
    return ok_status();
}

Result<int> PieceStore::open_parts() {
    if (parts_.valid()) return parts_.get();
    if (parts_path_.empty()) return make_error("no parts file for the files not wanted");
    const int fd = ::open(parts_path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) return make_error(cat("cannot open the parts file '", parts_path_, "': ", std::strerror(errno)));
    parts_ = UniqueFd(fd);
    return fd;
}

int PieceStore::parts_fd() {
    if (!parts_.valid() && !parts_path_.empty()) {
        // Only an existing one: a check has nothing to read from a parts file never written.
        const int fd = ::open(parts_path_.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW);
        if (fd >= 0) parts_ = UniqueFd(fd);
    }
    return parts_.valid() ? parts_.get() : -1;
}

Result<bool> PieceStore::read_parts(std::uint64_t offset, std::uint8_t* out, std::uint64_t length) {
    const int fd = parts_fd();
    if (fd < 0) return false;
    while (length > 0) {
        const ssize_t got = ::pread(fd, out, length, static_cast<off_t>(offset));
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) return make_error(cat("cannot read the parts file '", parts_path_, "': ", std::strerror(errno)));
        if (got == 0) return false;
        const auto count = static_cast<std::uint64_t>(got);
        out += count;
        offset += count;
        length -= count;
    }
    return true;
}

Status PieceStore::set_unwanted(const std::vector<bool>& unwanted, const std::function<bool(PieceIndex)>& have) {
    const auto& files = torrent_->files();
    in_parts_.resize(files.size(), false);
    std::string errors;
    std::vector<std::uint8_t> buffer;
    for (std::size_t i = 0; i < files.size(); ++i) {
        if (files[i].pad) continue;
        const bool not_wanted = i < unwanted.size() && unwanted[i];
        bool to_parts = false;
        if (not_wanted) {
            // A file on disk already (wanted before) stays where its bytes are.
            auto opened = open_existing_below(root_.get(), torrent_->relative_path(i), false);
            to_parts = opened && !opened->valid();
        }
        const bool was = in_parts_[i];
        in_parts_[i] = to_parts;
        if (!was || to_parts || files[i].length == 0) continue;
        // Wanted again: its bytes of the pieces we have come out of the parts file.
        const std::uint64_t piece_length = torrent_->piece_length();
        const auto first = static_cast<std::uint32_t>(files[i].offset / piece_length);
        const auto last = static_cast<std::uint32_t>((files[i].offset + files[i].length - 1) / piece_length);
        for (std::uint32_t piece = first; piece <= last; ++piece) {
            if (!have(PieceIndex{piece})) continue;
            for (const FileSpan& span : torrent_->map_piece(PieceIndex{piece})) {
                if (span.file_index != i || span.length == 0) continue;
                buffer.resize(span.length);
                auto read = read_parts(files[i].offset + span.file_offset, buffer.data(), span.length);
                if (!read || !*read) {
                    if (!errors.empty()) errors += "; ";
                    errors += read ? cat("piece ", piece, " of '", torrent_->relative_path(i), "' is not in the parts file")
                                   : read.error().describe();
                    continue;
                }
                const Chunk chunk{i, span.file_offset, std::span<const std::uint8_t>(buffer), 0};
                if (const Status written = write_run(std::span(&chunk, 1)); !written.ok()) {
                    if (!errors.empty()) errors += "; ";
                    errors += written.error().describe();
                }
            }
        }
    }
    if (const Status made = create_empty_files(); !made.ok()) {
        if (!errors.empty()) errors += "; ";
        errors += made.error().describe();
    }
    if (!errors.empty()) return make_error(std::move(errors));
    return ok_status();
}

void PieceStore::make_room() {
    // The budget is the process's: the file closed may be another torrent's.
    if (auto evicted = open_files_->evict_if_full(); evicted && evicted->dirty) {
        // Its pieces are acknowledged only after a sync, which needs the descriptor.
        if (const int error = sync_data(evicted->fd.get()); error != 0) {
            open_files_->defer_sync_error(evicted->owner, "cannot sync " + evicted->label + ": " +
                                                              std::strerror(error));
        }
    }
}

Result<OpenFile*> PieceStore::file_for_writing(std::size_t file_index) {
    if (OpenFile* open = open_files_->find(owner_, file_index)) return open;
    make_room();
    auto opened = open_below(root_.get(), torrent_->relative_path(file_index));
    if (!opened) return make_error(opened.error().message + " (in '" + download_dir_ + "')");
    const int fd = opened->fd.get();
    const std::uint64_t length = torrent_->files()[file_index].length;
    struct stat info {};
    if (::fstat(fd, &info) != 0) return make_error(describe(file_index, "cannot inspect", errno));
    if (static_cast<std::uint64_t>(info.st_size) < length) {
        if (const int error = allocate(fd, length); error != 0) {
            return make_error(describe(file_index, "cannot size", error));
        }
    }
    // Built piecewise: g++ 12 at -O3 takes `"'" + std::string&&` for an overlapping memcpy
    // (a -Wrestrict false positive, see with_suffix in core/metainfo.cpp).
    std::string name(1, '\'');
    name += torrent_->relative_path(file_index);
    name += "' in '";
    name += download_dir_;
    name += '\'';
    return &open_files_->add(owner_, file_index, std::move(opened->fd), std::move(name));
}

Result<OpenFile*> PieceStore::file_for_reading(std::size_t file_index) {
    if (OpenFile* open = open_files_->find(read_owner_, file_index)) return open;
    auto opened = open_existing_below(root_.get(), torrent_->relative_path(file_index), false);
    if (!opened) return make_error(opened.error().message + " (in '" + download_dir_ + "')");
    if (!opened->valid()) return static_cast<OpenFile*>(nullptr);
    make_room();
    return &open_files_->add(read_owner_, file_index, std::move(opened).value());
}

ReadResult PieceStore::read_piece(PieceIndex index, std::span<std::uint8_t> out) {
    if (index.get() >= torrent_->piece_count()) {
        return {ReadStatus::failed, cat("piece ", index.get(), " does not exist")};
    }
    if (out.size() != torrent_->piece_size(index)) {
        return {ReadStatus::failed, cat("a buffer of ", out.size(), " bytes for piece ", index.get(),
                                        " of ", torrent_->piece_size(index))};
    }
    ++pieces_read_;
    const auto& files = torrent_->files();
    std::uint64_t filled = 0;
    for (const FileSpan& span : torrent_->map_piece(index)) {
        std::uint8_t* into = out.data() + filled;
        filled += span.length;
        if (files[span.file_index].pad) {
            std::memset(into, 0, span.length);  // BEP 47: padding is zeros, never on disk
            continue;
        }
        if (in_parts(span.file_index)) {
            auto read = read_parts(files[span.file_index].offset + span.file_offset, into, span.length);
            if (!read) return {ReadStatus::failed, read.error().describe()};
            if (!*read) {
                return {ReadStatus::missing, cat("the parts file lacks bytes of '",
                                                 torrent_->relative_path(span.file_index), "'")};
            }
            continue;
        }
        auto file = file_for_reading(span.file_index);
        if (!file) return {ReadStatus::failed, file.error().describe()};
        if (file.value() == nullptr) {
            return {ReadStatus::missing, cat("'", torrent_->relative_path(span.file_index), "' is missing")};
        }
        std::uint64_t offset = span.file_offset;
        for (std::uint64_t left = span.length; left > 0;) {
            const ssize_t got = ::pread(file.value()->fd.get(), into, left, static_cast<off_t>(offset));
            if (got < 0 && errno == EINTR) continue;
            if (got < 0) return {ReadStatus::failed, describe(span.file_index, "cannot read", errno)};
            if (got == 0) {
                return {ReadStatus::missing, cat("'", torrent_->relative_path(span.file_index),
                                                 "' is shorter than the torrent says")};
            }
            const auto count = static_cast<std::uint64_t>(got);
            into += count;
            offset += count;
            left -= count;
        }
    }
    return {};
}

Status PieceStore::write_piece(PieceIndex index, std::span<const std::uint8_t> bytes) {
    const PieceBytes piece{index, bytes};
    return std::move(write_pieces(std::span(&piece, 1)).front());
}

std::vector<Status> PieceStore::write_pieces(std::span<const PieceBytes> pieces) {
    std::vector<Status> results(pieces.size(), ok_status());
    std::vector<Chunk> chunks;
    for (std::size_t i = 0; i < pieces.size(); ++i) {
        results[i] = check_piece(pieces[i]);
        if (results[i].ok()) add_chunks(pieces[i], i, chunks);
    }
    // In file order, so neighbours in a file are neighbours here whatever order the pieces
    // came in.
    std::stable_sort(chunks.begin(), chunks.end(), [](const Chunk& a, const Chunk& b) {
        return std::tie(a.file_index, a.file_offset) < std::tie(b.file_index, b.file_offset);
    });
    const auto continues = [](const Chunk& before, const Chunk& next) {
        return next.file_index == before.file_index &&
               next.file_offset == before.file_offset + before.bytes.size();
    };
    for (std::size_t begin = 0; begin < chunks.size();) {
        std::size_t end = begin + 1;
        while (end < chunks.size() && end - begin < kMaxPartsPerWrite && continues(chunks[end - 1], chunks[end])) {
            ++end;
        }
        const std::span<const Chunk> run(chunks.data() + begin, end - begin);
        if (const Status written = write_run(run); !written.ok()) {
            for (const Chunk& chunk : run) {
                if (results[chunk.piece].ok()) results[chunk.piece] = written;
            }
        }
        begin = end;
    }
    return results;
}

Status PieceStore::check_piece(const PieceBytes& piece) const {
    if (piece.index.get() >= torrent_->piece_count()) {
        return make_error("piece " + std::to_string(piece.index.get()) + " does not exist");
    }
    if (piece.bytes.size() != torrent_->piece_size(piece.index)) {
        return make_error("piece " + std::to_string(piece.index.get()) + " has " +
                          std::to_string(piece.bytes.size()) + " bytes, expected " +
                          std::to_string(torrent_->piece_size(piece.index)));
    }
    return ok_status();
}

void PieceStore::add_chunks(const PieceBytes& piece, std::size_t position,
                            std::vector<Chunk>& chunks) const {
    const auto& files = torrent_->files();
    std::uint64_t consumed = 0;
    for (const FileSpan& span : torrent_->map_piece(piece.index)) {
        const auto bytes = piece.bytes.subspan(consumed, span.length);
        consumed += span.length;
        // BEP 47: padding is never written. Nothing to write makes no iovec either: an empty
        // one at the end would read as a write that made no progress.
        if (files[span.file_index].pad || span.length == 0) continue;
        if (in_parts(span.file_index)) {
            // The parts file: one virtual file past the last, at the torrent offset.
            chunks.push_back(Chunk{files.size(), files[span.file_index].offset + span.file_offset, bytes, position});
            continue;
        }
        chunks.push_back(Chunk{span.file_index, span.file_offset, bytes, position});
    }
}

namespace {

// One iovec per chunk of a run, for pwritev. pwritev only reads through iov_base; the cast is
// what its C signature asks for.
template <typename Run>
std::vector<iovec> iovecs_of(const Run& run) {
    std::vector<iovec> parts;
    parts.reserve(run.size());
    for (const auto& chunk : run) {
        parts.push_back(iovec{const_cast<std::uint8_t*>(chunk.bytes.data()), chunk.bytes.size()});
    }
    return parts;
}

}  // namespace

Status PieceStore::write_parts_run(std::span<const Chunk> run) {
    auto fd = open_parts();
    if (!fd) return fd.error();
    std::vector<iovec> parts = iovecs_of(run);
    std::uint64_t offset = run.front().file_offset;
    std::span<iovec> left(parts);
    parts_dirty_ = true;
    if (const int error = write_all(*fd, left, offset); error != 0) {
        return make_error(cat("cannot write the parts file '", parts_path_, "': ", std::strerror(error)));
    }
    return ok_status();
}

Status PieceStore::write_run(std::span<const Chunk> run) {
    const std::size_t file_index = run.front().file_index;
    if (file_index >= torrent_->files().size()) return write_parts_run(run);
    auto file = file_for_writing(file_index);
    if (!file) return file.error();
    OpenFile& open = *file.value();
    open.dirty = true;
    std::vector<iovec> parts = iovecs_of(run);
    std::uint64_t offset = run.front().file_offset;
    std::span<iovec> left(parts);
    int error = 0;
    // Typically the whole run, but for a short last piece or a file starting mid-block.
    if (const std::size_t direct = direct_io_ ? aligned_prefix(left, offset) : 0; direct > 0) {
        choose_mode(open, true);
        std::span<iovec> aligned = left.first(direct);
        error = write_all(open.fd.get(), aligned, offset);
        if (error == EINVAL && open.direct) {
            // The device wants a coarser alignment than ours: the page cache from now on.
            direct_io_ = false;
            error = 0;
        }
        left = left.subspan(direct - aligned.size());
    }
    if (error == 0 && !left.empty()) {
        choose_mode(open, false);
        error = write_all(open.fd.get(), left, offset);
    }
    if (error != 0) return make_error(describe(file_index, "cannot write", error));
    return ok_status();
}

void PieceStore::choose_mode(OpenFile& file, bool direct) {
    if (file.direct == direct) return;
    if (set_direct(file.fd.get(), direct) == 0) {
        file.direct = direct;
    } else if (direct) {
        direct_io_ = false;  // the file system has no O_DIRECT (EINVAL): the page cache it is
    }
}

Status PieceStore::sync() {
    std::string errors = open_files_->take_sync_errors(owner_);
    if (parts_dirty_ && parts_.valid()) {
        parts_dirty_ = false;
        if (const int error = sync_data(parts_.get()); error != 0) {
            errors = cat("cannot sync the parts file '", parts_path_, "': ", std::strerror(error));
        }
    }
    for (OpenFile* file : open_files_->files_of(owner_)) {
        if (!file->dirty) continue;
        file->dirty = false;
        if (const int error = sync_data(file->fd.get()); error != 0) {
            if (!errors.empty()) errors += "; ";
            errors += describe(file->file_index, "cannot sync", error);
        }
    }
    if (!errors.empty()) return make_error(std::move(errors));
    return ok_status();
}

Status PieceStore::delete_files() {
    release_files();
    std::string errors;
    const auto note = [&errors](const Error& error) {
        if (!errors.empty()) errors += "; ";
        errors += error.describe();
    };
    parts_.reset();
    if (!parts_path_.empty() && ::unlink(parts_path_.c_str()) != 0 && errno != ENOENT) {
        note(make_error(cat("cannot delete the parts file '", parts_path_, "': ", std::strerror(errno))));
    }
    // The folders below the store's folder that the layout implies: every folder on the way
    // to each file ("name", "name/sub", ...), never "" (the store's folder itself).
    std::set<std::string> folders;
    for (std::size_t i = 0; i < torrent_->files().size(); ++i) {
        if (torrent_->files()[i].pad) continue;
        const std::string path = torrent_->relative_path(i);
        if (const Status removed = remove_file_below(root_.get(), path); !removed.ok()) {
            note(removed.error());
        }
        for (std::size_t slash = path.find('/'); slash != std::string::npos; slash = path.find('/', slash + 1)) {
            folders.insert(path.substr(0, slash));
        }
    }
    std::vector<std::string> deepest_first(folders.begin(), folders.end());
    std::sort(deepest_first.begin(), deepest_first.end(), [](const std::string& a, const std::string& b) {
        return std::count(a.begin(), a.end(), '/') > std::count(b.begin(), b.end(), '/');
    });
    for (const std::string& folder : deepest_first) {
        if (auto removed = remove_empty_directory_below(root_.get(), folder); !removed) {
            note(removed.error());
        }
    }
    if (!errors.empty()) return make_error("in '" + download_dir_ + "': " + errors);
    return ok_status();
}

}  // namespace pw::writer
