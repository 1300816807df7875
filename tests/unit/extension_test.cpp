#include "core/extension.hpp"

#include <cstdint>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "core/bencode.hpp"
#include "core/wire.hpp"
#include "test_torrents.hpp"

namespace pw::ext {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

std::string bstr(const std::string& s) { return std::to_string(s.size()) + ":" + s; }

ExtendedHandshake handshake_of(const std::string& payload) {
    auto handshake = decode_handshake(payload);
    EXPECT_TRUE(handshake.ok()) << payload << ": " << (handshake.ok() ? "" : handshake.error().describe());
    return handshake.ok() ? handshake.value() : ExtendedHandshake{};
}

std::string handshake_refusal(const std::string& payload) {
    auto handshake = decode_handshake(payload);
    EXPECT_FALSE(handshake.ok()) << payload << " decoded";
    return handshake.ok() ? std::string() : handshake.error().describe();
}

std::string metadata_refusal(const std::string& payload, std::uint32_t cap = kMaxMetadataSize) {
    auto message = decode_metadata(payload, cap);
    EXPECT_FALSE(message.ok()) << payload.substr(0, 80) << " decoded";
    return message.ok() ? std::string() : message.error().describe();
}

// --- the handshake ---

// BEP 10's own example. Its "µT_PEX" is counted as 6 bytes, so its µ is Latin-1 there, while
// "µTorrent 1.2" is 13 bytes: UTF-8. Both as the BEP has them.
TEST(ExtendedHandshake, Bep10Example) {
    const ExtendedHandshake h = handshake_of("d1:md11:LT_metadatai1e6:\xB5T_PEXi2ee1:pi6881e1:v13:\xC2\xB5Torrent 1.2e");
    EXPECT_EQ(h.id_of("LT_metadata"), 1);
    EXPECT_EQ(h.id_of("\xB5T_PEX"), 2);
    EXPECT_EQ(h.id_of("ut_metadata"), 0);
    EXPECT_EQ(h.listen_port, 6881);
    EXPECT_EQ(h.client, "??Torrent 1.2");  // printable ASCII for the logs
    EXPECT_FALSE(h.metadata_size.has_value());
}

// BEP 9's example: {'m': {'ut_metadata', 3}, 'metadata_size': 31235}.
TEST(ExtendedHandshake, Bep9Example) {
    const ExtendedHandshake h = handshake_of("d1:md11:ut_metadatai3ee13:metadata_sizei31235ee");
    EXPECT_EQ(h.id_of(kUtMetadata), 3);
    EXPECT_EQ(h.metadata_size, 31235u);
}

// What libtorrent 2.0 sends (its keys, its ids), with the extensions we do not know.
TEST(ExtendedHandshake, AsLibtorrentSendsIt) {
    const std::string ipv6(16, '\x01');
    const std::string payload = "d12:complete_agoi-1e1:ei0e4:ipv4" + bstr(std::string("\xC0\xA8\x00\x02", 4)) +
                                "4:ipv6" + bstr(ipv6) +
                                "1:md11:lt_donthavei7e10:share_modei8e11:upload_onlyi3e12:ut_holepunchi4e"
                                "11:ut_metadatai2e6:ut_pexi1ee13:metadata_sizei52345e1:pi6881e4:reqqi500e"
                                "11:upload_onlyi0e1:v16:libtorrent/2.0.86:yourip" +
                                bstr(std::string("\x7F\x00\x00\x01", 4)) + "e";
    const ExtendedHandshake h = handshake_of(payload);
    EXPECT_EQ(h.id_of(kUtMetadata), 2);
    EXPECT_EQ(h.id_of(kUtPex), 1);
    EXPECT_EQ(h.id_of("ut_holepunch"), 4);
    EXPECT_EQ(h.metadata_size, 52345u);
    EXPECT_EQ(h.listen_port, 6881);
    EXPECT_EQ(h.request_queue, 500u);
    EXPECT_EQ(h.your_ip, "127.0.0.1");
    EXPECT_EQ(h.client, "libtorrent/2.0.8");
    EXPECT_EQ(h.upload_only, false);
    EXPECT_EQ(h.prefers_encryption, false);
}

// What Transmission 3.00 sends: ut_metadata 3, ut_pex 1, an IPv6 yourip.
TEST(ExtendedHandshake, AsTransmissionSendsIt) {
    const std::string v6("\x20\x01\x0d\xb8\0\0\0\0\0\0\0\0\0\0\0\x05", 16);
    const ExtendedHandshake h =
        handshake_of("d1:ei1e1:md11:ut_metadatai3e6:ut_pexi1ee13:metadata_sizei20000e1:pi51413e4:reqqi512e"
                     "11:upload_onlyi1e1:v17:Transmission 3.006:yourip" + bstr(v6) + "e");
    EXPECT_EQ(h.id_of(kUtMetadata), 3);
    EXPECT_EQ(h.id_of(kUtPex), 1);
    EXPECT_EQ(h.your_ip, "2001:db8::5");
    EXPECT_EQ(h.upload_only, true);
    EXPECT_EQ(h.prefers_encryption, true);
    EXPECT_EQ(h.request_queue, 512u);
}

TEST(ExtendedHandshake, DisabledAndAbsentFields) {
    const ExtendedHandshake h = handshake_of("d1:md6:ut_pexi0eee");
    EXPECT_EQ(h.id_of(kUtPex), 0);
    EXPECT_EQ(h.extensions.size(), 1u);
    const ExtendedHandshake empty = handshake_of("de");
    EXPECT_TRUE(empty.extensions.empty());
    EXPECT_FALSE(empty.listen_port || empty.request_queue || empty.your_ip || empty.metadata_size || empty.client);
    // p 0 means no listening port; a huge reqq is taken as the most we believe.
    const ExtendedHandshake odd = handshake_of("d1:pi0e4:reqqi99999999ee");
    EXPECT_FALSE(odd.listen_port.has_value());
    EXPECT_EQ(odd.request_queue, kMaxRequestQueue);
}

TEST(ExtendedHandshake, OursRoundTrips) {
    const ExtendedHandshake ours = our_handshake("piecework/0.1", 250, 6881, std::string("10.0.0.7"), 40000);
    const std::string payload = encode_handshake(ours);
    EXPECT_EQ(payload, "d1:md11:ut_metadatai2e6:ut_pexi1ee13:metadata_sizei40000e1:pi6881e4:reqqi250e"
                       "1:v13:piecework/0.16:yourip4:" + std::string("\x0A\x00\x00\x07", 4) + "e");
    EXPECT_EQ(handshake_of(payload), ours);
    const ExtendedHandshake bare = our_handshake("pw", 0);
    EXPECT_EQ(bare.request_queue, 1u);
    EXPECT_EQ(encode_handshake(bare), "d1:md11:ut_metadatai2e6:ut_pexi1ee4:reqqi1e1:v2:pwe");
    // A your_ip that is not an address is left out rather than sent wrong.
    ExtendedHandshake named = bare;
    named.your_ip = "example.org";
    EXPECT_EQ(encode_handshake(named), encode_handshake(bare));
    ExtendedHandshake v6 = bare;
    v6.your_ip = "2001:db8::5";
    EXPECT_EQ(handshake_of(encode_handshake(v6)), v6);
}

TEST(ExtendedHandshake, Malformed) {
    EXPECT_THAT(handshake_refusal(""), HasSubstr("not bencoded"));
    EXPECT_THAT(handshake_refusal("le"), HasSubstr("not a dictionary"));
    EXPECT_THAT(handshake_refusal("d1:mi1ee"), HasSubstr("\"m\" is not a dictionary"));
    EXPECT_THAT(handshake_refusal("d1:md6:ut_pexi256eee"), HasSubstr("id of \"ut_pex\" is not 0..255"));
    EXPECT_THAT(handshake_refusal("d1:md6:ut_pexi-1eee"), HasSubstr("not 0..255"));
    EXPECT_THAT(handshake_refusal("d1:md6:ut_pex1:1ee"), HasSubstr("not 0..255"));
    EXPECT_THAT(handshake_refusal("d1:md11:ut_metadatai1e6:ut_pexi1eee"), HasSubstr("gives id 1 to two extensions"));
    EXPECT_THAT(handshake_refusal("d1:md0:i1eee"), HasSubstr("an extension of 0 bytes"));
    EXPECT_THAT(handshake_refusal("d1:md65:" + std::string(65, 'x') + "i1eee"), HasSubstr("of 65 bytes"));
    EXPECT_THAT(handshake_refusal("d1:pi65536ee"), HasSubstr("\"p\" 65536 is not a port"));
    EXPECT_THAT(handshake_refusal("d1:pi-1ee"), HasSubstr("is not a port"));
    EXPECT_THAT(handshake_refusal("d1:p4:6881e"), HasSubstr("\"p\" is not an integer"));
    EXPECT_THAT(handshake_refusal("d4:reqqi0ee"), HasSubstr("\"reqq\" 0 is below 1"));
    EXPECT_THAT(handshake_refusal("d1:vi1ee"), HasSubstr("\"v\" is not a string"));
    EXPECT_THAT(handshake_refusal("d6:yourip5:abcdee"), HasSubstr("\"yourip\" is 5 bytes, not 4 or 16"));
    EXPECT_THAT(handshake_refusal("d6:youripi1ee"), HasSubstr("\"yourip\" is not a string"));
    EXPECT_THAT(handshake_refusal("d13:metadata_sizei0ee"), HasSubstr("metadata_size 0 is not 1..16777216"));
    EXPECT_THAT(handshake_refusal("d13:metadata_sizei16777217ee"), HasSubstr("metadata_size 16777217"));
    EXPECT_THAT(handshake_refusal("d13:metadata_size5:12345e"), HasSubstr("not an integer"));
    EXPECT_THAT(handshake_refusal("d11:upload_only1:1e"), HasSubstr("not an integer"));
    // A smaller cap is the caller's to give.
    EXPECT_FALSE(decode_handshake("d13:metadata_sizei1001ee", 1000).ok());
    // Bounded: size, names.
    EXPECT_THAT(handshake_refusal("d1:v" + bstr(std::string(kMaxHandshakePayload, 'v')) + "e"), HasSubstr("over 64 KiB"));
    std::string names;
    for (std::size_t i = 0; i <= kMaxExtensionNames; ++i) {
        const std::string name = "x" + std::string(3 - std::to_string(i).size(), '0') + std::to_string(i);
        names += bstr(name) + "i0e";
    }
    EXPECT_THAT(handshake_refusal("d1:md" + names + "ee"), HasSubstr("more than 128 extensions"));
    // Duplicate keys, as bencode refuses them.
    EXPECT_THAT(handshake_refusal("d1:pi1e1:pi2ee"), HasSubstr("duplicate"));
}

// --- framing ---

TEST(ExtendedFraming, FrameSplitAndDispatch) {
    std::vector<std::uint8_t> out;
    frame_extended(kOurUtPexId, "de", out);
    EXPECT_EQ(out, (std::vector<std::uint8_t>{0, 0, 0, 4, 20, kOurUtPexId, 'd', 'e'}));
    const std::string body(out.begin() + 5, out.end());
    auto split = split_extended(body);
    ASSERT_TRUE(split.ok());
    EXPECT_EQ(split.value().id, kOurUtPexId);
    EXPECT_EQ(split.value().payload, "de");
    EXPECT_FALSE(split_extended("").ok());

    auto pex = decode_incoming(body);
    ASSERT_TRUE(pex.ok());
    EXPECT_TRUE(std::holds_alternative<PexMessage>(pex.value()));
    auto handshake = decode_incoming(std::string(1, '\0') + "d1:md6:ut_pexi3eee");
    ASSERT_TRUE(handshake.ok());
    EXPECT_EQ(std::get<ExtendedHandshake>(handshake.value()).id_of(kUtPex), 3);
    auto metadata = decode_incoming(std::string(1, static_cast<char>(kOurUtMetadataId)) + encode_metadata_request(4));
    ASSERT_TRUE(metadata.ok());
    EXPECT_EQ(std::get<MetadataMessage>(metadata.value()).piece, 4u);
    // An extension we never offered: ignored, whatever its payload.
    auto unknown = decode_incoming("\x07garbage");
    ASSERT_TRUE(unknown.ok());
    EXPECT_EQ(std::get<UnknownExtension>(unknown.value()).id, 7);
    EXPECT_FALSE(decode_incoming("").ok());
    EXPECT_FALSE(decode_incoming(std::string(1, '\0') + "garbage").ok());
}

TEST(ExtendedFraming, ReservedBit) {
    wire::Handshake handshake;
    EXPECT_FALSE(handshake.supports_extensions());
    advertise_extension_protocol(handshake.reserved);
    EXPECT_TRUE(handshake.supports_extensions());
    EXPECT_EQ(handshake.reserved[5], 0x10);
}

// --- ut_metadata ---

TEST(UtMetadata, Bep9ExamplesBothWays) {
    EXPECT_EQ(encode_metadata_request(0), "d8:msg_typei0e5:piecei0ee");
    EXPECT_EQ(encode_metadata_reject(0), "d8:msg_typei2e5:piecei0ee");
    const std::string data(34256 - 2 * kMetadataPieceSize, 'x');
    const std::string payload = "d8:msg_typei1e5:piecei2e10:total_sizei34256ee" + data;
    EXPECT_EQ(encode_metadata_data(2, 34256, data), payload);

    auto request = decode_metadata("d8:msg_typei0e5:piecei0ee");
    ASSERT_TRUE(request.ok());
    EXPECT_EQ(request.value().type, MetadataType::request);
    EXPECT_EQ(request.value().piece, 0u);
    auto reject = decode_metadata("d8:msg_typei2e5:piecei1ee");
    ASSERT_TRUE(reject.ok());
    EXPECT_EQ(reject.value().type, MetadataType::reject);
    EXPECT_EQ(reject.value().piece, 1u);
    auto decoded = decode_metadata(payload);
    ASSERT_TRUE(decoded.ok()) << decoded.error().describe();
    EXPECT_EQ(decoded.value().type, MetadataType::data);
    EXPECT_EQ(decoded.value().piece, 2u);
    EXPECT_EQ(decoded.value().total_size, 34256u);
    EXPECT_EQ(decoded.value().data, data);
}

TEST(UtMetadata, DataThatLooksLikeBencode) {
    // The piece's bytes may be anything, bencode included: the split is where the dictionary ends.
    const std::string data = "d8:msg_typei0ee" + std::string(100, 'e');
    auto decoded = decode_metadata(encode_metadata_data(0, static_cast<std::uint32_t>(data.size()), data));
    ASSERT_TRUE(decoded.ok()) << decoded.error().describe();
    EXPECT_EQ(decoded.value().data, data);
    // A whole piece of 16 KiB.
    const std::string full(kMetadataPieceSize, '\xFF');
    auto first = decode_metadata(encode_metadata_data(0, kMetadataPieceSize + 1, full));
    ASSERT_TRUE(first.ok());
    EXPECT_EQ(first.value().data.size(), kMetadataPieceSize);
}

TEST(UtMetadata, UnknownTypesAreIgnored) {
    auto message = decode_metadata("d8:msg_typei7ee");
    ASSERT_TRUE(message.ok());
    EXPECT_EQ(message.value().type, MetadataType::unknown);
}

TEST(UtMetadata, HostileMessages) {
    EXPECT_THAT(metadata_refusal(""), HasSubstr("not bencoded"));
    EXPECT_THAT(metadata_refusal("li1ee"), HasSubstr("not a dictionary"));
    EXPECT_THAT(metadata_refusal("d5:piecei0ee"), HasSubstr("no msg_type"));
    EXPECT_THAT(metadata_refusal("d8:msg_type1:0e"), HasSubstr("msg_type\" is not an integer"));
    EXPECT_THAT(metadata_refusal("d8:msg_typei0ee"), HasSubstr("no piece"));
    EXPECT_THAT(metadata_refusal("d8:msg_typei0e5:piecei-1ee"), HasSubstr("piece -1 is beyond"));
    EXPECT_THAT(metadata_refusal("d8:msg_typei0e5:piecei1024ee"), HasSubstr("piece 1024 is beyond"));
    EXPECT_THAT(metadata_refusal("d8:msg_typei0e5:piecei0eexyz"), HasSubstr("request followed by 3 bytes"));
    EXPECT_THAT(metadata_refusal("d8:msg_typei2e5:piecei0eexyz"), HasSubstr("reject followed by 3 bytes"));
    EXPECT_THAT(metadata_refusal("d8:msg_typei0e5:piecei0e"), HasSubstr("truncated"));
    // Data: total_size missing, zero, over the cap; a piece beyond it; too short; too long.
    EXPECT_THAT(metadata_refusal("d8:msg_typei1e5:piecei0eexx"), HasSubstr("no total_size"));
    EXPECT_THAT(metadata_refusal("d8:msg_typei1e5:piecei0e10:total_sizei0eex"), HasSubstr("total_size 0 is not 1.."));
    EXPECT_THAT(metadata_refusal("d8:msg_typei1e5:piecei0e10:total_sizei16777217eex"),
                HasSubstr("total_size 16777217 is not 1..16777216"));
    EXPECT_THAT(metadata_refusal("d8:msg_typei1e5:piecei0e10:total_sizei3000eex", 2000),
                HasSubstr("total_size 3000 is not 1..2000"));
    EXPECT_THAT(metadata_refusal("d8:msg_typei1e5:piecei1e10:total_sizei100eex"),
                HasSubstr("piece 1 is beyond total_size 100"));
    EXPECT_THAT(metadata_refusal(encode_metadata_data(0, 100, std::string(99, 'x'))),
                HasSubstr("piece 0 carries 99 bytes, not 100"));
    EXPECT_THAT(metadata_refusal(encode_metadata_data(0, 100, std::string(101, 'x'))),
                HasSubstr("piece 0 carries 101 bytes, not 100"));
    EXPECT_THAT(metadata_refusal(encode_metadata_data(0, 20000, std::string(100, 'x'))),
                HasSubstr("carries 100 bytes, not 16384"));
    EXPECT_THAT(metadata_refusal("d8:msg_typei1e5:piecei0e10:total_sizei100ee"), HasSubstr("carries 0 bytes"));
    EXPECT_THAT(metadata_refusal(encode_metadata_data(0, 17000, std::string(kMetadataPieceSize + 1000, 'x'))),
                HasSubstr("is over"));
    // Garbage where the dictionary should end.
    EXPECT_THAT(metadata_refusal("d8:msg_typei1e5:piecei0e10:total_sizei5ex12345"), HasSubstr("not bencoded"));
}

TEST(UtMetadata, AnsweringRequests) {
    const std::string metadata(2 * kMetadataPieceSize + 10, 'm');
    auto first = decode_metadata(answer_metadata_request(metadata, 0));
    ASSERT_TRUE(first.ok());
    EXPECT_EQ(first.value().type, MetadataType::data);
    EXPECT_EQ(first.value().total_size, metadata.size());
    EXPECT_EQ(first.value().data.size(), kMetadataPieceSize);
    auto last = decode_metadata(answer_metadata_request(metadata, 2));
    ASSERT_TRUE(last.ok());
    EXPECT_EQ(last.value().data, std::string(10, 'm'));
    EXPECT_EQ(answer_metadata_request(metadata, 3), encode_metadata_reject(3));
    EXPECT_EQ(answer_metadata_request("", 0), encode_metadata_reject(0));
    EXPECT_EQ(metadata_piece_count(1), 1u);
    EXPECT_EQ(metadata_piece_count(kMetadataPieceSize), 1u);
    EXPECT_EQ(metadata_piece_count(kMetadataPieceSize + 1), 2u);
    EXPECT_EQ(metadata_piece_count(kMaxMetadataSize), 1024u);
    EXPECT_EQ(metadata_piece_size(kMetadataPieceSize + 1, 1), 1u);
    EXPECT_EQ(metadata_piece_size(kMetadataPieceSize + 1, 2), 0u);
}

// --- the assembler, with a real info dictionary ---

// 2600 pieces of 16 bytes: 52 KB of piece hashes, so the info dictionary spans four metadata
// pieces, the last a short one.
const test::TestTorrent& big_info_torrent() {
    static const test::TestTorrent torrent = test::make_torrent("metadata.bin", 16, {}, 16 * 2600);
    return torrent;
}

std::string piece_of(const std::string& metadata, std::uint32_t piece) {
    const auto total = static_cast<std::uint32_t>(metadata.size());
    return metadata.substr(std::size_t{piece} * kMetadataPieceSize, metadata_piece_size(total, piece));
}

TEST(MetadataAssembler, AssemblesARealInfoDictionaryFromSeveralPeers) {
    const Torrent& torrent = big_info_torrent().torrent;
    const std::string& info = torrent.info_bytes();
    const auto total = static_cast<std::uint32_t>(info.size());
    ASSERT_EQ(metadata_piece_count(total), 4u);

    auto created = MetadataAssembler::create(torrent.info_hash(), total);
    ASSERT_TRUE(created.ok());
    MetadataAssembler assembler = std::move(created).value();
    EXPECT_THAT(assembler.missing(), ElementsAre(0u, 1u, 2u, 3u));
    // Out of order, from three peers, through the wire encoding and back.
    const std::vector<std::pair<std::uint32_t, std::string>> arrivals{
        {3, "10.0.0.1:1"}, {0, "10.0.0.2:2"}, {2, "10.0.0.3:3"}, {0, "10.0.0.3:3"}, {1, "10.0.0.1:1"}};
    std::size_t stored = 0;
    for (const auto& [piece, peer] : arrivals) {
        EXPECT_FALSE(assembler.complete());
        const std::string payload = answer_metadata_request(info, piece);
        auto message = decode_metadata(payload);
        ASSERT_TRUE(message.ok()) << message.error().describe();
        auto added = assembler.add(message.value(), peer);
        ASSERT_TRUE(added.ok()) << added.error().describe();
        stored += added.value().stored ? 1 : 0;
    }
    EXPECT_EQ(stored, 4u);  // the second piece 0 was a repeat
    EXPECT_TRUE(assembler.complete());
    EXPECT_THAT(assembler.missing(), IsEmpty());
    auto finished = assembler.finish();
    ASSERT_TRUE(finished.ok());
    ASSERT_TRUE(finished.value().verified);
    EXPECT_EQ(finished.value().metadata, info);
    EXPECT_EQ(sha1(finished.value().metadata), torrent.info_hash());
    EXPECT_THAT(finished.value().liars, IsEmpty());
    // The bytes are what Torrent::parse_info reads, to the same torrent.
    auto parsed = Torrent::parse_info(finished.value().metadata);
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(parsed.value().info_hash(), torrent.info_hash());
    EXPECT_EQ(parsed.value().piece_count(), 2600u);
    // Spent.
    EXPECT_FALSE(assembler.finish().ok());
    EXPECT_FALSE(assembler.add(0, total, piece_of(info, 0), "late").ok());
}

TEST(MetadataAssembler, ALiarIsNamedAndTheRetrySucceeds) {
    const Torrent& torrent = big_info_torrent().torrent;
    const std::string& info = torrent.info_bytes();
    const auto total = static_cast<std::uint32_t>(info.size());
    MetadataAssembler assembler = MetadataAssembler::create(torrent.info_hash(), total).value();

    // The liar sends piece 1 with one byte changed; honest peers send the rest.
    std::string lie = piece_of(info, 1);
    lie[100] = static_cast<char>(lie[100] ^ 0x01);
    ASSERT_TRUE(assembler.add(0, total, piece_of(info, 0), "honest-a").ok());
    ASSERT_TRUE(assembler.add(1, total, lie, "liar").ok());
    ASSERT_TRUE(assembler.add(2, total, piece_of(info, 2), "honest-b").ok());
    auto last = assembler.add(3, total, piece_of(info, 3), "honest-a");
    ASSERT_TRUE(last.ok());
    EXPECT_TRUE(last.value().complete);
    auto failed = assembler.finish();
    ASSERT_TRUE(failed.ok());
    EXPECT_FALSE(failed.value().verified);
    EXPECT_TRUE(failed.value().metadata.empty());
    EXPECT_THAT(failed.value().suspects, ElementsAre("honest-a", "honest-b", "liar"));
    // Started over: every piece missing again.
    EXPECT_FALSE(assembler.complete());
    EXPECT_THAT(assembler.missing(), ElementsAre(0u, 1u, 2u, 3u));
    EXPECT_FALSE(assembler.finish().ok());

    // The retry, from another peer for piece 1, verifies, and proves who lied.
    for (std::uint32_t piece = 0; piece < 4; ++piece) {
        ASSERT_TRUE(assembler.add(piece, total, piece_of(info, piece), piece == 1 ? "honest-c" : "honest-a").ok());
    }
    auto finished = assembler.finish();
    ASSERT_TRUE(finished.ok());
    ASSERT_TRUE(finished.value().verified);
    EXPECT_EQ(finished.value().metadata, info);
    EXPECT_THAT(finished.value().liars, ElementsAre("liar"));
}

TEST(MetadataAssembler, ALoneLiarIsTheOnlySuspect) {
    const Torrent& torrent = big_info_torrent().torrent;
    const std::string info = torrent.info_bytes();
    const auto total = static_cast<std::uint32_t>(info.size());
    MetadataAssembler assembler = MetadataAssembler::create(torrent.info_hash(), total).value();
    std::string forged = info;
    forged[10] = 'X';
    for (std::uint32_t piece = 0; piece < 4; ++piece) {
        ASSERT_TRUE(assembler.add(piece, total, piece_of(forged, piece), "liar").ok());
    }
    auto failed = assembler.finish();
    ASSERT_TRUE(failed.ok());
    EXPECT_FALSE(failed.value().verified);
    EXPECT_THAT(failed.value().suspects, ElementsAre("liar"));
}

TEST(MetadataAssembler, HostilePieces) {
    const Sha1Digest hash = sha1("x");
    EXPECT_THAT(MetadataAssembler::create(hash, 0).error().message, HasSubstr("metadata size 0 is not 1.."));
    EXPECT_THAT(MetadataAssembler::create(hash, kMaxMetadataSize + 1ull).error().message, HasSubstr("16777217"));
    EXPECT_FALSE(MetadataAssembler::create(hash, 1ull << 40).ok());
    EXPECT_FALSE(MetadataAssembler::create(hash, 5000, 4096).ok());

    MetadataAssembler assembler = MetadataAssembler::create(hash, 20000).value();
    EXPECT_EQ(assembler.piece_count(), 2u);
    // A peer that says the metadata has another size: total_size mismatch across peers.
    EXPECT_THAT(assembler.add(0, 30000, std::string(kMetadataPieceSize, 'a'), "p").error().message,
                HasSubstr("peer says the metadata is 30000 bytes; it is 20000"));
    EXPECT_THAT(assembler.add(2, 20000, "x", "p").error().message, HasSubstr("piece 2 is beyond its 2 pieces"));
    EXPECT_THAT(assembler.add(1, 20000, std::string(3000, 'a'), "p").error().message,
                HasSubstr("piece 1 is 3000 bytes, not 3616"));
    EXPECT_THAT(assembler.add(0, 20000, std::string(kMetadataPieceSize + 1, 'a'), "p").error().message,
                HasSubstr("not 16384"));
    MetadataMessage request;
    request.type = MetadataType::request;
    EXPECT_FALSE(assembler.add(request, "p").ok());
    EXPECT_THAT(assembler.finish().error().message, HasSubstr("2 of 2 pieces missing"));
    EXPECT_THAT(assembler.missing(), ElementsAre(0u, 1u));
}

TEST(MetadataAssembler, LiarsAreRememberedOverABoundedNumberOfAttempts) {
    const std::string info = "d4:name1:x12:piece lengthi16e6:pieces0:e";
    const auto total = static_cast<std::uint32_t>(info.size());
    MetadataAssembler assembler = MetadataAssembler::create(sha1(info), total).value();
    for (int attempt = 0; attempt < 6; ++attempt) {
        std::string lie = info;
        lie[0] = static_cast<char>('0' + attempt);
        ASSERT_TRUE(assembler.add(0, total, lie, "liar-" + std::to_string(attempt)).ok());
        auto failed = assembler.finish();
        ASSERT_TRUE(failed.ok());
        EXPECT_FALSE(failed.value().verified);
    }
    ASSERT_TRUE(assembler.add(0, total, info, "honest").ok());
    auto finished = assembler.finish();
    ASSERT_TRUE(finished.ok());
    ASSERT_TRUE(finished.value().verified);
    // The last four attempts are remembered.
    EXPECT_THAT(finished.value().liars, ElementsAre("liar-2", "liar-3", "liar-4", "liar-5"));
}

// --- ut_pex ---

TEST(UtPex, RoundTripBothFamiliesWithFlags) {
    PexMessage message;
    message.added = {PexPeer{{"10.0.0.1", 6881}, kPexPrefersEncryption | kPexSeed},
                     PexPeer{{"192.168.7.9", 51413}, kPexUtp | kPexReachable},
                     PexPeer{{"2001:db8::1", 6881}, kPexHolepunch}};
    message.dropped = {{"10.0.0.2", 1}, {"::1", 2}};
    auto payload = encode_pex(message);
    ASSERT_TRUE(payload.ok()) << payload.error().describe();
    EXPECT_EQ(payload.value(), "d5:added12:" + std::string("\x0A\x00\x00\x01\x1A\xE1\xC0\xA8\x07\x09\xC8\xD5", 12) +
                                   "7:added.f2:\x03\x14" + "6:added618:" +
                                   std::string("\x20\x01\x0d\xb8\0\0\0\0\0\0\0\0\0\0\0\x01\x1A\xE1", 18) +
                                   "8:added6.f1:\x08" + "7:dropped6:" + std::string("\x0A\x00\x00\x02\x00\x01", 6) +
                                   "8:dropped618:" + std::string(15, '\0') + std::string("\x01\x00\x02", 3) + "e");
    auto decoded = decode_pex(payload.value());
    ASSERT_TRUE(decoded.ok()) << decoded.error().describe();
    EXPECT_EQ(decoded.value(), message);
    // Empty: what we send when we only drop, and what arrives from clients with nothing new.
    EXPECT_EQ(encode_pex(PexMessage{}).value(), "d5:added0:7:added.f0:7:dropped0:e");
    EXPECT_EQ(decode_pex("de").value(), PexMessage{});
}

TEST(UtPex, WithoutFlagsAndWithPortZero) {
    const std::string added = std::string("\x01\x02\x03\x04\x00\x50", 6) + std::string("\x05\x06\x07\x08\x00\x00", 6);
    auto decoded = decode_pex("d5:added12:" + added + "e");
    ASSERT_TRUE(decoded.ok());
    EXPECT_THAT(decoded.value().added, ElementsAre(PexPeer{{"1.2.3.4", 80}, 0}));
    EXPECT_EQ(decoded.value().skipped, 1u);
}

TEST(UtPex, HostileSizes) {
    auto refusal = [](const std::string& payload) {
        auto decoded = decode_pex(payload);
        EXPECT_FALSE(decoded.ok()) << payload.substr(0, 60);
        return decoded.ok() ? std::string() : decoded.error().describe();
    };
    EXPECT_THAT(refusal("le"), HasSubstr("not a dictionary"));
    EXPECT_THAT(refusal("d5:addedi1ee"), HasSubstr("\"added\" is not a string"));
    EXPECT_THAT(refusal("d5:added7:1234567e"), HasSubstr("\"added\" of 7 bytes is not 6-byte entries"));
    EXPECT_THAT(refusal("d6:added66:123456e"), HasSubstr("\"added6\" of 6 bytes is not 18-byte entries"));
    EXPECT_THAT(refusal("d7:dropped5:12345e"), HasSubstr("\"dropped\" of 5 bytes"));
    EXPECT_THAT(refusal("d8:dropped66:123456e"), HasSubstr("\"dropped6\" of 6 bytes"));
    EXPECT_THAT(refusal("d5:added6:1234567:added.f2:abe"), HasSubstr("has 2 flags for 1 peers"));
    EXPECT_THAT(refusal("d5:added6:1234567:added.f0:e"), HasSubstr("has 0 flags for 1 peers"));
    EXPECT_THAT(refusal("d5:added6:1234567:added.fi1ee"), HasSubstr("\"added.f\" is not a string"));
    EXPECT_THAT(refusal("d7:added.fi1ee"), HasSubstr("\"added.f\" is not a string"));
    // Over the count we take, IPv4 and IPv6 together.
    const std::string v4(6 * 150, '\x01');
    const std::string v6(18 * 51, '\x02');
    EXPECT_THAT(refusal("d5:added" + bstr(v4) + "6:added6" + bstr(v6) + "e"), HasSubstr("adds more than 200 peers"));
    EXPECT_THAT(refusal("d7:dropped" + bstr(std::string(6 * 201, '\x01')) + "e"), HasSubstr("drops more than 200"));
    EXPECT_TRUE(decode_pex("d5:added" + bstr(v4) + "e").ok());
    EXPECT_THAT(refusal("d5:added" + bstr(std::string(kMaxPexPayload, '\x01')) + "e"), HasSubstr("over 16 KiB"));

    // What we send stays within the convention, and only literal addresses.
    PexMessage many;
    for (int i = 0; i < 51; ++i) many.added.push_back(PexPeer{{"10.0.0." + std::to_string(i), 80}, 0});
    EXPECT_THAT(encode_pex(many).error().message, HasSubstr("at most 50 added"));
    many.added.pop_back();
    EXPECT_TRUE(encode_pex(many).ok());
    PexMessage named;
    named.dropped = {{"peer.example.org", 80}};
    EXPECT_THAT(encode_pex(named).error().message, HasSubstr("not a literal IP address"));
}

}  // namespace
}  // namespace pw::ext
