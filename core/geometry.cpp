#include "core/geometry.hpp"

#include <algorithm>

namespace pw {

PieceGeometry::PieceGeometry(std::uint64_t total_size, std::uint32_t piece_length)
    : total_size_(total_size), piece_length_(piece_length) {
    // Metainfo bounds the piece count (the pieces string must hold 20 bytes per piece), so
    // it fits in 32 bits; the division is only guarded against a zero piece length, which
    // would otherwise be undefined behaviour rather than an empty torrent.
    if (piece_length_ != 0) {
        const std::uint64_t count =
            total_size_ / piece_length_ + (total_size_ % piece_length_ != 0 ? 1 : 0);
        piece_count_ = static_cast<std::uint32_t>(
            std::min<std::uint64_t>(count, std::uint64_t{UINT32_MAX}));
    }
}

std::uint32_t PieceGeometry::piece_size(PieceIndex index) const {
    if (!contains(index)) return 0;
    const std::uint64_t begin = piece_offset(index);
    return static_cast<std::uint32_t>(
        std::min<std::uint64_t>(piece_length_, total_size_ - begin));
}

std::uint32_t PieceGeometry::block_count(PieceIndex index) const {
    return (piece_size(index) + kBlockSize - 1) / kBlockSize;
}

std::uint32_t PieceGeometry::block_size(PieceIndex index, BlockOffset offset) const {
    const std::uint32_t size = piece_size(index);
    if (offset.get() >= size) return 0;
    return std::min(kBlockSize, size - offset.get());
}

bool PieceGeometry::valid_block(PieceIndex index, BlockOffset offset, BlockLength length) const {
    if (!contains(index)) return false;
    if (length.get() == 0 || length.get() > kBlockSize) return false;
    // 64-bit sum: a hostile offset near 2^32 must not wrap around into the piece.
    const std::uint64_t end = std::uint64_t{offset.get()} + length.get();
    return end <= piece_size(index);
}

}  // namespace pw
