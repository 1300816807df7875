#pragma once
// Peer wire protocol (BEP 3) codec: pure functions and an incremental stream parser. No I/O.
// Reserved handshake bits are kept so BEP 6 (fast) and BEP 10 (extensions) can be added.
#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "core/geometry.hpp"
#include "core/result.hpp"
#include "core/sha1.hpp"
#include "core/units.hpp"

namespace pw::wire {

inline constexpr std::size_t kHandshakeSize = 68;
// Largest message we accept: a 16 KiB block plus its header, or a bitfield for a huge torrent.
inline constexpr std::uint32_t kDefaultMaxMessage = (1u << 20) + 13;

using PeerId = std::array<std::uint8_t, 20>;

struct Handshake {
    std::array<std::uint8_t, 8> reserved{};
    Sha1Digest info_hash{};
    PeerId peer_id{};

    bool supports_extensions() const { return (reserved[5] & 0x10) != 0; }  // BEP 10
    bool supports_fast() const { return (reserved[7] & 0x04) != 0; }        // BEP 6
    bool supports_dht() const { return (reserved[7] & 0x01) != 0; }         // BEP 5
};

std::array<std::uint8_t, kHandshakeSize> encode_handshake(const Handshake& handshake);
// Checks the protocol string; the caller compares info-hash and peer id.
Result<Handshake> decode_handshake(std::span<const std::uint8_t, kHandshakeSize> bytes);

enum class MessageId : std::uint8_t {
    choke = 0,
    unchoke = 1,
    interested = 2,
    not_interested = 3,
    have = 4,
    bitfield = 5,
    request = 6,
    piece = 7,
    cancel = 8,
    port = 9,
};

struct KeepAlive {};
struct Choke {};
struct Unchoke {};
struct Interested {};
struct NotInterested {};
struct Have { PieceIndex index; };
// Views into the parser's buffer: valid until the parser is next touched.
struct Bitfield { std::span<const std::uint8_t> bits; };
struct Request { PieceIndex index; BlockOffset offset; BlockLength length; };
struct Piece { PieceIndex index; BlockOffset offset; std::span<const std::uint8_t> data; };
struct Cancel { PieceIndex index; BlockOffset offset; BlockLength length; };
struct Port { std::uint16_t port; };

using Message = std::variant<KeepAlive, Choke, Unchoke, Interested, NotInterested, Have,
                             Bitfield, Request, Piece, Cancel, Port>;

// Appends the encoding of `message` to `out`.
void encode(const Message& message, std::vector<std::uint8_t>& out);
// The 13-byte prefix of a piece message carrying `length` bytes of block data (the data
// itself is sent from where it lies, without copying it into a message buffer).
std::array<std::uint8_t, 13> encode_piece_header(PieceIndex index, BlockOffset offset,
                                                 std::uint32_t length);

struct ParserLimits {
    std::uint32_t max_message = kDefaultMaxMessage;
    // When set, have/bitfield/request/piece/cancel are checked against it.
    std::optional<PieceGeometry> geometry;
};

// Incremental parser over the byte stream that follows the handshake. Any protocol violation
// (length prefix over the cap, unknown id, wrong size for the id, out-of-range index, a
// bitfield with spare bits set, a block over 16 KiB or outside its piece) is an Error: the
// caller drops the peer. Its buffer never grows beyond max_message plus one read.
class StreamParser {
public:
    explicit StreamParser(ParserLimits limits);

    // Room for up to `size` more bytes, to read the socket straight into; then commit(n).
    std::span<std::uint8_t> prepare(std::size_t size);
    void commit(std::size_t size);
    void append(std::span<const std::uint8_t> bytes);

    // The next complete message, nullopt when more bytes are needed. Views in the returned
    // message stay valid until the next call to any member.
    Result<std::optional<Message>> next();
    std::size_t buffered() const { return end_ - begin_; }

private:
    void compact();

    ParserLimits limits_;
    std::vector<std::uint8_t> buffer_;
    std::size_t begin_ = 0;
    std::size_t end_ = 0;
    // Bytes consumed from the stream so far: errors say where in the stream they struck.
    std::uint64_t consumed_ = 0;
};

// True when a bitfield of `bits.size()` bytes is valid for `piece_count` pieces: the right
// length, and the spare bits at the end all zero.
bool valid_bitfield(std::span<const std::uint8_t> bits, std::uint32_t piece_count);

}  // namespace pw::wire
