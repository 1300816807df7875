#pragma once
// Where the worker's pieces live while it holds them, and how much room is left for more.
//
// One byte budget covers the pieces of every torrent the worker serves. With arenas (stages
// on one machine) each piece length in use has an arena of its own, made when the first lease
// of that length is accepted, with as many slots as the whole budget holds pieces of that
// length: slots without pages cost nothing, so any mix of lengths fits. A lease is counted
// against the budget (a whole slot) when it is accepted, but takes a slot only when its first
// block arrives (bind): a peer's pipeline runs a piece or more ahead of what has arrived, and
// slots the bytes never touched yet would be memory held for nothing (16 slow peers held 32
// slots where 20 were ever written). The piece is assembled in its slot, and the slot stays
// taken after delivery, because the verifier and the writer read the bytes in place, until
// SlotsFreed says they are done. Without arenas, a lease gets a buffer of its own, which
// becomes ZeroMQ's (a frame) once delivered. Either way a lease that ends before delivery
// gives its room back at once.
//
// Resident pages: freed slots keep their pages for the next piece until a trim finds them
// spare (free all through a window). Across
// arenas those kept pages plus the slots in use (each counted whole) never exceed the budget
// (or two pieces of the longest length, when that is more): a slot that takes fresh pages
// beyond it first makes free slots give theirs back, those of retired lengths first, then of
// other lengths, then of its own. A length no torrent uses any more is retired: its free
// slots give their pages back at once, and its slots freed later too.
#include <chrono>
#include <cstdint>
#include <memory>
#include <memory_resource>
#include <optional>
#include <span>
#include <unordered_map>

#include "core/bus/bus.hpp"
#include "core/bus/piece_arena.hpp"
#include "peer_worker/piece_assembly.hpp"

namespace pw::peer_worker {

class PieceMemory {
public:
    // Buffers of the worker's own (pieces travel as frames), or shared-memory arenas.
    enum class Kind { buffers, arenas };

    // A freed slot keeps its pages for the next piece, slow or fast: a fresh page costs a
    // fault in the worker, another in every reader, and on a VM that hands freed memory back
    // to its host a host fault too (sixteen 2 MiB/s peers: the worker's CPU per byte tripled
    // when slow pieces gave their pages back). Free slots that no piece needed over a whole
    // window give their pages back at the next trim(), so an idle or slowing worker shrinks.
    static constexpr std::chrono::milliseconds kTrimWindow{5000};

    // At most `budget_bytes` of pieces held at once, over every torrent and length. The
    // budget may be raised later up to `ceiling_bytes` (set_budget); arenas have slots for the
    // ceiling, which cost nothing until written.
    PieceMemory(std::uint64_t budget_bytes, Kind kind,
                std::chrono::milliseconds trim_window = kTrimWindow, std::uint64_t ceiling_bytes = 0);
    ~PieceMemory();
    PieceMemory(const PieceMemory&) = delete;
    PieceMemory& operator=(const PieceMemory&) = delete;

    Kind kind() const { return kind_; }
    std::uint64_t budget() const { return budget_; }
    // A new budget, kept within the first one and the ceiling. A lower one refuses new leases
    // until what is held fits again.
    void set_budget(std::uint64_t bytes);
    // The arena holding pieces of `piece_length`, for PieceBatch; null before its first lease,
    // with buffers, or when it could not be made (those pieces then get buffers).
    const bus::ArenaInfo* arena(std::uint32_t piece_length) const;
    // The same arena's slots (tests, logs).
    bus::PieceArena* arena_slots(std::uint32_t piece_length);

    // Room for the piece of `lease_id`, `size` bytes of a torrent whose pieces are
    // `piece_length` long; nullopt when the worker holds all it may (or the lease is 0 or held
    // already, or `size` exceeds `piece_length`).
    std::optional<PieceDestination> reserve(std::uint64_t lease_id, std::uint32_t piece_length,
                                            std::uint32_t size);
    // The slot of a reserved lease, taken now if it has none yet; its `size` bytes. Never
    // fails: every reserved lease was counted against its arena's slots.
    // `empty` says whether the slot's pages are still to come as bytes are written.
    std::span<std::uint8_t> bind(std::uint64_t lease_id, bool& empty);
    // The slot of a lease, before or after delivery; nullopt without one.
    std::optional<std::uint32_t> slot_of(std::uint64_t lease_id) const;
    // The lease ended before its piece left (cancelled, released, refused, its torrent
    // removed). Unknown: ignored.
    void release(std::uint64_t lease_id);
    // The lease's piece left for the verifier.
    void delivered(std::uint64_t lease_id);
    // Frees the slots SlotsFreed names: those of delivered leases in the arena it names
    // (others are ignored), or with `all_delivered` every delivered slot of every arena.
    // Returns how many slots came back.
    std::size_t free_delivered(const bus::v1::SlotsFreed& freed);
    // No torrent fetches pieces of `piece_length` now: the arena's free slots give their pages
    // back, and so do its slots freed from now on, until a lease of that length comes again.
    void retire(std::uint32_t piece_length);
    // Called often (each tick): once a window has passed, gives back the pages of as many
    // free slots as stayed free and resident all through it, those freed longest ago.
    void trim(std::chrono::steady_clock::time_point now);

    // Whole pieces of `piece_length` bytes that still fit.
    std::uint64_t room(std::uint32_t piece_length) const;
    // Counted against the budget: reserved and delivered-but-not-freed slots, undelivered
    // buffers.
    std::uint64_t held_bytes() const { return counted_bytes_; }
    // Bytes of arena slots that hold pages or may: slots in use (whole) and free slots that
    // kept theirs. At most resident_cap().
    std::uint64_t resident_bound() const { return resident_bytes_; }
    std::uint64_t resident_cap() const;
    std::size_t delivered_count() const { return delivered_slots_.size(); }

private:
    // The pieces of one length.
    struct Pool {
        std::uint32_t length = 0;
        std::unique_ptr<bus::PieceArena> arena;  // null: buffers
        // The fewest free resident slots seen since the window began: that many were spare.
        std::uint32_t spare_in_window = 0;
        bool retired = false;
    };
    struct Held {
        Pool* pool = nullptr;  // null: a buffer of its own
        std::optional<std::uint32_t> slot;
        std::uint32_t size = 0;
        std::uint32_t charge = 0;  // counted against the budget
    };
    struct Delivered {
        Pool* pool = nullptr;
        std::uint32_t slot = 0;
    };

    std::uint64_t cap_for(std::uint32_t piece_length) const;
    Pool& pool_for(std::uint32_t piece_length);
    // Releases an arena slot, keeping the resident count in step.
    void release_slot(Pool& pool, std::uint32_t slot, bus::PieceArena::Pages pages);
    // Makes free slots give their pages back until the resident bound is within the cap.
    void enforce_resident_cap(const Pool& binding);
    void give_back(Pool& pool, std::uint64_t excess);

    std::uint64_t budget_ = 0;
    std::uint64_t floor_ = 0;
    std::uint64_t ceiling_ = 0;
    Kind kind_ = Kind::buffers;
    std::chrono::milliseconds trim_window_{kTrimWindow};
    std::chrono::steady_clock::time_point window_start_{};
    std::unordered_map<std::uint32_t, std::unique_ptr<Pool>> pools_;  // by piece length; kept
    Pool* last_pool_ = nullptr;  // the one the last lease went to
    std::uint32_t longest_arena_length_ = 0;
    std::uint64_t counted_bytes_ = 0;
    std::uint64_t resident_bytes_ = 0;
    // Every piece puts a node in each map and takes it out again: the pool hands the freed
    // nodes back out instead of going to malloc for each.
    std::pmr::unsynchronized_pool_resource node_pool_;
    std::pmr::unordered_map<std::uint64_t, Held> undelivered_{&node_pool_};
    std::pmr::unordered_map<std::uint64_t, Delivered> delivered_slots_{&node_pool_};  // by lease
};

}  // namespace pw::peer_worker
