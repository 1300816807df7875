#include "writer/open_file_cache.hpp"

#include <algorithm>

namespace pw::writer {

OpenFileCache::OpenFileCache(std::size_t capacity) : capacity_(std::max<std::size_t>(capacity, 1)) {
    files_.reserve(capacity_);
}

OpenFile* OpenFileCache::find(std::uint64_t owner, std::size_t file_index) {
    // A linear scan: the cache holds a few dozen files and a piece touches one or two.
    for (OpenFile& file : files_) {
        if (file.owner == owner && file.file_index == file_index) {
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

OpenFile& OpenFileCache::add(std::uint64_t owner, std::size_t file_index, UniqueFd fd,
                            std::string label) {
    files_.push_back(OpenFile{.owner = owner, .file_index = file_index, .fd = std::move(fd),
                              .last_use = ++clock_, .label = std::move(label)});
    return files_.back();
}

std::vector<OpenFile*> OpenFileCache::files_of(std::uint64_t owner) {
    std::vector<OpenFile*> files;
    for (OpenFile& file : files_) {
        if (file.owner == owner) files.push_back(&file);
    }
    return files;
}

void OpenFileCache::close_all(std::uint64_t owner) {
    std::erase_if(files_, [owner](const OpenFile& file) { return file.owner == owner; });
    deferred_errors_.erase(owner);
}

void OpenFileCache::defer_sync_error(std::uint64_t owner, const std::string& error) {
    std::string& errors = deferred_errors_[owner];
    if (!errors.empty()) errors += "; ";
    errors += error;
}

std::string OpenFileCache::take_sync_errors(std::uint64_t owner) {
    const auto found = deferred_errors_.find(owner);
    if (found == deferred_errors_.end()) return {};
    std::string errors = std::move(found->second);
    deferred_errors_.erase(found);
    return errors;
}

std::size_t OpenFileCache::size_of(std::uint64_t owner) const {
    return static_cast<std::size_t>(std::count_if(files_.begin(), files_.end(),
                                                  [owner](const OpenFile& file) { return file.owner == owner; }));
}

}  // namespace pw::writer
