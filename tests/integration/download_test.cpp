// End-to-end proofs of issue 3: `piecework download` against a real opentracker and real
// seeders (libtorrent, aria2) on 127.0.0.1, checked byte for byte against the payload.
// Timeouts are generous and nothing asserts on speed: this runs on a busy 2-core machine.
#include <gtest/gtest.h>
#include <signal.h>

#include <cstdlib>
#include <memory>

#include "tests/integration/harness.hpp"

namespace pw::test {
namespace {

constexpr std::uint64_t kMiB = 1 << 20;
constexpr std::uint64_t kSingleSize = 64 * kMiB;
constexpr auto kDownloadTimeout = 300s;
constexpr auto kReadyTimeout = 120s;

std::string http_url(std::uint16_t port) {
    return "http://127.0.0.1:" + std::to_string(port) + "/announce";
}
std::string udp_url(std::uint16_t port) {
    return "udp://127.0.0.1:" + std::to_string(port) + "/announce";
}

// Payloads are made once per test binary (each ctest case is its own process, so this only
// saves work when the binary runs the whole suite).
class Payloads {
public:
    // A 64 MiB file, <folder>/payload.bin; returns the folder (the seeders' data dir).
    static const std::string& single_dir() {
        auto& self = instance();
        if (self.single_dir_.empty()) {
            self.single_dir_ = self.root_ / "single";
            make_payload(self.single_dir_, "payload.bin", kSingleSize, 1);
        }
        return self.single_dir_;
    }
    static std::string single_file() { return single_dir() + "/payload.bin"; }

    // A folder tree <folder>/multi with nested folders, files smaller than a block, and
    // pieces spanning several files; returns the folder holding "multi".
    static const std::string& tree_dir() {
        auto& self = instance();
        if (self.tree_dir_.empty()) {
            self.tree_dir_ = self.root_ / "tree";
            make_payload_tree(self.tree_dir_, "multi",
                              {{"a/one_byte.bin", 1},
                               {"a/b/hundred.bin", 100},
                               {"a/b/c/five_thousand.bin", 5000},
                               {"a/b/c/d/just_under_a_block.bin", 16383},
                               {"a/b/c/d/just_over_a_block.bin", 16385},
                               {"a/b/seven.bin", 7},
                               {"big/first.bin", 9 * kMiB + 12345},
                               {"big/second.bin", 5 * kMiB + 1},
                               {"mid/odd_size.bin", 700001},
                               {"mid/deeper/still/deeper/three.bin", 3},
                               {"z_last.bin", 2 * kMiB + 77}},
                              2);
        }
        return self.tree_dir_;
    }
    static std::string tree_root() { return tree_dir() + "/multi"; }

    static void release() { holder().reset(); }

private:
    static std::unique_ptr<Payloads>& holder() {
        static std::unique_ptr<Payloads> payloads;
        return payloads;
    }
    static Payloads& instance() {
        if (!holder()) holder() = std::make_unique<Payloads>();
        return *holder();
    }

public:
    Payloads() : root_("pw-payloads-") {}

private:
    TempDir root_;
    std::string single_dir_;
    std::string tree_dir_;
};

// Environment: PW_KEEP_TEST_DIRS keeps every folder (logs included); PW_TEST_LOG_LEVEL passes
// --log-level to piecework; PW_TEST_PIECEWORK swaps in another client with the same flags (reference_client.py) to
// check these tests themselves.
std::string client_executable() {
    const char* replacement = std::getenv("PW_TEST_PIECEWORK");
    return replacement != nullptr ? replacement : bin("piecework");
}

class DownloadTest : public ::testing::Test {
protected:
    static void TearDownTestSuite() { Payloads::release(); }

    // Runs `piecework download` to completion and checks the result against the payload.
    void expect_download(const std::string& torrent, const std::string& payload,
                         std::vector<std::string> extra_args = {}) {
        const std::string out = dir_ / "out";
        std::vector<std::string> argv = {client_executable(), "download", torrent, "-o", out,
                                         "--quiet"};
        argv.insert(argv.end(), extra_args.begin(), extra_args.end());
        // To read what the stages did in a passing run (with PW_KEEP_TEST_DIRS).
        if (const char* level = std::getenv("PW_TEST_LOG_LEVEL")) {
            argv.push_back("--log-level");
            argv.push_back(level);
        }
        const std::string log = dir_ / "piecework.log";
        auto client = Process::start(argv, log);
        const int code = client.wait_for_exit(kDownloadTimeout);
        if (code == -1) client.kill();
        std::string diagnostics = "\n--- piecework log ---\n" + client.log_tail(80);
        for (const auto& [name, text] : extra_logs()) diagnostics += "\n--- " + name + " ---\n" + text;
        ASSERT_NE(code, -1) << "piecework did not finish within the timeout" << diagnostics;
        ASSERT_EQ(code, 0) << diagnostics;
        const std::string name = payload.substr(payload.rfind('/') + 1);
        std::string why;
        EXPECT_TRUE(same_tree(payload, out + "/" + name, &why)) << why << diagnostics;
    }

    // Logs worth showing when a download fails: the seeders' and the tracker's.
    std::vector<std::pair<std::string, std::string>> extra_logs() {
        std::vector<std::pair<std::string, std::string>> logs;
        for (std::size_t i = 0; i < lt_seeders_.size(); ++i)
            logs.emplace_back("libtorrent seeder " + std::to_string(i), lt_seeders_[i].log());
        for (std::size_t i = 0; i < aria2_seeders_.size(); ++i)
            logs.emplace_back("aria2 seeder " + std::to_string(i), aria2_seeders_[i].log());
        if (tracker_) logs.emplace_back("opentracker", tracker_->log());
        return logs;
    }

    void start_tracker(const std::string& torrent, std::uint16_t port) {
        tracker_.emplace(Tracker::start(dir_, {info_hash_hex(torrent)}, port));
    }

    LibtorrentSeeder& start_lt_seeder(const std::string& torrent, const std::string& data_dir,
                                      LibtorrentSeederOptions options = {}) {
        lt_seeders_.push_back(LibtorrentSeeder::start(torrent, data_dir, std::move(options)));
        auto& seeder = lt_seeders_.back();
        EXPECT_TRUE(seeder.wait_ready(kReadyTimeout)) << seeder.log();
        return seeder;
    }

    // Every seeder must be in the tracker's list before the download starts: the client's
    // next announce may be far away.
    void wait_for_announces(int peers) {
        ASSERT_TRUE(tracker_->wait_for_peers(peers, kReadyTimeout))
            << "seeders never announced" << [&] {
                   std::string text;
                   for (const auto& [name, log] : extra_logs()) text += "\n--- " + name + " ---\n" + log;
                   return text;
               }();
    }

    // Declared first so the processes (below) are gone before their folder is removed.
    TempDir dir_{"pw-download-"};
    std::optional<Tracker> tracker_;
    std::vector<LibtorrentSeeder> lt_seeders_;
    std::vector<Aria2Seeder> aria2_seeders_;
};

// 1. One 64 MiB file at three piece sizes, from libtorrent, through an HTTP tracker.
class SingleFilePieceSize : public DownloadTest,
                            public ::testing::WithParamInterface<std::uint32_t> {};

TEST_P(SingleFilePieceSize, FromLibtorrentThroughHttpTracker) {
    const std::uint16_t port = free_port();
    const auto torrent =
        make_torrent(Payloads::single_file(), GetParam(), {{http_url(port)}}, dir_ / "t.torrent");
    start_tracker(torrent, port);
    start_lt_seeder(torrent, Payloads::single_dir());
    wait_for_announces(1);
    expect_download(torrent, Payloads::single_file());
}

INSTANTIATE_TEST_SUITE_P(PieceSizes, SingleFilePieceSize,
                         ::testing::Values(16u << 10, 256u << 10, 4u << 20),
                         [](const auto& param_info) { return std::to_string(param_info.param >> 10) + "KiB"; });

// 2. Nested folders, files smaller than a block, pieces spanning several files.
TEST_F(DownloadTest, MultiFileTreeWithTinyFiles) {
    const std::uint16_t port = free_port();
    const auto torrent =
        make_torrent(Payloads::tree_root(), 256u << 10, {{http_url(port)}}, dir_ / "t.torrent");
    start_tracker(torrent, port);
    start_lt_seeder(torrent, Payloads::tree_dir());
    wait_for_announces(1);
    expect_download(torrent, Payloads::tree_root());
}

// 3a. The same file through a UDP tracker (BEP 15).
TEST_F(DownloadTest, ThroughUdpTracker) {
    const std::uint16_t port = free_port();
    const auto torrent =
        make_torrent(Payloads::single_file(), 256u << 10, {{udp_url(port)}}, dir_ / "t.torrent");
    start_tracker(torrent, port);
    start_lt_seeder(torrent, Payloads::single_dir());
    wait_for_announces(1);
    expect_download(torrent, Payloads::single_file());
}

// 3b. Tiers (BEP 12): the first tier's tracker is a closed port, the second works.
TEST_F(DownloadTest, FirstTierDeadSecondWorks) {
    const std::uint16_t dead_port = free_port();  // nothing listens there
    const std::uint16_t port = free_port();
    const auto torrent = make_torrent(Payloads::single_file(), 256u << 10,
                                      {{http_url(dead_port)}, {http_url(port)}}, dir_ / "t.torrent");
    start_tracker(torrent, port);
    start_lt_seeder(torrent, Payloads::single_dir());
    wait_for_announces(1);
    expect_download(torrent, Payloads::single_file());
}

// 4. Three libtorrent seeders, none with every piece: most pieces are held by exactly one
// of them, every fifth by two.
TEST_F(DownloadTest, SeveralPartialSeeders) {
    const std::uint16_t port = free_port();
    const auto torrent =
        make_torrent(Payloads::single_file(), 256u << 10, {{http_url(port)}}, dir_ / "t.torrent");
    start_tracker(torrent, port);
    const std::uint32_t pieces = piece_count(torrent);
    constexpr std::uint32_t kSeeders = 3;
    std::vector<std::vector<std::uint32_t>> held(kSeeders);
    for (std::uint32_t piece = 0; piece < pieces; ++piece) {
        held[piece % kSeeders].push_back(piece);
        if (piece % 5 == 0) held[(piece + 1) % kSeeders].push_back(piece);
    }
    for (auto& subset : held) {
        ASSERT_LT(subset.size(), pieces);
        LibtorrentSeederOptions options;
        options.pieces = subset;
        start_lt_seeder(torrent, Payloads::single_dir(), options);
    }
    wait_for_announces(static_cast<int>(kSeeders));
    expect_download(torrent, Payloads::single_file());
}

// 5. aria2 as the seeder: another implementation of the peer protocol.
TEST_F(DownloadTest, FromAria2Seeder) {
    const std::uint16_t port = free_port();
    const auto torrent =
        make_torrent(Payloads::single_file(), 256u << 10, {{http_url(port)}}, dir_ / "t.torrent");
    start_tracker(torrent, port);
    aria2_seeders_.push_back(Aria2Seeder::start(torrent, Payloads::single_dir()));
    ASSERT_TRUE(aria2_seeders_.back().wait_ready(kReadyTimeout)) << aria2_seeders_.back().log();
    wait_for_announces(1);
    expect_download(torrent, Payloads::single_file());
}

// 6. Three peer workers, with three seeders so each worker can get one.
TEST_F(DownloadTest, ThreeWorkers) {
    const std::uint16_t port = free_port();
    const auto torrent =
        make_torrent(Payloads::single_file(), 256u << 10, {{http_url(port)}}, dir_ / "t.torrent");
    start_tracker(torrent, port);
    for (int i = 0; i < 3; ++i) start_lt_seeder(torrent, Payloads::single_dir());
    wait_for_announces(3);
    expect_download(torrent, Payloads::single_file(), {"--workers", "3"});
}

// 7. No tracker at all: the peer comes from --peer.
TEST_F(DownloadTest, TrackerlessWithPeerFlag) {
    const auto torrent = make_torrent(Payloads::single_file(), 256u << 10, {}, dir_ / "t.torrent");
    auto& seeder = start_lt_seeder(torrent, Payloads::single_dir());
    expect_download(torrent, Payloads::single_file(),
                    {"--peer", "127.0.0.1:" + std::to_string(seeder.port())});
}

// 8. --max-download-rate holds from the first byte: 4 MiB at 1 MB/s takes about 4 s (a lower
// bound on the time, so a slow machine cannot fail it). The limit once reached the worker a
// second late, after a loopback download had finished at full speed.
TEST_F(DownloadTest, DownloadRateLimitHoldsFromTheStart) {
    const std::string payload = make_payload(dir_ / "small", "small.bin", 4u << 20, 18);
    const auto torrent = make_torrent(payload, 256u << 10, {}, dir_ / "small.torrent");
    auto& seeder = start_lt_seeder(torrent, dir_ / "small");
    const auto started = std::chrono::steady_clock::now();
    expect_download(torrent, payload,
                    {"--peer", "127.0.0.1:" + std::to_string(seeder.port()), "--max-download-rate", "1M"});
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    // 4 MiB over 1 MB/s, less a quarter second's burst and a block of slack: at least 3.5 s.
    EXPECT_GE(seconds, 3.5);
}

// The harness itself, so its failures are not mistaken for the client's.
TEST(HarnessSelfTest, SeedersAnnounceToOpentracker) {
    TempDir dir;
    const std::string payload = make_payload(dir / "data", "payload.bin", 3 << 20, 7);
    const std::uint16_t port = free_port();
    const std::string torrent = make_torrent(payload, 1 << 18, {{http_url(port)}}, dir / "t.torrent");
    EXPECT_EQ(piece_count(torrent), 12u);
    auto tracker = Tracker::start(dir, {info_hash_hex(torrent)}, port);
    EXPECT_EQ(tracker.http_announce(), http_url(port));
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
