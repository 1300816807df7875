// End-to-end proofs of issue 3: `piecework download` against real trackers and seeders.
#include <gtest/gtest.h>

#include "tests/integration/harness.hpp"

namespace pw::test {
namespace {

TEST(HarnessSelfTest, SeederAnnouncesToOpentracker) {
    TempDir dir;
    const std::string payload = make_payload(dir / "data", "payload.bin", 3 << 20, 7);
    const std::uint16_t port = free_port();
    const std::string announce = "http://127.0.0.1:" + std::to_string(port) + "/announce";
    const std::string torrent = make_torrent(payload, 1 << 18, {{announce}}, dir / "t.torrent");
    EXPECT_EQ(piece_count(torrent), 12u);
    auto tracker = Tracker::start(dir, {info_hash_hex(torrent)}, port);
    EXPECT_EQ(tracker.http_announce(), announce);
    EXPECT_EQ(tracker.peer_count(), 0);
    auto seeder = LibtorrentSeeder::start(torrent, dir / "data");
    ASSERT_TRUE(seeder.wait_ready(60s)) << seeder.log();
    EXPECT_TRUE(tracker.wait_for_peers(1, 30s)) << tracker.log() << seeder.log();

    LibtorrentSeederOptions partial;
    partial.pieces = std::vector<std::uint32_t>{0, 3, 11};
    auto partial_seeder = LibtorrentSeeder::start(torrent, dir / "data", partial);
    ASSERT_TRUE(partial_seeder.wait_ready(60s)) << partial_seeder.log();
    EXPECT_TRUE(tracker.wait_for_peers(2, 30s)) << tracker.log() << partial_seeder.log();

    auto aria = Aria2Seeder::start(torrent, dir / "data");
    EXPECT_TRUE(aria.wait_ready(60s)) << aria.log();
    EXPECT_TRUE(tracker.wait_for_peers(3, 30s)) << tracker.log() << aria.log();
}

TEST(HarnessSelfTest, SameTreeFindsDifferences) {
    TempDir dir;
    const auto a = make_payload_tree(dir.path(), "a", {{"x/1.bin", 100}, {"y.bin", 5000}}, 1);
    const auto b = make_payload_tree(dir.path(), "b", {{"x/1.bin", 100}, {"y.bin", 5000}}, 1);
    std::string why;
    EXPECT_TRUE(same_tree(a, b, &why)) << why;
    make_payload(dir.path(), "b/y.bin", 5000, 99);
    EXPECT_FALSE(same_tree(a, b, &why));
    EXPECT_NE(why.find("differ at byte"), std::string::npos) << why;
    make_payload(dir.path(), "b/z.bin", 1, 1);
    EXPECT_FALSE(same_tree(a, b, &why));
    EXPECT_NE(why.find("only in second: z.bin"), std::string::npos) << why;
}

TEST(HarnessSelfTest, ProcessGroupIsKilled) {
    TempDir dir;
    auto sleeper = Process::start({"sh", "-c", "sleep 300 & sleep 300"}, dir / "log");
    EXPECT_TRUE(sleeper.running());
    EXPECT_EQ(sleeper.wait_for_exit(100ms), -1);
    sleeper.terminate();
    EXPECT_EQ(sleeper.wait_for_exit(5s), 128 + SIGTERM);
    auto quick = Process::start({"sh", "-c", "echo hi; exit 3"}, dir / "log2");
    EXPECT_EQ(quick.wait_for_exit(5s), 3);
    EXPECT_EQ(quick.log_tail(), "hi\n");
}

}  // namespace
}  // namespace pw::test
