#pragma once
// Piece and block geometry, in one place: 16 KiB blocks, a short last piece, a short last
// block. Everything that splits a torrent into pieces or a piece into blocks asks this.
#include <cstdint>

#include "core/units.hpp"

namespace pw {

inline constexpr std::uint32_t kBlockSize = 16 * 1024;

class PieceGeometry {
public:
    PieceGeometry() = default;
    // total_size > 0 and piece_length > 0 are the caller's (metainfo's) to guarantee.
    PieceGeometry(std::uint64_t total_size, std::uint32_t piece_length);

    std::uint64_t total_size() const { return total_size_; }
    std::uint32_t piece_length() const { return piece_length_; }
    std::uint32_t piece_count() const { return piece_count_; }
    bool contains(PieceIndex index) const { return index.get() < piece_count_; }
    // Size of one piece (the last may be short). index must be in range.
    std::uint32_t piece_size(PieceIndex index) const;
    std::uint64_t piece_offset(PieceIndex index) const {
        return std::uint64_t{index.get()} * piece_length_;
    }
    std::uint32_t block_count(PieceIndex index) const;
    // Size of the block starting at `offset` (the last in a piece may be short).
    std::uint32_t block_size(PieceIndex index, BlockOffset offset) const;
    // Whether (index, offset, length) names a block a peer may request or send: index in range,
    // length in 1..16 KiB, and offset + length inside the piece. Safe on any remote input.
    bool valid_block(PieceIndex index, BlockOffset offset, BlockLength length) const;
    // Bytes of a bitfield for this many pieces.
    std::uint32_t bitfield_bytes() const { return (piece_count_ + 7) / 8; }

private:
    std::uint64_t total_size_ = 0;
    std::uint32_t piece_length_ = 0;
    std::uint32_t piece_count_ = 0;
};

}  // namespace pw
