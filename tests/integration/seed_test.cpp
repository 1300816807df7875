// Giving back, as other clients see it: libtorrent and aria2 leechers download from
// `piecework seed` as their only source; a libtorrent leecher downloads from a `piecework
// download` that is still downloading itself; a torrent made by `piecework create` is seeded to
// libtorrent. Every byte is checked; nothing asserts on speed.
#include <signal.h>

#include <filesystem>
#include <optional>
#include <regex>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "tests/integration/harness.hpp"

namespace pw::test {
namespace {

namespace fs = std::filesystem;

constexpr auto kReadyTimeout = 120s;
constexpr auto kDoneTimeout = 240s;

// tests/integration/lt_leecher.py: a libtorrent client that downloads from the peers named.
Process start_leecher(const TempDir& dir, const std::string& torrent, const std::string& out,
                      std::uint16_t peer_port, const std::string& log) {
    fs::create_directories(out);
    return Process::start({"/usr/bin/python3", helper("lt_leecher.py"), torrent, out, "--peer",
                           "127.0.0.1:" + std::to_string(peer_port), "--timeout", "220"},
                          dir / log);
}

class SeedTest : public ::testing::Test {
protected:
    void SetUp() override { fs::create_directories(dir_ / "data"); }

    // `piecework seed` of the torrent over the files in data/, listening on a port of its own.
    Process& start_seed(const std::string& torrent, std::vector<std::string> more = {}) {
        seed_port_ = free_port();
        std::vector<std::string> argv{bin("piecework"), "seed",          torrent,
                                      dir_ / "data",    "--listen-port", std::to_string(seed_port_),
                                      "--log-level",    "info"};
        argv.insert(argv.end(), more.begin(), more.end());
        seed_.emplace(Process::start(argv, dir_ / "seed.log"));
        return *seed_;
    }

    // Waits until the seed says it has every piece on disk, so leechers find a seeder.
    bool seed_checked(std::uint32_t pieces) {
        const std::string wanted = "resumed: " + std::to_string(pieces) + " of " + std::to_string(pieces);
        const auto deadline = std::chrono::steady_clock::now() + 60s;
        while (std::chrono::steady_clock::now() < deadline) {
            if (read_text_file(seed_->log_path()).find(wanted) != std::string::npos) return true;
            if (!seed_->running()) return false;
            std::this_thread::sleep_for(100ms);
        }
        return false;
    }

    std::string seed_log() const { return seed_ ? "\n--- seed ---\n" + seed_->log_tail(60) : std::string{}; }

    TempDir dir_{"pw-seed-"};
    std::uint16_t seed_port_ = 0;
    std::optional<Process> seed_;
};

TEST_F(SeedTest, LibtorrentDownloadsFromAPieceworkSeedAlone) {
    const std::string payload = make_payload(dir_ / "data", "seeded.bin", 5u << 20, 61);
    const std::string torrent = make_torrent(payload, 64 << 10, {}, dir_ / "seeded.torrent");
    start_seed(torrent);
    ASSERT_TRUE(seed_checked(piece_count(torrent))) << seed_log();
    Process leecher = start_leecher(dir_, torrent, dir_ / "lt", seed_port_, "leecher.log");
    ASSERT_EQ(leecher.wait_for_exit(kDoneTimeout), 0) << leecher.log_tail() << seed_log();
    std::string why;
    EXPECT_TRUE(same_tree(payload, dir_ / "lt/seeded.bin", &why)) << why;
    // Ctrl-C ends a seed cleanly.
    ::kill(seed_->pid(), SIGINT);
    EXPECT_EQ(seed_->wait_for_exit(30s), 0) << seed_log();
}

// aria2 finds the seed through a tracker (it takes no peer on its command line).
TEST_F(SeedTest, Aria2DownloadsFromAPieceworkSeedFoundThroughATracker) {
    const std::string tree = make_payload_tree(dir_ / "data", "tree", {{"a.bin", 1'500'000}, {"sub/b.bin", 2'500'000}}, 62);
    const std::uint16_t tracker_port = free_port();
    const std::string torrent = make_torrent(
        tree, 32 << 10, {{"http://127.0.0.1:" + std::to_string(tracker_port) + "/announce"}}, dir_ / "tree.torrent");
    Tracker tracker = Tracker::start(dir_, {info_hash_hex(torrent)}, tracker_port);
    start_seed(torrent);
    ASSERT_TRUE(seed_checked(piece_count(torrent))) << seed_log();
    ASSERT_TRUE(tracker.wait_for_peers(1, 30s)) << seed_log();  // the seed announced itself
    fs::create_directories(dir_ / "aria2");
    Process leecher = Process::start(
        {"aria2c", "--seed-time=0", "-d", dir_ / "aria2", "--enable-dht=false", "--enable-dht6=false",
         "--bt-enable-lpd=false", "--enable-peer-exchange=false", "--summary-interval=0",
         "--file-allocation=none", "--console-log-level=notice", "--no-conf=true", "--bt-stop-timeout=200",
         torrent},
        dir_ / "aria2.log");
    ASSERT_EQ(leecher.wait_for_exit(kDoneTimeout), 0) << leecher.log_tail() << seed_log();
    std::string why;
    EXPECT_TRUE(same_tree(tree, dir_ / "aria2/tree", &why)) << why;
}

// A piecework download uploads what it has while it still downloads the rest.
TEST_F(SeedTest, ALeecherGetsPiecesFromAPieceworkThatIsStillDownloading) {
    const std::string payload = make_payload(dir_ / "data", "partial.bin", 6u << 20, 63);
    const std::string torrent = make_torrent(payload, 64 << 10, {}, dir_ / "partial.torrent");
    LibtorrentSeederOptions capped;
    capped.rate_kib = 512;  // slow enough that piecework is still downloading meanwhile
    LibtorrentSeeder origin = LibtorrentSeeder::start(torrent, dir_ / "data", capped);
    ASSERT_TRUE(origin.wait_ready(kReadyTimeout)) << origin.log();
    const std::uint16_t port = free_port();
    Process downloader = Process::start(
        {bin("piecework"), "download", torrent, "-o", dir_ / "pw", "--peer", "127.0.0.1:" + std::to_string(origin.port()),
         "--listen-port", std::to_string(port), "--seed-time", "1", "--log-level", "info"},
        dir_ / "download.log");
    // Some pieces in, most not: the leecher (which knows only piecework) starts now.
    const auto some = std::chrono::steady_clock::now() + 60s;
    while (bytes_matching(dir_ / "pw/partial.bin", payload, 64 << 10) < (1u << 20) &&
           std::chrono::steady_clock::now() < some) {
        std::this_thread::sleep_for(100ms);
    }
    ASSERT_LT(bytes_matching(dir_ / "pw/partial.bin", payload, 64 << 10), 6u << 20) << "finished too soon";
    Process leecher = start_leecher(dir_, torrent, dir_ / "lt", port, "leecher.log");
    // It gets pieces before piecework has them all.
    bool early = false;
    const auto watch = std::chrono::steady_clock::now() + 60s;
    while (std::chrono::steady_clock::now() < watch && !early) {
        const std::string log = read_text_file(leecher.log_path());
        const bool leecher_has_some = std::regex_search(log, std::regex("progress [1-9]"));
        early = leecher_has_some && read_text_file(downloader.log_path()).find("done:") == std::string::npos;
        if (read_text_file(downloader.log_path()).find("done:") != std::string::npos) break;
        std::this_thread::sleep_for(100ms);
    }
    EXPECT_TRUE(early) << leecher.log_tail() << "\n--- download ---\n" << downloader.log_tail();
    ASSERT_EQ(leecher.wait_for_exit(kDoneTimeout), 0) << leecher.log_tail() << downloader.log_tail();
    std::string why;
    EXPECT_TRUE(same_tree(payload, dir_ / "lt/partial.bin", &why)) << why;
    // --seed-time 1: it seeds a minute after completing, then exits 0 on its own.
    EXPECT_EQ(downloader.wait_for_exit(180s), 0) << downloader.log_tail();
    EXPECT_TRUE(same_tree(payload, dir_ / "pw/partial.bin", &why)) << why;
}

// `create` then `seed`, to libtorrent: the info-hash piecework made is the one libtorrent wants.
TEST_F(SeedTest, ATorrentMadeByCreateIsSeededToLibtorrent) {
    const std::string tree = make_payload_tree(dir_ / "data", "made", {{"x.bin", 700'000}, {".hidden", 1000}, {"d/y.bin", 900'000}}, 64);
    std::string output;
    ASSERT_EQ(run_command({bin("piecework"), "create", tree, "-o", dir_ / "made.torrent", "--piece-size", "32K"}, &output), 0)
        << output;
    start_seed(dir_ / "made.torrent");
    ASSERT_TRUE(seed_checked(piece_count(dir_ / "made.torrent"))) << seed_log();
    Process leecher = start_leecher(dir_, dir_ / "made.torrent", dir_ / "lt", seed_port_, "leecher.log");
    ASSERT_EQ(leecher.wait_for_exit(kDoneTimeout), 0) << leecher.log_tail() << seed_log();
    std::string why;
    EXPECT_TRUE(same_tree(tree, dir_ / "lt/made", &why)) << why;
}

}  // namespace
}  // namespace pw::test
