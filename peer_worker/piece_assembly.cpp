#include "peer_worker/piece_assembly.hpp"

#include <algorithm>
#include <cstring>

#include "core/geometry.hpp"
#include "peer_worker/piece_memory.hpp"

namespace pw::peer_worker {

std::span<std::uint8_t> PieceDestination::bytes() {
    if (owns()) return owned_;
    if (bound_.empty() && binder_ != nullptr) bound_ = binder_->bind(lease_id_, bound_empty_);
    return bound_;
}

std::uint32_t PieceDestination::chunk_size() const {
    constexpr std::uint32_t kChunks = 16;
    constexpr std::uint32_t kMinChunk = 64 * 1024;
    return std::max(kMinChunk, (size() + kChunks - 1) / kChunks);
}

std::span<std::uint8_t> PieceDestination::range_to_write(std::uint32_t offset, std::uint32_t length) {
    const auto all = bytes();
    const auto range = all.subspan(offset, length);
    if (!bound_empty_ || length == 0) return range;
    const std::uint32_t chunk = chunk_size();
    for (std::uint32_t index = offset / chunk; index <= (offset + length - 1) / chunk; ++index) {
        const auto bit = static_cast<std::uint16_t>(1u << index);
        if ((chunks_in_ & bit) != 0) continue;
        chunks_in_ = static_cast<std::uint16_t>(chunks_in_ | bit);
        const std::uint32_t start = index * chunk;
        bus::fault_in_for_write(all.subspan(start, std::min(chunk, size() - start)));
    }
    return range;
}

PieceAssembly::PieceAssembly(PieceIndex piece, std::uint64_t lease_id,
                             PieceDestination destination)
    : piece_(piece), lease_id_(lease_id), destination_(std::move(destination)),
      size_(destination_.size()), block_count_((size_ + kBlockSize - 1) / kBlockSize),
      more_blocks_(block_count_ > kInlineBlocks ? std::make_unique<Block[]>(block_count_) : nullptr),
      back_(block_count_), unrequested_(block_count_) {}

std::uint32_t PieceAssembly::block_length(std::uint32_t block) const {
    const std::uint32_t offset = block * kBlockSize;
    return std::min(kBlockSize, size() - offset);
}

std::optional<BlockRequest> PieceAssembly::request_next(Clock::time_point now) {
    Block* const all = blocks();
    std::uint32_t block = 0;
    if (order_ == Order::from_middle) {
        const auto found = middle_needed_block();
        if (!found) return std::nullopt;
        block = *found;
    } else if (order_ == Order::from_end) {
        while (back_ > 0 && all[back_ - 1].state != BlockState::needed) --back_;
        if (back_ == 0) return std::nullopt;
        block = --back_;
    } else {
        while (cursor_ < block_count_ && all[cursor_].state != BlockState::needed) ++cursor_;
        if (cursor_ == block_count_) return std::nullopt;
        block = cursor_++;
    }
    all[block] = Block{now, BlockState::requested, all[block].asked_before};
    --unrequested_;
    ++requested_;
    return BlockRequest{BlockOffset{block * kBlockSize}, BlockLength{block_length(block)}};
}

std::optional<std::uint32_t> PieceAssembly::middle_needed_block() const {
    // Linear in the piece's blocks, and only for a third holder at the very end.
    const Block* const all = blocks();
    std::uint32_t low = 0;
    std::uint32_t high = block_count_;
    while (low < high && all[low].state == BlockState::received) ++low;
    while (high > low && all[high - 1].state == BlockState::received) --high;
    const std::uint32_t middle = low + (high - low) / 2;
    // middle, middle - 1, middle + 1, middle - 2, ...: outward, staying within [low, high).
    for (std::uint32_t step = 0; step <= high - low; ++step) {
        if (middle + step < high && all[middle + step].state == BlockState::needed) return middle + step;
        if (middle >= low + step + 1 && all[middle - step - 1].state == BlockState::needed) {
            return middle - step - 1;
        }
    }
    return std::nullopt;
}

PieceAssembly::BlockResult PieceAssembly::add_block(BlockOffset offset,
                                                    std::span<const std::uint8_t> data,
                                                    Clock::time_point now,
                                                    Clock::duration& latency) {
    if (offset.get() % kBlockSize != 0 || offset.get() >= size()) return BlockResult::wrong_shape;
    const std::uint32_t block = offset.get() / kBlockSize;
    if (data.size() != block_length(block)) return BlockResult::wrong_shape;
    Block& state = blocks()[block];
    switch (state.state) {
        case BlockState::received: return BlockResult::duplicate;
        case BlockState::needed: return BlockResult::not_requested;
        case BlockState::requested: break;
    }
    std::memcpy(destination_.range_to_write(offset.get(), block_length(block)).data(), data.data(),
                data.size());
    state.state = BlockState::received;
    latency = state.asked_before ? Clock::duration::max() : now - state.requested_at;
    --requested_;
    ++received_;
    return BlockResult::accepted;
}

std::uint32_t PieceAssembly::void_requests() {
    const std::uint32_t voided = requested_;
    Block* const all = blocks();
    for (std::uint32_t block = 0; block < block_count_; ++block) {
        if (all[block].state == BlockState::requested) all[block] = Block{{}, BlockState::needed, true};
    }
    unrequested_ += voided;
    requested_ = 0;
    cursor_ = 0;
    back_ = block_count_;
    return voided;
}

bool PieceAssembly::unrequest(BlockOffset offset, BlockLength length) {
    if (offset.get() % kBlockSize != 0 || offset.get() >= size()) return false;
    const std::uint32_t block = offset.get() / kBlockSize;
    if (length.get() != block_length(block)) return false;
    Block& state = blocks()[block];
    if (state.state != BlockState::requested) return false;
    state = Block{{}, BlockState::needed, true};
    --requested_;
    ++unrequested_;
    cursor_ = std::min(cursor_, block);
    back_ = std::max(back_, block + 1);
    return true;
}

PieceAssembly::Absorbed PieceAssembly::absorb(BlockOffset offset, std::span<const std::uint8_t> data,
                                              const std::string& from) {
    if (offset.get() % kBlockSize != 0 || offset.get() >= size()) return Absorbed::no;
    const std::uint32_t block = offset.get() / kBlockSize;
    if (data.size() != block_length(block)) return Absorbed::no;
    Block& state = blocks()[block];
    if (state.state == BlockState::received) return Absorbed::no;
    std::memcpy(destination_.range_to_write(offset.get(), block_length(block)).data(), data.data(),
                data.size());
    const bool was_requested = state.state == BlockState::requested;
    state.state = BlockState::received;
    if (was_requested) {
        --requested_;
    } else {
        --unrequested_;
    }
    ++received_;
    if (std::find(helpers_.begin(), helpers_.end(), from) == helpers_.end()) helpers_.push_back(from);
    return was_requested ? Absorbed::was_requested : Absorbed::was_needed;
}

std::vector<BlockRequest> PieceAssembly::requested_blocks() const {
    std::vector<BlockRequest> out;
    const Block* const all = blocks();
    for (std::uint32_t block = 0; block < block_count_; ++block) {
        if (all[block].state == BlockState::requested) {
            out.push_back({BlockOffset{block * kBlockSize}, BlockLength{block_length(block)}});
        }
    }
    return out;
}

}  // namespace pw::peer_worker
