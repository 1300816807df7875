#pragma once
// Peer wire protocol (BEP 3) codec with the fast extension (BEP 6) and the framing of the
// extension protocol (BEP 10, message id 20; what it carries is core/extension.hpp's): pure
// functions and an incremental stream parser. No I/O.
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
    void set_fast() { reserved[7] = static_cast<std::uint8_t>(reserved[7] | 0x04); }
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
    // BEP 6, only between peers that both set the fast bit.
    suggest_piece = 0x0D,
    have_all = 0x0E,
    have_none = 0x0F,
    reject_request = 0x10,
    allowed_fast = 0x11,
    // BEP 10, only between peers that both set the extension bit.
    extended = 20,
};

// An extended message's body is bounded apart from max_message: what it carries (BEP 9's
// 16 KiB pieces, a 64 KiB extended handshake, PEX) is small, and a peer must not make us
// buffer a megabyte of it.
inline constexpr std::uint32_t kMaxExtendedBody = 128 * 1024;

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
// BEP 6.
struct SuggestPiece { PieceIndex index; };
struct HaveAll {};
struct HaveNone {};
struct RejectRequest { PieceIndex index; BlockOffset offset; BlockLength length; };
struct AllowedFast { PieceIndex index; };
// BEP 10: the extended id and its payload (ext::decode_incoming reads it); a view into the
// parser's buffer.
struct Extended { std::span<const std::uint8_t> body; };

using Message = std::variant<KeepAlive, Choke, Unchoke, Interested, NotInterested, Have,
                             Bitfield, Request, Piece, Cancel, Port, SuggestPiece, HaveAll,
                             HaveNone, RejectRequest, AllowedFast, Extended>;

// Appends the encoding of `message` to `out`.
void encode(const Message& message, std::vector<std::uint8_t>& out);
// The 13-byte prefix of a piece message carrying `length` bytes of block data (the data
// itself is sent from where it lies, without copying it into a message buffer).
std::array<std::uint8_t, 13> encode_piece_header(PieceIndex index, BlockOffset offset,
                                                 std::uint32_t length);

struct ParserLimits {
    std::uint32_t max_message = kDefaultMaxMessage;
    // When set, have/bitfield/request/piece/cancel (and BEP 6's indices and rejects) are
    // checked against it.
    std::optional<PieceGeometry> geometry;
    // BEP 6 messages are accepted only when both sides set the fast bit; from any other peer
    // they are an error, like an unknown id.
    bool fast = false;
    // Extended messages (id 20) likewise, only when both sides set the BEP 10 bit.
    bool extended = false;
    // Request, cancel and reject blocks (length, and the geometry when set) are checked here.
    // False leaves them to the caller, who answers a bad request with reject_request rather
    // than a dropped connection, and ignores a reject that names no request of its own; their
    // size is still exact.
    bool check_requests = true;
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
    // Both sides set the fast bit (known once the handshakes are exchanged).
    void set_fast(bool on) { limits_.fast = on; }
    bool fast() const { return limits_.fast; }
    void set_extended(bool on) { limits_.extended = on; }
    // A torrent known by its info-hash alone learns its geometry later (BEP 9): from then on
    // indices and bitfields are checked against the new limits (fast and extended stay as
    // the handshakes made them).
    void set_limits(ParserLimits limits) {
        limits.fast = limits_.fast;
        limits.extended = limits_.extended;
        limits_ = std::move(limits);
    }

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

// BEP 6's allowed fast set: the `k` pieces (fewer when the torrent has fewer) a peer at IPv4
// address `ipv4` (host byte order) may request from us while choked, derived from its /24 and
// the info-hash, in the order BEP 6 generates them. The same address and torrent always get
// the same set, whichever client computes it.
std::vector<std::uint32_t> allowed_fast_set(std::uint32_t ipv4, const Sha1Digest& info_hash,
                                            std::uint32_t piece_count, std::uint32_t k);

}  // namespace pw::wire
