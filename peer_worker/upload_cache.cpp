#include "peer_worker/upload_cache.hpp"

#include <algorithm>

namespace pw::peer_worker {

CacheEntry* UploadCache::find(TorrentId torrent, PieceIndex piece, Clock::time_point now) {
    const auto found = index_.find(Key{torrent.get(), piece.get()});
    if (found == index_.end()) return nullptr;
    // The most recently used go to the back; no allocation, just relinking.
    entries_.splice(entries_.end(), entries_, found->second);
    found->second->last_used = now;
    return &*found->second;
}

UploadCache::Entries::iterator UploadCache::iterator_of(CacheEntry* entry) {
    if (entry->indexed) {
        const auto found = index_.find(Key{entry->torrent.get(), entry->piece.get()});
        if (found != index_.end() && &*found->second == entry) return found->second;
    }
    return std::find_if(entries_.begin(), entries_.end(),
                        [&](const CacheEntry& candidate) { return &candidate == entry; });
}

bool UploadCache::make_room(std::size_t size, std::size_t in_flight) {
    auto it = entries_.begin();
    while (bytes_ + in_flight + size > limits_.bytes && it != entries_.end()) {
        const auto next = std::next(it);
        if (it->pins == 0) erase(it);
        it = next;
    }
    return bytes_ + in_flight + size <= limits_.bytes;
}

CacheEntry& UploadCache::add(TorrentId torrent, PieceIndex piece, Clock::time_point now) {
    // A second copy of a piece (two reads raced) replaces the first in the index; the first
    // lives on while pinned.
    const Key key{torrent.get(), piece.get()};
    if (const auto found = index_.find(key); found != index_.end()) {
        const Entries::iterator old = found->second;
        unindex(*old);
        if (old->pins == 0) erase(old);
    }
    CacheEntry& entry = entries_.emplace_back();
    entry.torrent = torrent;
    entry.piece = piece;
    entry.last_used = now;
    index_[key] = std::prev(entries_.end());
    return entry;
}

CacheEntry* UploadCache::add_frame(TorrentId torrent, PieceIndex piece, zmq::message_t frame,
                                   Clock::time_point now) {
    CacheEntry& entry = add(torrent, piece, now);
    entry.frame.move(frame);
    // Taken once the frame is in place: a small message's bytes live inside the message.
    entry.bytes = {static_cast<const std::uint8_t*>(entry.frame.data()), entry.frame.size()};
    bytes_ += entry.bytes.size();
    return &entry;
}

CacheEntry* UploadCache::add_arena(TorrentId torrent, PieceIndex piece,
                                   std::span<const std::uint8_t> bytes, const bus::ArenaInfo& arena,
                                   std::uint32_t slot, std::uint64_t request, Clock::time_point now) {
    CacheEntry& entry = add(torrent, piece, now);
    entry.bytes = bytes;
    entry.arena = arena;
    entry.slot = slot;
    entry.request = request;
    bytes_ += bytes.size();
    ++arena_entries_;
    // Over the cap now, not at the next tick: a burst of answers would otherwise hold more of
    // the writer's slots than it grants a worker, and it answers the next reads "busy".
    for (auto it = entries_.begin(); arena_entries_ > limits_.max_arena_entries && it != entries_.end();) {
        const auto next = std::next(it);
        if (&*it != &entry && it->arena && it->pins == 0) erase(it);
        it = next;
    }
    return &entry;
}

void UploadCache::unpin(CacheEntry* entry, Clock::time_point now) {
    if (entry->pins > 0) --entry->pins;
    entry->last_used = std::max(entry->last_used, now);
    if (entry->pins == 0 && !entry->indexed) erase(iterator_of(entry));
}

void UploadCache::drop(CacheEntry* entry) {
    unindex(*entry);
    if (entry->pins == 0) erase(iterator_of(entry));
}

void UploadCache::drop_torrent(TorrentId torrent) {
    for (auto it = entries_.begin(); it != entries_.end();) {
        const auto next = std::next(it);
        if (it->torrent == torrent) {
            unindex(*it);
            if (it->pins == 0) erase(it);
        }
        it = next;
    }
}

void UploadCache::expire(Clock::time_point now) {
    std::uint32_t over = arena_entries_ > limits_.max_arena_entries
                             ? arena_entries_ - limits_.max_arena_entries
                             : 0;
    for (auto it = entries_.begin(); it != entries_.end();) {
        const auto next = std::next(it);
        if (it->arena && it->pins == 0 && (over > 0 || now - it->last_used >= limits_.arena_linger)) {
            if (over > 0) --over;
            erase(it);
        }
        it = next;
    }
}

std::size_t UploadCache::pinned_bytes() const {
    std::size_t total = 0;
    for (const CacheEntry& entry : entries_) {
        if (entry.pins > 0) total += entry.bytes.size();
    }
    return total;
}

void UploadCache::unindex(CacheEntry& entry) {
    if (!entry.indexed) return;
    entry.indexed = false;
    const auto found = index_.find(Key{entry.torrent.get(), entry.piece.get()});
    if (found != index_.end() && &*found->second == &entry) index_.erase(found);
}

void UploadCache::erase(Entries::iterator entry) {
    if (entry == entries_.end()) return;
    unindex(*entry);
    bytes_ -= std::min(bytes_, entry->bytes.size());
    if (entry->arena) {
        released_.push_back(entry->request);
        --arena_entries_;
    }
    entries_.erase(entry);
}

}  // namespace pw::peer_worker
