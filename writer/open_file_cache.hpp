#pragma once
// A bounded set of open files: a torrent may have a million files, a process a few thousand
// descriptors. The least recently used file is closed first.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "writer/unique_fd.hpp"

namespace pw::writer {

struct OpenFile {
    std::size_t file_index = 0;
    UniqueFd fd;
    // Written since its last fdatasync: it must be synced before its pieces are acknowledged.
    bool dirty = false;
    // The descriptor has O_DIRECT set (it is switched per write run with fcntl).
    bool direct = false;
    std::uint64_t last_use = 0;
};

class OpenFileCache {
public:
    explicit OpenFileCache(std::size_t capacity);

    // The open file for `file_index`, marked as just used; nullptr when it is not open.
    OpenFile* find(std::size_t file_index);
    // When the cache is full, takes out and returns the least recently used file, so the
    // caller can sync it before it is closed.
    std::optional<OpenFile> evict_if_full();
    // Adds a file; call evict_if_full first.
    OpenFile& add(std::size_t file_index, UniqueFd fd);
    std::span<OpenFile> files() { return files_; }
    std::size_t size() const { return files_.size(); }

private:
    std::size_t capacity_;
    std::uint64_t clock_ = 0;
    std::vector<OpenFile> files_;
};

}  // namespace pw::writer
