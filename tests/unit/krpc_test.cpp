#include "core/krpc.hpp"

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace pw::krpc {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

std::array<std::uint8_t, 20> id_of(const std::string& text) {
    std::array<std::uint8_t, 20> id{};
    EXPECT_EQ(text.size(), 20u);
    std::memcpy(id.data(), text.data(), std::min<std::size_t>(text.size(), 20));
    return id;
}

Message decoded(const std::string& packet) {
    auto message = decode(packet);
    EXPECT_TRUE(message.ok()) << packet << ": " << (message.ok() ? "" : message.error().describe());
    return message.ok() ? message.value() : Message{};
}

std::string refusal(const std::string& packet) {
    auto message = decode(packet);
    EXPECT_FALSE(message.ok()) << packet << " decoded";
    return message.ok() ? std::string() : message.error().describe();
}

// BEP 5's examples, verbatim: each decodes to what the BEP says and encodes back to the same
// bytes.
TEST(KrpcBep5, Ping) {
    const std::string query = "d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe";
    const Message q = decoded(query);
    EXPECT_EQ(q.transaction, "aa");
    const auto& body = std::get<Query>(q.body);
    EXPECT_EQ(body.id, id_of("abcdefghij0123456789"));
    EXPECT_TRUE(std::holds_alternative<Ping>(body.arguments));
    EXPECT_EQ(encode(q), query);

    const std::string response = "d1:rd2:id20:mnopqrstuvwxyz123456e1:t2:aa1:y1:re";
    const Message r = decoded(response);
    EXPECT_EQ(std::get<Response>(r.body).id, id_of("mnopqrstuvwxyz123456"));
    EXPECT_EQ(encode(r), response);
}

TEST(KrpcBep5, FindNode) {
    const std::string query =
        "d1:ad2:id20:abcdefghij01234567896:target20:mnopqrstuvwxyz123456e1:q9:find_node1:t2:aa1:y1:qe";
    const Message q = decoded(query);
    const auto& body = std::get<Query>(q.body);
    EXPECT_EQ(std::get<FindNode>(body.arguments).target, id_of("mnopqrstuvwxyz123456"));
    EXPECT_EQ(encode(q), query);
    // The BEP's answer carries "def456..." as a stand-in for compact node info: 9 bytes are
    // not a whole 26-byte entry, so the real thing is refused.
    EXPECT_THAT(refusal("d1:rd2:id20:0123456789abcdefghij5:nodes9:def456...e1:t2:aa1:y1:re"),
                HasSubstr("response \"nodes\": compact nodes are 26-byte entries; 9 bytes"));
}

TEST(KrpcBep5, GetPeers) {
    const std::string query =
        "d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz123456e1:q9:get_peers1:t2:aa1:y1:qe";
    const Message q = decoded(query);
    EXPECT_EQ(std::get<GetPeers>(std::get<Query>(q.body).arguments).info_hash, id_of("mnopqrstuvwxyz123456"));
    EXPECT_EQ(encode(q), query);

    const std::string with_peers =
        "d1:rd2:id20:abcdefghij01234567895:token8:aoeusnth6:valuesl6:axje.u6:idhtnmee1:t2:aa1:y1:re";
    const Message r = decoded(with_peers);
    const auto& response = std::get<Response>(r.body);
    EXPECT_EQ(response.token, "aoeusnth");
    // "axje.u" is 97.120.106.101 port 0x2e75, "idhtnm" 105.100.104.116 port 0x6e6d.
    ASSERT_TRUE(response.values.has_value());
    EXPECT_THAT(*response.values,
                ElementsAre(PeerAddress{"97.120.106.101", 0x2e75}, PeerAddress{"105.100.104.116", 0x6e6d}));
    EXPECT_THAT(response.nodes, IsEmpty());
    EXPECT_EQ(encode(r), with_peers);

    EXPECT_THAT(refusal("d1:rd2:id20:abcdefghij01234567895:nodes9:def456...5:token8:aoeusnthe1:t2:aa1:y1:re"),
                HasSubstr("9 bytes is not a whole number"));
}

TEST(KrpcBep5, AnnouncePeer) {
    const std::string query =
        "d1:ad2:id20:abcdefghij012345678912:implied_porti1e9:info_hash20:mnopqrstuvwxyz1234564:porti6881e"
        "5:token8:aoeusnthe1:q13:announce_peer1:t2:aa1:y1:qe";
    const Message q = decoded(query);
    const auto& announce = std::get<AnnouncePeer>(std::get<Query>(q.body).arguments);
    EXPECT_EQ(announce.info_hash, id_of("mnopqrstuvwxyz123456"));
    EXPECT_EQ(announce.port, 6881);
    EXPECT_TRUE(announce.implied_port);
    EXPECT_EQ(announce.token, "aoeusnth");
    EXPECT_EQ(encode(q), query);

    const std::string response = "d1:rd2:id20:mnopqrstuvwxyz123456e1:t2:aa1:y1:re";
    EXPECT_EQ(encode(decoded(response)), response);
}

TEST(KrpcBep5, Error) {
    const std::string error = "d1:eli201e23:A Generic Error Ocurrede1:t2:aa1:y1:ee";
    const Message e = decoded(error);
    const auto& reply = std::get<ErrorReply>(e.body);
    EXPECT_EQ(reply.code, kGenericError);
    EXPECT_EQ(reply.message, "A Generic Error Ocurred");
    EXPECT_EQ(encode(e), error);
}

NodeInfo node(std::uint8_t fill, const std::string& ip, std::uint16_t port) {
    NodeInfo info;
    info.id.fill(fill);
    info.address = PeerAddress{ip, port};
    return info;
}

TEST(Krpc, ResponsesWithRealNodesRoundTrip) {
    Message message;
    message.transaction = std::string("\x00\x01", 2);
    message.version = "LT\x02\x00";
    message.observed_address = PeerAddress{"203.0.113.9", 6881};
    Response response;
    response.id.fill(0xAB);
    response.nodes = {node(1, "10.0.0.1", 6881), node(2, "192.168.1.200", 65535)};
    response.nodes6 = {node(3, "2001:db8::1", 51413)};
    response.token = std::string("\x01\x02\x03\x04", 4);
    response.values = std::vector<PeerAddress>{{"1.2.3.4", 80}, {"::1", 443}};
    message.body = response;
    const std::string bytes = encode(message);
    EXPECT_EQ(decoded(bytes), message);
    // nodes is 2 * 26 bytes, nodes6 one 38-byte entry, an IPv6 value 18 bytes.
    EXPECT_THAT(bytes, HasSubstr("5:nodes52:"));
    EXPECT_THAT(bytes, HasSubstr("6:nodes638:"));
    EXPECT_THAT(bytes, HasSubstr("18:"));
    EXPECT_THAT(bytes, HasSubstr("2:ip6:"));
}

TEST(Krpc, QueriesRoundTrip) {
    Message message;
    message.transaction = "xy";
    Query query;
    query.id.fill(7);
    query.read_only = true;
    query.arguments = AnnouncePeer{id_of("mnopqrstuvwxyz123456"), 0, true, "tok"};
    message.body = query;
    const std::string bytes = encode(message);
    EXPECT_EQ(bytes.find("4:port"), std::string::npos);  // implied, without a port
    EXPECT_THAT(bytes, HasSubstr("2:roi1e"));
    EXPECT_EQ(decoded(bytes), message);

    query.arguments = UnknownMethod{"vote"};
    message.body = query;
    EXPECT_EQ(decoded(encode(message)), message);
    const Message unknown = decoded("d1:ad2:id20:abcdefghij0123456789e1:q6:sample1:t2:aa1:y1:qe");
    EXPECT_EQ(std::get<UnknownMethod>(std::get<Query>(unknown.body).arguments).name, "sample");
}

TEST(Krpc, UnknownKeysAndLongVersionsAreIgnored) {
    const Message m = decoded(
        "d1:ad2:id20:abcdefghij01234567894:wantl2:n42:n6ee1:q4:ping1:t2:aa1:v20:01234567890123456789"
        "1:y1:q5:extrali1eee");
    EXPECT_FALSE(m.version.has_value());
    EXPECT_TRUE(std::holds_alternative<Ping>(std::get<Query>(m.body).arguments));
}

TEST(Krpc, MalformedMessages) {
    const std::string id = "2:id20:abcdefghij0123456789";
    EXPECT_THAT(refusal(""), HasSubstr("not bencoded"));
    EXPECT_THAT(refusal("le"), HasSubstr("not a dictionary"));
    EXPECT_THAT(refusal("d1:t2:aae"), HasSubstr("no \"y\""));
    EXPECT_THAT(refusal("d1:y1:qe"), HasSubstr("no \"t\""));
    EXPECT_THAT(refusal("d1:ti1e1:y1:qe"), HasSubstr("\"t\" is not a string"));
    EXPECT_THAT(refusal("d1:t0:1:y1:re"), HasSubstr("transaction id is empty"));
    EXPECT_THAT(refusal("d1:t17:aaaaaaaaaaaaaaaaa1:y1:re"), HasSubstr("over 16 bytes"));
    EXPECT_THAT(refusal("d1:t2:aa1:y1:xe"), HasSubstr("\"y\" is \"x\", not q, r or e"));
    EXPECT_THAT(refusal("d1:t2:aa1:y1:qe"), HasSubstr("query has no \"q\""));
    EXPECT_THAT(refusal("d1:q4:ping1:t2:aa1:y1:qe"), HasSubstr("no \"a\" dictionary"));
    EXPECT_THAT(refusal("d1:ad2:id3:abce1:q4:ping1:t2:aa1:y1:qe"), HasSubstr("\"id\" is 3 bytes, not 20"));
    EXPECT_THAT(refusal("d1:ad" + id + "e1:q0:1:t2:aa1:y1:qe"), HasSubstr("method name is empty"));
    EXPECT_THAT(refusal("d1:ad" + id + "e1:q9:find_node1:t2:aa1:y1:qe"), HasSubstr("find_node has no \"target\""));
    EXPECT_THAT(refusal("d1:ad" + id + "9:info_hash3:abce1:q9:get_peers1:t2:aa1:y1:qe"),
                HasSubstr("\"info_hash\" is 3 bytes"));
    EXPECT_THAT(refusal("d1:ad" + id + "2:roi1ee1:q4:ping1:t2:aa1:y1:q2:ro1:xe"), HasSubstr("\"ro\" is not an integer"));
    // announce_peer: token, port, implied_port.
    const std::string hash = "9:info_hash20:mnopqrstuvwxyz123456";
    const std::string tail = "e1:q13:announce_peer1:t2:aa1:y1:qe";
    EXPECT_THAT(refusal("d1:ad" + id + hash + "4:porti1e" + tail), HasSubstr("no \"token\""));
    EXPECT_THAT(refusal("d1:ad" + id + hash + "4:porti1e5:token0:" + tail), HasSubstr("token is empty"));
    EXPECT_THAT(refusal("d1:ad" + id + hash + "4:porti1e5:token65:" + std::string(65, 't') + tail),
                HasSubstr("over 64 bytes"));
    EXPECT_THAT(refusal("d1:ad" + id + hash + "5:token1:t" + tail), HasSubstr("no \"port\""));
    EXPECT_THAT(refusal("d1:ad" + id + hash + "4:porti0e5:token1:t" + tail), HasSubstr("port 0 is out of range"));
    EXPECT_THAT(refusal("d1:ad" + id + hash + "4:porti65536e5:token1:t" + tail), HasSubstr("port 65536"));
    EXPECT_THAT(refusal("d1:ad" + id + hash + "4:port4:6881" + "5:token1:t" + tail), HasSubstr("not an integer"));
    EXPECT_THAT(refusal("d1:ad" + id + "12:implied_port1:1" + hash + "5:token1:t" + tail),
                HasSubstr("\"implied_port\" is not an integer"));
    // Responses.
    EXPECT_THAT(refusal("d1:t2:aa1:y1:re"), HasSubstr("no \"r\" dictionary"));
    EXPECT_THAT(refusal("d1:rd" + id + "5:nodesi1ee1:t2:aa1:y1:re"), HasSubstr("\"nodes\" is not a string"));
    EXPECT_THAT(refusal("d1:rd" + id + "6:nodes65:abcdee1:t2:aa1:y1:re"), HasSubstr("38-byte entries"));
    EXPECT_THAT(refusal("d1:rd" + id + "6:values6:abcdefe1:t2:aa1:y1:re"), HasSubstr("\"values\" is not a list"));
    EXPECT_THAT(refusal("d1:rd" + id + "6:valuesli1eee1:t2:aa1:y1:re"), HasSubstr("holds a non-string"));
    EXPECT_THAT(refusal("d1:rd" + id + "6:valuesl5:abcdeee1:t2:aa1:y1:re"), HasSubstr("6 or 18 bytes, not 5"));
    EXPECT_THAT(refusal("d1:rd" + id + "5:tokeni1ee1:t2:aa1:y1:re"), HasSubstr("\"token\" is not a string"));
    EXPECT_THAT(refusal("d2:ip3:abc1:rd" + id + "e1:t2:aa1:y1:re"), HasSubstr("\"ip\": a compact peer is 6 or 18"));
    // Errors.
    EXPECT_THAT(refusal("d1:e3:bad1:t2:aa1:y1:ee"), HasSubstr("no \"e\" list"));
    EXPECT_THAT(refusal("d1:eli201ee1:t2:aa1:y1:ee"), HasSubstr("not [code, message]"));
    EXPECT_THAT(refusal("d1:el3:abci201ee1:t2:aa1:y1:ee"), HasSubstr("not [code, message]"));
    // Bencode itself: trailing bytes, duplicate keys, depth.
    EXPECT_THAT(refusal("d1:t2:aa1:y1:eexx"), HasSubstr("trailing bytes"));
    EXPECT_THAT(refusal("d1:t2:aa1:t2:bb1:y1:ee"), HasSubstr("duplicate"));
    EXPECT_THAT(refusal("d1:t2:aa1:x" + std::string(20, 'l') + std::string(20, 'e') + "1:y1:ee"), HasSubstr("nesting"));
}

TEST(Krpc, Bounds) {
    std::string packet = "d1:eli201e3:abce1:t2:aa1:y1:e1:zl";
    while (packet.size() <= kMaxPacket) packet += "i0e";
    packet += "ee";
    EXPECT_THAT(refusal(packet), HasSubstr("over the 1500-byte limit"));
    // A larger bound is the caller's to give.
    EXPECT_TRUE(decode(packet, packet.size()).ok());

    std::string values;
    for (std::size_t i = 0; i <= kMaxValues; ++i) values += "6:abcdef";
    const std::string many = "d1:rd2:id20:abcdefghij01234567896:valuesl" + values + "ee1:t2:aa1:y1:re";
    auto result = decode(many, 4096);
    ASSERT_FALSE(result.ok());
    EXPECT_THAT(result.error().message, HasSubstr("more than 128 values"));

    const std::string nodes(26 * (kMaxNodes + 1), 'n');
    auto too_many = decode_compact_nodes(nodes, false);
    ASSERT_FALSE(too_many.ok());
    EXPECT_THAT(too_many.error().message, HasSubstr("65 compact nodes, over the 64"));

    // A long error text is cut and made printable for the log.
    const std::string text = std::string(300, 'x') + "\n";
    const Message e = decoded("d1:eli202e" + std::to_string(text.size()) + ":" + text + "e1:t2:aa1:y1:ee");
    EXPECT_EQ(std::get<ErrorReply>(e.body).message, std::string(kMaxErrorMessage, 'x'));
    const Message control = decoded("d1:eli203e3:a\nbe1:t2:aa1:y1:ee");
    EXPECT_EQ(std::get<ErrorReply>(control.body).message, "a?b");
}

TEST(KrpcCompact, PeersBothWays) {
    EXPECT_EQ(decode_compact_peer(std::string("\x7F\x00\x00\x01\x1A\xE1", 6)).value(), (PeerAddress{"127.0.0.1", 6881}));
    const std::string v6("\x20\x01\x0d\xb8\0\0\0\0\0\0\0\0\0\0\0\x01\xC8\xD5", 18);
    EXPECT_EQ(decode_compact_peer(v6).value(), (PeerAddress{"2001:db8::1", 51413}));
    EXPECT_EQ(encode_compact_peer(PeerAddress{"2001:DB8::1", 51413}), v6);
    EXPECT_EQ(encode_compact_peer(PeerAddress{"127.0.0.1", 6881}), std::string("\x7F\x00\x00\x01\x1A\xE1", 6));
    EXPECT_FALSE(encode_compact_peer(PeerAddress{"example.org", 1}).has_value());
    EXPECT_FALSE(encode_compact_peer(PeerAddress{"", 1}).has_value());
    EXPECT_FALSE(encode_compact_peer(PeerAddress{std::string("1.2.3.4\0", 8), 1}).has_value());
    EXPECT_FALSE(decode_compact_peer("12345").ok());
    EXPECT_FALSE(decode_compact_peer("").ok());
}

TEST(KrpcCompact, NodesBothWays) {
    const std::vector<NodeInfo> v4{node(1, "10.0.0.1", 1), node(0xFF, "255.255.255.255", 65535)};
    auto bytes = encode_compact_nodes(v4, false);
    ASSERT_TRUE(bytes.ok());
    EXPECT_EQ(bytes.value().size(), 52u);
    EXPECT_EQ(decode_compact_nodes(bytes.value(), false).value(), v4);
    const std::vector<NodeInfo> v6{node(9, "fe80::1", 6881)};
    EXPECT_EQ(decode_compact_nodes(encode_compact_nodes(v6, true).value(), true).value(), v6);
    EXPECT_FALSE(encode_compact_nodes(v6, false).ok());
    EXPECT_FALSE(encode_compact_nodes(v4, true).ok());
    EXPECT_TRUE(decode_compact_nodes("", false).value().empty());
    EXPECT_FALSE(decode_compact_nodes(std::string(27, 'x'), false).ok());
}

TEST(KrpcDistance, XorMetric) {
    NodeId zero{}, one{}, top{}, all{};
    one[19] = 1;
    top[0] = 0x80;
    all.fill(0xFF);
    EXPECT_EQ(distance(zero, zero), zero);
    EXPECT_EQ(distance(one, top)[0], 0x80);
    EXPECT_EQ(distance(one, top)[19], 1);
    EXPECT_EQ(distance(all, top), distance(top, all));
    EXPECT_TRUE(closer(zero, one, top));
    EXPECT_FALSE(closer(zero, top, one));
    EXPECT_FALSE(closer(zero, one, one));
    EXPECT_TRUE(closer(all, top, one));  // all^top = 0x7F..., all^one = 0xFF...FE
    EXPECT_EQ(shared_prefix_bits(zero, zero), 160);
    EXPECT_EQ(shared_prefix_bits(zero, top), 0);
    EXPECT_EQ(shared_prefix_bits(zero, one), 159);
    NodeId mid{};
    mid[2] = 0x10;  // bits 16..23: 0001 0000
    EXPECT_EQ(shared_prefix_bits(zero, mid), 19);
}

}  // namespace
}  // namespace pw::krpc
