// Input layout: 8 header bytes choose the parser limits (geometry or none, max message, the
// fast extension on or off, requests checked by the parser or left to the session),
// then chunks, each a size byte followed by that many stream bytes, so the fuzzer explores
// how messages split across reads. Every message that parses must survive encode -> parse
// unchanged, and the buffer must stay within one message plus one read.
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "core/wire.hpp"

namespace {

std::uint32_t read_u32(const std::uint8_t* p) {
    return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) |
           (std::uint32_t{p[2]} << 8) | std::uint32_t{p[3]};
}

pw::wire::ParserLimits limits_from(const std::uint8_t* header) {
    pw::wire::ParserLimits limits;
    const std::uint8_t flags = header[0];
    if ((flags & 0x01) != 0) {
        // Piece lengths from 1 byte to 4 MiB, odd ones included, and totals up to ~4 GiB.
        const std::uint32_t piece_length =
            (flags & 0x02) != 0 ? (1u << (header[1] % 23)) : 1u + header[1] * 257u;
        const std::uint64_t total = 1 + std::uint64_t{read_u32(header + 2)};
        limits.geometry = pw::PieceGeometry(total, piece_length);
    }
    if ((flags & 0x04) != 0) limits.max_message = 1u + header[6] * 64u + header[7];
    limits.fast = (flags & 0x08) != 0;
    limits.check_requests = (flags & 0x10) == 0;
    return limits;
}

void round_trip(const pw::wire::Message& message, const pw::wire::ParserLimits& limits) {
    std::vector<std::uint8_t> encoded;
    pw::wire::encode(message, encoded);
    pw::wire::StreamParser reparser(limits);
    reparser.append(encoded);
    auto again = reparser.next();
    if (!again.ok() || !again.value() || again.value()->index() != message.index() ||
        reparser.buffered() != 0) {
        __builtin_trap();
    }
    std::vector<std::uint8_t> reencoded;
    pw::wire::encode(*again.value(), reencoded);
    if (reencoded != encoded) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    constexpr std::size_t kHeader = 8;
    if (size >= pw::wire::kHandshakeSize) {
        std::span<const std::uint8_t, pw::wire::kHandshakeSize> handshake(
            data, pw::wire::kHandshakeSize);
        auto decoded = pw::wire::decode_handshake(handshake);
        if (decoded.ok()) {
            const auto encoded = pw::wire::encode_handshake(decoded.value());
            if (!std::equal(encoded.begin(), encoded.end(), data)) __builtin_trap();
        }
    }
    if (size < kHeader) return 0;
    const pw::wire::ParserLimits limits = limits_from(data);
    pw::wire::StreamParser parser(limits);

    std::size_t at = kHeader;
    while (at < size) {
        const std::size_t chunk = std::min<std::size_t>(1 + data[at], size - at - 1);
        ++at;
        auto room = parser.prepare(chunk);
        if (room.size() != chunk) __builtin_trap();
        std::copy_n(data + at, chunk, room.begin());
        parser.commit(chunk);
        at += chunk;
        if (parser.buffered() > 4 + std::size_t{limits.max_message} + chunk) __builtin_trap();
        for (;;) {
            auto result = parser.next();
            if (!result.ok()) return 0;  // the peer would be dropped here
            if (!result.value()) break;
            round_trip(*result.value(), limits);
        }
    }
    return 0;
}
