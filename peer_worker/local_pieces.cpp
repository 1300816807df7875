#include "peer_worker/local_pieces.hpp"

#include <algorithm>
#include <bit>

#include "core/wire.hpp"

namespace pw::peer_worker {

LocalPieces::LocalPieces(std::uint32_t piece_count)
    : piece_count_(piece_count), bits_((std::uint64_t{piece_count} + 7) / 8, 0) {}

bool LocalPieces::add(PieceIndex piece) {
    if (piece.get() >= piece_count_ || has(piece)) return false;
    bits_[piece.get() / 8] = static_cast<std::uint8_t>(bits_[piece.get() / 8] | (0x80u >> (piece.get() % 8)));
    ++count_;
    return true;
}

void LocalPieces::set_all() {
    std::fill(bits_.begin(), bits_.end(), 0xFF);
    if (const unsigned spare = static_cast<unsigned>(bits_.size() * 8 - piece_count_); spare != 0) {
        bits_.back() = static_cast<std::uint8_t>(0xFFu << spare);
    }
    count_ = piece_count_;
}

void LocalPieces::set_none() {
    std::fill(bits_.begin(), bits_.end(), 0);
    count_ = 0;
}

bool LocalPieces::set_bitfield(std::span<const std::uint8_t> bits) {
    if (!wire::valid_bitfield(bits, piece_count_)) return false;
    std::copy(bits.begin(), bits.end(), bits_.begin());
    count_ = 0;
    for (const std::uint8_t byte : bits_) count_ += static_cast<std::uint32_t>(std::popcount(byte));
    return true;
}

}  // namespace pw::peer_worker
