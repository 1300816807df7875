#pragma once
// One leased piece being assembled from 16 KiB blocks: the piece's destination (an arena
// slot, or a buffer of the piece's size) that blocks are copied into straight from the wire
// parser, and the state of every block. All allocation happens when the lease arrives, none
// per block; a piece of a few blocks keeps their state inline and allocates nothing at all.
#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "core/geometry.hpp"
#include "core/units.hpp"
#include "peer_worker/pipeline.hpp"

namespace pw::peer_worker {

// Leaves new elements uninitialized: every byte of a piece buffer is written by a block before
// the piece leaves, so zero-filling a megabyte per piece first would be wasted work.
template <typename T>
struct UninitializedAllocator : std::allocator<T> {
    template <typename U>
    struct rebind {
        using other = UninitializedAllocator<U>;
    };
    UninitializedAllocator() = default;
    template <typename U>
    UninitializedAllocator(const UninitializedAllocator<U>&) noexcept {}
    template <typename U>
    void construct(U* place) noexcept {
        ::new (static_cast<void*>(place)) U;
    }
    template <typename U, typename... Args>
    void construct(U* place, Args&&... args) {
        ::new (static_cast<void*>(place)) U(std::forward<Args>(args)...);
    }
};

using PieceBuffer = std::vector<std::uint8_t, UninitializedAllocator<std::uint8_t>>;

class PieceMemory;

// Where a piece is assembled: memory someone else owns (a slot of the worker's shared-memory
// arena, which the verifier reads in place), or a buffer of its own that later becomes a
// frame towards the verifier.
class PieceDestination {
public:
    static PieceDestination owned(std::uint32_t size) {
        PieceDestination destination;
        destination.owned_.resize(size);
        return destination;
    }
    // A slot of `memory`'s arena, taken when the first block arrives (PieceMemory::bind): a
    // piece leased and requested ahead, whose bytes have not begun to come, holds no memory.
    static PieceDestination bound_on_first_use(PieceMemory& memory, std::uint64_t lease_id,
                                               std::uint32_t size) {
        PieceDestination destination;
        destination.binder_ = &memory;
        destination.lease_id_ = lease_id;
        destination.size_in_slot_ = size;
        return destination;
    }

    // Computed on each call rather than stored: a view into `owned_` must survive moves.
    std::span<std::uint8_t> bytes();
    // The `length` bytes at `offset`, about to be written. A slot without pages takes them a
    // chunk (1/16 of the piece, at least 64 KiB) at a time, with one call, when the first
    // byte of the chunk comes: a call per block cost more than the pages themselves, and a
    // page fault per 4 KiB more still.
    std::span<std::uint8_t> range_to_write(std::uint32_t offset, std::uint32_t length);
    std::uint32_t size() const {
        if (owns()) return static_cast<std::uint32_t>(owned_.size());
        return size_in_slot_;
    }
    // The buffer when owned; empty when the bytes live elsewhere.
    PieceBuffer take_owned() { return std::move(owned_); }

private:
    bool owns() const { return !owned_.empty(); }

    PieceBuffer owned_;
    std::uint32_t chunk_size() const;

    std::span<std::uint8_t> bound_;  // the arena slot, once bound
    bool bound_empty_ = false;     // the slot's pages come as bytes do
    std::uint16_t chunks_in_ = 0;  // of an empty slot: a bit per chunk whose pages are in
    PieceMemory* binder_ = nullptr;
    std::uint64_t lease_id_ = 0;
    std::uint32_t size_in_slot_ = 0;
};

struct BlockRequest {
    BlockOffset offset;
    BlockLength length;
};

class PieceAssembly {
public:
    enum class BlockResult { accepted, not_requested, duplicate, wrong_shape };
    // What absorb did with a block another peer sent.
    enum class Absorbed { no, was_needed, was_requested };

    // `destination` is exactly the piece's size.
    PieceAssembly(PieceIndex piece, std::uint64_t lease_id, PieceDestination destination);

    PieceIndex piece() const { return piece_; }
    std::uint64_t lease_id() const { return lease_id_; }
    std::uint32_t size() const { return size_; }
    std::uint32_t block_count() const { return block_count_; }
    std::uint32_t blocks_unrequested() const { return unrequested_; }
    std::uint32_t blocks_requested() const { return requested_; }
    bool complete() const { return received_ == block_count_; }

    // Picks the next block nobody asked for yet and marks it requested at `now`.
    std::optional<BlockRequest> request_next(Clock::time_point now);
    // Copies a block in if we asked for it. `latency` is set for accepted blocks: the time
    // since we asked, or Clock::duration::max() when we had asked for it before (a choke or
    // a reject voided that request): its bytes may answer the first request, so the time
    // since the second says nothing of the round trip.
    BlockResult add_block(BlockOffset offset, std::span<const std::uint8_t> data,
                          Clock::time_point now, Clock::duration& latency);
    // The peer choked us: our requests are void (BEP 3 without the fast extension) and the
    // blocks go back to be asked for again. Returns how many were voided.
    std::uint32_t void_requests();
    // One request of ours was rejected (BEP 6): that block goes back to be asked for again.
    // False when it is not one we have outstanding.
    bool unrequest(BlockOffset offset, BlockLength length);
    // The outstanding requests, e.g. to cancel them.
    std::vector<BlockRequest> requested_blocks() const;

    // Endgame inside one worker: when two of its peers hold leases of the same piece, the
    // later one asks for blocks from the end, and each copies in what the other receives
    // (absorb), so the two meet in the middle instead of each fetching the whole piece: the
    // last pieces of a swarm of slow peers take half the time (16 KiB blocks, not whole
    // pieces, are then the unit of work). A third asks from the middle of what is still
    // missing outward: once the other two pipelines cover the piece, those are the blocks
    // they get to last, and it races them for those (the loser's request is cancelled).
    enum class Order : std::uint8_t { from_start, from_end, from_middle };
    void ask_in(Order order) { order_ = order; }
    void mark_shared() { shared_ = true; }
    bool shared() const { return shared_; }
    // Copies in a block that `from` sent for another lease of this piece, unless this one
    // has it already; a block we had asked for is no longer awaited (the caller cancels it).
    Absorbed absorb(BlockOffset offset, std::span<const std::uint8_t> data, const std::string& from);
    // Calls `f(offset, bytes)` for every block received so far.
    template <class F>
    void for_each_received(F&& f) {
        if (received_ == 0) return;
        const auto all = destination_.bytes();
        for (std::uint32_t block = 0; block < block_count_; ++block) {
            if (blocks()[block].state != BlockState::received) continue;
            const std::uint32_t offset = block * kBlockSize;
            f(BlockOffset{offset}, std::span<const std::uint8_t>(all.subspan(offset, block_length(block))));
        }
    }
    // The other peers whose blocks went into this piece (absorbed), for the verifier's
    // verdict: a bad piece then proves only that one of its contributors lied.
    std::vector<std::string> take_helpers() { return std::move(helpers_); }

    // The finished piece's buffer when it owned one (empty for borrowed memory, where the
    // bytes already are); the assembly is spent afterwards.
    PieceBuffer take_buffer() { return destination_.take_owned(); }

private:
    enum class BlockState : std::uint8_t { needed, requested, received };
    struct Block {
        Clock::time_point requested_at{};
        BlockState state = BlockState::needed;
        bool asked_before = false;  // a request for it was voided
    };
    // Up to 64 KiB pieces: with small pieces a worker assembles thousands per second, and two
    // allocations each were a measurable part of its cost.
    static constexpr std::uint32_t kInlineBlocks = 4;

    std::uint32_t block_length(std::uint32_t block) const;
    // The needed block nearest the middle of the span not yet received (Order::from_middle).
    std::optional<std::uint32_t> middle_needed_block() const;
    // Computed on each call rather than stored: a view into `inline_blocks_` must survive moves.
    Block* blocks() { return more_blocks_ ? more_blocks_.get() : inline_blocks_.data(); }
    const Block* blocks() const { return more_blocks_ ? more_blocks_.get() : inline_blocks_.data(); }

    PieceIndex piece_;
    std::uint64_t lease_id_;
    PieceDestination destination_;
    std::uint32_t size_;
    std::uint32_t block_count_;
    std::array<Block, kInlineBlocks> inline_blocks_{};
    std::unique_ptr<Block[]> more_blocks_;  // pieces of more than kInlineBlocks blocks
    std::uint32_t cursor_ = 0;  // no needed block before this one
    std::uint32_t back_ = 0;    // asking from the end: no needed block from this one on
    Order order_ = Order::from_start;
    bool shared_ = false;
    std::vector<std::string> helpers_;
    std::uint32_t unrequested_ = 0;
    std::uint32_t requested_ = 0;
    std::uint32_t received_ = 0;
};

}  // namespace pw::peer_worker
