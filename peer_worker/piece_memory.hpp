#pragma once
// Where the worker's pieces live while it holds them, and how much room is left for more.
//
// With an arena (stages on one machine) a lease is counted against the arena's slots when it
// is accepted, but takes a slot only when its first block arrives (bind): a peer's pipeline
// runs a piece or more ahead of what has arrived, and slots the bytes never touched yet would
// be memory held for nothing (16 slow peers held 32 slots where 20 were ever written). The
// piece is assembled in its slot, and the slot stays taken after delivery, because the
// verifier and the writer read the bytes in place, until SlotsFreed says they are done. Without one, a lease
// gets a buffer of its own, which becomes ZeroMQ's (a frame) once delivered. Either way a
// lease that ends before delivery gives its room back at once.
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
    // Buffers of the worker's own, at most `max_bytes` held at once.
    explicit PieceMemory(std::uint64_t max_bytes);
    // A piece that takes longer than this from its first byte to delivery is slow. While the
    // pieces of late are slow (a moving average of their fill times), a piece takes a slot
    // without pages, which come as its bytes do, and gives them back when freed; while they
    // are fast, slots stay resident and go round without a page fault. One slow piece among
    // fast ones gives its pages back too, and until a piece has been delivered pieces count
    // as slow.
    static constexpr std::chrono::milliseconds kSlowFill{50};

    // The slots of `arena` (not null).
    explicit PieceMemory(std::unique_ptr<bus::PieceArena> arena,
                         std::chrono::milliseconds slow_fill = kSlowFill);

    // The arena's description for PieceBatch; null when pieces travel as frames.
    const bus::ArenaInfo* arena() const { return arena_ ? &arena_->info() : nullptr; }

    // Room for the piece of `lease_id`, `size` bytes; nullopt when the worker holds all it may
    // (or the lease is 0 or held already).
    std::optional<PieceDestination> reserve(std::uint64_t lease_id, std::uint32_t size);
    // The slot of a reserved lease, taken now if it has none yet; its `size` bytes. Never
    // fails: every reserved lease was counted against the arena's slots.
    // `empty` says whether the slot's pages are still to come as bytes are written.
    std::span<std::uint8_t> bind(std::uint64_t lease_id, bool& empty);
    // The slot of a lease, before or after delivery; nullopt without one.
    std::optional<std::uint32_t> slot_of(std::uint64_t lease_id) const;
    // The lease ended before its piece left (cancelled, released, refused). Unknown: ignored.
    void release(std::uint64_t lease_id);
    // The lease's piece left for the verifier.
    void delivered(std::uint64_t lease_id);
    // Frees the slots SlotsFreed names: those of delivered leases (others are ignored, as is
    // a message about another arena), or with `all_delivered` every delivered slot. Returns
    // how many slots came back.
    std::size_t free_delivered(const bus::v1::SlotsFreed& freed);

    // Whole pieces of `piece_length` bytes that still fit.
    std::uint64_t room(std::uint32_t piece_length) const;
    std::uint64_t held_bytes() const;
    std::size_t delivered_count() const { return delivered_slots_.size(); }

private:
    bool pieces_are_fast() const;

    // Counted against the arena: reserved (bound or not) and delivered-but-not-freed leases.
    std::uint32_t taken_slots() const {
        return static_cast<std::uint32_t>(undelivered_.size() + delivered_slots_.size());
    }

    struct Held {
        std::optional<std::uint32_t> slot;
        std::uint32_t size = 0;
        std::chrono::steady_clock::time_point bound_at{};
    };
    struct Delivered {
        std::uint32_t slot = 0;
        bus::PieceArena::Pages pages = bus::PieceArena::Pages::keep;
    };

    std::uint64_t max_bytes_ = 0;
    std::unique_ptr<bus::PieceArena> arena_;
    // Every piece puts a node in each map and takes it out again: the pool hands the freed
    // nodes back out instead of going to malloc for each.
    std::pmr::unsynchronized_pool_resource node_pool_;
    std::pmr::unordered_map<std::uint64_t, Held> undelivered_{&node_pool_};
    std::pmr::unordered_map<std::uint64_t, Delivered> delivered_slots_{&node_pool_};  // by lease
    std::chrono::milliseconds slow_fill_{kSlowFill};
    // Of the pieces delivered lately; negative before the first.
    double typical_fill_seconds_ = -1;
    std::uint64_t buffer_bytes_ = 0;  // of undelivered buffers
};

}  // namespace pw::peer_worker
