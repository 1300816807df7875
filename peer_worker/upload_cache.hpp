#pragma once
// The pieces a worker uploads from: whole verified pieces the writer read for it, shared by
// every peer and torrent, least recently used first out, within one byte budget.
//
// An entry is either a frame (the writer across hosts sent the piece's bytes: the frame is the
// entry) or a slot of the writer's read arena (same host: the bytes stay in the writer's
// memory, which we map read-only, and the slot is the writer's to take back once we say
// ReadsDone). Blocks queued for peers point into an entry and pin it; a pinned entry is never
// freed. Arena entries are also given back soon after their last block left (the writer's
// arena is shared by every worker and reclaims slots held too long), and at most a few are
// held at once.
#include <chrono>
#include <cstdint>
#include <list>
#include <map>
#include <optional>
#include <span>
#include <utility>
#include <vector>

#include <zmq.hpp>

#include "core/bus/piece_arena.hpp"
#include "core/units.hpp"
#include "peer_worker/peer_session.hpp"

namespace pw::peer_worker {

struct CacheEntry {
    TorrentId torrent{0};
    PieceIndex piece{0};
    std::span<const std::uint8_t> bytes;  // the whole piece
    zmq::message_t frame;                 // frames: owns the bytes
    std::optional<bus::ArenaInfo> arena;  // arena: the writer's slot holds the bytes
    std::uint32_t slot = 0;
    std::uint64_t request = 0;  // the read that brought it (an arena slot's tag)
    std::uint32_t pins = 0;     // blocks queued that point into it
    bool indexed = true;        // findable; false once dropped (freed when unpinned)
    Clock::time_point last_used{};
};

struct UploadCacheLimits {
    std::size_t bytes = 16u << 20;
    // Arena slots held at once: the writer serves every worker from one arena per length (32
    // MiB by default, for all of them) and answers "busy" past a few dozen reads held per
    // worker.
    std::uint32_t max_arena_entries = 16;
    // An arena entry no block uses goes back to the writer after this long: long enough for a
    // peer's next requests of the piece (they come a few at a time), and far within the
    // minute after which the writer takes slots back whatever we do.
    Clock::duration arena_linger = std::chrono::seconds(2);
};

class UploadCache {
public:
    explicit UploadCache(UploadCacheLimits limits = {}) : limits_(limits) {}
    UploadCache(const UploadCache&) = delete;
    UploadCache& operator=(const UploadCache&) = delete;

    // The piece, if cached (and marked used).
    CacheEntry* find(TorrentId torrent, PieceIndex piece, Clock::time_point now);
    // Frees unpinned entries, least recently used first, until `size` more bytes (beyond
    // `in_flight` bytes already asked for) fit the budget; false when they cannot.
    bool make_room(std::size_t size, std::size_t in_flight);
    CacheEntry* add_frame(TorrentId torrent, PieceIndex piece, zmq::message_t frame,
                          Clock::time_point now);
    CacheEntry* add_arena(TorrentId torrent, PieceIndex piece, std::span<const std::uint8_t> bytes,
                          const bus::ArenaInfo& arena, std::uint32_t slot, std::uint64_t request,
                          Clock::time_point now);
    void pin(CacheEntry* entry) { ++entry->pins; }
    void unpin(CacheEntry* entry, Clock::time_point now);
    // Never found again; freed once unpinned (e.g. its arena slot was taken back).
    void drop(CacheEntry* entry);
    void drop_torrent(TorrentId torrent);
    // Arena entries unused past their linger go back; over the cap of arena entries held,
    // the least recently used unpinned ones too.
    void expire(Clock::time_point now);
    // Arena reads to give back to the writer (ReadsDone): the caller sends and clears them.
    std::vector<std::uint64_t>& released() { return released_; }

    std::size_t bytes() const { return bytes_; }
    std::size_t entries() const { return entries_.size(); }
    std::size_t pinned_bytes() const;
    const UploadCacheLimits& limits() const { return limits_; }

private:
    using Key = std::pair<std::uint32_t, std::uint32_t>;  // (torrent, piece)
    using Entries = std::list<CacheEntry>;
    CacheEntry& add(TorrentId torrent, PieceIndex piece, Clock::time_point now);
    void erase(Entries::iterator entry);
    void unindex(CacheEntry& entry);
    Entries::iterator iterator_of(CacheEntry* entry);

    UploadCacheLimits limits_;
    Entries entries_;  // least recently used first
    std::map<Key, Entries::iterator> index_;
    std::size_t bytes_ = 0;
    std::uint32_t arena_entries_ = 0;
    std::vector<std::uint64_t> released_;
};

}  // namespace pw::peer_worker
