#pragma once
// The writer's read service (--reads): whole verified pieces for the peer workers to upload.
//
// The writer owns the files, so it serves the reads: a worker (possibly on another host, and
// the process that parses hostile input) never needs the download folder. A worker asks
// ReadPiece{torrent, piece, request} over a DEALER; the answer is PieceRead{torrent, piece,
// request} with either
//  - `error`: no bytes (unknown torrent, still being checked, out of range, not on disk yet,
//    changed on disk, busy...), or
//  - `arena` + `slot` (arena mode, stages on one host): the piece is in a slot of one of the
//    writer's read arenas (core/bus/piece_arena.hpp, one per piece length), tagged with the
//    request; the worker maps it read-only (bus::ArenaReader::view(arena, slot, size,
//    request)) and gives it back with ReadsDone{requests}, or
//  - one raw frame after the envelope holding the piece (frames mode, across hosts).
// Only pieces the torrent's record calls durable are read, and every piece read from the
// files is hashed against the torrent's piece hash before it leaves: a piece that no longer
// matches is never sent (TorrentWriter::read_verified).
//
// Bounded everywhere: reads queued or held per worker, the queue, the memory of pieces in
// arenas or in ZeroMQ's hands, the cache of verified pieces, and the reads served per turn of
// the loop. One slot serves one request at a time: its tag is the request the worker checks,
// and one tag cannot name two requests; a second request for a piece held in a slot gets a
// slot of its own, copied from the first (no read, no hash).
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <zmq.hpp>

#include "core/bus/bus.hpp"
#include "core/bus/metrics.hpp"
#include "core/bus/piece_arena.hpp"
#include "core/sha1.hpp"
#include "core/units.hpp"

namespace pw::writer {

class TorrentWriter;

struct ReadOptions {
    // Answer in read arenas (shared memory a worker on this host maps read-only) instead of
    // frames. A length whose arena cannot be made falls back to frames.
    bool arena = false;
    // Arena mode: the bytes of every slot holding a piece, held by a worker or kept as the
    // cache. Frames mode: the bytes of pieces handed to ZeroMQ and not yet sent. Two pieces of
    // a length always fit, whatever the budget.
    std::size_t memory_bytes = 32u << 20;
    // Verified pieces kept for their next read: slots no worker holds (arena mode), buffers
    // (frames mode). Least recently used go first.
    std::size_t cache_bytes = 16u << 20;
    // Arena mode: a cached piece evicted for cache_bytes leaves its slot's pages in place for
    // the next read, which then takes no page faults (a fresh page is a fault, on a VM that
    // hands freed memory back to its host a host fault too: a third of the writer's CPU while
    // seeding at full speed). Such spare pages count against memory_bytes, and go back to the
    // kernel once no piece was given back for this long.
    std::chrono::milliseconds spare_linger{2'000};
    // Reads queued or holding a slot, per worker identity; more are answered "busy".
    std::size_t per_worker = 64;
    // Reads queued over every worker; more are answered "busy".
    std::size_t queue_limit = 1024;
    // A slot not given back this long after it was sent is reclaimed: reused once it is the
    // least recently used, never under the same tag (see ReadService::reclaim).
    std::chrono::milliseconds hold_timeout{60'000};
    // A read waiting for memory this long is answered "busy" (the worker asks again later).
    std::chrono::milliseconds queue_wait{10'000};
    // Reads answered per turn of the loop, at most, and for at most this long (one piece at
    // least): then the other sockets get their turn.
    std::size_t reads_per_turn = 8;
    std::chrono::milliseconds turn_budget{20};
};

class ReadService {
public:
    // The torrent a read names: its writer, or why there is none to read from.
    struct Target {
        TorrentWriter* writer = nullptr;
        std::string why_not;
    };
    using Lookup = std::function<Target(TorrentId)>;
    enum class Delivery { sent, would_block, gone };
    // Sends one answer to the worker of that identity, without blocking.
    using Send = std::function<Delivery(const std::string& identity, bus::v1::Envelope& envelope,
                                        std::span<zmq::message_t> frames)>;

    ReadService(ReadOptions options, Lookup lookup, Send send, bus::metrics::Registry* metrics = nullptr);
    ~ReadService();
    ReadService(const ReadService&) = delete;
    ReadService& operator=(const ReadService&) = delete;

    // One message from the reads socket: ReadPiece is queued (or refused at once), ReadsDone
    // gives slots back. Anything else is logged and dropped.
    void take(const bus::Incoming& message);
    // One turn: reclaims slots held too long, then answers queued reads, at most
    // reads_per_turn of them and for at most turn_budget.
    void serve();
    // The torrent was removed (or is opened anew): its cached pieces go; slots workers still
    // hold go when given back or reclaimed; its queued reads are refused when their turn comes.
    void forget(TorrentId torrent);
    // How long the loop may sleep as far as reads are concerned.
    std::chrono::milliseconds timeout() const;

    struct Stats {
        std::uint64_t served = 0;      // pieces sent
        std::uint64_t refused = 0;     // errors sent (busy included)
        std::uint64_t busy = 0;        // of which "busy": over a bound, ask again later
        std::uint64_t from_disk = 0;   // pieces read from the files (and hashed)
        std::uint64_t cache_hits = 0;  // pieces sent without reading the files
        std::uint64_t reclaimed = 0;   // slots taken back from a worker that kept them too long
        std::size_t queued = 0;
        std::size_t held = 0;          // slots held by workers
        std::size_t memory = 0;        // bytes in use (see ReadOptions::memory_bytes)
        std::size_t cached = 0;        // bytes of cached pieces
        std::size_t spare = 0;         // bytes of free slots that kept their pages (arena mode)
    };
    Stats stats() const;

private:
    struct Request {
        std::string identity;
        TorrentId torrent;
        PieceIndex piece;
        std::uint64_t id = 0;
        bus::Clock::time_point received{};
    };
    using Key = std::pair<std::string, std::uint64_t>;  // (worker identity, request)
    using PieceKey = std::pair<std::uint32_t, std::uint32_t>;  // (torrent, piece)
    struct SlotRef {
        std::uint32_t length = 0;  // the arena's slot size
        std::uint32_t slot = 0;
        friend bool operator==(const SlotRef&, const SlotRef&) = default;
    };
    // A request whose holder did not give its slot back in time (or vanished): it may still
    // read the slot, so the slot never carries that tag again while this lasts.
    struct Stale {
        std::string identity;
        std::uint64_t request = 0;
        bus::Clock::time_point until{};
    };
    struct Slot {
        bool filled = false;  // holds a verified piece (and counts against the memory)
        TorrentId torrent{0};
        PieceIndex piece{0};
        bool orphan = false;  // its torrent went while a worker held it
        bool held = false;
        std::string holder;
        std::uint64_t request = 0;  // the tag, while held
        bus::Clock::time_point held_since{};
        std::optional<std::list<SlotRef>::iterator> lru;  // when filled and not held
        std::vector<Stale> stale;
    };
    struct Arena {
        std::unique_ptr<bus::PieceArena> arena;  // null: none could be made (frames instead)
        std::size_t stride = 0;  // what a slot counts against the memory
        std::vector<Slot> slots;
    };
    // Frames mode: a verified piece, shared by the cache and the frames ZeroMQ still holds.
    struct Buffer {
        std::unique_ptr<std::uint8_t[]> data;
        std::size_t size = 0;
    };
    struct CachedBuffer {
        PieceKey key;
        std::shared_ptr<const Buffer> buffer;
    };
    enum class Outcome { answered, wait };

    void queue(Request request);
    Outcome serve_one(const Request& request);
    Outcome serve_as_frame(const Request& request, TorrentWriter& writer);
    Outcome serve_from_arena(const Request& request, TorrentWriter& writer, Arena& arena,
                             std::uint32_t length);
    void answer_error(const Request& request, const std::string& why, bool busy = false);
    // Sends the PieceRead naming `slot` and marks it held; false when it could not be sent.
    bool answer_slot(const Request& request, std::uint32_t length, std::uint32_t slot);
    void delivery_failed(const Request& request, Delivery delivery);

    Arena* arena_for(std::uint32_t length);
    Slot& slot_of(const SlotRef& ref) { return arenas_.at(ref.length).slots.at(ref.slot); }
    std::size_t limit_for(std::size_t stride) const;
    // A slot of `length` tagged `tag`, making room by evicting cached pieces; nullopt when
    // every slot that could be had is held.
    std::optional<std::uint32_t> take_slot(std::uint32_t length, std::uint64_t tag);
    // A free slot of `arena` tagged `tag` that no stale holder knows under that tag.
    std::optional<std::uint32_t> acquire_fresh(Arena& arena, std::uint64_t tag);
    static bool stale_for(const Slot& slot, std::uint64_t tag);
    // Gives a cached (unheld) slot the tag `tag`; false when it may not carry it (stale).
    bool retag(std::uint32_t length, std::uint32_t slot, std::uint64_t tag);
    void fill(std::uint32_t length, std::uint32_t slot, TorrentId torrent, PieceIndex piece);
    // The slot holds nothing any more: it leaves the cache and the memory; its pages go back,
    // or stay as a spare (counted by spare_bytes) for the next read.
    void free_slot(std::uint32_t length, std::uint32_t slot,
                   bus::PieceArena::Pages pages = bus::PieceArena::Pages::give_back);
    // Bytes of free slots that kept their pages, over every arena.
    std::size_t spare_bytes() const;
    // Gives the pages of one spare slot back; false when none is left.
    bool give_back_spare();
    void give_back_spares();
    void unindex(std::uint32_t length, std::uint32_t slot);
    void lru_add(std::uint32_t length, std::uint32_t slot);
    void lru_remove(Slot& slot);
    // A hold ended (given back, reclaimed, not delivered): the slot joins the cache, or goes
    // when its torrent did.
    void unhold(std::uint32_t length, std::uint32_t slot);
    void trim_arena_cache();
    void reclaim(bus::Clock::time_point now);
    // Ends a hold its worker did not end: the slot joins the cache, and keeps the hold's tag
    // out of use for a while (its worker may still read it).
    void take_back(const SlotRef& ref, bus::Clock::time_point now);
    void worker_gone(const std::string& identity);
    void give_back(const std::string& identity, std::uint64_t request);

    std::shared_ptr<const Buffer> cached_buffer(const PieceKey& key);
    void cache_buffer(const PieceKey& key, std::shared_ptr<const Buffer> buffer);

    void loaded(const std::string& identity);
    void unloaded(const std::string& identity);

    ReadOptions options_;
    Lookup lookup_;
    Send send_;
    Sha1Hasher hasher_;

    std::list<Request> queue_;
    std::set<Key> queued_keys_;
    std::map<std::string, std::size_t> load_;  // per identity: queued + held
    bool blocked_ = false;  // the queue's head waits for memory

    // Arena mode.
    std::map<std::uint32_t, Arena> arenas_;  // by slot size (the torrents' piece length)
    std::map<Key, SlotRef> holds_;
    std::map<Key, SlotRef> stale_holds_;
    std::map<PieceKey, std::vector<SlotRef>> index_;  // filled slots not orphaned, by piece
    std::list<SlotRef> lru_;  // filled unheld slots, least recently used first
    std::size_t used_bytes_ = 0;
    std::size_t cached_bytes_ = 0;
    std::optional<bus::Clock::time_point> next_reclaim_;
    // When the spare pages go back (see ReadOptions::spare_linger).
    std::optional<bus::Clock::time_point> spares_until_;

    // Frames mode.
    std::list<CachedBuffer> buffers_;  // least recently used first
    std::map<PieceKey, std::list<CachedBuffer>::iterator> buffer_index_;
    std::size_t buffer_bytes_ = 0;
    // Bytes of frames ZeroMQ holds; its I/O thread lowers it as it lets them go.
    std::shared_ptr<std::atomic<std::size_t>> in_zeromq_;

    Stats stats_;
    bus::metrics::Metric* served_metric_ = nullptr;
    bus::metrics::Metric* refused_metric_ = nullptr;
    bus::metrics::Metric* disk_metric_ = nullptr;
    bus::metrics::Metric* hits_metric_ = nullptr;
};

}  // namespace pw::writer
