#include "core/wire.hpp"

#include <algorithm>
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace pw::wire {
namespace {

using Bytes = std::vector<std::uint8_t>;

Bytes encoded(const Message& message) {
    Bytes out;
    encode(message, out);
    return out;
}

Bytes u32(std::uint32_t v) {
    return {static_cast<std::uint8_t>(v >> 24), static_cast<std::uint8_t>(v >> 16),
            static_cast<std::uint8_t>(v >> 8), static_cast<std::uint8_t>(v)};
}

Bytes concat(std::initializer_list<Bytes> parts) {
    Bytes out;
    for (const auto& part : parts) out.insert(out.end(), part.begin(), part.end());
    return out;
}

// 64 pieces of 64 KiB, the last one 20000 bytes.
PieceGeometry test_geometry() { return PieceGeometry(63ull * 65536 + 20000, 65536); }

ParserLimits with_geometry() {
    ParserLimits limits;
    limits.geometry = test_geometry();
    return limits;
}

// Parses exactly one message from `bytes` and returns it re-encoded (the parsed message's
// views die with the parser), failing the test when it is not exactly one message.
Bytes parse_one(const Bytes& bytes, ParserLimits limits = {}) {
    StreamParser parser(std::move(limits));
    parser.append(bytes);
    auto result = parser.next();
    EXPECT_TRUE(result.ok()) << (result.ok() ? "" : result.error().describe());
    if (!result.ok() || !*result) return {};
    EXPECT_EQ(parser.buffered(), 0u);
    return encoded(**result);
}

std::string parse_error(const Bytes& bytes, ParserLimits limits = {}) {
    StreamParser parser(std::move(limits));
    parser.append(bytes);
    auto result = parser.next();
    if (result.ok()) return result.value() ? "parsed" : "incomplete";
    return result.error().message;
}

TEST(Handshake, RoundTripKeepsReservedBits) {
    Handshake h;
    h.reserved[5] = 0x10;
    h.reserved[7] = 0x05;
    for (std::uint8_t i = 0; i < 20; ++i) {
        h.info_hash[i] = i;
        h.peer_id[i] = static_cast<std::uint8_t>(0xA0 + i);
    }
    const auto bytes = encode_handshake(h);
    EXPECT_EQ(bytes[0], 19);
    EXPECT_EQ(std::string(bytes.begin() + 1, bytes.begin() + 20), "BitTorrent protocol");
    auto decoded = decode_handshake(bytes);
    ASSERT_TRUE(decoded.ok());
    EXPECT_EQ(decoded->reserved, h.reserved);
    EXPECT_EQ(decoded->info_hash, h.info_hash);
    EXPECT_EQ(decoded->peer_id, h.peer_id);
    EXPECT_TRUE(decoded->supports_extensions());
    EXPECT_TRUE(decoded->supports_fast());
    EXPECT_TRUE(decoded->supports_dht());
}

TEST(Handshake, NoReservedBitsMeansNoExtensions) {
    auto decoded = decode_handshake(encode_handshake(Handshake{}));
    ASSERT_TRUE(decoded.ok());
    EXPECT_FALSE(decoded->supports_extensions());
    EXPECT_FALSE(decoded->supports_fast());
    EXPECT_FALSE(decoded->supports_dht());
}

TEST(Handshake, RejectsOtherProtocols) {
    auto bytes = encode_handshake(Handshake{});
    bytes[0] = 18;
    EXPECT_FALSE(decode_handshake(bytes).ok());
    bytes = encode_handshake(Handshake{});
    bytes[5] = 'X';
    auto result = decode_handshake(bytes);
    ASSERT_FALSE(result.ok());
    EXPECT_NE(result.error().message.find("BitTorrent protocol"), std::string::npos);
}

TEST(Encode, ExactBytes) {
    EXPECT_EQ(encoded(KeepAlive{}), (Bytes{0, 0, 0, 0}));
    EXPECT_EQ(encoded(Choke{}), (Bytes{0, 0, 0, 1, 0}));
    EXPECT_EQ(encoded(Unchoke{}), (Bytes{0, 0, 0, 1, 1}));
    EXPECT_EQ(encoded(Interested{}), (Bytes{0, 0, 0, 1, 2}));
    EXPECT_EQ(encoded(NotInterested{}), (Bytes{0, 0, 0, 1, 3}));
    EXPECT_EQ(encoded(Have{PieceIndex{0x01020304}}), (Bytes{0, 0, 0, 5, 4, 1, 2, 3, 4}));
    const Bytes bits{0xFF, 0x80};
    EXPECT_EQ(encoded(Bitfield{bits}), (Bytes{0, 0, 0, 3, 5, 0xFF, 0x80}));
    EXPECT_EQ(encoded(Request{PieceIndex{1}, BlockOffset{0x4000}, BlockLength{0x4000}}),
              concat({u32(13), {6}, u32(1), u32(0x4000), u32(0x4000)}));
    const Bytes data{9, 8, 7};
    EXPECT_EQ(encoded(Piece{PieceIndex{2}, BlockOffset{3}, data}),
              concat({u32(12), {7}, u32(2), u32(3), data}));
    EXPECT_EQ(encoded(Cancel{PieceIndex{1}, BlockOffset{2}, BlockLength{3}}),
              concat({u32(13), {8}, u32(1), u32(2), u32(3)}));
    EXPECT_EQ(encoded(Port{6881}), (Bytes{0, 0, 0, 3, 9, 0x1A, 0xE1}));
}

TEST(Encode, FastExtensionExactBytes) {
    // BEP 6: have all 0x0E and have none 0x0F (no payload), suggest piece 0x0D and allowed
    // fast 0x11 (an index), reject request 0x10 (index, begin, length).
    EXPECT_EQ(encoded(HaveAll{}), (Bytes{0, 0, 0, 1, 0x0E}));
    EXPECT_EQ(encoded(HaveNone{}), (Bytes{0, 0, 0, 1, 0x0F}));
    EXPECT_EQ(encoded(SuggestPiece{PieceIndex{0x01020304}}), (Bytes{0, 0, 0, 5, 0x0D, 1, 2, 3, 4}));
    EXPECT_EQ(encoded(AllowedFast{PieceIndex{7}}), (Bytes{0, 0, 0, 5, 0x11, 0, 0, 0, 7}));
    EXPECT_EQ(encoded(RejectRequest{PieceIndex{1}, BlockOffset{0x4000}, BlockLength{0x4000}}),
              concat({u32(13), {0x10}, u32(1), u32(0x4000), u32(0x4000)}));
}

TEST(Handshake, OurFastBitIsTheThirdLeastSignificantOfTheLastByte) {
    Handshake ours;
    ours.set_fast();
    EXPECT_EQ(ours.reserved, (std::array<std::uint8_t, 8>{0, 0, 0, 0, 0, 0, 0, 0x04}));
    auto decoded = decode_handshake(encode_handshake(ours));
    ASSERT_TRUE(decoded.ok());
    EXPECT_TRUE(decoded->supports_fast());
    EXPECT_FALSE(decoded->supports_extensions());
    EXPECT_FALSE(decoded->supports_dht());
}

TEST(Encode, PieceHeaderMatchesFullEncoding) {
    const Bytes data(kBlockSize, 0x5A);
    const auto full = encoded(Piece{PieceIndex{7}, BlockOffset{32768}, data});
    const auto header = encode_piece_header(PieceIndex{7}, BlockOffset{32768}, kBlockSize);
    EXPECT_TRUE(std::equal(header.begin(), header.end(), full.begin()));
}

TEST(Parse, EveryMessageRoundTrips) {
    const Bytes bits(8, 0xFF);
    const Bytes data(kBlockSize, 0x33);
    const Bytes short_data(20000 - kBlockSize, 0x44);
    const std::vector<Message> messages = {
        KeepAlive{},
        Choke{},
        Unchoke{},
        Interested{},
        NotInterested{},
        Have{PieceIndex{63}},
        Bitfield{bits},
        Request{PieceIndex{0}, BlockOffset{0}, BlockLength{kBlockSize}},
        Piece{PieceIndex{5}, BlockOffset{49152}, data},
        Piece{PieceIndex{63}, BlockOffset{kBlockSize}, short_data},
        Cancel{PieceIndex{63}, BlockOffset{kBlockSize}, BlockLength{20000 - kBlockSize}},
        Port{65535},
    };
    for (const bool geometry : {false, true}) {
        for (const auto& message : messages) {
            const Bytes bytes = encoded(message);
            EXPECT_EQ(parse_one(bytes, geometry ? with_geometry() : ParserLimits{}), bytes);
        }
    }
}

ParserLimits fast_limits(bool geometry) {
    ParserLimits limits = geometry ? with_geometry() : ParserLimits{};
    limits.fast = true;
    return limits;
}

TEST(Parse, FastExtensionMessagesRoundTripWhenBothSidesSetTheBit) {
    const std::vector<Message> messages = {
        HaveAll{},
        HaveNone{},
        SuggestPiece{PieceIndex{63}},
        AllowedFast{PieceIndex{0}},
        RejectRequest{PieceIndex{63}, BlockOffset{kBlockSize}, BlockLength{20000 - kBlockSize}},
    };
    for (const bool geometry : {false, true}) {
        for (const auto& message : messages) {
            const Bytes bytes = encoded(message);
            EXPECT_EQ(parse_one(bytes, fast_limits(geometry)), bytes);
        }
    }
    // Fields.
    StreamParser parser(fast_limits(true));
    parser.append(encoded(RejectRequest{PieceIndex{3}, BlockOffset{16384}, BlockLength{100}}));
    parser.append(encoded(AllowedFast{PieceIndex{9}}));
    parser.append(encoded(SuggestPiece{PieceIndex{10}}));
    auto reject = parser.next();
    ASSERT_TRUE(reject.ok() && *reject && std::holds_alternative<RejectRequest>(**reject));
    EXPECT_EQ(std::get<RejectRequest>(**reject).index, PieceIndex{3});
    EXPECT_EQ(std::get<RejectRequest>(**reject).offset, BlockOffset{16384});
    EXPECT_EQ(std::get<RejectRequest>(**reject).length, BlockLength{100});
    auto allowed = parser.next();
    ASSERT_TRUE(allowed.ok() && *allowed && std::holds_alternative<AllowedFast>(**allowed));
    EXPECT_EQ(std::get<AllowedFast>(**allowed).index, PieceIndex{9});
    auto suggest = parser.next();
    ASSERT_TRUE(suggest.ok() && *suggest && std::holds_alternative<SuggestPiece>(**suggest));
    EXPECT_EQ(std::get<SuggestPiece>(**suggest).index, PieceIndex{10});
}

TEST(Parse, FastExtensionMessagesRefusedFromAPeerWithoutTheBit) {
    EXPECT_EQ(parse_error(encoded(HaveAll{})), "have all (message id 14) without the fast extension");
    EXPECT_EQ(parse_error(encoded(HaveNone{})), "have none (message id 15) without the fast extension");
    EXPECT_EQ(parse_error(encoded(SuggestPiece{PieceIndex{1}})),
              "suggest piece (message id 13) without the fast extension");
    EXPECT_EQ(parse_error(encoded(RejectRequest{PieceIndex{1}, BlockOffset{0}, BlockLength{1}})),
              "reject request (message id 16) without the fast extension");
    EXPECT_EQ(parse_error(encoded(AllowedFast{PieceIndex{1}})),
              "allowed fast (message id 17) without the fast extension");
    // Refused as soon as the id is in, before any body.
    EXPECT_EQ(parse_error(concat({u32(100), {0x11}})), "allowed fast (message id 17) without the fast extension");
    // Turned on once the handshakes are exchanged.
    StreamParser parser({});
    parser.append(encoded(HaveAll{}));
    EXPECT_FALSE(parser.fast());
    parser.set_fast(true);
    auto result = parser.next();
    ASSERT_TRUE(result.ok() && *result);
    EXPECT_TRUE(std::holds_alternative<HaveAll>(**result));
}

TEST(Parse, FastExtensionMessagesChecked) {
    EXPECT_EQ(parse_error(concat({u32(2), {0x0E}}), fast_limits(false)), "have all message of length 2, expected 1");
    EXPECT_EQ(parse_error(concat({u32(4), {0x0D}}), fast_limits(false)),
              "suggest piece message of length 4, expected 5");
    EXPECT_EQ(parse_error(concat({u32(12), {0x10}}), fast_limits(false)),
              "reject request message of length 12, expected 13");
    EXPECT_EQ(parse_error(encoded(AllowedFast{PieceIndex{64}}), fast_limits(true)),
              "allowed fast index 64 out of range (64 pieces)");
    EXPECT_EQ(parse_error(encoded(SuggestPiece{PieceIndex{64}}), fast_limits(true)),
              "suggest piece index 64 out of range (64 pieces)");
    // A reject names a block like a request does, and is judged with requests.
    EXPECT_EQ(parse_error(encoded(RejectRequest{PieceIndex{0}, BlockOffset{0}, BlockLength{32768}}),
                          fast_limits(true)),
              "reject request block length 32768 outside 1..16384");
}

TEST(Parse, RequestsLeftToTheCallerPassUnchecked) {
    ParserLimits lenient = fast_limits(true);
    lenient.check_requests = false;
    for (const Message& message : std::vector<Message>{
             Request{PieceIndex{0}, BlockOffset{0}, BlockLength{32768}},
             Request{PieceIndex{64}, BlockOffset{0}, BlockLength{kBlockSize}},
             Request{PieceIndex{63}, BlockOffset{19999}, BlockLength{2}},
             Request{PieceIndex{1}, BlockOffset{0}, BlockLength{0}},
             Cancel{PieceIndex{99}, BlockOffset{1}, BlockLength{1}},
             RejectRequest{PieceIndex{0}, BlockOffset{0}, BlockLength{32768}}}) {
        const Bytes bytes = encoded(message);
        EXPECT_EQ(parse_one(bytes, lenient), bytes);
    }
    // Their size is still exact.
    EXPECT_EQ(parse_error(concat({u32(12), {6}}), lenient), "request message of length 12, expected 13");
}

// BEP 6's own example: 1313 pieces, an info-hash of twenty 0xAA bytes, a peer at 80.4.4.200.
TEST(AllowedFast, TheSetOfBep6sExample) {
    Sha1Digest info_hash{};
    info_hash.fill(0xAA);
    const std::uint32_t ip = (80u << 24) | (4u << 16) | (4u << 8) | 200u;
    EXPECT_EQ(allowed_fast_set(ip, info_hash, 1313, 7),
              (std::vector<std::uint32_t>{1059, 431, 808, 1217, 287, 376, 1188}));
    EXPECT_EQ(allowed_fast_set(ip, info_hash, 1313, 9),
              (std::vector<std::uint32_t>{1059, 431, 808, 1217, 287, 376, 1188, 353, 508}));
    // The same /24 gets the same set; another does not.
    EXPECT_EQ(allowed_fast_set(ip ^ 0xFF, info_hash, 1313, 7), allowed_fast_set(ip, info_hash, 1313, 7));
    EXPECT_NE(allowed_fast_set(ip ^ 0x100, info_hash, 1313, 7), allowed_fast_set(ip, info_hash, 1313, 7));
}

TEST(AllowedFast, NeverMorePiecesThanTheTorrentHas) {
    Sha1Digest info_hash{};
    info_hash.fill(0x11);
    auto all = allowed_fast_set(0x7F000001, info_hash, 3, 10);
    std::sort(all.begin(), all.end());
    EXPECT_EQ(all, (std::vector<std::uint32_t>{0, 1, 2}));
    EXPECT_TRUE(allowed_fast_set(0x7F000001, info_hash, 0, 10).empty());
    EXPECT_TRUE(allowed_fast_set(0x7F000001, info_hash, 100, 0).empty());
}

TEST(Parse, FieldsDecoded) {
    StreamParser parser({});
    parser.append(encoded(Request{PieceIndex{3}, BlockOffset{16384}, BlockLength{100}}));
    parser.append(encoded(Port{6881}));
    const Bytes data{1, 2, 3, 4};
    parser.append(encoded(Piece{PieceIndex{9}, BlockOffset{8}, data}));

    auto request = parser.next();
    ASSERT_TRUE(request.ok() && *request && std::holds_alternative<Request>(**request));
    EXPECT_EQ(std::get<Request>(**request).index, PieceIndex{3});
    EXPECT_EQ(std::get<Request>(**request).offset, BlockOffset{16384});
    EXPECT_EQ(std::get<Request>(**request).length, BlockLength{100});
    auto port = parser.next();
    ASSERT_TRUE(port.ok() && *port && std::holds_alternative<Port>(**port));
    EXPECT_EQ(std::get<Port>(**port).port, 6881);
    auto piece = parser.next();
    ASSERT_TRUE(piece.ok() && *piece && std::holds_alternative<Piece>(**piece));
    const auto& parsed = std::get<Piece>(**piece);
    EXPECT_EQ(parsed.index, PieceIndex{9});
    EXPECT_EQ(parsed.offset, BlockOffset{8});
    EXPECT_EQ(Bytes(parsed.data.begin(), parsed.data.end()), data);
}

TEST(Parse, ManyMessagesFedByteAtATime) {
    const Bytes bits(8, 0xAA);
    const Bytes data(20000 - kBlockSize, 0x44);
    const std::vector<Message> messages = {
        Unchoke{}, Have{PieceIndex{1}}, KeepAlive{}, Bitfield{bits},
        Piece{PieceIndex{63}, BlockOffset{kBlockSize}, data}, Port{1}, Choke{},
    };
    Bytes stream;
    for (const auto& message : messages) encode(message, stream);

    StreamParser parser(with_geometry());
    std::vector<Bytes> reencoded;
    for (const std::uint8_t byte : stream) {
        auto room = parser.prepare(1);
        ASSERT_EQ(room.size(), 1u);
        room[0] = byte;
        parser.commit(1);
        for (;;) {
            auto result = parser.next();
            ASSERT_TRUE(result.ok()) << result.error().describe();
            if (!*result) break;
            reencoded.push_back(encoded(**result));
        }
    }
    ASSERT_EQ(reencoded.size(), messages.size());
    for (std::size_t i = 0; i < messages.size(); ++i) EXPECT_EQ(reencoded[i], encoded(messages[i]));
    EXPECT_EQ(parser.buffered(), 0u);
}

TEST(Parse, SeveralMessagesInOneRead) {
    Bytes stream;
    encode(Interested{}, stream);
    encode(Have{PieceIndex{2}}, stream);
    encode(Have{PieceIndex{3}}, stream);
    stream.push_back(0);  // first byte of an incomplete keep-alive
    StreamParser parser({});
    parser.append(stream);
    int count = 0;
    for (;;) {
        auto result = parser.next();
        ASSERT_TRUE(result.ok());
        if (!*result) break;
        ++count;
    }
    EXPECT_EQ(count, 3);
    EXPECT_EQ(parser.buffered(), 1u);
}

TEST(Parse, OversizedPrefixRejectedBeforeBody) {
    EXPECT_EQ(parse_error({0xFF, 0xFF, 0xFF, 0xFF}), "length prefix 4294967295 exceeds limit 1048589");
    EXPECT_EQ(parse_error(u32(2000000)), "length prefix 2000000 exceeds limit 1048589");
    ParserLimits small;
    small.max_message = 100;
    EXPECT_EQ(parse_error(u32(101), small), "length prefix 101 exceeds limit 100");
    EXPECT_EQ(parse_error(concat({u32(100), {5}}), small), "incomplete");
}

TEST(Parse, OversizedPrefixRejectedByteAtATime) {
    StreamParser parser({});
    for (int i = 0; i < 3; ++i) {
        parser.append(Bytes{0xFF});
        auto result = parser.next();
        ASSERT_TRUE(result.ok());
        EXPECT_FALSE(*result);
    }
    parser.append(Bytes{0xFF});
    auto result = parser.next();
    ASSERT_FALSE(result.ok());
    EXPECT_EQ(result.error().offset, 0u);
}

TEST(Parse, ErrorOffsetIsTheStreamPosition) {
    StreamParser parser({});
    parser.append(encoded(Choke{}));
    parser.append(Bytes{0, 0, 0, 1, 42});
    ASSERT_TRUE(parser.next().ok());
    auto result = parser.next();
    ASSERT_FALSE(result.ok());
    EXPECT_EQ(result.error().message, "unknown message id 42");
    EXPECT_EQ(result.error().offset, 9u);
}

TEST(Parse, UnknownIdsRejectedOnceTheIdIsIn) {
    ParserLimits fast;
    fast.fast = true;
    for (const std::uint8_t id : {10, 11, 12, 18, 21, 255}) {
        // The length promises a body that never comes: the id alone condemns it.
        EXPECT_EQ(parse_error(concat({u32(100), {id}})), "unknown message id " + std::to_string(id));
        EXPECT_EQ(parse_error(concat({u32(100), {id}}), fast), "unknown message id " + std::to_string(id));
    }
}

TEST(Parse, ExtendedOnlyWithTheExtensionProtocolAndBounded) {
    // Without BEP 10 on both sides, id 20 is refused as soon as it is seen.
    EXPECT_EQ(parse_error(concat({u32(100), {20}})), "extended message (id 20) without the extension protocol");
    ParserLimits extended;
    extended.extended = true;
    // An empty body has no extended id; one over the bound is refused before it is buffered.
    EXPECT_EQ(parse_error(concat({u32(1), {20}}), extended), "extended message of length 1, expected 2..131073");
    EXPECT_EQ(parse_error(concat({u32(kMaxExtendedBody + 2), {20}}), extended),
              "extended message of length 131074, expected 2..131073");
    StreamParser parser(extended);
    std::vector<std::uint8_t> bytes;
    const std::vector<std::uint8_t> body{0, 'd', 'e'};
    encode(Extended{body}, bytes);
    EXPECT_EQ(bytes, concat({u32(4), {20, 0, 'd', 'e'}}));
    parser.append(bytes);
    auto next = parser.next();
    ASSERT_TRUE(next.ok());
    ASSERT_TRUE(next->has_value());
    const auto* message = std::get_if<Extended>(&**next);
    ASSERT_NE(message, nullptr);
    EXPECT_EQ(std::vector<std::uint8_t>(message->body.begin(), message->body.end()), body);
}

TEST(Parse, WrongSizesRejected) {
    EXPECT_EQ(parse_error(concat({u32(2), {0}})), "choke message of length 2, expected 1");
    EXPECT_EQ(parse_error(concat({u32(2), {1}})), "unchoke message of length 2, expected 1");
    EXPECT_EQ(parse_error(concat({u32(5), {2}})), "interested message of length 5, expected 1");
    EXPECT_EQ(parse_error(concat({u32(3), {3}})), "not interested message of length 3, expected 1");
    EXPECT_EQ(parse_error(concat({u32(4), {4}})), "have message of length 4, expected 5");
    EXPECT_EQ(parse_error(concat({u32(6), {4}})), "have message of length 6, expected 5");
    EXPECT_EQ(parse_error(concat({u32(12), {6}})), "request message of length 12, expected 13");
    EXPECT_EQ(parse_error(concat({u32(14), {8}})), "cancel message of length 14, expected 13");
    EXPECT_EQ(parse_error(concat({u32(2), {9}})), "port message of length 2, expected 3");
    EXPECT_EQ(parse_error(concat({u32(8), {7}})), "piece message of length 8, expected at least 9");
}

TEST(Parse, HaveOutOfRange) {
    EXPECT_EQ(parse_error(encoded(Have{PieceIndex{70}}), with_geometry()),
              "have index 70 out of range (64 pieces)");
    EXPECT_EQ(parse_error(encoded(Have{PieceIndex{64}}), with_geometry()),
              "have index 64 out of range (64 pieces)");
    // Without a geometry, have is not range-checked.
    EXPECT_EQ(parse_error(encoded(Have{PieceIndex{70}})), "parsed");
}

TEST(Parse, BitfieldLengthAndSpareBits) {
    EXPECT_EQ(parse_error(encoded(Bitfield{Bytes(7, 0xFF)}), with_geometry()),
              "bitfield of 7 bytes, expected 8 (64 pieces)");
    EXPECT_EQ(parse_error(encoded(Bitfield{Bytes(9, 0)}), with_geometry()),
              "bitfield of 9 bytes, expected 8 (64 pieces)");

    // 10 pieces: two bytes, the last six bits spare.
    ParserLimits ten;
    ten.geometry = PieceGeometry(1000, 100);
    EXPECT_EQ(parse_error(encoded(Bitfield{Bytes{0xFF, 0xC0}}), ten), "parsed");
    EXPECT_EQ(parse_error(encoded(Bitfield{Bytes{0xFF, 0xC1}}), ten),
              "bitfield has spare bits set past piece 10");
    EXPECT_EQ(parse_error(encoded(Bitfield{Bytes{0xFF, 0xE0}}), ten),
              "bitfield has spare bits set past piece 10");
}

TEST(Parse, ValidBitfieldHelper) {
    EXPECT_TRUE(valid_bitfield(Bytes{0xFF}, 8));
    EXPECT_TRUE(valid_bitfield(Bytes{0x80}, 1));
    EXPECT_FALSE(valid_bitfield(Bytes{0x40}, 1));
    EXPECT_FALSE(valid_bitfield(Bytes{0xFF, 0x00}, 8));
    EXPECT_TRUE(valid_bitfield(Bytes{}, 0));
    EXPECT_FALSE(valid_bitfield(Bytes{}, 1));
}

TEST(Parse, PieceOverBlockSizeRejectedFromTheHeader) {
    // Only the 5-byte header is in: the declared length already exceeds a block.
    EXPECT_EQ(parse_error(concat({u32(9 + kBlockSize + 1), {7}})),
              "piece block length 16385 outside 1..16384");
    EXPECT_EQ(parse_error(concat({u32(9 + kBlockSize + 1), {7}, u32(0), u32(0)})),
              "piece block length 16385 outside 1..16384");
    EXPECT_EQ(parse_error(concat({u32(9 + kBlockSize), {7}, u32(0), u32(0)})), "incomplete");
}

TEST(Parse, PieceOutsideItsPiece) {
    const Bytes block(kBlockSize, 1);
    EXPECT_EQ(parse_error(encoded(Piece{PieceIndex{64}, BlockOffset{0}, block}), with_geometry()),
              "piece index 64 out of range (64 pieces)");
    EXPECT_EQ(
        parse_error(encoded(Piece{PieceIndex{0}, BlockOffset{65536 - 100}, block}), with_geometry()),
        "piece index 0 offset 65436 length 16384 outside the piece (65536 bytes)");
    // The short last piece: a full block at its second offset runs past its 20000 bytes.
    EXPECT_EQ(parse_error(encoded(Piece{PieceIndex{63}, BlockOffset{kBlockSize}, block}),
                          with_geometry()),
              "piece index 63 offset 16384 length 16384 outside the piece (20000 bytes)");
    // Rejected as soon as the 13-byte header is in, before the block arrives.
    EXPECT_EQ(parse_error(concat({u32(9 + kBlockSize), {7}, u32(63), u32(kBlockSize)}),
                          with_geometry()),
              "piece index 63 offset 16384 length 16384 outside the piece (20000 bytes)");
    // Offset near 2^32 must not wrap into range.
    EXPECT_NE(parse_error(encoded(Piece{PieceIndex{0}, BlockOffset{0xFFFFFFF0}, block}),
                          with_geometry()),
              "parsed");
    EXPECT_EQ(parse_error(encoded(Piece{PieceIndex{0}, BlockOffset{0}, Bytes{}}), with_geometry()),
              "piece block length 0 outside 1..16384");
}

TEST(Parse, RequestAndCancelChecked) {
    EXPECT_EQ(parse_error(encoded(Request{PieceIndex{0}, BlockOffset{0}, BlockLength{0}})),
              "request block length 0 outside 1..16384");
    EXPECT_EQ(parse_error(encoded(Request{PieceIndex{0}, BlockOffset{0}, BlockLength{32768}})),
              "request block length 32768 outside 1..16384");
    EXPECT_EQ(parse_error(encoded(Cancel{PieceIndex{64}, BlockOffset{0}, BlockLength{1}}),
                          with_geometry()),
              "cancel index 64 out of range (64 pieces)");
    EXPECT_EQ(parse_error(encoded(Request{PieceIndex{63}, BlockOffset{19999}, BlockLength{2}}),
                          with_geometry()),
              "request index 63 offset 19999 length 2 outside the piece (20000 bytes)");
    EXPECT_EQ(parse_error(encoded(Request{PieceIndex{1}, BlockOffset{0xFFFFFFFF},
                                          BlockLength{kBlockSize}}),
                          with_geometry()),
              "request index 1 offset 4294967295 length 16384 outside the piece (65536 bytes)");
    EXPECT_EQ(parse_error(encoded(Request{PieceIndex{63}, BlockOffset{19999}, BlockLength{1}}),
                          with_geometry()),
              "parsed");
}

TEST(Parse, BufferStaysBounded) {
    ParserLimits limits;
    limits.max_message = 1000;
    StreamParser parser(limits);
    const Bytes bitfield = encoded(Bitfield{Bytes(900, 0)});
    std::size_t largest = 0;
    for (int round = 0; round < 200; ++round) {
        for (std::size_t i = 0; i < bitfield.size(); i += 300) {
            const std::size_t n = std::min<std::size_t>(300, bitfield.size() - i);
            auto room = parser.prepare(512);
            std::copy_n(bitfield.begin() + static_cast<std::ptrdiff_t>(i), n, room.begin());
            parser.commit(n);
            largest = std::max(largest, parser.buffered());
            for (;;) {
                auto result = parser.next();
                ASSERT_TRUE(result.ok());
                if (!*result) break;
            }
        }
    }
    EXPECT_LE(largest, 4u + 1000u);
}

TEST(Parse, CommitBeyondPreparedIsClamped) {
    StreamParser parser({});
    auto room = parser.prepare(5);
    const Bytes choke = encoded(Choke{});
    std::copy(choke.begin(), choke.end(), room.begin());
    parser.commit(5);
    auto result = parser.next();
    ASSERT_TRUE(result.ok());
    ASSERT_TRUE(*result);
    EXPECT_TRUE(std::holds_alternative<Choke>(**result));
}

}  // namespace
}  // namespace pw::wire
