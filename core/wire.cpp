#include "core/wire.hpp"

#include <algorithm>
#include <cstring>
#include <string_view>
#include <type_traits>

namespace pw::wire {
namespace {

constexpr std::string_view kProtocol = "BitTorrent protocol";
constexpr std::size_t kPrefixSize = 4;

std::uint32_t read_u32(const std::uint8_t* p) {
    return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) |
           (std::uint32_t{p[2]} << 8) | std::uint32_t{p[3]};
}

std::uint16_t read_u16(const std::uint8_t* p) {
    return static_cast<std::uint16_t>((p[0] << 8) | p[1]);
}

void put_u32(std::vector<std::uint8_t>& out, std::uint32_t v) {
    out.push_back(static_cast<std::uint8_t>(v >> 24));
    out.push_back(static_cast<std::uint8_t>(v >> 16));
    out.push_back(static_cast<std::uint8_t>(v >> 8));
    out.push_back(static_cast<std::uint8_t>(v));
}

void put_u32(std::uint8_t* p, std::uint32_t v) {
    p[0] = static_cast<std::uint8_t>(v >> 24);
    p[1] = static_cast<std::uint8_t>(v >> 16);
    p[2] = static_cast<std::uint8_t>(v >> 8);
    p[3] = static_cast<std::uint8_t>(v);
}

void put_header(std::vector<std::uint8_t>& out, std::uint32_t payload, MessageId id) {
    put_u32(out, payload + 1);
    out.push_back(static_cast<std::uint8_t>(id));
}

void put_block_ref(std::vector<std::uint8_t>& out, MessageId id, PieceIndex index,
                   BlockOffset offset, BlockLength length) {
    put_header(out, 12, id);
    put_u32(out, index.get());
    put_u32(out, offset.get());
    put_u32(out, length.get());
}

const char* name_of(MessageId id) {
    switch (id) {
        case MessageId::choke: return "choke";
        case MessageId::unchoke: return "unchoke";
        case MessageId::interested: return "interested";
        case MessageId::not_interested: return "not interested";
        case MessageId::have: return "have";
        case MessageId::bitfield: return "bitfield";
        case MessageId::request: return "request";
        case MessageId::piece: return "piece";
        case MessageId::cancel: return "cancel";
        case MessageId::port: return "port";
        case MessageId::suggest_piece: return "suggest piece";
        case MessageId::have_all: return "have all";
        case MessageId::have_none: return "have none";
        case MessageId::reject_request: return "reject request";
        case MessageId::allowed_fast: return "allowed fast";
        case MessageId::extended: return "extended";
    }
    return "unknown";
}

bool is_fast_id(std::uint8_t id) {
    return id >= static_cast<std::uint8_t>(MessageId::suggest_piece) &&
           id <= static_cast<std::uint8_t>(MessageId::allowed_fast);
}

// Fixed length (id byte included) for ids whose size does not vary; 0 for bitfield and piece.
std::uint32_t fixed_length(MessageId id) {
    switch (id) {
        case MessageId::choke:
        case MessageId::unchoke:
        case MessageId::interested:
        case MessageId::not_interested:
        case MessageId::have_all:
        case MessageId::have_none: return 1;
        case MessageId::have:
        case MessageId::suggest_piece:
        case MessageId::allowed_fast: return 5;
        case MessageId::request:
        case MessageId::cancel:
        case MessageId::reject_request: return 13;
        case MessageId::port: return 3;
        case MessageId::bitfield:
        case MessageId::piece:
        case MessageId::extended: return 0;
    }
    return 0;
}

std::string block_text(PieceIndex index, BlockOffset offset, std::uint64_t length) {
    return "index " + std::to_string(index.get()) + " offset " + std::to_string(offset.get()) +
           " length " + std::to_string(length);
}

// Checks a block named by a request, cancel or piece. The 16 KiB cap needs no geometry.
std::optional<std::string> check_block(const ParserLimits& limits, MessageId id,
                                       PieceIndex index, BlockOffset offset,
                                       std::uint64_t length) {
    // An empty piece message names no block; without a geometry it is let through only
    // because nothing else about it can be judged either.
    const bool empty_allowed = id == MessageId::piece && !limits.geometry;
    if (length > kBlockSize || (length == 0 && !empty_allowed)) {
        return std::string(name_of(id)) + " block length " + std::to_string(length) +
               " outside 1.." + std::to_string(kBlockSize);
    }
    if (!limits.geometry) return std::nullopt;
    const PieceGeometry& geometry = *limits.geometry;
    if (!geometry.contains(index)) {
        return std::string(name_of(id)) + " index " + std::to_string(index.get()) +
               " out of range (" + std::to_string(geometry.piece_count()) + " pieces)";
    }
    if (!geometry.valid_block(index, offset, BlockLength{static_cast<std::uint32_t>(length)})) {
        return std::string(name_of(id)) + " " + block_text(index, offset, length) +
               " outside the piece (" + std::to_string(geometry.piece_size(index)) + " bytes)";
    }
    return std::nullopt;
}

}  // namespace

std::array<std::uint8_t, kHandshakeSize> encode_handshake(const Handshake& handshake) {
    std::array<std::uint8_t, kHandshakeSize> out{};
    out[0] = static_cast<std::uint8_t>(kProtocol.size());
    std::memcpy(out.data() + 1, kProtocol.data(), kProtocol.size());
    std::copy(handshake.reserved.begin(), handshake.reserved.end(), out.begin() + 20);
    std::copy(handshake.info_hash.begin(), handshake.info_hash.end(), out.begin() + 28);
    std::copy(handshake.peer_id.begin(), handshake.peer_id.end(), out.begin() + 48);
    return out;
}

Result<Handshake> decode_handshake(std::span<const std::uint8_t, kHandshakeSize> bytes) {
    if (bytes[0] != kProtocol.size()) {
        return make_error("handshake protocol string length " + std::to_string(bytes[0]) +
                              ", expected 19",
                          0);
    }
    if (std::memcmp(bytes.data() + 1, kProtocol.data(), kProtocol.size()) != 0) {
        return make_error("handshake protocol is not \"BitTorrent protocol\"", 1);
    }
    Handshake handshake;
    std::copy_n(bytes.begin() + 20, 8, handshake.reserved.begin());
    std::copy_n(bytes.begin() + 28, 20, handshake.info_hash.begin());
    std::copy_n(bytes.begin() + 48, 20, handshake.peer_id.begin());
    return handshake;
}

void encode(const Message& message, std::vector<std::uint8_t>& out) {
    std::visit(
        [&out](const auto& m) {
            using T = std::decay_t<decltype(m)>;
            if constexpr (std::is_same_v<T, KeepAlive>) {
                put_u32(out, 0);
            } else if constexpr (std::is_same_v<T, Choke>) {
                put_header(out, 0, MessageId::choke);
            } else if constexpr (std::is_same_v<T, Unchoke>) {
                put_header(out, 0, MessageId::unchoke);
            } else if constexpr (std::is_same_v<T, Interested>) {
                put_header(out, 0, MessageId::interested);
            } else if constexpr (std::is_same_v<T, NotInterested>) {
                put_header(out, 0, MessageId::not_interested);
            } else if constexpr (std::is_same_v<T, Have>) {
                put_header(out, 4, MessageId::have);
                put_u32(out, m.index.get());
            } else if constexpr (std::is_same_v<T, Bitfield>) {
                put_header(out, static_cast<std::uint32_t>(m.bits.size()), MessageId::bitfield);
                out.insert(out.end(), m.bits.begin(), m.bits.end());
            } else if constexpr (std::is_same_v<T, Request>) {
                put_block_ref(out, MessageId::request, m.index, m.offset, m.length);
            } else if constexpr (std::is_same_v<T, Piece>) {
                const auto header = encode_piece_header(m.index, m.offset,
                                                        static_cast<std::uint32_t>(m.data.size()));
                out.insert(out.end(), header.begin(), header.end());
                out.insert(out.end(), m.data.begin(), m.data.end());
            } else if constexpr (std::is_same_v<T, Cancel>) {
                put_block_ref(out, MessageId::cancel, m.index, m.offset, m.length);
            } else if constexpr (std::is_same_v<T, Port>) {
                put_header(out, 2, MessageId::port);
                out.push_back(static_cast<std::uint8_t>(m.port >> 8));
                out.push_back(static_cast<std::uint8_t>(m.port));
            } else if constexpr (std::is_same_v<T, SuggestPiece>) {
                put_header(out, 4, MessageId::suggest_piece);
                put_u32(out, m.index.get());
            } else if constexpr (std::is_same_v<T, HaveAll>) {
                put_header(out, 0, MessageId::have_all);
            } else if constexpr (std::is_same_v<T, HaveNone>) {
                put_header(out, 0, MessageId::have_none);
            } else if constexpr (std::is_same_v<T, RejectRequest>) {
                put_block_ref(out, MessageId::reject_request, m.index, m.offset, m.length);
            } else if constexpr (std::is_same_v<T, AllowedFast>) {
                put_header(out, 4, MessageId::allowed_fast);
                put_u32(out, m.index.get());
            } else if constexpr (std::is_same_v<T, Extended>) {
                put_header(out, static_cast<std::uint32_t>(m.body.size()), MessageId::extended);
                out.insert(out.end(), m.body.begin(), m.body.end());
            }
        },
        message);
}

std::array<std::uint8_t, 13> encode_piece_header(PieceIndex index, BlockOffset offset,
                                                 std::uint32_t length) {
    std::array<std::uint8_t, 13> out{};
    put_u32(out.data(), length + 9);
    out[4] = static_cast<std::uint8_t>(MessageId::piece);
    put_u32(out.data() + 5, index.get());
    put_u32(out.data() + 9, offset.get());
    return out;
}

bool valid_bitfield(std::span<const std::uint8_t> bits, std::uint32_t piece_count) {
    const std::uint64_t expected = (std::uint64_t{piece_count} + 7) / 8;
    if (bits.size() != expected) return false;
    const unsigned spare = static_cast<unsigned>(expected * 8 - piece_count);
    if (spare == 0) return true;
    const auto spare_mask = static_cast<std::uint8_t>((1u << spare) - 1);
    return (bits.back() & spare_mask) == 0;
}

std::vector<std::uint32_t> allowed_fast_set(std::uint32_t ipv4, const Sha1Digest& info_hash,
                                            std::uint32_t piece_count, std::uint32_t k) {
    std::vector<std::uint32_t> set;
    k = std::min(k, piece_count);
    if (k == 0) return set;
    set.reserve(k);
    // x = (ip & 0xFFFFFF00) in network order, then the info-hash; each round hashes x again
    // and takes five big-endian words from it, modulo the piece count, skipping repeats.
    std::array<std::uint8_t, 24> seed{};
    put_u32(seed.data(), ipv4 & 0xFFFFFF00u);
    std::copy(info_hash.begin(), info_hash.end(), seed.begin() + 4);
    Sha1Digest x = sha1(seed.data(), seed.size());
    for (;;) {
        for (std::size_t i = 0; i < 5 && set.size() < k; ++i) {
            const std::uint32_t index = read_u32(x.data() + i * 4) % piece_count;
            if (std::find(set.begin(), set.end(), index) == set.end()) set.push_back(index);
        }
        if (set.size() == k) return set;
        x = sha1(x.data(), x.size());
    }
}

StreamParser::StreamParser(ParserLimits limits) : limits_(std::move(limits)) {}

void StreamParser::compact() {
    if (begin_ == 0) return;
    std::memmove(buffer_.data(), buffer_.data() + begin_, end_ - begin_);
    end_ -= begin_;
    begin_ = 0;
}

std::span<std::uint8_t> StreamParser::prepare(std::size_t size) {
    // Compacting only when the tail is too short keeps copies rare; after it the buffer holds
    // at most one partial message (when the caller drains next()), so its size stays within
    // one message plus one read.
    if (buffer_.size() - end_ < size) {
        compact();
        if (buffer_.size() - end_ < size) buffer_.resize(end_ + size);
    }
    return {buffer_.data() + end_, size};
}

void StreamParser::commit(std::size_t size) {
    end_ += std::min(size, buffer_.size() - end_);
}

void StreamParser::append(std::span<const std::uint8_t> bytes) {
    if (bytes.empty()) return;
    auto room = prepare(bytes.size());
    std::copy(bytes.begin(), bytes.end(), room.begin());
    commit(bytes.size());
}

Result<std::optional<Message>> StreamParser::next() {
    const std::size_t available = end_ - begin_;
    if (available < kPrefixSize) return std::optional<Message>{};
    const std::uint8_t* p = buffer_.data() + begin_;
    const std::uint64_t at = consumed_;
    const std::uint32_t length = read_u32(p);

    // Everything that the first bytes already condemn is rejected before the body is
    // buffered: a peer must not make us hold a megabyte to learn it sent garbage.
    if (length > limits_.max_message) {
        return make_error("length prefix " + std::to_string(length) + " exceeds limit " +
                              std::to_string(limits_.max_message),
                          at);
    }
    if (length == 0) {
        begin_ += kPrefixSize;
        consumed_ += kPrefixSize;
        return std::optional<Message>{KeepAlive{}};
    }
    if (available < kPrefixSize + 1) return std::optional<Message>{};
    const std::uint8_t raw_id = p[4];
    const bool extended = raw_id == static_cast<std::uint8_t>(MessageId::extended);
    if (raw_id > static_cast<std::uint8_t>(MessageId::port) && !is_fast_id(raw_id) && !extended) {
        return make_error("unknown message id " + std::to_string(raw_id), at + 4);
    }
    const auto id = static_cast<MessageId>(raw_id);
    if (extended && !limits_.extended) {
        return make_error("extended message (id 20) without the extension protocol", at + 4);
    }
    if (extended && (length < 2 || length - 1 > kMaxExtendedBody)) {
        return make_error("extended message of length " + std::to_string(length) + ", expected 2.." +
                              std::to_string(kMaxExtendedBody + 1),
                          at);
    }
    if (is_fast_id(raw_id) && !limits_.fast) {
        std::string why(name_of(id));
        why += " (message id ";
        why += std::to_string(raw_id);
        why += ") without the fast extension";
        return make_error(std::move(why), at + 4);
    }
    const std::uint32_t fixed = fixed_length(id);
    if (fixed != 0 && length != fixed) {
        return make_error(std::string(name_of(id)) + " message of length " +
                              std::to_string(length) + ", expected " + std::to_string(fixed),
                          at);
    }
    if (id == MessageId::piece) {
        if (length < 9) {
            return make_error("piece message of length " + std::to_string(length) +
                                  ", expected at least 9",
                              at);
        }
        if (available >= 13) {
            const PieceIndex index{read_u32(p + 5)};
            const BlockOffset offset{read_u32(p + 9)};
            if (auto problem = check_block(limits_, id, index, offset, length - 9)) {
                return make_error(std::move(*problem), at);
            }
        } else if (length - 9 > kBlockSize) {
            return make_error("piece block length " + std::to_string(length - 9) +
                                  " outside 1.." + std::to_string(kBlockSize),
                              at);
        }
    }
    if (id == MessageId::bitfield && limits_.geometry &&
        length - 1 != limits_.geometry->bitfield_bytes()) {
        return make_error("bitfield of " + std::to_string(length - 1) + " bytes, expected " +
                              std::to_string(limits_.geometry->bitfield_bytes()) + " (" +
                              std::to_string(limits_.geometry->piece_count()) + " pieces)",
                          at);
    }

    if (available - kPrefixSize < length) return std::optional<Message>{};
    const std::uint8_t* body = p + kPrefixSize + 1;
    const std::uint32_t body_size = length - 1;

    std::optional<Message> message;
    switch (id) {
        case MessageId::choke: message = Choke{}; break;
        case MessageId::unchoke: message = Unchoke{}; break;
        case MessageId::interested: message = Interested{}; break;
        case MessageId::not_interested: message = NotInterested{}; break;
        case MessageId::have: {
            const PieceIndex index{read_u32(body)};
            if (limits_.geometry && !limits_.geometry->contains(index)) {
                return make_error("have index " + std::to_string(index.get()) +
                                      " out of range (" +
                                      std::to_string(limits_.geometry->piece_count()) +
                                      " pieces)",
                                  at);
            }
            message = Have{index};
            break;
        }
        case MessageId::bitfield: {
            const std::span<const std::uint8_t> bits{body, body_size};
            if (limits_.geometry && !valid_bitfield(bits, limits_.geometry->piece_count())) {
                return make_error("bitfield has spare bits set past piece " +
                                      std::to_string(limits_.geometry->piece_count()),
                                  at);
            }
            message = Bitfield{bits};
            break;
        }
        case MessageId::request:
        case MessageId::cancel:
        case MessageId::reject_request: {
            const PieceIndex index{read_u32(body)};
            const BlockOffset offset{read_u32(body + 4)};
            const BlockLength block_length{read_u32(body + 8)};
            // A reject answers one of our requests: whoever judges requests judges rejects
            // (one that matches none of ours is ignored there, whatever it names).
            if (limits_.check_requests) {
                if (auto problem = check_block(limits_, id, index, offset, block_length.get())) {
                    return make_error(std::move(*problem), at);
                }
            }
            if (id == MessageId::request) {
                message = Request{index, offset, block_length};
            } else if (id == MessageId::cancel) {
                message = Cancel{index, offset, block_length};
            } else {
                message = RejectRequest{index, offset, block_length};
            }
            break;
        }
        case MessageId::suggest_piece:
        case MessageId::allowed_fast: {
            const PieceIndex index{read_u32(body)};
            if (limits_.geometry && !limits_.geometry->contains(index)) {
                std::string why(name_of(id));
                why += " index ";
                why += std::to_string(index.get());
                why += " out of range (";
                why += std::to_string(limits_.geometry->piece_count());
                why += " pieces)";
                return make_error(std::move(why), at);
            }
            if (id == MessageId::suggest_piece) {
                message = SuggestPiece{index};
            } else {
                message = AllowedFast{index};
            }
            break;
        }
        case MessageId::have_all: message = HaveAll{}; break;
        case MessageId::have_none: message = HaveNone{}; break;
        case MessageId::piece:
            // Checked above as soon as its 13-byte header was in.
            message = Piece{PieceIndex{read_u32(body)}, BlockOffset{read_u32(body + 4)},
                            std::span<const std::uint8_t>{body + 8, body_size - 8}};
            break;
        case MessageId::port: message = Port{read_u16(body)}; break;
        case MessageId::extended: message = Extended{std::span<const std::uint8_t>{body, body_size}}; break;
    }
    begin_ += kPrefixSize + length;
    consumed_ += kPrefixSize + length;
    if (begin_ == end_) {
        // Nothing partial left: restart at the front for free, so the common case never copies.
        begin_ = 0;
        end_ = 0;
    }
    return message;
}

}  // namespace pw::wire
