#include "core/tracker_codec.hpp"

#include <cstdint>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace pw::tracker {
namespace {

using Bytes = std::vector<std::uint8_t>;

AnnounceRequest sample_request() {
    AnnounceRequest request;
    for (std::uint8_t i = 0; i < 20; ++i) request.info_hash[i] = static_cast<std::uint8_t>(i * 13);
    const std::string peer_id = "-PW0001-abc~def.gh_z";
    std::copy(peer_id.begin(), peer_id.end(), request.peer_id.begin());
    request.port = 6881;
    request.uploaded = 10;
    request.downloaded = 20;
    request.left = 5000000000ull;
    request.numwant = 50;
    request.key = 0xDEADBEEF;
    return request;
}

std::string bstr(const std::string& s) { return std::to_string(s.size()) + ":" + s; }

void put_u32(Bytes& out, std::uint32_t v) {
    for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<std::uint8_t>(v >> shift));
}

std::uint32_t get_u32(const std::uint8_t* p) {
    return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) |
           p[3];
}

std::uint64_t get_u64(const std::uint8_t* p) {
    return (std::uint64_t{get_u32(p)} << 32) | get_u32(p + 4);
}

TEST(AnnounceUrl, PercentEncodesEveryReservedByte) {
    const auto url = build_announce_url("http://t.example/announce", sample_request());
    EXPECT_EQ(url,
              "http://t.example/announce?info_hash=%00%0D%1A%274AN%5Bhu%82%8F%9C%A9%B6%C3%D0%DD%EA%F7"
              "&peer_id=-PW0001-abc~def.gh_z&port=6881&uploaded=10&downloaded=20&left=5000000000"
              "&compact=1&numwant=50&key=deadbeef");
}

TEST(AnnounceUrl, AppendsToAnExistingQuery) {
    auto request = sample_request();
    const auto url = build_announce_url("http://t.example/a?passkey=x", request);
    EXPECT_EQ(url.rfind("http://t.example/a?passkey=x&info_hash=", 0), 0u) << url;
    const auto trailing = build_announce_url("http://t.example/a?passkey=x&", request);
    EXPECT_EQ(trailing.rfind("http://t.example/a?passkey=x&info_hash=", 0), 0u) << trailing;
}

TEST(AnnounceUrl, EventAndTrackerId) {
    auto request = sample_request();
    request.event = Event::started;
    request.tracker_id = "a b&c";
    const auto url = build_announce_url("udp-less://x/announce", request);
    EXPECT_NE(url.find("&event=started"), std::string::npos);
    EXPECT_NE(url.find("&trackerid=a%20b%26c"), std::string::npos);
    request.event = Event::completed;
    EXPECT_NE(build_announce_url("http://x/", request).find("&event=completed"), std::string::npos);
    request.event = Event::stopped;
    EXPECT_NE(build_announce_url("http://x/", request).find("&event=stopped"), std::string::npos);
    request.event = Event::none;
    EXPECT_EQ(build_announce_url("http://x/", request).find("event="), std::string::npos);
}

TEST(HttpResponse, CompactPeersAndFields) {
    const std::string peers("\x7F\x00\x00\x01\x1A\xE1\x0A\x00\x00\x02\x00\x50", 12);
    const std::string body = "d8:completei5e10:incompletei3e8:intervali900e12:min intervali60e" +
                             std::string("5:peers") + bstr(peers) +
                             "10:tracker id3:xyz15:warning message4:slowe";
    auto response = parse_http_response(body);
    ASSERT_TRUE(response.ok()) << response.error().describe();
    EXPECT_FALSE(response->failure_reason);
    EXPECT_EQ(response->interval, 900);
    EXPECT_EQ(response->min_interval, 60);
    EXPECT_EQ(response->complete, 5);
    EXPECT_EQ(response->incomplete, 3);
    EXPECT_EQ(response->tracker_id, "xyz");
    EXPECT_EQ(response->warning, "slow");
    ASSERT_EQ(response->peers.size(), 2u);
    EXPECT_EQ(response->peers[0], (PeerAddress{"127.0.0.1", 6881}));
    EXPECT_EQ(response->peers[1], (PeerAddress{"10.0.0.2", 80}));
    EXPECT_EQ(response->skipped_peers, 0u);
}

TEST(HttpResponse, CompactPeersWithTrailingPartialEntry) {
    // 6n + 3 bytes: the two whole entries are kept, the rest counted as skipped.
    const std::string peers("\x01\x02\x03\x04\x00\x01\x05\x06\x07\x08\x00\x02\x09\x09\x09", 15);
    auto response = parse_http_response("d8:intervali1800e5:peers" + bstr(peers) + "e");
    ASSERT_TRUE(response.ok());
    ASSERT_EQ(response->peers.size(), 2u);
    EXPECT_EQ(response->peers[1], (PeerAddress{"5.6.7.8", 2}));
    EXPECT_EQ(response->skipped_peers, 1u);
}

TEST(HttpResponse, CompactPeerWithPortZeroSkipped) {
    const std::string peers("\x01\x02\x03\x04\x00\x00", 6);
    auto response = parse_http_response("d5:peers" + bstr(peers) + "e");
    ASSERT_TRUE(response.ok());
    EXPECT_TRUE(response->peers.empty());
    EXPECT_EQ(response->skipped_peers, 1u);
}

TEST(HttpResponse, Peers6) {
    std::string peers6(18, '\0');
    peers6[15] = 1;  // ::1
    peers6[16] = '\x1A';
    peers6[17] = '\xE1';
    std::string second("\x20\x01\x0d\xb8\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x05\x00\x50", 18);
    auto response = parse_http_response("d6:peers6" + bstr(peers6 + second + "xyz") + "e");
    ASSERT_TRUE(response.ok());
    ASSERT_EQ(response->peers.size(), 2u);
    EXPECT_EQ(response->peers[0], (PeerAddress{"::1", 6881}));
    EXPECT_EQ(response->peers[1], (PeerAddress{"2001:db8::5", 80}));
    EXPECT_EQ(response->skipped_peers, 1u);
}

TEST(HttpResponse, PeersAndPeers6Together) {
    const std::string peers("\x7F\x00\x00\x01\x1A\xE1", 6);
    std::string peers6(18, '\0');
    peers6[15] = 1;
    peers6[17] = 1;
    auto response = parse_http_response("d5:peers" + bstr(peers) + "6:peers6" + bstr(peers6) + "e");
    ASSERT_TRUE(response.ok());
    ASSERT_EQ(response->peers.size(), 2u);
    EXPECT_EQ(response->peers[1], (PeerAddress{"::1", 1}));
}

TEST(HttpResponse, DictionaryPeersSkipBadEntries) {
    const std::string body =
        "d8:intervali60e5:peersl"
        "d2:ip9:127.0.0.17:peer id20:aaaaaaaaaaaaaaaaaaaa4:porti6881ee"  // good
        "d2:ip3:::14:porti1ee"                                              // good, IPv6
        "d2:ip9:127.0.0.14:porti0ee"                                        // port 0
        "d2:ip9:127.0.0.14:porti65536ee"                                    // port too big
        "d2:ip9:127.0.0.14:porti-1ee"                                       // negative port
        "d2:ip11:example.com4:porti80ee"                                    // host name
        "d2:ip7:1.2.3.x4:porti80ee"                                         // garbage ip
        "d4:porti80ee"                                                      // no ip
        "d2:ip9:127.0.0.1e"                                                 // no port
        "d2:ipi5e4:porti80ee"                                               // ip not a string
        "i42e"                                                              // not a dict
        "d2:ip8:10.0.0.94:porti65535ee"                                     // good
        "ee";
    auto response = parse_http_response(body);
    ASSERT_TRUE(response.ok()) << response.error().describe();
    ASSERT_EQ(response->peers.size(), 3u);
    EXPECT_EQ(response->peers[0], (PeerAddress{"127.0.0.1", 6881}));
    EXPECT_EQ(response->peers[1], (PeerAddress{"::1", 1}));
    EXPECT_EQ(response->peers[2], (PeerAddress{"10.0.0.9", 65535}));
    EXPECT_EQ(response->skipped_peers, 9u);
}

TEST(HttpResponse, FailureReason) {
    auto response = parse_http_response("d14:failure reason17:torrent not founde");
    ASSERT_TRUE(response.ok());
    EXPECT_EQ(response->failure_reason, "torrent not found");
    EXPECT_TRUE(response->peers.empty());
}

TEST(HttpResponse, NotBencodeOrNotADictIsAnError) {
    EXPECT_FALSE(parse_http_response("").ok());
    EXPECT_FALSE(parse_http_response("<html>502 Bad Gateway</html>").ok());
    EXPECT_FALSE(parse_http_response("d8:intervali60e").ok());
    EXPECT_FALSE(parse_http_response("d8:intervali60eextra").ok());
    auto list = parse_http_response("l5:peerse");
    ASSERT_FALSE(list.ok());
    EXPECT_EQ(list.error().message, "tracker response is not a dictionary");
    EXPECT_FALSE(parse_http_response("i5e").ok());
}

TEST(HttpResponse, OversizedBodyIsAnError) {
    const std::string body(kMaxTrackerResponse + 1, 'x');
    EXPECT_FALSE(parse_http_response(body).ok());
}

TEST(HttpResponse, WrongTypesAreTolerated) {
    auto response = parse_http_response("d8:interval3:abc5:peersi5ee");
    ASSERT_TRUE(response.ok());
    EXPECT_EQ(response->interval, 1800);
    EXPECT_EQ(response->skipped_peers, 1u);
}

TEST(ClampInterval, Bounds) {
    AnnounceResponse response;
    response.interval = 900;
    EXPECT_EQ(clamp_interval(response), 900);
    response.interval = 5;
    EXPECT_EQ(clamp_interval(response), 30);
    response.interval = 100000;
    EXPECT_EQ(clamp_interval(response), 3600);
    response.interval = 0;
    EXPECT_EQ(clamp_interval(response), 1800);
    response.interval = -7;
    EXPECT_EQ(clamp_interval(response), 1800);
    response.interval = 100;
    response.min_interval = 300;
    EXPECT_EQ(clamp_interval(response), 300);
    EXPECT_EQ(clamp_interval(response, 10, 200, 150), 200);
}

TEST(Udp, ConnectRequest) {
    const auto packet = encode_udp_connect(0x11223344);
    EXPECT_EQ(get_u64(packet.data()), 0x41727101980ull);
    EXPECT_EQ(get_u32(packet.data() + 8), 0u);
    EXPECT_EQ(get_u32(packet.data() + 12), 0x11223344u);
}

TEST(Udp, ConnectResponse) {
    Bytes packet;
    put_u32(packet, 0);
    put_u32(packet, 77);
    put_u32(packet, 0xCAFEBABE);
    put_u32(packet, 0x01020304);
    auto id = parse_udp_connect(packet, 77);
    ASSERT_TRUE(id.ok()) << id.error().describe();
    EXPECT_EQ(*id, 0xCAFEBABE01020304ull);

    auto wrong_transaction = parse_udp_connect(packet, 78);
    ASSERT_FALSE(wrong_transaction.ok());
    EXPECT_NE(wrong_transaction.error().message.find("transaction"), std::string::npos);

    const Bytes short_packet(packet.begin(), packet.begin() + 15);
    EXPECT_FALSE(parse_udp_connect(short_packet, 77).ok());
    EXPECT_FALSE(parse_udp_connect(Bytes{0, 0, 0}, 77).ok());
    EXPECT_FALSE(parse_udp_connect(Bytes{}, 77).ok());

    Bytes wrong_action = packet;
    wrong_action[3] = 1;
    EXPECT_FALSE(parse_udp_connect(wrong_action, 77).ok());
}

TEST(Udp, ErrorActionCarriesTheMessage) {
    Bytes packet;
    put_u32(packet, 3);
    put_u32(packet, 9);
    const std::string text = "bad connection id\x01";
    packet.insert(packet.end(), text.begin(), text.end());
    auto connect = parse_udp_connect(packet, 9);
    ASSERT_FALSE(connect.ok());
    EXPECT_EQ(connect.error().message, "tracker error: bad connection id?");
    auto announce = parse_udp_announce(packet, 9, false);
    ASSERT_FALSE(announce.ok());
    EXPECT_EQ(announce.error().message, "tracker error: bad connection id?");
    // An error for someone else's transaction is not ours to report.
    EXPECT_NE(parse_udp_connect(packet, 10).error().message.find("transaction"), std::string::npos);
}

TEST(Udp, AnnounceRequestLayout) {
    auto request = sample_request();
    request.event = Event::stopped;
    request.numwant = -1;
    const auto packet = encode_udp_announce(0x0102030405060708ull, 0xAABBCCDD, request);
    ASSERT_EQ(packet.size(), 98u);
    EXPECT_EQ(get_u64(packet.data()), 0x0102030405060708ull);
    EXPECT_EQ(get_u32(packet.data() + 8), 1u);
    EXPECT_EQ(get_u32(packet.data() + 12), 0xAABBCCDDu);
    EXPECT_TRUE(std::equal(request.info_hash.begin(), request.info_hash.end(), packet.begin() + 16));
    EXPECT_TRUE(std::equal(request.peer_id.begin(), request.peer_id.end(), packet.begin() + 36));
    EXPECT_EQ(get_u64(packet.data() + 56), 20u);           // downloaded
    EXPECT_EQ(get_u64(packet.data() + 64), 5000000000ull);  // left
    EXPECT_EQ(get_u64(packet.data() + 72), 10u);           // uploaded
    EXPECT_EQ(get_u32(packet.data() + 80), 3u);            // stopped
    EXPECT_EQ(get_u32(packet.data() + 84), 0u);            // ip
    EXPECT_EQ(get_u32(packet.data() + 88), 0xDEADBEEFu);   // key
    EXPECT_EQ(get_u32(packet.data() + 92), 0xFFFFFFFFu);   // num_want -1
    EXPECT_EQ(packet[96], 0x1A);
    EXPECT_EQ(packet[97], 0xE1);
}

TEST(Udp, AnnounceResponseIPv4) {
    Bytes packet;
    put_u32(packet, 1);
    put_u32(packet, 5);
    put_u32(packet, 1200);  // interval
    put_u32(packet, 7);     // leechers
    put_u32(packet, 3);     // seeders
    packet.insert(packet.end(), {127, 0, 0, 1, 0x1A, 0xE1, 192, 168, 1, 2, 0, 80, 9, 9, 9});
    auto response = parse_udp_announce(packet, 5, false);
    ASSERT_TRUE(response.ok()) << response.error().describe();
    EXPECT_EQ(response->interval, 1200);
    EXPECT_EQ(response->incomplete, 7);
    EXPECT_EQ(response->complete, 3);
    ASSERT_EQ(response->peers.size(), 2u);
    EXPECT_EQ(response->peers[0], (PeerAddress{"127.0.0.1", 6881}));
    EXPECT_EQ(response->peers[1], (PeerAddress{"192.168.1.2", 80}));
    EXPECT_EQ(response->skipped_peers, 1u);
}

TEST(Udp, AnnounceResponseIPv6) {
    Bytes packet;
    put_u32(packet, 1);
    put_u32(packet, 5);
    put_u32(packet, 60);
    put_u32(packet, 0);
    put_u32(packet, 1);
    Bytes peer(18, 0);
    peer[15] = 1;
    peer[17] = 99;
    packet.insert(packet.end(), peer.begin(), peer.end());
    auto response = parse_udp_announce(packet, 5, true);
    ASSERT_TRUE(response.ok());
    ASSERT_EQ(response->peers.size(), 1u);
    EXPECT_EQ(response->peers[0], (PeerAddress{"::1", 99}));
    EXPECT_EQ(response->skipped_peers, 0u);
}

TEST(Udp, AnnounceResponseRejections) {
    Bytes packet;
    put_u32(packet, 1);
    put_u32(packet, 5);
    put_u32(packet, 60);
    put_u32(packet, 0);
    EXPECT_FALSE(parse_udp_announce(packet, 5, false).ok());  // 16 bytes: short
    put_u32(packet, 0);
    EXPECT_TRUE(parse_udp_announce(packet, 5, false).ok());  // 20 bytes, no peers
    EXPECT_FALSE(parse_udp_announce(packet, 6, false).ok());
    Bytes connect_action = packet;
    connect_action[3] = 0;
    EXPECT_FALSE(parse_udp_announce(connect_action, 5, false).ok());
}

TEST(Udp, NegativeIntervalFallsBackToDefault) {
    Bytes packet;
    put_u32(packet, 1);
    put_u32(packet, 5);
    put_u32(packet, 0xFFFFFFFF);
    put_u32(packet, 0);
    put_u32(packet, 0);
    auto response = parse_udp_announce(packet, 5, false);
    ASSERT_TRUE(response.ok());
    EXPECT_EQ(response->interval, -1);
    EXPECT_EQ(clamp_interval(*response), 1800);
}

}  // namespace
}  // namespace pw::tracker
