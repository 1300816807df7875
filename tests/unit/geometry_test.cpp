#include "core/geometry.hpp"

#include <cstdint>

#include <gtest/gtest.h>

namespace pw {
namespace {

constexpr std::uint32_t kPiece = 64 * 1024;

TEST(Geometry, ExactMultipleHasNoShortPiece) {
    const PieceGeometry g(4 * std::uint64_t{kPiece}, kPiece);
    EXPECT_EQ(g.piece_count(), 4u);
    EXPECT_EQ(g.piece_size(PieceIndex{3}), kPiece);
    EXPECT_EQ(g.block_count(PieceIndex{3}), 4u);
    EXPECT_EQ(g.bitfield_bytes(), 1u);
    EXPECT_EQ(g.piece_offset(PieceIndex{3}), 3u * kPiece);
}

TEST(Geometry, ShortLastPieceAndShortLastBlock) {
    // Three full pieces, then 20000 bytes: one full block and a 3616-byte block.
    const std::uint64_t total = 3 * std::uint64_t{kPiece} + 20000;
    const PieceGeometry g(total, kPiece);
    EXPECT_EQ(g.piece_count(), 4u);
    EXPECT_EQ(g.piece_size(PieceIndex{2}), kPiece);
    EXPECT_EQ(g.piece_size(PieceIndex{3}), 20000u);
    EXPECT_EQ(g.block_count(PieceIndex{3}), 2u);
    EXPECT_EQ(g.block_size(PieceIndex{3}, BlockOffset{0}), kBlockSize);
    EXPECT_EQ(g.block_size(PieceIndex{3}, BlockOffset{kBlockSize}), 20000u - kBlockSize);
    EXPECT_EQ(g.block_size(PieceIndex{3}, BlockOffset{20000}), 0u);
    EXPECT_TRUE(g.valid_block(PieceIndex{3}, BlockOffset{kBlockSize}, BlockLength{3616}));
    EXPECT_FALSE(g.valid_block(PieceIndex{3}, BlockOffset{kBlockSize}, BlockLength{3617}));
}

TEST(Geometry, PieceSmallerThanABlock) {
    const PieceGeometry g(10000, 4096);
    EXPECT_EQ(g.piece_count(), 3u);
    EXPECT_EQ(g.block_count(PieceIndex{0}), 1u);
    EXPECT_EQ(g.block_size(PieceIndex{0}, BlockOffset{0}), 4096u);
    EXPECT_EQ(g.piece_size(PieceIndex{2}), 10000u - 8192u);
    EXPECT_EQ(g.block_size(PieceIndex{2}, BlockOffset{0}), 10000u - 8192u);
}

TEST(Geometry, SingleByteTorrent) {
    const PieceGeometry g(1, kPiece);
    EXPECT_EQ(g.piece_count(), 1u);
    EXPECT_EQ(g.piece_size(PieceIndex{0}), 1u);
    EXPECT_EQ(g.block_count(PieceIndex{0}), 1u);
    EXPECT_TRUE(g.valid_block(PieceIndex{0}, BlockOffset{0}, BlockLength{1}));
    EXPECT_FALSE(g.valid_block(PieceIndex{0}, BlockOffset{0}, BlockLength{2}));
}

TEST(Geometry, BlocksOfAFullPieceTileIt) {
    const PieceGeometry g(10 * std::uint64_t{kPiece} - 1, kPiece);
    for (std::uint32_t i = 0; i < g.piece_count(); ++i) {
        std::uint64_t covered = 0;
        for (std::uint32_t b = 0; b < g.block_count(PieceIndex{i}); ++b) {
            const BlockOffset offset{b * kBlockSize};
            const std::uint32_t size = g.block_size(PieceIndex{i}, offset);
            EXPECT_TRUE(g.valid_block(PieceIndex{i}, offset, BlockLength{size}));
            covered += size;
        }
        EXPECT_EQ(covered, g.piece_size(PieceIndex{i}));
    }
}

TEST(Geometry, ValidBlockRejectsHostileInput) {
    const PieceGeometry g(4 * std::uint64_t{kPiece}, kPiece);
    EXPECT_TRUE(g.valid_block(PieceIndex{0}, BlockOffset{0}, BlockLength{kBlockSize}));
    EXPECT_TRUE(g.valid_block(PieceIndex{0}, BlockOffset{kPiece - 1}, BlockLength{1}));
    // Blocks need not be aligned: any in-range slice up to 16 KiB is legal.
    EXPECT_TRUE(g.valid_block(PieceIndex{1}, BlockOffset{1}, BlockLength{100}));
    EXPECT_FALSE(g.valid_block(PieceIndex{4}, BlockOffset{0}, BlockLength{1}));
    EXPECT_FALSE(g.valid_block(PieceIndex{UINT32_MAX}, BlockOffset{0}, BlockLength{1}));
    EXPECT_FALSE(g.valid_block(PieceIndex{0}, BlockOffset{0}, BlockLength{0}));
    EXPECT_FALSE(g.valid_block(PieceIndex{0}, BlockOffset{0}, BlockLength{kBlockSize + 1}));
    EXPECT_FALSE(g.valid_block(PieceIndex{0}, BlockOffset{kPiece}, BlockLength{1}));
    // offset + length wraps in 32 bits; it must not look like a small in-range end.
    EXPECT_FALSE(g.valid_block(PieceIndex{0}, BlockOffset{UINT32_MAX}, BlockLength{1}));
    EXPECT_FALSE(
        g.valid_block(PieceIndex{0}, BlockOffset{UINT32_MAX - 100}, BlockLength{kBlockSize}));
}

TEST(Geometry, LargeTorrentOffsetsUse64Bits) {
    // 10 GiB in 4 MiB pieces.
    const std::uint64_t total = 10ull << 30;
    const std::uint32_t piece = 4u << 20;
    const PieceGeometry g(total, piece);
    EXPECT_EQ(g.piece_count(), 2560u);
    EXPECT_EQ(g.piece_offset(PieceIndex{2559}), total - piece);
    EXPECT_EQ(g.piece_size(PieceIndex{2559}), piece);
    EXPECT_EQ(g.bitfield_bytes(), 320u);
}

TEST(Geometry, BitfieldBytesRoundsUp) {
    EXPECT_EQ(PieceGeometry(9 * 100, 100).bitfield_bytes(), 2u);
    EXPECT_EQ(PieceGeometry(8 * 100, 100).bitfield_bytes(), 1u);
    EXPECT_EQ(PieceGeometry(8 * 100 + 1, 100).bitfield_bytes(), 2u);
}

TEST(Geometry, OutOfRangeQueriesAreHarmless) {
    const PieceGeometry g(1000, 100);
    EXPECT_FALSE(g.contains(PieceIndex{10}));
    EXPECT_EQ(g.piece_size(PieceIndex{10}), 0u);
    EXPECT_EQ(g.block_count(PieceIndex{10}), 0u);
    EXPECT_EQ(g.block_size(PieceIndex{10}, BlockOffset{0}), 0u);
}

}  // namespace
}  // namespace pw
