#include "writer/open_file_cache.hpp"

#include <algorithm>

namespace pw::writer {

OpenFileCache::OpenFileCache(std::size_t capacity) : capacity_(std::max<std::size_t>(capacity, 1)) {
    files_.reserve(capacity_);
}

OpenFile* OpenFileCache::find(std::size_t file_index) {
    // A linear scan: the cache holds a few dozen files and a piece touches one or two.
    for (OpenFile& file : files_) {
        if (file.file_index == file_index) {
            file.last_use = ++clock_;
            return &file;
        }
    }
    return nullptr;
}

std::optional<OpenFile> OpenFileCache::evict_if_full() {
    if (files_.size() < capacity_) return std::nullopt;
    auto oldest = std::min_element(files_.begin(), files_.end(), [](const OpenFile& a, const OpenFile& b) {
        return a.last_use < b.last_use;
    });
    OpenFile evicted = std::move(*oldest);
    if (oldest != files_.end() - 1) *oldest = std::move(files_.back());
    files_.pop_back();
    return evicted;
}

OpenFile& OpenFileCache::add(std::size_t file_index, UniqueFd fd) {
    files_.push_back(OpenFile{.file_index = file_index, .fd = std::move(fd), .last_use = ++clock_});
    return files_.back();
}

}  // namespace pw::writer
