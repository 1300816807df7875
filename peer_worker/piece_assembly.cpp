#include "peer_worker/piece_assembly.hpp"

#include <algorithm>
#include <cstring>

#include "core/geometry.hpp"

namespace pw::peer_worker {

PieceAssembly::PieceAssembly(PieceIndex piece, std::uint64_t lease_id,
                             PieceDestination destination)
    : piece_(piece), lease_id_(lease_id), destination_(std::move(destination)),
      size_(destination_.size()),
      state_((size_ + kBlockSize - 1) / kBlockSize, BlockState::needed),
      requested_at_(state_.size()), unrequested_(static_cast<std::uint32_t>(state_.size())) {}

std::uint32_t PieceAssembly::block_length(std::uint32_t block) const {
    const std::uint32_t offset = block * kBlockSize;
    return std::min(kBlockSize, size() - offset);
}

std::optional<BlockRequest> PieceAssembly::request_next(Clock::time_point now) {
    while (cursor_ < state_.size() && state_[cursor_] != BlockState::needed) ++cursor_;
    if (cursor_ == state_.size()) return std::nullopt;
    const std::uint32_t block = cursor_++;
    state_[block] = BlockState::requested;
    requested_at_[block] = now;
    --unrequested_;
    ++requested_;
    return BlockRequest{BlockOffset{block * kBlockSize}, BlockLength{block_length(block)}};
}

PieceAssembly::BlockResult PieceAssembly::add_block(BlockOffset offset,
                                                    std::span<const std::uint8_t> data,
                                                    Clock::time_point now,
                                                    Clock::duration& latency) {
    if (offset.get() % kBlockSize != 0 || offset.get() >= size()) return BlockResult::wrong_shape;
    const std::uint32_t block = offset.get() / kBlockSize;
    if (data.size() != block_length(block)) return BlockResult::wrong_shape;
    switch (state_[block]) {
        case BlockState::received: return BlockResult::duplicate;
        case BlockState::needed: return BlockResult::not_requested;
        case BlockState::requested: break;
    }
    std::memcpy(destination_.bytes().data() + offset.get(), data.data(), data.size());
    state_[block] = BlockState::received;
    latency = now - requested_at_[block];
    --requested_;
    ++received_;
    return BlockResult::accepted;
}

std::uint32_t PieceAssembly::void_requests() {
    const std::uint32_t voided = requested_;
    for (auto& state : state_) {
        if (state == BlockState::requested) state = BlockState::needed;
    }
    unrequested_ += voided;
    requested_ = 0;
    cursor_ = 0;
    return voided;
}

std::vector<BlockRequest> PieceAssembly::requested_blocks() const {
    std::vector<BlockRequest> out;
    for (std::uint32_t block = 0; block < state_.size(); ++block) {
        if (state_[block] == BlockState::requested) {
            out.push_back({BlockOffset{block * kBlockSize}, BlockLength{block_length(block)}});
        }
    }
    return out;
}

}  // namespace pw::peer_worker
