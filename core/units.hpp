#pragma once
// Strong types for the quantities that are easy to mix up: a piece index is not a byte
// count, and an offset inside a piece is not an offset inside the torrent.
#include <compare>
#include <cstdint>
#include <functional>

namespace pw {

template <class Tag, class Rep>
struct Strong {
    using rep = Rep;
    Rep value{};

    constexpr Strong() = default;
    constexpr explicit Strong(Rep v) : value(v) {}
    constexpr Rep get() const { return value; }
    friend constexpr auto operator<=>(const Strong&, const Strong&) = default;
};

using PieceIndex = Strong<struct PieceIndexTag, std::uint32_t>;
// Offset of a block inside its piece, in bytes.
using BlockOffset = Strong<struct BlockOffsetTag, std::uint32_t>;
// Length of a block (at most 16 KiB on the wire) or of a piece.
using BlockLength = Strong<struct BlockLengthTag, std::uint32_t>;
using PieceLength = Strong<struct PieceLengthTag, std::uint32_t>;
// Offset inside the whole torrent (the concatenation of its files), in bytes.
using TorrentOffset = Strong<struct TorrentOffsetTag, std::uint64_t>;
// A torrent of the session, as the orchestrator numbers them (never 0): every message between
// stages about a torrent names it by this, and so does the RPC.
using TorrentId = Strong<struct TorrentIdTag, std::uint32_t>;

}  // namespace pw

template <class Tag, class Rep>
struct std::hash<pw::Strong<Tag, Rep>> {
    std::size_t operator()(const pw::Strong<Tag, Rep>& s) const noexcept {
        return std::hash<Rep>{}(s.value);
    }
};
