// Bans that punish the peer, not the address (issue 16): the orchestrator's judge, the
// directory's part, the worker's ban list, the session's BanPeer messages; and never
// silent: why a download stalls, and the early announce it asks for.
#include <chrono>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "core/bus/bus.hpp"
#include "orchestrator/peer_directory.hpp"
#include "orchestrator/progress.hpp"
#include "orchestrator/session.hpp"
#include "peer_worker/ban_list.hpp"
#include "test_torrents.hpp"
#include "tracker_svc/announce_schedule.hpp"

namespace pw {
namespace {

namespace v1 = ::piecework::v1;
using namespace std::chrono_literals;
using orchestrator::Ban;
using orchestrator::PeerCounts;
using orchestrator::PeerDirectory;
using orchestrator::PeerDirectoryOptions;
using orchestrator::PeerIdentity;
using orchestrator::PeerJudge;
using orchestrator::PeerJudgeOptions;
using orchestrator::StallInputs;
using orchestrator::StallWatch;
using Clock = std::chrono::steady_clock;

const std::string kLiarId = "-HP0001-aaaaaaaaaaaa";
const std::string kHonestId = "-LT2000-bbbbbbbbbbbb";

// --- the judge ---

TEST(PeerJudge, ASoleContributorIsBannedAloneNotItsAddress) {
    PeerJudge judge;
    const auto now = Clock::now();
    const auto bans = judge.piece_failed({{"127.0.0.1", 7001, kLiarId}}, now);
    ASSERT_EQ(bans.size(), 1u);
    EXPECT_EQ(bans[0].ip, "127.0.0.1");
    EXPECT_EQ(bans[0].port, 7001);
    EXPECT_EQ(bans[0].peer_id, kLiarId);
    EXPECT_FALSE(bans[0].whole_address());
    EXPECT_TRUE(judge.endpoint_banned("127.0.0.1", 7001));
    // Its neighbour on the same address is another peer.
    EXPECT_FALSE(judge.endpoint_banned("127.0.0.1", 7002));
    EXPECT_FALSE(judge.banned({"127.0.0.1", 7002, kHonestId}));
    EXPECT_FALSE(judge.address_banned("127.0.0.1"));
    // The liar coming back from another port is known by its peer id, on that address only.
    EXPECT_TRUE(judge.banned({"127.0.0.1", 50123, kLiarId}));
    EXPECT_FALSE(judge.banned({"10.0.0.5", 50123, kLiarId}));
    // Banned once: another of its pieces failing bans nothing more.
    EXPECT_TRUE(judge.piece_failed({{"127.0.0.1", 7001, kLiarId}}, now).empty());
}

TEST(PeerJudge, SharedFailuresStrikeEveryContributorAndBanOnlyAfterTwo) {
    PeerJudge judge;
    const auto now = Clock::now();
    EXPECT_TRUE(judge.piece_failed({{"10.0.0.1", 1, ""}, {"10.0.0.2", 1, ""}}, now).empty());
    const auto bans = judge.piece_failed({{"10.0.0.1", 1, ""}, {"10.0.0.3", 1, ""}}, now + 1s);
    ASSERT_EQ(bans.size(), 1u);
    EXPECT_EQ(bans[0].ip, "10.0.0.1");
    EXPECT_FALSE(judge.endpoint_banned("10.0.0.2", 1));
    EXPECT_FALSE(judge.endpoint_banned("10.0.0.3", 1));
    // The same contributor twice in one list is one contributor: a sole one.
    EXPECT_EQ(judge.piece_failed({{"10.0.0.4", 9, ""}, {"10.0.0.4", 9, ""}}, now).size(), 1u);
}

TEST(PeerJudge, StrikesDecay) {
    PeerJudgeOptions options;
    options.strike_lifetime = 60s;
    PeerJudge judge(options);
    const auto now = Clock::now();
    EXPECT_TRUE(judge.piece_failed({{"10.0.0.1", 1, ""}, {"10.0.0.2", 1, ""}}, now).empty());
    // An hour later the first strike is forgotten: one more is again only one.
    EXPECT_TRUE(judge.piece_failed({{"10.0.0.1", 1, ""}, {"10.0.0.2", 1, ""}}, now + 1h).empty());
    EXPECT_EQ(judge.piece_failed({{"10.0.0.1", 1, ""}, {"10.0.0.9", 1, ""}}, now + 1h + 1s).size(), 1u);
}

TEST(PeerJudge, AnAddressGoesWholeOnlyWhenThreeOfItsPeersLied) {
    PeerJudge judge;
    const auto now = Clock::now();
    EXPECT_EQ(judge.piece_failed({{"192.0.2.7", 1, "a"}}, now).size(), 1u);
    EXPECT_EQ(judge.piece_failed({{"192.0.2.7", 2, "b"}}, now + 1s).size(), 1u);
    EXPECT_FALSE(judge.address_banned("192.0.2.7"));
    EXPECT_EQ(judge.address_strikes("192.0.2.7", now + 1s), 2u);
    const auto bans = judge.piece_failed({{"192.0.2.7", 3, "c"}}, now + 2s);
    ASSERT_EQ(bans.size(), 2u);
    EXPECT_EQ(bans[0].port, 3);
    EXPECT_TRUE(bans[1].whole_address());
    EXPECT_EQ(bans[1].ip, "192.0.2.7");
    EXPECT_NE(bans[1].reason.find("3 of its peers"), std::string::npos) << bans[1].reason;
    EXPECT_TRUE(judge.address_banned("192.0.2.7"));
    EXPECT_TRUE(judge.endpoint_banned("192.0.2.7", 4));
    // Other addresses are untouched.
    EXPECT_FALSE(judge.endpoint_banned("192.0.2.8", 1));
}

TEST(PeerJudge, AddressStrikesDecaySoSlowLiarsStayPeers) {
    PeerJudgeOptions options;
    options.strike_lifetime = 600s;
    PeerJudge judge(options);
    const auto now = Clock::now();
    judge.piece_failed({{"192.0.2.7", 1, "a"}}, now);
    judge.piece_failed({{"192.0.2.7", 2, "b"}}, now + 400s);
    // The first strike decayed: the third liar is the second live one.
    const auto bans = judge.piece_failed({{"192.0.2.7", 3, "c"}}, now + 700s);
    ASSERT_EQ(bans.size(), 1u);
    EXPECT_FALSE(judge.address_banned("192.0.2.7"));
    EXPECT_EQ(judge.address_strikes("192.0.2.7", now + 700s), 2u);
}

TEST(PeerJudge, MemoryIsBounded) {
    PeerJudgeOptions options;
    options.max_remembered = 8;
    PeerJudge judge(options);
    const auto now = Clock::now();
    for (std::uint16_t port = 1; port <= 100; ++port) {
        judge.piece_failed({{"10.1.0." + std::to_string(port), port, ""}}, now);
        judge.piece_failed({{"10.2.0." + std::to_string(port), port, ""}, {"10.3.0.1", port, ""}}, now);
    }
    EXPECT_LE(judge.banned_peers(), 8u);
    EXPECT_TRUE(judge.endpoint_banned("10.1.0.100", 100));  // the latest stay
}

// --- the directory ---

TEST(PeerDirectory, ABanForgetsThePeerNotItsNeighbours) {
    PeerJudge judge;
    PeerDirectoryOptions options;
    options.judge = &judge;
    PeerDirectory directory(options);
    const auto now = Clock::now();
    directory.offer({"127.0.0.1", 7001});
    directory.offer({"127.0.0.1", 7002});
    orchestrator::WorkerLoad load{{"w1", 0}};
    directory.assign(now, load, 10);
    directory.connected("127.0.0.1:7001", kLiarId);
    directory.connected("127.0.0.1:7002", kHonestId);
    EXPECT_EQ(directory.identity("127.0.0.1:7001").peer_id, kLiarId);
    EXPECT_EQ(directory.identity("127.0.0.1:7001").port, 7001);

    const auto bans = judge.piece_failed({directory.identity("127.0.0.1:7001")}, now);
    ASSERT_EQ(bans.size(), 1u);
    EXPECT_EQ(directory.ban(bans[0]), 1u);
    EXPECT_EQ(directory.known_peers(), 1u);
    EXPECT_EQ(directory.worker_of("127.0.0.1:7002"), "w1");
    // A tracker naming the liar again is not heard; its neighbour's port still is.
    directory.offer({"127.0.0.1", 7001});
    directory.offer({"127.0.0.1", 7003});
    EXPECT_EQ(directory.known_peers(), 2u);
    EXPECT_EQ(directory.counts(now).banned, 1u);
    EXPECT_EQ(directory.counts(now).connected, 1u);
    // A whole-address ban takes every peer of it.
    EXPECT_EQ(directory.ban(Ban{"127.0.0.1", 0, {}, "three liars"}), 2u);
    EXPECT_EQ(directory.known_peers(), 0u);
}

TEST(PeerDirectory, CountsSayWhereThePeersStand) {
    PeerDirectoryOptions options;
    options.max_retries = 1;
    PeerDirectory directory(options);
    const auto now = Clock::now();
    orchestrator::WorkerLoad load{{"w1", 0}};
    directory.offer({"10.0.0.1", 1});
    directory.offer({"10.0.0.2", 1});
    directory.assign(now, load, 10);
    directory.connected("10.0.0.1:1", "x");
    PeerCounts counts = directory.counts(now);
    EXPECT_EQ(counts.connected, 1u);
    EXPECT_EQ(counts.connecting, 1u);
    directory.disconnected("10.0.0.1:1", now);
    directory.disconnected("10.0.0.2:1", now);
    counts = directory.counts(now);
    EXPECT_EQ(counts.connected, 0u);
    EXPECT_EQ(counts.backing_off, 2u);
    ASSERT_TRUE(counts.next_retry);
    EXPECT_EQ(*counts.next_retry, now + 15s);
    directory.assign(now + 16s, load, 10);
    directory.disconnected("10.0.0.1:1", now + 16s);
    directory.disconnected("10.0.0.2:1", now + 16s);
    EXPECT_EQ(directory.counts(now + 16s).given_up, 2u);
    // Given up on, they are tried again when nothing else is left, once each.
    EXPECT_EQ(directory.revive_given_up(now + 20s), 2u);
    EXPECT_EQ(directory.assign(now + 20s, load, 10).front().peers.size(), 2u);
    directory.disconnected("10.0.0.1:1", now + 21s);
    EXPECT_EQ(directory.counts(now + 21s).given_up, 1u);
}

// --- the worker's ban list ---

TEST(BanList, PeersByPortOrPeerIdAndWholeAddresses) {
    peer_worker::BanList bans;
    const auto local = asio::ip::make_address("127.0.0.1");
    const auto other = asio::ip::make_address("127.0.0.2");
    bans.add(local, 7001, kLiarId);
    EXPECT_TRUE(bans.refuses(local, 7001));
    EXPECT_FALSE(bans.refuses(local, 7002));
    EXPECT_FALSE(bans.refuses(local, 7002, kHonestId));
    EXPECT_TRUE(bans.refuses(local, 50000, kLiarId));
    EXPECT_FALSE(bans.refuses(other, 7001, kLiarId));
    EXPECT_TRUE(peer_worker::BanList::names(local, 7001, kLiarId, local, 50000, kLiarId));
    EXPECT_FALSE(peer_worker::BanList::names(local, 7001, kLiarId, local, 7002, kHonestId));
    // An old-style ban (no port, no peer id) is the whole address.
    bans.add(other, 0, {});
    EXPECT_TRUE(bans.refuses(other, 1));
    EXPECT_TRUE(peer_worker::BanList::names(other, 0, {}, other, 9, kHonestId));
}

TEST(BanList, Bounded) {
    peer_worker::BanList bans(4);
    const auto local = asio::ip::make_address("127.0.0.1");
    for (std::uint16_t port = 1; port <= 10; ++port) bans.add(local, port, {});
    EXPECT_EQ(bans.size(), 4u);
    EXPECT_FALSE(bans.refuses(local, 1));
    EXPECT_TRUE(bans.refuses(local, 10));
}

// --- the session: BanPeer for the liar only ---

struct Rig {
    Rig() : session(orchestrator::SessionConfig{}) {}
    Clock::time_point now = Clock::now();
    orchestrator::Session session;

    void say(const std::string& identity, v1::Envelope envelope) {
        bus::Incoming in;
        in.identity = identity;
        in.envelope = std::move(envelope);
        session.handle(in, now);
    }
    void hello(const std::string& identity, v1::Role role) {
        v1::Envelope envelope;
        envelope.mutable_hello()->set_role(role);
        envelope.mutable_hello()->set_pid(1);
        say(identity, envelope);
    }
    void connected(TorrentId id, const std::string& peer, const std::string& peer_id) {
        v1::Envelope envelope;
        envelope.mutable_peer_connected()->set_torrent(id.get());
        envelope.mutable_peer_connected()->set_peer(peer);
        envelope.mutable_peer_connected()->set_peer_id(peer_id);
        envelope.mutable_peer_connected()->set_incoming(true);
        say("w1", envelope);
    }
    void failed(TorrentId id, const std::string& peer) {
        v1::Envelope envelope;
        envelope.mutable_piece_failed()->set_torrent(id.get());
        envelope.mutable_piece_failed()->set_piece(0);
        envelope.mutable_piece_failed()->set_lease_id(1);
        envelope.mutable_piece_failed()->add_contributors(peer);
        say("verifier", envelope);
    }
    std::vector<v1::BanPeer> bans() {
        std::vector<v1::BanPeer> out;
        for (const auto& message : std::exchange(session.outbox(), {})) {
            if (message.envelope.has_ban_peer() && message.identity == "w1") out.push_back(message.envelope.ban_peer());
        }
        return out;
    }
};

TEST(SessionBans, TheLiarIsBannedByPortAndPeerIdItsNeighbourStays) {
    Rig rig;
    rig.hello("w1", v1::ROLE_PEER_WORKER);
    rig.hello("verifier", v1::ROLE_VERIFIER);
    const auto torrent = test::make_torrent("a.bin", 16384, {}, 2 * 16384);
    orchestrator::Session::AddRequest request;
    request.metainfo = torrent.bytes;
    request.settings.download_dir = "/downloads";
    auto added = rig.session.add(std::move(request), rig.now, 1'700'000'000);
    ASSERT_TRUE(added.ok());
    const TorrentId id = added->id;
    rig.connected(id, "127.0.0.1:7001", kLiarId);
    rig.connected(id, "127.0.0.1:7002", kHonestId);
    rig.bans();
    rig.failed(id, "127.0.0.1:7001");
    const auto bans = rig.bans();
    ASSERT_EQ(bans.size(), 1u);
    EXPECT_EQ(bans[0].ip(), "127.0.0.1");
    EXPECT_EQ(bans[0].port(), 7001u);
    EXPECT_EQ(bans[0].peer_id(), kLiarId);
    const auto notices = rig.session.take_notices();
    ASSERT_FALSE(notices.empty());
    EXPECT_NE(notices.back().text.find("banning peer 127.0.0.1:7001 (-HP0001-"), std::string::npos)
        << notices.back().text;
    EXPECT_EQ(rig.session.find(id)->directory().worker_of("127.0.0.1:7002"), "w1");
    EXPECT_EQ(rig.session.find(id)->directory().worker_of("127.0.0.1:7001"), "");

    // Two more liars on the address: the third takes the address with it.
    rig.connected(id, "127.0.0.1:7003", "-HP0001-cccccccccccc");
    rig.connected(id, "127.0.0.1:7004", "-HP0001-dddddddddddd");
    rig.failed(id, "127.0.0.1:7003");
    EXPECT_EQ(rig.bans().size(), 1u);
    rig.failed(id, "127.0.0.1:7004");
    const auto last = rig.bans();
    ASSERT_EQ(last.size(), 2u);
    EXPECT_EQ(last[1].port(), 0u);
    EXPECT_TRUE(last[1].peer_id().empty());
    EXPECT_EQ(rig.session.find(id)->directory().known_peers(), 0u);
}

// --- never silent ---

StallInputs stalled_inputs() {
    StallInputs in;
    in.downloading = true;
    in.has_trackers = true;
    in.tracker_answered = true;
    in.peers.banned = 1;
    return in;
}

TEST(StallWatch, SaysWhyAndBacksOffItsEarlyAnnounces) {
    StallWatch watch;
    const auto t0 = Clock::now();
    EXPECT_FALSE(watch.update(stalled_inputs(), t0));
    EXPECT_EQ(watch.reason(), "no peers: 1 banned; re-announcing in 30 s");
    EXPECT_EQ(watch.summary(), "no peers: 1 banned; re-announcing with backoff");
    EXPECT_FALSE(watch.update(stalled_inputs(), t0 + 10s));
    EXPECT_EQ(watch.reason(), "no peers: 1 banned; re-announcing in 20 s");
    EXPECT_TRUE(watch.update(stalled_inputs(), t0 + 30s));
    EXPECT_EQ(watch.reason(), "no peers: 1 banned; re-announcing in 60 s");
    EXPECT_FALSE(watch.update(stalled_inputs(), t0 + 60s));
    EXPECT_TRUE(watch.update(stalled_inputs(), t0 + 90s));
    EXPECT_TRUE(watch.update(stalled_inputs(), t0 + 210s));
    EXPECT_TRUE(watch.update(stalled_inputs(), t0 + 450s));
    EXPECT_EQ(watch.reason(), "no peers: 1 banned; re-announcing in 300 s");  // the cap
    // A peer connects: all is well, and the next stall starts from the first gap again.
    StallInputs fine = stalled_inputs();
    fine.peers.connected = 1;
    EXPECT_FALSE(watch.update(fine, t0 + 500s));
    EXPECT_EQ(watch.reason(), "");
    EXPECT_FALSE(watch.update(stalled_inputs(), t0 + 600s));
    EXPECT_TRUE(watch.update(stalled_inputs(), t0 + 630s));
}

TEST(StallWatch, NamesEveryKindOfMissingPeer) {
    StallWatch watch;
    const auto t0 = Clock::now();
    StallInputs in = stalled_inputs();
    in.peers.banned = 0;
    in.peers.given_up = 2;
    in.peers.backing_off = 1;
    in.peers.next_retry = t0 + 12s;
    in.tracker_error = "connection refused";
    watch.update(in, t0);
    EXPECT_EQ(watch.reason(),
              "no peers: 2 unreachable, 1 dropped; retrying in 12 s; tracker failing: connection refused; "
              "re-announcing in 30 s");
    in = StallInputs{};
    in.downloading = true;
    in.peers.banned = 1;
    watch.update(in, t0);
    EXPECT_EQ(watch.reason(), "no peers: 1 banned; no tracker to ask");
    in.peers.banned = 0;
    watch.update(in, t0);
    EXPECT_EQ(watch.reason(), "no peers: none known; no tracker to ask");
}

TEST(StallWatch, QuietWhileConnectingOrDoneOrWaitingForTheFirstAnswer) {
    StallWatch watch;
    const auto t0 = Clock::now();
    StallInputs in = stalled_inputs();
    in.peers.banned = 0;
    in.peers.connecting = 2;
    EXPECT_FALSE(watch.update(in, t0));
    EXPECT_EQ(watch.reason(), "no peers yet: connecting to 2");
    EXPECT_FALSE(watch.stalled());
    in.peers.connecting = 0;
    in.tracker_answered = false;
    watch.update(in, t0);
    EXPECT_EQ(watch.reason(), "no peers yet: waiting for the tracker");
    in.downloading = false;
    watch.update(in, t0);
    EXPECT_EQ(watch.reason(), "");
}

TEST(StallWatch, TheProgressLineCarriesTheNote) {
    orchestrator::ProgressSnapshot snapshot{1000, 2000, 0, 0};
    snapshot.note = "no peers: 1 banned; re-announcing in 30 s";
    EXPECT_EQ(orchestrator::format_progress(snapshot),
              "   50.0%  1000 B/2.0 KiB  0 B/s  ETA --:--  peers 0  [no peers: 1 banned; re-announcing in 30 s]");
}

// --- the tracker's early announce ---

TEST(AnnounceSchedule, AnEarlyAnnounceComesNowButNotBeforeTheMinimumGap) {
    const auto t0 = Clock::now();
    tracker::AnnounceSchedule schedule{tracker::AnnounceSchedule::Config{}, t0};
    schedule.on_success(t0, tracker::Event::started, 1800s);
    EXPECT_EQ(schedule.next_due(), t0 + 1800s);
    schedule.request_early(t0 + 5s, 30s);
    EXPECT_EQ(schedule.next_due(), t0 + 30s);
    schedule.on_success(t0 + 30s, tracker::Event::none, 1800s);
    schedule.request_early(t0 + 100s, 30s);
    EXPECT_EQ(schedule.next_due(), t0 + 100s);
    // Never later than it was due anyway.
    schedule.on_success(t0 + 100s, tracker::Event::none, 10s);
    schedule.request_early(t0 + 101s, 30s);
    EXPECT_EQ(schedule.next_due(), t0 + 110s);
}

}  // namespace
}  // namespace pw
