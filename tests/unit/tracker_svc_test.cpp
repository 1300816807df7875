#include <algorithm>
#include <chrono>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "tracker_svc/announce_queue.hpp"
#include "tracker_svc/local_discovery.hpp"
#include "tracker_svc/announce_schedule.hpp"
#include "tracker_svc/tier_list.hpp"
#include "tracker_svc/torrent_announcer.hpp"
#include "tracker_svc/udp_announcer.hpp"

namespace pw::tracker {
namespace {

using std::chrono::seconds;
using Clock = AnnounceSchedule::Clock;

std::vector<std::string> walk(const TierList& list) {
    std::vector<std::string> order;
    for (auto position = list.first(); position; position = list.next(*position)) {
        order.push_back(list.url(*position));
    }
    return order;
}

TEST(TierList, TriesTiersInOrderAndShufflesOnlyWithinATier) {
    std::mt19937 rng(7);
    const std::vector<std::vector<std::string>> tiers{{"a1", "a2", "a3"}, {"b1"}, {"c1", "c2"}};
    TierList list(tiers, rng);
    const auto order = walk(list);
    ASSERT_EQ(order.size(), 6u);
    EXPECT_EQ(std::set<std::string>(order.begin(), order.begin() + 3),
              (std::set<std::string>{"a1", "a2", "a3"}));
    EXPECT_EQ(order[3], "b1");
    EXPECT_EQ(std::set<std::string>(order.begin() + 4, order.end()),
              (std::set<std::string>{"c1", "c2"}));
}

TEST(TierList, ShuffleDependsOnTheGenerator) {
    std::vector<std::string> tier;
    for (int i = 0; i < 20; ++i) tier.push_back("u" + std::to_string(i));
    std::set<std::vector<std::string>> orders;
    for (unsigned seed = 0; seed < 5; ++seed) {
        std::mt19937 rng(seed);
        orders.insert(walk(TierList({tier}, rng)));
    }
    EXPECT_GT(orders.size(), 1u);
}

TEST(TierList, PromoteMovesTheAnsweringUrlToTheFrontOfItsTierOnly) {
    std::mt19937 rng(1);
    TierList list({{"a1", "a2", "a3"}, {"b1", "b2"}}, rng);
    const auto before = walk(list);
    TierList::Position third{0, 2};
    const std::string winner = list.url(third);
    const auto promoted = list.promote(third);
    EXPECT_EQ(promoted, (TierList::Position{0, 0}));
    const auto after = walk(list);
    EXPECT_EQ(after[0], winner);
    EXPECT_EQ(after[1], before[0]);
    EXPECT_EQ(after[2], before[1]);
    EXPECT_EQ(std::vector<std::string>(after.begin() + 3, after.end()),
              std::vector<std::string>(before.begin() + 3, before.end()));
}

TEST(TierList, DropsEmptiesAndDuplicates) {
    std::mt19937 rng(3);
    TierList list({{}, {"", "x"}, {"x", "y"}, {}}, rng);
    EXPECT_EQ(walk(list), (std::vector<std::string>{"x", "y"}));
    EXPECT_EQ(list.tiers().size(), 2u);
    TierList empty({{}, {""}}, rng);
    EXPECT_TRUE(empty.empty());
    EXPECT_FALSE(empty.first());
}

TEST(TierList, CapsTheNumberOfTrackers) {
    std::mt19937 rng(3);
    std::vector<std::vector<std::string>> tiers;
    for (std::size_t i = 0; i < TierList::kMaxTrackers + 50; ++i) tiers.push_back({"u" + std::to_string(i)});
    EXPECT_EQ(walk(TierList(tiers, rng)).size(), TierList::kMaxTrackers);
}

class Schedule : public ::testing::Test {
protected:
    Clock::time_point t0{};  // an arbitrary epoch: the schedule only compares times
    AnnounceSchedule schedule{AnnounceSchedule::Config{}, t0};
};

TEST_F(Schedule, StartsWithStartedDueNowAndManyPeers) {
    EXPECT_TRUE(schedule.due(t0));
    EXPECT_EQ(schedule.next_event(), Event::started);
    EXPECT_EQ(schedule.numwant(), 200);
}

TEST_F(Schedule, RegularAnnouncesFollowStartedAtTheInterval) {
    schedule.on_success(t0, Event::started, seconds(1800));
    EXPECT_EQ(schedule.next_event(), Event::none);
    EXPECT_FALSE(schedule.due(t0 + seconds(1799)));
    EXPECT_TRUE(schedule.due(t0 + seconds(1800)));
    EXPECT_EQ(schedule.numwant(), 50);
    schedule.on_success(t0 + seconds(1800), Event::none, seconds(60));
    EXPECT_EQ(schedule.next_due(), t0 + seconds(1860));
}

TEST_F(Schedule, FailedRoundsBackOffDoublingUpToTheCap) {
    std::vector<long> delays;
    auto now = t0;
    for (int i = 0; i < 7; ++i) {
        const auto delay = schedule.on_all_failed(now, Event::started);
        delays.push_back(delay.count());
        EXPECT_EQ(schedule.next_due(), now + delay);
        now += delay;
    }
    EXPECT_EQ(delays, (std::vector<long>{15, 30, 60, 120, 240, 300, 300}));
    EXPECT_EQ(schedule.next_event(), Event::started);  // started is retried, not dropped
    EXPECT_EQ(schedule.numwant(), 200);
    schedule.on_success(now, Event::started, seconds(100));
    EXPECT_EQ(schedule.consecutive_failures(), 0);
    EXPECT_EQ(schedule.on_all_failed(now, Event::none), seconds(15));
}

TEST_F(Schedule, CompletedGoesOutAtOnceAfterStarted) {
    schedule.on_success(t0, Event::started, seconds(1800));
    schedule.request_completed(t0 + seconds(10));
    EXPECT_TRUE(schedule.due(t0 + seconds(10)));
    EXPECT_EQ(schedule.next_event(), Event::completed);
    schedule.on_success(t0 + seconds(11), Event::completed, seconds(1800));
    EXPECT_EQ(schedule.next_event(), Event::none);
    EXPECT_EQ(schedule.next_due(), t0 + seconds(1811));
}

TEST_F(Schedule, CompletedBeforeStartedGotThroughWaitsForIt) {
    schedule.request_completed(t0);
    EXPECT_EQ(schedule.next_event(), Event::started);
    schedule.on_all_failed(t0, Event::started);
    EXPECT_EQ(schedule.next_event(), Event::started);
    schedule.on_success(t0 + seconds(15), Event::started, seconds(1800));
    EXPECT_EQ(schedule.next_event(), Event::completed);
    EXPECT_TRUE(schedule.due(t0 + seconds(15)));
}

TEST_F(Schedule, CompletedDuringARegularRoundIsKept) {
    schedule.on_success(t0, Event::started, seconds(60));
    // A regular round is in flight when the orchestrator reports completion.
    schedule.request_completed(t0 + seconds(60));
    schedule.on_success(t0 + seconds(61), Event::none, seconds(60));
    EXPECT_EQ(schedule.next_event(), Event::completed);
    EXPECT_TRUE(schedule.due(t0 + seconds(61)));
}

TEST_F(Schedule, StoppedIsTriedOnceThenNothing) {
    schedule.on_success(t0, Event::started, seconds(1800));
    schedule.request_stopped(t0 + seconds(5));
    EXPECT_TRUE(schedule.due(t0 + seconds(5)));
    EXPECT_EQ(schedule.next_event(), Event::stopped);
    EXPECT_EQ(schedule.numwant(), 0);
    schedule.on_all_failed(t0 + seconds(6), Event::stopped);
    EXPECT_TRUE(schedule.finished());
    EXPECT_FALSE(schedule.due(t0 + seconds(100000)));
}

TEST_F(Schedule, StoppedAnsweredFinishes) {
    schedule.on_success(t0, Event::started, seconds(1800));
    schedule.request_stopped(t0);
    schedule.on_success(t0, Event::stopped, seconds(1800));
    EXPECT_TRUE(schedule.finished());
    schedule.request_completed(t0);
    EXPECT_FALSE(schedule.due(t0 + seconds(5000)));
}

TEST_F(Schedule, StoppedOverridesPendingCompletedAndBackoff) {
    schedule.request_completed(t0);
    schedule.on_all_failed(t0, Event::started);
    schedule.request_stopped(t0 + seconds(1));
    EXPECT_EQ(schedule.next_event(), Event::stopped);
    EXPECT_TRUE(schedule.due(t0 + seconds(1)));
    schedule.request_completed(t0 + seconds(1));
    EXPECT_EQ(schedule.next_event(), Event::stopped);
}

TEST(UdpUrl, ParsesHostAndPort) {
    auto plain = parse_udp_url("udp://tracker.example.org:6969/announce");
    ASSERT_TRUE(plain.ok()) << plain.error().describe();
    EXPECT_EQ(*plain, (UdpTrackerAddress{"tracker.example.org", 6969}));
    auto v6 = parse_udp_url("UDP://[::1]:80");
    ASSERT_TRUE(v6.ok()) << v6.error().describe();
    EXPECT_EQ(*v6, (UdpTrackerAddress{"::1", 80}));
    auto query = parse_udp_url("udp://127.0.0.1:1?x=y");
    ASSERT_TRUE(query.ok());
    EXPECT_EQ(query->port, 1);
}

TEST(UdpUrl, RejectsMalformed) {
    for (const char* url : {"http://a:1", "udp://host", "udp://:80", "udp://host:0",
                            "udp://host:65536", "udp://host:12x", "udp://[::1]80", "udp://[::1",
                            "udp://host:"}) {
        EXPECT_FALSE(parse_udp_url(url).ok()) << url;
    }
}

TEST(UdpRetransmit, ShortDoublingScheduleWithinTheTimeout) {
    EXPECT_EQ(udp_retransmit_delay(0), std::chrono::milliseconds(2000));
    EXPECT_EQ(udp_retransmit_delay(1), std::chrono::milliseconds(4000));
    EXPECT_EQ(udp_retransmit_delay(2), std::chrono::milliseconds(8000));
    EXPECT_EQ(udp_retransmit_delay(50), udp_retransmit_delay(5));
}


TEST(UdpConnections, AnIdServesEveryTorrentForAMinute) {
    UdpConnections connections;
    const Clock::time_point t0{};
    EXPECT_FALSE(connections.find("t:1", t0));
    connections.remember("t:1", 42, t0);
    EXPECT_EQ(connections.find("t:1", t0 + seconds(59)), std::optional<std::uint64_t>(42));
    EXPECT_FALSE(connections.find("t:1", t0 + seconds(60)));
    connections.forget("t:1");
    EXPECT_FALSE(connections.find("t:1", t0));
}

TEST(UdpConnections, ExpiredIdsDoNotPileUp) {
    UdpConnections connections;
    const Clock::time_point t0{};
    for (int i = 0; i < 100; ++i) connections.remember("old:" + std::to_string(i), 1, t0);
    connections.remember("new:1", 2, t0 + seconds(61));
    EXPECT_EQ(connections.size(), 1u);
}

// --- the in-flight cap ---

std::vector<std::uint32_t> start_all(AnnounceQueue& queue) {
    std::vector<std::uint32_t> started;
    while (const auto id = queue.start_next()) started.push_back(id->get());
    return started;
}

TEST(AnnounceQueue, AtMostTheCapInFlightTheRestInOrder) {
    AnnounceQueue queue(2);
    for (std::uint32_t id = 1; id <= 5; ++id) queue.push(TorrentId{id});
    EXPECT_EQ(start_all(queue), (std::vector<std::uint32_t>{1, 2}));
    EXPECT_EQ(queue.in_flight_count(), 2u);
    EXPECT_EQ(queue.waiting_count(), 3u);
    queue.finish(TorrentId{2});
    EXPECT_EQ(start_all(queue), (std::vector<std::uint32_t>{3}));
    queue.finish(TorrentId{1});
    queue.finish(TorrentId{3});
    EXPECT_EQ(start_all(queue), (std::vector<std::uint32_t>{4, 5}));
    EXPECT_EQ(queue.waiting_count(), 0u);
}

TEST(AnnounceQueue, ATorrentWaitsOnceAndNotWhileInFlight) {
    AnnounceQueue queue(1);
    queue.push(TorrentId{1});
    queue.push(TorrentId{1});
    EXPECT_EQ(queue.waiting_count(), 1u);
    EXPECT_EQ(start_all(queue), (std::vector<std::uint32_t>{1}));
    queue.push(TorrentId{1});  // in flight: its announce has to end first
    EXPECT_EQ(queue.waiting_count(), 0u);
    EXPECT_TRUE(queue.in_flight(TorrentId{1}));
}

TEST(AnnounceQueue, ATorrentGoingOnQueuesBehindTheOthers) {
    // A torrent whose round goes on with its next tracker takes its turn again at the back,
    // so one with many dead trackers cannot hold a slot while others wait.
    AnnounceQueue queue(1);
    for (std::uint32_t id = 1; id <= 3; ++id) queue.push(TorrentId{id});
    EXPECT_EQ(start_all(queue), (std::vector<std::uint32_t>{1}));
    queue.finish(TorrentId{1});
    queue.push(TorrentId{1});
    std::vector<std::uint32_t> order;
    while (const auto id = queue.start_next()) {
        order.push_back(id->get());
        queue.finish(*id);
    }
    EXPECT_EQ(order, (std::vector<std::uint32_t>{2, 3, 1}));
}

TEST(AnnounceQueue, UrgentGoesFirstAndMovesAWaitingTorrentAhead) {
    AnnounceQueue queue(1);
    queue.push(TorrentId{1});
    EXPECT_EQ(start_all(queue), (std::vector<std::uint32_t>{1}));
    queue.push(TorrentId{2});
    queue.push(TorrentId{3});
    queue.push(TorrentId{4}, true);
    queue.push(TorrentId{3}, true);  // removed while waiting: its stopped goes ahead
    EXPECT_EQ(queue.waiting_count(), 3u);
    std::vector<std::uint32_t> order;
    queue.finish(TorrentId{1});
    while (const auto id = queue.start_next()) {
        order.push_back(id->get());
        queue.finish(*id);
    }
    EXPECT_EQ(order, (std::vector<std::uint32_t>{4, 3, 2}));
}

TEST(AnnounceQueue, ForgetFreesTheSlotOrTheTurn) {
    AnnounceQueue queue(1);
    queue.push(TorrentId{1});
    queue.push(TorrentId{2});
    queue.push(TorrentId{3});
    EXPECT_EQ(start_all(queue), (std::vector<std::uint32_t>{1}));
    queue.forget(TorrentId{2});
    queue.forget(TorrentId{1});
    EXPECT_FALSE(queue.waiting(TorrentId{2}));
    EXPECT_EQ(start_all(queue), (std::vector<std::uint32_t>{3}));
    queue.forget(TorrentId{99});  // unknown: nothing happens
    EXPECT_EQ(queue.in_flight_count(), 1u);
}

TEST(AnnounceQueue, ACapOfZeroStillLetsOneThrough) {
    AnnounceQueue queue(0);
    queue.push(TorrentId{1});
    EXPECT_EQ(start_all(queue), (std::vector<std::uint32_t>{1}));
}

// --- one torrent's announcer ---

class Announcer : public ::testing::Test {
protected:
    static AnnounceRequest identity() {
        AnnounceRequest request;
        request.info_hash.fill(0xab);
        request.peer_id.fill('p');
        request.port = 6881;
        request.key = 77;
        return request;
    }

    TorrentAnnouncer make(std::vector<std::vector<std::string>> tiers) {
        TorrentAnnouncer::Config config;
        config.min_interval = seconds(10);
        return TorrentAnnouncer(TorrentId{7}, identity(), std::move(tiers), rng, config);
    }

    static AnnounceResponse answer(std::int64_t interval, std::size_t peers = 0) {
        AnnounceResponse response;
        response.interval = interval;
        for (std::size_t i = 0; i < peers; ++i) {
            response.peers.push_back(PeerAddress{"10.0.0." + std::to_string(i + 1), 6881});
        }
        return response;
    }

    std::mt19937 rng{5};
    Clock::time_point t0{};
};

TEST_F(Announcer, NothingGoesOutBeforeTheFirstStats) {
    auto announcer = make({{"http://a/announce"}});
    EXPECT_FALSE(announcer.wants_attempt(t0 + seconds(1000)));
    EXPECT_FALSE(announcer.next_due());
    announcer.on_stats(0, 0, 16384, 6881, false, t0 + seconds(5));
    EXPECT_TRUE(announcer.wants_attempt(t0 + seconds(5)));
    const Attempt attempt = announcer.begin_attempt();
    EXPECT_EQ(attempt.url, "http://a/announce");
    EXPECT_EQ(attempt.request.event, Event::started);
    EXPECT_EQ(attempt.request.left, 16384u);
    EXPECT_EQ(attempt.request.numwant, 200);
    EXPECT_EQ(attempt.request.info_hash, identity().info_hash);
    EXPECT_EQ(attempt.request.peer_id, identity().peer_id);
    EXPECT_EQ(attempt.request.key, 77u);
    EXPECT_EQ(attempt.request.port, 6881);
    EXPECT_TRUE(announcer.in_flight());
    EXPECT_FALSE(announcer.wants_attempt(t0 + seconds(5)));
}

TEST_F(Announcer, AnAnswerIsReportedWithItsPeersAndTheNextTime) {
    auto announcer = make({{"http://a/announce"}});
    announcer.on_stats(0, 0, 100, 6881, false, t0);
    (void)announcer.begin_attempt();
    AnnounceResponse response = answer(120, 2);
    response.tracker_id = "tid-1";
    response.warning = "be nice";
    const Outcome outcome = announcer.on_answer(response, t0 + seconds(1));
    ASSERT_TRUE(outcome.status);
    EXPECT_TRUE(outcome.status->ok);
    EXPECT_EQ(outcome.status->tracker, "http://a/announce");
    EXPECT_EQ(outcome.status->peers, 2u);
    EXPECT_EQ(outcome.status->next_announce, seconds(120));
    EXPECT_EQ(outcome.status->message, "tracker warns: be nice");
    EXPECT_EQ(outcome.peers_tracker, "http://a/announce");
    EXPECT_EQ(outcome.peers.size(), 2u);
    EXPECT_EQ(announcer.next_due(), t0 + seconds(121));
    EXPECT_FALSE(announcer.wants_attempt(t0 + seconds(120)));
    ASSERT_TRUE(announcer.wants_attempt(t0 + seconds(121)));
    const Attempt regular = announcer.begin_attempt();
    EXPECT_EQ(regular.request.event, Event::none);
    EXPECT_EQ(regular.request.numwant, 50);
    EXPECT_EQ(regular.request.tracker_id, std::optional<std::string>("tid-1"));
}

TEST_F(Announcer, ARoundGoesThroughTheTiersThenBacksOff) {
    auto announcer = make({{"udp://a:1"}, {"http://b/announce"}});
    announcer.on_stats(0, 0, 100, 6881, false, t0);
    EXPECT_EQ(announcer.begin_attempt().url, "udp://a:1");
    Outcome first = announcer.on_failure("timed out", t0 + seconds(5));
    ASSERT_TRUE(first.status);
    EXPECT_FALSE(first.status->ok);
    EXPECT_EQ(first.status->tracker, "udp://a:1");
    EXPECT_EQ(first.status->message, "timed out");
    EXPECT_EQ(first.status->next_announce, seconds(0));  // the round goes on
    EXPECT_TRUE(announcer.wants_attempt(t0 + seconds(5)));
    EXPECT_FALSE(announcer.next_due());  // going on is not a matter of time
    EXPECT_EQ(announcer.begin_attempt().url, "http://b/announce");
    AnnounceResponse refused;
    refused.failure_reason = "not authorized";
    Outcome last = announcer.on_answer(refused, t0 + seconds(6));
    ASSERT_TRUE(last.status);
    EXPECT_EQ(last.status->message, "tracker says: not authorized");
    EXPECT_EQ(last.status->next_announce, seconds(15));
    EXPECT_TRUE(last.peers.empty());
    EXPECT_FALSE(announcer.wants_attempt(t0 + seconds(20)));
    EXPECT_EQ(announcer.next_due(), t0 + seconds(21));
    ASSERT_TRUE(announcer.wants_attempt(t0 + seconds(21)));
    const Attempt retry = announcer.begin_attempt();
    EXPECT_EQ(retry.url, "udp://a:1");
    EXPECT_EQ(retry.request.event, Event::started);  // started is retried, not dropped
}

TEST_F(Announcer, CompletedFollowsStartedAtOnce) {
    auto announcer = make({{"http://a/announce"}});
    announcer.on_stats(0, 0, 100, 6881, false, t0);
    (void)announcer.begin_attempt();
    announcer.on_stats(0, 100, 0, 6881, true, t0);  // completed while started is in flight
    const Outcome outcome = announcer.on_answer(answer(1800), t0 + seconds(1));
    ASSERT_TRUE(outcome.status);
    EXPECT_EQ(outcome.status->next_announce, seconds(0));
    ASSERT_TRUE(announcer.wants_attempt(t0 + seconds(1)));
    const Attempt completed = announcer.begin_attempt();
    EXPECT_EQ(completed.request.event, Event::completed);
    EXPECT_EQ(completed.request.left, 0u);
    EXPECT_EQ(completed.request.downloaded, 100u);
}

TEST_F(Announcer, StopGoesOnceToTheTrackerThatAnsweredLast) {
    auto announcer = make({{"http://a/announce"}, {"http://b/announce"}});
    announcer.on_stats(0, 0, 100, 6881, false, t0);
    (void)announcer.begin_attempt();
    (void)announcer.on_failure("refused", t0);
    (void)announcer.begin_attempt();
    (void)announcer.on_answer(answer(60), t0 + seconds(1));
    ASSERT_EQ(announcer.last_answered(), "http://b/announce");
    ASSERT_TRUE(announcer.wants_attempt(t0 + seconds(61)));
    (void)announcer.begin_attempt();  // a regular announce in flight when the torrent goes
    EXPECT_TRUE(announcer.stop(t0 + seconds(62)));
    EXPECT_TRUE(announcer.stopping());
    EXPECT_FALSE(announcer.in_flight());
    ASSERT_TRUE(announcer.wants_attempt(t0 + seconds(62)));
    const Attempt stopped = announcer.begin_attempt();
    EXPECT_EQ(stopped.url, "http://b/announce");
    EXPECT_EQ(stopped.request.event, Event::stopped);
    EXPECT_EQ(stopped.request.numwant, 0);
    // It fails: no other tracker is tried, nothing is reported (the torrent is gone), and
    // nothing more is ever announced.
    const Outcome outcome = announcer.on_failure("timed out", t0 + seconds(63));
    EXPECT_FALSE(outcome.status);
    EXPECT_TRUE(announcer.finished());
    announcer.on_stats(0, 100, 0, 6881, true, t0 + seconds(64));
    EXPECT_FALSE(announcer.wants_attempt(t0 + seconds(100000)));
}

TEST_F(Announcer, AnAnsweredStopFinishesWithoutReports) {
    auto announcer = make({{"http://a/announce"}});
    announcer.on_stats(0, 0, 100, 6881, false, t0);
    (void)announcer.begin_attempt();
    (void)announcer.on_answer(answer(60, 3), t0);
    ASSERT_TRUE(announcer.stop(t0));
    (void)announcer.begin_attempt();
    const Outcome outcome = announcer.on_answer(answer(60, 3), t0);
    EXPECT_FALSE(outcome.status);
    EXPECT_TRUE(outcome.peers.empty());
    EXPECT_TRUE(announcer.finished());
}

TEST_F(Announcer, StopBeforeAnyAnswerHasNobodyToTell) {
    auto before_stats = make({{"http://a/announce"}});
    EXPECT_FALSE(before_stats.stop(t0));
    EXPECT_TRUE(before_stats.finished());

    auto never_answered = make({{"http://a/announce"}});
    never_answered.on_stats(0, 0, 100, 6881, false, t0);
    (void)never_answered.begin_attempt();
    EXPECT_FALSE(never_answered.stop(t0));
    EXPECT_TRUE(never_answered.finished());
    EXPECT_FALSE(never_answered.wants_attempt(t0));
}

TEST_F(Announcer, NoTrackersNeverWantsToAnnounce) {
    auto announcer = make({});
    announcer.on_stats(0, 0, 100, 6881, false, t0);
    EXPECT_FALSE(announcer.wants_attempt(t0));
    EXPECT_FALSE(announcer.next_due());
}

// --- local service discovery (BEP 14) ---

Sha1Digest lsd_hash(std::uint8_t fill) {
    Sha1Digest d{};
    d.fill(fill);
    return d;
}

TEST(LocalDiscovery, AnnouncesOncePortIsKnownThenEveryFiveMinutesGroupedByPort) {
    const auto t0 = LocalDiscovery::Clock::now();
    LocalDiscovery lsd("ours");
    lsd.add(TorrentId{1}, lsd_hash(1), t0);
    lsd.add(TorrentId{2}, lsd_hash(2), t0);
    EXPECT_TRUE(lsd.due(t0 + std::chrono::seconds(2)).empty());  // no port yet
    EXPECT_FALSE(lsd.next_due());
    lsd.set_port(TorrentId{1}, 6881);
    lsd.set_port(TorrentId{2}, 6881);
    const auto sent = lsd.due(t0 + std::chrono::seconds(2));
    ASSERT_EQ(sent.size(), 1u);
    auto decoded = lsd::decode_announce(sent[0]);
    ASSERT_TRUE(decoded.ok());
    EXPECT_EQ(decoded->port, 6881);
    EXPECT_EQ(decoded->info_hashes.size(), 2u);
    EXPECT_EQ(decoded->cookie, "ours");
    EXPECT_TRUE(lsd.due(t0 + std::chrono::minutes(4)).empty());
    EXPECT_EQ(lsd.due(t0 + std::chrono::minutes(6)).size(), 1u);
    lsd.remove(TorrentId{1});
    lsd.remove(TorrentId{2});
    EXPECT_TRUE(lsd.due(t0 + std::chrono::minutes(20)).empty());
}

TEST(LocalDiscovery, PeersOfOurTorrentsOnceEachNotOurOwnNotAFlood) {
    const auto t0 = LocalDiscovery::Clock::now();
    LocalDiscovery::Options options;
    options.max_datagrams_per_second = 3;
    LocalDiscovery lsd("ours", options);
    lsd.add(TorrentId{7}, lsd_hash(7), t0);
    const std::string theirs = lsd::encode_announce(lsd::Announce{51413, {lsd_hash(7), lsd_hash(9)}, "theirs"});
    auto found = lsd.on_datagram(theirs, "10.0.0.5", t0);
    ASSERT_TRUE(found.ok());
    ASSERT_EQ(found->size(), 1u);  // the other hash is not ours
    EXPECT_EQ((*found)[0].torrent, TorrentId{7});
    EXPECT_EQ((*found)[0].peer, (PeerAddress{"10.0.0.5", 51413}));
    found = lsd.on_datagram(theirs, "10.0.0.5", t0);  // again: already reported
    ASSERT_TRUE(found.ok());
    EXPECT_TRUE(found->empty());
    EXPECT_FALSE(lsd.on_datagram("garbage", "10.0.0.6", t0).ok());
    // Over three datagrams a second, the rest are not even read.
    const std::string other = lsd::encode_announce(lsd::Announce{1, {lsd_hash(7)}, ""});
    found = lsd.on_datagram(other, "10.0.0.8", t0);
    ASSERT_TRUE(found.ok());
    EXPECT_TRUE(found->empty());
    found = lsd.on_datagram(other, "10.0.0.8", t0 + std::chrono::seconds(2));
    ASSERT_TRUE(found.ok());
    EXPECT_EQ(found->size(), 1u);
    // Our own announce, looped back: nothing.
    found = lsd.on_datagram(lsd::encode_announce(lsd::Announce{6881, {lsd_hash(7)}, "ours"}), "10.0.0.1",
                            t0 + std::chrono::seconds(2));
    ASSERT_TRUE(found.ok());
    EXPECT_TRUE(found->empty());
    // After the memory, the same peer is reported again (it may have come back).
    found = lsd.on_datagram(theirs, "10.0.0.5", t0 + std::chrono::minutes(6));
    ASSERT_TRUE(found.ok());
    EXPECT_EQ(found->size(), 1u);
}

}  // namespace
}  // namespace pw::tracker
