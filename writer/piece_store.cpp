#include "writer/piece_store.hpp"

#include <cerrno>
#include <cstring>

#include <sys/stat.h>
#include <unistd.h>

#include "writer/safe_open.hpp"

namespace pw::writer {

namespace {

// pwrite until everything is written: it may be interrupted or write less than asked.
int write_all(int fd, const std::uint8_t* data, std::uint64_t length, std::uint64_t offset) {
    while (length > 0) {
        const ssize_t written = ::pwrite(fd, data, length, static_cast<off_t>(offset));
        if (written < 0) {
            if (errno == EINTR) continue;
            return errno;
        }
        if (written == 0) return EIO;  // no progress and no error: give up rather than spin
        const auto count = static_cast<std::uint64_t>(written);
        data += count;
        length -= count;
        offset += count;
    }
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
                                    std::size_t max_open_files) {
    auto root = open_download_dir(download_dir);
    if (!root) return root.error();
    return PieceStore(torrent, download_dir, std::move(root.value()), max_open_files);
}

PieceStore::PieceStore(const Torrent& torrent, std::string download_dir, UniqueFd root,
                       std::size_t max_open_files)
    : torrent_(&torrent), download_dir_(std::move(download_dir)), root_(std::move(root)),
      open_files_(max_open_files) {}

std::string PieceStore::describe(std::size_t file_index, const std::string& what, int error) const {
    return what + " '" + torrent_->relative_path(file_index) + "' in '" + download_dir_ +
           "': " + std::strerror(error);
}

Status PieceStore::create_empty_files() {
    const auto& files = torrent_->files();
    for (std::size_t i = 0; i < files.size(); ++i) {
        if (files[i].length != 0 || files[i].pad) continue;
        auto opened = open_below(root_.get(), torrent_->relative_path(i));
        if (!opened) return make_error(opened.error().message + " (in '" + download_dir_ + "')");
    }
    return ok_status();
}

Result<OpenFile*> PieceStore::file_for_writing(std::size_t file_index) {
    if (OpenFile* open = open_files_.find(file_index)) return open;
    if (auto evicted = open_files_.evict_if_full(); evicted && evicted->dirty) {
        // Its pieces are acknowledged only after a sync, which needs the descriptor.
        if (const int error = sync_data(evicted->fd.get()); error != 0) {
            deferred_sync_error_ = describe(evicted->file_index, "cannot sync", error);
        }
    }
    auto opened = open_below(root_.get(), torrent_->relative_path(file_index));
    if (!opened) return make_error(opened.error().message + " (in '" + download_dir_ + "')");
    const int fd = opened->fd.get();
    const std::uint64_t length = torrent_->files()[file_index].length;
    struct stat info {};
    if (::fstat(fd, &info) != 0) return make_error(describe(file_index, "cannot inspect", errno));
    // Sparse at full length: the file has its final size from the start, and blocks are only
    // allocated as pieces arrive.
    if (static_cast<std::uint64_t>(info.st_size) < length &&
        ::ftruncate(fd, static_cast<off_t>(length)) != 0) {
        return make_error(describe(file_index, "cannot size", errno));
    }
    return &open_files_.add(file_index, std::move(opened->fd));
}

Status PieceStore::write_piece(PieceIndex index, std::span<const std::uint8_t> bytes) {
    if (index.get() >= torrent_->piece_count()) {
        return make_error("piece " + std::to_string(index.get()) + " does not exist");
    }
    if (bytes.size() != torrent_->piece_size(index)) {
        return make_error("piece " + std::to_string(index.get()) + " has " +
                          std::to_string(bytes.size()) + " bytes, expected " +
                          std::to_string(torrent_->piece_size(index)));
    }
    const auto& files = torrent_->files();
    std::uint64_t consumed = 0;
    for (const FileSpan& span : torrent_->map_piece(index)) {
        const std::uint8_t* data = bytes.data() + consumed;
        consumed += span.length;
        if (files[span.file_index].pad) continue;  // BEP 47: padding is never written
        auto file = file_for_writing(span.file_index);
        if (!file) return file.error();
        OpenFile& open = *file.value();
        open.dirty = true;
        if (const int error = write_all(open.fd.get(), data, span.length, span.file_offset);
            error != 0) {
            return make_error(describe(span.file_index, "cannot write", error));
        }
    }
    return ok_status();
}

Status PieceStore::sync() {
    std::string errors = std::move(deferred_sync_error_);
    deferred_sync_error_.clear();
    for (OpenFile& file : open_files_.files()) {
        if (!file.dirty) continue;
        file.dirty = false;
        if (const int error = sync_data(file.fd.get()); error != 0) {
            if (!errors.empty()) errors += "; ";
            errors += describe(file.file_index, "cannot sync", error);
        }
    }
    if (!errors.empty()) return make_error(std::move(errors));
    return ok_status();
}

}  // namespace pw::writer
