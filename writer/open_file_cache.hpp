#pragma once
// A bounded set of open files, one budget for every torrent the writer serves: a torrent may
// have a million files, a session many torrents, a process a few thousand descriptors. Each
// PieceStore is an owner of some of the cache's files; when the cache is full the least
// recently used file of any owner is closed first (synced first when it holds unsynced
// writes; a failure of that sync is kept for its owner's next sync).
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "writer/unique_fd.hpp"

namespace pw::writer {

struct OpenFile {
    std::uint64_t owner = 0;
    std::size_t file_index = 0;
    UniqueFd fd;
    // Written since its last fdatasync: it must be synced before its pieces are acknowledged.
    bool dirty = false;
    // The descriptor has O_DIRECT set (it is switched per write run with fcntl).
    bool direct = false;
    std::uint64_t last_use = 0;
    std::string label;  // the file and its folder, for error messages
};

class OpenFileCache {
public:
    explicit OpenFileCache(std::size_t capacity);

    // A new owner's id (never 0).
    std::uint64_t new_owner() { return ++owners_; }

    // The open file `file_index` of `owner`, marked as just used; nullptr when it is not open.
    OpenFile* find(std::uint64_t owner, std::size_t file_index);
    // When the cache is full, takes out and returns the least recently used file of any
    // owner, so the caller can sync it before it is closed.
    std::optional<OpenFile> evict_if_full();
    // Adds a file; call evict_if_full first.
    OpenFile& add(std::uint64_t owner, std::size_t file_index, UniqueFd fd, std::string label = {});
    // The open files of `owner`; valid until the cache changes.
    std::vector<OpenFile*> files_of(std::uint64_t owner);
    // Closes every file of `owner` (without syncing them) and forgets its deferred errors.
    void close_all(std::uint64_t owner);

    // A sync failure of a file closed to make room, for its owner's next sync to report.
    void defer_sync_error(std::uint64_t owner, const std::string& error);
    std::string take_sync_errors(std::uint64_t owner);

    std::size_t size() const { return files_.size(); }
    std::size_t size_of(std::uint64_t owner) const;
    std::size_t capacity() const { return capacity_; }

private:
    std::size_t capacity_;
    std::uint64_t clock_ = 0;
    std::uint64_t owners_ = 0;
    std::vector<OpenFile> files_;
    std::map<std::uint64_t, std::string> deferred_errors_;
};

}  // namespace pw::writer
