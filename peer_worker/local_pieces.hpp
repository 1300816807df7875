#pragma once
// The pieces of one torrent that we may announce and serve: verified and written, as the
// orchestrator says (PiecesAvailable). Kept in the wire's bitfield layout, so the bitfield a
// new peer gets is a copy of it. Nothing else makes a piece ours: a piece downloaded here is
// not, until the writer has it on disk and the orchestrator says so.
#include <cstdint>
#include <span>
#include <vector>

#include "core/units.hpp"

namespace pw::peer_worker {

class LocalPieces {
public:
    explicit LocalPieces(std::uint32_t piece_count = 0);

    std::uint32_t piece_count() const { return piece_count_; }
    std::uint32_t count() const { return count_; }
    bool none() const { return count_ == 0; }
    bool all() const { return piece_count_ > 0 && count_ == piece_count_; }
    bool has(PieceIndex piece) const {
        return piece.get() < piece_count_ && (bits_[piece.get() / 8] & (0x80u >> (piece.get() % 8))) != 0;
    }
    // The wire's bitfield: bit 7 of byte 0 is piece 0; spare bits zero.
    std::span<const std::uint8_t> bitfield() const { return bits_; }

    // Adds one piece; false when it was ours already or is out of range.
    bool add(PieceIndex piece);
    // The whole set at once: every piece, none, or a bitfield (false when it is not a valid
    // bitfield of this many pieces: nothing changes then).
    void set_all();
    void set_none();
    bool set_bitfield(std::span<const std::uint8_t> bits);

private:
    std::uint32_t piece_count_;
    std::uint32_t count_ = 0;
    std::vector<std::uint8_t> bits_;
};

}  // namespace pw::peer_worker
