// The DHT stage's pure parts: routing table, tokens, peer store, rate limits, the node's
// answers, and lookups converging over a simulated network of nodes (no sockets, time passed in).
#include <algorithm>
#include <chrono>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "core/krpc.hpp"
#include "dht_svc/dht_node.hpp"
#include "dht_svc/routing_table.hpp"
#include "dht_svc/storage.hpp"

namespace pw::dht {
namespace {

using namespace std::chrono_literals;

const Time kStart = Time{} + std::chrono::hours(1000);

NodeId id_with(std::uint8_t first, std::uint8_t last = 0) {
    NodeId id{};
    id[0] = first;
    id[19] = last;
    return id;
}

NodeId random_id(std::mt19937_64& rng) {
    NodeId id{};
    for (auto& b : id) b = static_cast<std::uint8_t>(rng());
    return id;
}

PeerAddress addr(int n, std::uint16_t port = 6881) {
    return PeerAddress{"10.0." + std::to_string(n / 250) + "." + std::to_string(n % 250 + 1), port};
}

// --- routing table ---

TEST(DhtRoutingTable, FillsOneBucketThenSplitsOnOurSide) {
    RoutingTable table(id_with(0x00));
    // Eight far nodes (first bit 1) fill the single bucket.
    for (int i = 0; i < 8; ++i) {
        EXPECT_EQ(table.heard_from({id_with(0x80, static_cast<std::uint8_t>(i)), addr(i)}, kStart, true),
                  RoutingTable::Added::added);
    }
    EXPECT_EQ(table.bucket_count(), 1u);
    // A near node splits it: far ones stay in bucket 0, the near one goes to bucket 1.
    EXPECT_EQ(table.heard_from({id_with(0x01), addr(100)}, kStart, true), RoutingTable::Added::added);
    EXPECT_GE(table.bucket_count(), 2u);
    EXPECT_EQ(table.size(), 9u);
    // Bucket 0 (far side) is full and does not split again: a ninth far node waits as a replacement.
    EXPECT_EQ(table.heard_from({id_with(0x90), addr(101)}, kStart, true), RoutingTable::Added::replacement);
    EXPECT_EQ(table.size(), 9u);
    EXPECT_FALSE(table.has_room_for(id_with(0xA0)));
    EXPECT_TRUE(table.has_room_for(id_with(0x02)));
}

TEST(DhtRoutingTable, BadNodeIsReplacedByAReplacement) {
    RoutingTable::Config config;
    config.max_failures = 2;
    RoutingTable table(id_with(0x00), config);
    for (int i = 0; i < 8; ++i) table.heard_from({id_with(0x80, static_cast<std::uint8_t>(i)), addr(i)}, kStart, true);
    table.heard_from({id_with(0x01), addr(50)}, kStart, true);  // split
    EXPECT_EQ(table.heard_from({id_with(0xC0), addr(60)}, kStart, true), RoutingTable::Added::replacement);
    table.failed(addr(3));
    EXPECT_NE(table.find(addr(3)), nullptr);
    table.failed(addr(3));  // bad now: the replacement takes its place
    EXPECT_EQ(table.find(addr(3)), nullptr);
    EXPECT_NE(table.find(addr(60)), nullptr);
    // An answer resets a node's failures.
    table.failed(addr(4));
    table.heard_from({id_with(0x80, 4), addr(4)}, kStart, true);
    table.failed(addr(4));
    EXPECT_NE(table.find(addr(4)), nullptr);
}

TEST(DhtRoutingTable, BadNodeIsDisplacedByANewcomerThatAnswered) {
    RoutingTable::Config config;
    config.max_failures = 1;
    config.replacements = 0;
    RoutingTable table(id_with(0x00), config);
    for (int i = 0; i < 8; ++i) table.heard_from({id_with(0x80, static_cast<std::uint8_t>(i)), addr(i)}, kStart, true);
    table.heard_from({id_with(0x01), addr(50)}, kStart, true);
    table.failed(addr(0));  // bad, no replacement waiting: stays until someone better comes
    EXPECT_TRUE(table.has_room_for(id_with(0xF0)));
    EXPECT_EQ(table.heard_from({id_with(0xF0), addr(70)}, kStart, true), RoutingTable::Added::added);
    EXPECT_EQ(table.find(addr(0)), nullptr);
}

TEST(DhtRoutingTable, QueriersThatNeverAnsweredGiveWayToNodesThatDid) {
    RoutingTable table(id_with(0x00));
    for (int i = 0; i < 8; ++i) table.heard_from({id_with(0x80, static_cast<std::uint8_t>(i)), addr(i)}, kStart, true);
    table.heard_from({id_with(0x01), addr(50)}, kStart, true);  // split: bucket 0 is the far side
    // A flood of made-up queriers on the near side fills free slots only...
    for (int i = 0; i < 100; ++i) table.heard_from({id_with(0x02, static_cast<std::uint8_t>(i)), addr(200 + i)}, kStart, false);
    const std::size_t before = table.size();
    EXPECT_LE(before, 160u * kBucketSize);
    // ...and a real node takes the place of one of them.
    EXPECT_TRUE(table.has_room_for(id_with(0x03)));
    EXPECT_EQ(table.heard_from({id_with(0x03), addr(400)}, kStart, true), RoutingTable::Added::added);
    EXPECT_NE(table.find(addr(400)), nullptr);
    // Queriers never displace anyone.
    EXPECT_EQ(table.heard_from({id_with(0x81, 1), addr(401)}, kStart, false), RoutingTable::Added::refused);
}

TEST(DhtRoutingTable, RefusesOurIdAndTakeOvers) {
    RoutingTable table(id_with(0x00));
    EXPECT_EQ(table.heard_from({id_with(0x00), addr(1)}, kStart, true), RoutingTable::Added::refused);
    EXPECT_EQ(table.heard_from({id_with(0x80), addr(1)}, kStart, true), RoutingTable::Added::added);
    EXPECT_EQ(table.heard_from({id_with(0x80), addr(2)}, kStart, true), RoutingTable::Added::refused);
    EXPECT_EQ(table.heard_from({id_with(0x81), addr(1)}, kStart, true), RoutingTable::Added::refused);
    EXPECT_EQ(table.heard_from({id_with(0x80), addr(1)}, kStart, true), RoutingTable::Added::updated);
}

TEST(DhtRoutingTable, GoodQuestionableAndClosest) {
    RoutingTable table(id_with(0x00));
    table.heard_from({id_with(0x80), addr(1)}, kStart, true);
    table.heard_from({id_with(0x40), addr(2)}, kStart, true);
    table.heard_from({id_with(0x20), addr(3)}, kStart, false);  // queried us, never answered
    EXPECT_EQ(table.good_count(kStart), 2u);
    EXPECT_EQ(table.good_count(kStart + 16min), 0u);
    EXPECT_EQ(table.questionable(kStart, 10).size(), 1u);
    EXPECT_EQ(table.questionable(kStart + 16min, 10).size(), 3u);
    const auto closest = table.closest(id_with(0x41), 8);
    ASSERT_EQ(closest.size(), 2u);  // the one that never answered is not told to others
    EXPECT_EQ(closest[0].id, id_with(0x40));
    EXPECT_EQ(table.closest(id_with(0x41), 8, false).size(), 3u);
}

TEST(DhtRoutingTable, BoundedUnderAFloodOfNodes) {
    std::mt19937_64 rng(7);
    RoutingTable table(random_id(rng));
    for (int i = 0; i < 20000; ++i) table.heard_from({random_id(rng), addr(i)}, kStart, true);
    EXPECT_LE(table.size(), 160u * kBucketSize);
    EXPECT_LE(table.bucket_count(), 160u);
}

TEST(DhtRoutingTable, SaveAndLoadRoundTrip) {
    std::mt19937_64 rng(3);
    const NodeId own = random_id(rng);
    RoutingTable table(own);
    for (int i = 0; i < 50; ++i) table.heard_from({random_id(rng), addr(i)}, kStart, true);
    auto loaded = RoutingTable::load(table.save());
    ASSERT_TRUE(loaded.ok()) << loaded.error().describe();
    EXPECT_EQ(loaded->id, own);
    EXPECT_EQ(loaded->nodes.size(), table.size());
    std::set<std::string> a, b;
    for (const auto& n : table.all()) a.insert(address_key(n.address));
    for (const auto& n : loaded->nodes) b.insert(address_key(n.address));
    EXPECT_EQ(a, b);
}

TEST(DhtRoutingTable, HostileStateFilesAreRefused) {
    for (const std::string& bad : {std::string(), std::string("garbage"), std::string("le"), std::string("d2:id3:abce"),
                                  std::string("d2:id20:aaaaaaaaaaaaaaaaaaaa5:nodes3:abce"),
                                  std::string("d2:id20:aaaaaaaaaaaaaaaaaaaa5:nodesi1ee"),
                                  std::string(3 << 20, 'd'), std::string(200, 'l')}) {
        EXPECT_FALSE(RoutingTable::load(bad).ok()) << bad.substr(0, 40);
    }
    EXPECT_TRUE(RoutingTable::load("d2:id20:aaaaaaaaaaaaaaaaaaaae").ok());
}

// --- tokens ---

TEST(DhtTokens, ValidRotatedAndForged) {
    TokenKeeper tokens(42, kStart, 300s);
    const std::string token = tokens.make("10.0.0.1", kStart);
    EXPECT_TRUE(tokens.valid("10.0.0.1", token, kStart + 10s));
    EXPECT_FALSE(tokens.valid("10.0.0.2", token, kStart + 10s));  // another address
    EXPECT_FALSE(tokens.valid("10.0.0.1", "forged!!", kStart + 10s));
    EXPECT_FALSE(tokens.valid("10.0.0.1", std::string(token.size(), '\0'), kStart + 10s));
    EXPECT_TRUE(tokens.valid("10.0.0.1", token, kStart + 301s));   // the previous secret still counts
    EXPECT_FALSE(tokens.valid("10.0.0.1", token, kStart + 601s));  // two rotations: gone
    // A different keeper (another run) does not accept it.
    TokenKeeper other(43, kStart, 300s);
    EXPECT_FALSE(other.valid("10.0.0.1", token, kStart));
}

TEST(DhtTokens, ALongQuietSpellForgetsBoth) {
    TokenKeeper tokens(1, kStart, 300s);
    const std::string token = tokens.make("10.0.0.1", kStart);
    EXPECT_FALSE(tokens.valid("10.0.0.1", token, kStart + 1h));
}

// --- peer store ---

TEST(DhtPeerStore, BoundsAndExpiry) {
    PeerStore::Config config;
    config.per_hash = 3;
    config.max_hashes = 2;
    config.lifetime = 30min;
    PeerStore store(config);
    const Sha1Digest a{1}, b{2}, c{3};
    for (int i = 0; i < 5; ++i) EXPECT_TRUE(store.add(a, addr(i), kStart));
    auto got = store.get(a, 10, kStart);
    ASSERT_EQ(got.size(), 3u);
    EXPECT_EQ(got[0], addr(4));  // newest first, oldest dropped
    EXPECT_TRUE(store.add(b, addr(9), kStart));
    EXPECT_FALSE(store.add(c, addr(9), kStart));  // full of other info-hashes
    EXPECT_EQ(store.get(a, 2, kStart).size(), 2u);
    // Re-announcing refreshes, no duplicates.
    EXPECT_TRUE(store.add(b, addr(9), kStart + 20min));
    EXPECT_EQ(store.get(b, 10, kStart + 20min).size(), 1u);
    EXPECT_TRUE(store.get(a, 10, kStart + 31min).empty());
    EXPECT_EQ(store.get(b, 10, kStart + 31min).size(), 1u);
    store.expire(kStart + 31min);
    EXPECT_EQ(store.hash_count(), 1u);
    EXPECT_TRUE(store.add(c, addr(9), kStart + 31min));  // room again
}

// --- rate limits ---

TEST(DhtRateLimiter, PerAddressAndGlobal) {
    RateLimiter::Config config;
    config.per_ip_rate = 1;
    config.per_ip_burst = 5;
    config.global_rate = 10;
    config.global_burst = 12;
    config.max_addresses = 3;
    RateLimiter limiter(config);
    int allowed = 0;
    for (int i = 0; i < 20; ++i) allowed += limiter.allow("10.0.0.1", kStart) ? 1 : 0;
    EXPECT_EQ(allowed, 5);
    EXPECT_TRUE(limiter.allow("10.0.0.1", kStart + 1s));  // refilled one
    EXPECT_FALSE(limiter.allow("10.0.0.1", kStart + 1s));
    // The global bucket caps many addresses together.
    allowed = 0;
    for (int i = 0; i < 20; ++i) allowed += limiter.allow("10.0.0.2", kStart + 1s) ? 1 : 0;
    allowed += limiter.allow("10.0.0.3", kStart + 1s) ? 1 : 0;
    EXPECT_LE(allowed, 7);
    // The table of addresses is bounded: a fourth address is refused while all are busy.
    EXPECT_FALSE(limiter.allow("10.0.0.4", kStart + 1s));
    // Idle addresses are forgotten to make room.
    EXPECT_TRUE(limiter.allow("10.0.0.4", kStart + 60s));
}

// --- the node answering ---

class DhtNodeAnswers : public ::testing::Test {
protected:
    DhtNodeAnswers() : node_(id_with(0x10), config(), 5, kStart) {}

    static NodeConfig config() {
        NodeConfig c;
        c.rate.per_ip_burst = 1000;
        c.rate.global_burst = 100000;
        return c;
    }

    krpc::Message ask(krpc::Query query, const PeerAddress& from = addr(1), Time now = kStart) {
        query.id = id_with(0x99, static_cast<std::uint8_t>(from.port));
        krpc::Message message;
        message.transaction = "aa";
        message.body = std::move(query);
        node_.on_datagram(krpc::encode(message), from, now);
        auto out = node_.take_outgoing();
        EXPECT_EQ(out.size(), 1u);
        if (out.empty()) return {};
        EXPECT_EQ(out[0].to, from);
        auto decoded = krpc::decode(out[0].bytes);
        EXPECT_TRUE(decoded.ok());
        if (!decoded.ok()) return {};
        EXPECT_EQ(decoded->transaction, "aa");
        return decoded.value();
    }

    DhtNode node_;
};

TEST_F(DhtNodeAnswers, Ping) {
    const auto reply = ask(krpc::Query{{}, krpc::Ping{}, false});
    ASSERT_TRUE(std::holds_alternative<krpc::Response>(reply.body));
    EXPECT_EQ(std::get<krpc::Response>(reply.body).id, id_with(0x10));
}

TEST_F(DhtNodeAnswers, FindNodeGivesClosestNodes) {
    for (int i = 0; i < 20; ++i) {
        // They answer our pings: good nodes.
        ask(krpc::Query{{}, krpc::Ping{}, false}, addr(i, static_cast<std::uint16_t>(1000 + i)));
    }
    // Queriers are only candidates until they answer; none did: nothing to give yet.
    auto reply = ask(krpc::Query{{}, krpc::FindNode{id_with(0x99)}, false});
    ASSERT_TRUE(std::holds_alternative<krpc::Response>(reply.body));
    EXPECT_TRUE(std::get<krpc::Response>(reply.body).nodes.empty());
    EXPECT_GE(node_.table().size(), 1u);
}

TEST_F(DhtNodeAnswers, GetPeersThenAnnounceThenValues) {
    const Sha1Digest hash{7, 7, 7};
    auto reply = ask(krpc::Query{{}, krpc::GetPeers{hash}, false});
    ASSERT_TRUE(std::holds_alternative<krpc::Response>(reply.body));
    const auto& first = std::get<krpc::Response>(reply.body);
    ASSERT_TRUE(first.token.has_value());
    EXPECT_FALSE(first.values.has_value());

    reply = ask(krpc::Query{{}, krpc::AnnouncePeer{hash, 7000, false, *first.token}, false});
    ASSERT_TRUE(std::holds_alternative<krpc::Response>(reply.body));
    // implied_port: the source port is stored.
    const PeerAddress second = PeerAddress{"10.0.0.9", 5555};
    auto token2 = std::get<krpc::Response>(ask(krpc::Query{{}, krpc::GetPeers{hash}, false}, second).body).token;
    ask(krpc::Query{{}, krpc::AnnouncePeer{hash, 1, true, *token2}, false}, second);

    reply = ask(krpc::Query{{}, krpc::GetPeers{hash}, false}, addr(3));
    const auto& third = std::get<krpc::Response>(reply.body);
    ASSERT_TRUE(third.values.has_value());
    std::set<std::string> peers;
    for (const auto& p : *third.values) peers.insert(address_key(p));
    EXPECT_EQ(peers, (std::set<std::string>{"10.0.0.2:7000", "10.0.0.9:5555"}));
    EXPECT_EQ(node_.stats().announces_stored, 2u);
}

TEST_F(DhtNodeAnswers, ForgedOrForeignTokenIsRefused) {
    const Sha1Digest hash{7};
    auto token = std::get<krpc::Response>(ask(krpc::Query{{}, krpc::GetPeers{hash}, false}).body).token;
    auto reply = ask(krpc::Query{{}, krpc::AnnouncePeer{hash, 7000, false, "forged"}, false});
    ASSERT_TRUE(std::holds_alternative<krpc::ErrorReply>(reply.body));
    EXPECT_EQ(std::get<krpc::ErrorReply>(reply.body).code, krpc::kProtocolError);
    // Another address cannot use the first one's token.
    reply = ask(krpc::Query{{}, krpc::AnnouncePeer{hash, 7000, false, *token}, false}, addr(5));
    ASSERT_TRUE(std::holds_alternative<krpc::ErrorReply>(reply.body));
    // After two rotations the token is stale.
    reply = ask(krpc::Query{{}, krpc::AnnouncePeer{hash, 7000, false, *token}, false}, addr(1), kStart + 11min);
    ASSERT_TRUE(std::holds_alternative<krpc::ErrorReply>(reply.body));
    EXPECT_EQ(node_.stats().bad_tokens, 3u);
    EXPECT_EQ(node_.stats().announces_stored, 0u);
}

TEST_F(DhtNodeAnswers, UnknownMethodIs204) {
    const auto reply = ask(krpc::Query{{}, krpc::UnknownMethod{"vote"}, false});
    ASSERT_TRUE(std::holds_alternative<krpc::ErrorReply>(reply.body));
    EXPECT_EQ(std::get<krpc::ErrorReply>(reply.body).code, krpc::kMethodUnknown);
}

TEST_F(DhtNodeAnswers, MalformedInputIsDroppedAndCounted) {
    for (const std::string& bad : {std::string("garbage"), std::string(5000, 'x'), std::string("d1:t2:aa1:y1:qe"),
                                  std::string("d1:ad2:id3:abce1:q4:ping1:t2:aa1:y1:qe"), std::string()}) {
        node_.on_datagram(bad, addr(1), kStart);
    }
    EXPECT_TRUE(node_.take_outgoing().empty());
    EXPECT_EQ(node_.stats().malformed, 5u);
    EXPECT_FALSE(node_.take_log().empty());
    ask(krpc::Query{{}, krpc::Ping{}, false});  // and it still answers
}

TEST(DhtNodeRateLimit, AFloodFromOneAddressGetsABoundedNumberOfAnswers) {
    NodeConfig config;
    config.rate.per_ip_rate = 10;
    config.rate.per_ip_burst = 20;
    DhtNode node(id_with(1), config, 1, kStart);
    krpc::Message ping;
    ping.transaction = "xy";
    ping.body = krpc::Query{id_with(2), krpc::Ping{}, false};
    const std::string bytes = krpc::encode(ping);
    for (int i = 0; i < 1000; ++i) node.on_datagram(bytes, addr(1), kStart);
    EXPECT_EQ(node.take_outgoing().size(), 20u);
    EXPECT_EQ(node.stats().rate_limited, 980u);
    // Another address is still answered.
    node.on_datagram(bytes, addr(2), kStart);
    EXPECT_EQ(node.take_outgoing().size(), 1u);
}

// --- lookups over a simulated network ---

class Network {
public:
    explicit Network(int count, std::uint64_t seed = 11) : rng_(seed) {
        for (int i = 0; i < count; ++i) {
            const PeerAddress address = addr(i, 7000);
            nodes_.emplace(address_key(address), std::make_unique<DhtNode>(random_id(rng_), config(), rng_(), now_));
            addresses_.push_back(address);
        }
        // Each node knows a handful of others, as after some time in the DHT.
        for (int i = 0; i < count; ++i) {
            std::vector<PeerAddress> known;
            for (int j = 0; j < 6; ++j) known.push_back(addresses_[rng_() % addresses_.size()]);
            node(addresses_[i]).add_candidates(known, now_);
        }
        run(10s);
    }

    static NodeConfig config() {
        NodeConfig c;
        c.rate.per_ip_burst = 1e6;
        c.rate.global_burst = 1e6;
        return c;
    }

    DhtNode& node(const PeerAddress& address) { return *nodes_.at(address_key(address)); }
    const std::vector<PeerAddress>& addresses() const { return addresses_; }
    Time now() const { return now_; }

    // Delivers datagrams (and ticks everyone) until quiet, `duration` of simulated time.
    void run(std::chrono::milliseconds duration, DhtNode* outsider = nullptr, const PeerAddress* outsider_address = nullptr) {
        const Time end = now_ + duration;
        while (now_ < end) {
            bool moved = true;
            while (moved) {
                moved = false;
                auto deliver_from = [&](DhtNode& from, const PeerAddress& from_address) {
                    for (Datagram& d : from.take_outgoing()) {
                        moved = true;
                        ++delivered_;
                        if (dropped_.contains(address_key(d.to))) continue;
                        if (outsider_address != nullptr && d.to == *outsider_address) {
                            outsider->on_datagram(d.bytes, from_address, now_);
                        } else if (const auto it = nodes_.find(address_key(d.to)); it != nodes_.end()) {
                            it->second->on_datagram(d.bytes, from_address, now_);
                        }
                    }
                };
                for (const auto& address : addresses_) deliver_from(node(address), address);
                if (outsider != nullptr) deliver_from(*outsider, *outsider_address);
            }
            now_ += 100ms;
            for (const auto& address : addresses_) node(address).tick(now_);
            if (outsider != nullptr) outsider->tick(now_);
        }
    }

    void drop(const PeerAddress& address) { dropped_.insert(address_key(address)); }
    std::size_t delivered() const { return delivered_; }

private:
    std::mt19937_64 rng_;
    Time now_ = kStart;
    std::map<std::string, std::unique_ptr<DhtNode>> nodes_;
    std::vector<PeerAddress> addresses_;
    std::set<std::string> dropped_;
    std::size_t delivered_ = 0;
};

TEST(DhtLookup, ConvergesFindsPeersAndAnnounces) {
    Network network(120);
    // A seeder announces itself through one node, a leecher finds it through another.
    const Sha1Digest hash{0xAB, 0xCD, 0xEF};
    DhtNode& seeder = network.node(network.addresses()[3]);
    seeder.set_bootstrap({network.addresses()[4]});
    seeder.add_torrent(TorrentId{1}, hash, network.now());
    seeder.set_port(TorrentId{1}, 51413, false, network.now());
    network.run(20s);
    EXPECT_GE(seeder.stats().announces_sent, 1u);
    EXPECT_EQ(seeder.active_lookups(), 0u);

    const PeerAddress outsider_address{"10.9.9.9", 6881};
    DhtNode outsider(id_with(0x42), Network::config(), 99, network.now());
    outsider.set_bootstrap({network.addresses()[50]});
    outsider.add_torrent(TorrentId{7}, hash, network.now());
    network.run(20s, &outsider, &outsider_address);
    EXPECT_GE(outsider.table().size(), 8u);  // bootstrapped
    const auto found = outsider.take_found();
    ASSERT_EQ(found.size(), 1u);
    EXPECT_EQ(found[0].torrent, TorrentId{7});
    ASSERT_EQ(found[0].peers.size(), 1u);
    EXPECT_EQ(found[0].peers[0], (PeerAddress{network.addresses()[3].ip, 51413}));
    // A later lookup reports nothing new.
    outsider.set_port(TorrentId{7}, 6881, true, network.now() + 2min);
    network.run(30s, &outsider, &outsider_address);
    EXPECT_TRUE(outsider.take_found().empty());

    // The lookups converged on the closest node of the whole network to the hash: the
    // seeder's announce reached it.
    const PeerAddress* closest = &network.addresses()[0];
    for (const auto& address : network.addresses()) {
        if (krpc::closer(hash, network.node(address).id(), network.node(*closest).id())) closest = &address;
    }
    krpc::Message ask;
    ask.transaction = "q1";
    ask.body = krpc::Query{id_with(0x55), krpc::GetPeers{hash}, false};
    DhtNode& nearest = network.node(*closest);
    nearest.take_outgoing();
    nearest.on_datagram(krpc::encode(ask), PeerAddress{"10.8.8.8", 1}, network.now());
    const auto out = nearest.take_outgoing();
    ASSERT_EQ(out.size(), 1u);
    auto answer = krpc::decode(out[0].bytes);
    ASSERT_TRUE(answer.ok());
    const auto* values = std::get_if<krpc::Response>(&answer->body);
    ASSERT_NE(values, nullptr);
    ASSERT_TRUE(values->values.has_value());
    EXPECT_EQ(values->values->front(), (PeerAddress{network.addresses()[3].ip, 51413}));
}

TEST(DhtLookup, SurvivesDeadNodesThroughTimeouts) {
    Network network(60, 5);
    for (int i = 10; i < 30; ++i) network.drop(network.addresses()[i]);
    const PeerAddress outsider_address{"10.9.9.9", 6881};
    DhtNode outsider(id_with(0x42), Network::config(), 99, network.now());
    outsider.set_bootstrap({network.addresses()[10], network.addresses()[40]});
    outsider.add_torrent(TorrentId{1}, Sha1Digest{1, 2, 3}, network.now());
    network.run(30s, &outsider, &outsider_address);
    EXPECT_GE(outsider.stats().lookups_done, 2u);
    EXPECT_EQ(outsider.active_lookups(), 0u);
    EXPECT_GT(outsider.stats().timeouts, 0u);
    EXPECT_EQ(outsider.pending_queries(), 0u);
}

// More torrents than lookups may run, and routers that never answer: the lookups that wait
// for a free place do not make the node wake at once, over and over.
TEST(DhtLookup, LookupsWaitingForAPlaceDoNotSpinTheNode) {
    const auto start = kStart;
    DhtNode node(id_with(0x42), NodeConfig{}, 7, start);
    node.set_bootstrap({PeerAddress{"10.9.9.9", 6881}});
    for (std::uint8_t i = 1; i <= 40; ++i) node.add_torrent(TorrentId{i}, Sha1Digest{i}, start);
    node.tick(start);
    (void)node.take_outgoing();
    EXPECT_GT(node.next_wakeup(start), start);
}

TEST(DhtLookup, ResponsesFromTheWrongAddressOrTransactionAreIgnored) {
    DhtNode node(id_with(0x01), NodeConfig{}, 3, kStart);
    const PeerAddress router{"10.0.0.1", 6881};
    node.set_bootstrap({router});
    node.tick(kStart);
    auto out = node.take_outgoing();
    ASSERT_EQ(out.size(), 1u);  // find_node(own id) to the router
    EXPECT_EQ(out[0].to, router);
    auto query = krpc::decode(out[0].bytes);
    ASSERT_TRUE(query.ok());
    krpc::Message answer;
    answer.transaction = query->transaction;
    krpc::Response response;
    response.id = id_with(0x77);
    answer.body = response;
    // The right transaction from another address, and another transaction from the router.
    node.on_datagram(krpc::encode(answer), PeerAddress{"10.0.0.66", 6881}, kStart);
    node.on_datagram(krpc::encode(answer), PeerAddress{"10.0.0.1", 6882}, kStart);
    krpc::Message wrong = answer;
    wrong.transaction = "zz";
    node.on_datagram(krpc::encode(wrong), router, kStart);
    EXPECT_EQ(node.stats().unexpected_responses, 3u);
    EXPECT_EQ(node.table().size(), 0u);
    // The real answer counts.
    node.on_datagram(krpc::encode(answer), router, kStart);
    EXPECT_EQ(node.table().size(), 1u);
    EXPECT_EQ(node.pending_queries(), 0u);
}

TEST(DhtLookup, NoAnnounceWhileThePortIsZeroAndAnnounceNowHasAFloor) {
    Network network(40, 9);
    DhtNode& node = network.node(network.addresses()[0]);
    node.add_torrent(TorrentId{1}, Sha1Digest{9}, network.now());
    network.run(10s);
    EXPECT_EQ(node.stats().announces_sent, 0u);
    const auto done = node.stats().lookups_done;
    // The first port: a lookup and announce soon (past the floor since the last lookup).
    node.set_port(TorrentId{1}, 6000, false, network.now());
    network.run(70s);
    EXPECT_GT(node.stats().announces_sent, 0u);
    EXPECT_GT(node.stats().lookups_done, done);
    // announce_now right after: held back by the floor, then done.
    const auto after = node.stats().lookups_done;
    node.set_port(TorrentId{1}, 6000, true, network.now());
    network.run(5s);
    EXPECT_EQ(node.stats().lookups_done, after);
    network.run(70s);
    EXPECT_GT(node.stats().lookups_done, after);
}

TEST(DhtNodeCandidates, PingedNodesThatAnswerJoinTheTable) {
    Network network(10, 2);
    const PeerAddress outsider_address{"10.9.9.9", 6881};
    DhtNode outsider(id_with(0x42), Network::config(), 99, network.now());
    outsider.add_candidates({network.addresses()[1], network.addresses()[2], PeerAddress{"10.200.0.1", 1}}, network.now());
    network.run(6s, &outsider, &outsider_address);
    EXPECT_NE(outsider.table().find(network.addresses()[1]), nullptr);
    EXPECT_NE(outsider.table().find(network.addresses()[2]), nullptr);
    EXPECT_EQ(outsider.table().find(PeerAddress{"10.200.0.1", 1}), nullptr);
}

}  // namespace
}  // namespace pw::dht
