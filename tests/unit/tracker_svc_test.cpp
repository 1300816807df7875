#include <algorithm>
#include <chrono>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "tracker_svc/announce_schedule.hpp"
#include "tracker_svc/tier_list.hpp"
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

}  // namespace
}  // namespace pw::tracker
