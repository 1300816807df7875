// Giving back, as other clients see it: libtorrent and aria2 leechers download from
// `piecework seed` as their only source, found through opentracker; a libtorrent leecher
// downloads from a `piecework download` that is still downloading itself; a torrent made by
// `piecework create` is seeded to libtorrent; hostile leechers are rejected or dropped by a
// seeding piecework while an honest one completes. Every byte is checked; nothing asserts on
// speed.
#include <signal.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <regex>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "core/metainfo.hpp"
#include "core/wire.hpp"
#include "tests/integration/harness.hpp"
#include "tests/integration/raw_leecher.hpp"

namespace pw::test {
namespace {

namespace fs = std::filesystem;

constexpr auto kReadyTimeout = 120s;
constexpr auto kDoneTimeout = 240s;

// tests/integration/lt_leecher.py: a libtorrent client that downloads from the peer named
// (peer_port 0: none, only the peers the torrent's trackers give it).
Process start_leecher(const TempDir& dir, const std::string& torrent, const std::string& out,
                      std::uint16_t peer_port, const std::string& log) {
    fs::create_directories(out);
    std::vector<std::string> argv{"/usr/bin/python3", helper("lt_leecher.py"), torrent, out, "--timeout", "220"};
    if (peer_port != 0) argv.insert(argv.end(), {"--peer", "127.0.0.1:" + std::to_string(peer_port)});
    return Process::start(argv, dir / log);
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

// libtorrent is given no peer: it finds the seed through opentracker, as aria2 does below.
TEST_F(SeedTest, LibtorrentDownloadsFromAPieceworkSeedFoundThroughATracker) {
    const std::string payload = make_payload(dir_ / "data", "seeded.bin", 5u << 20, 61);
    const std::uint16_t tracker_port = free_port();
    const std::string torrent = make_torrent(
        payload, 64 << 10, {{"http://127.0.0.1:" + std::to_string(tracker_port) + "/announce"}}, dir_ / "seeded.torrent");
    Tracker tracker = Tracker::start(dir_, {info_hash_hex(torrent)}, tracker_port);
    start_seed(torrent);
    ASSERT_TRUE(seed_checked(piece_count(torrent))) << seed_log();
    ASSERT_TRUE(tracker.wait_for_peers(1, 30s)) << seed_log();  // the seed announced itself
    Process leecher = start_leecher(dir_, torrent, dir_ / "lt", 0, "leecher.log");
    ASSERT_EQ(leecher.wait_for_exit(kDoneTimeout), 0) << leecher.log_tail() << seed_log();
    std::string why;
    EXPECT_TRUE(same_tree(payload, dir_ / "lt/seeded.bin", &why)) << why;
    // Its bytes came from the port the seed listens on, which only the tracker told it.
    EXPECT_TRUE(std::regex_search(read_text_file(leecher.log_path()),
                                  std::regex("FROM 127\\.0\\.0\\.1:" + std::to_string(seed_port_) + " [1-9]")))
        << leecher.log_tail();
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

// Resident memory of the seed's peer workers together.
std::uint64_t workers_resident_kib(pid_t seed) {
    std::uint64_t total = 0;
    for (const auto& child : live_children(seed)) {
        if (child.flag_value("--name").rfind("peer_worker", 0) == 0) total += resident_kib(child.pid);
    }
    return total;
}

// Overwrites the bytes of one piece of a file, so a check finds that piece not ours.
void damage_piece(const std::string& file, std::uint32_t piece, std::uint32_t piece_bytes) {
    std::fstream out(file, std::ios::in | std::ios::out | std::ios::binary);
    out.seekp(static_cast<std::streamoff>(piece) * piece_bytes);
    const std::string zeros(piece_bytes, '\0');
    out.write(zeros.data(), static_cast<std::streamsize>(zeros.size()));
}

constexpr std::uint32_t kPiece = 64 << 10;
constexpr std::uint32_t kBlock = 16 << 10;
constexpr std::uint32_t kPieces = 96;

// Hostile leechers (tests/integration/raw_leecher.hpp) against `piecework seed`, each
// answered as docs/architecture.md ("Uploads") says: reject_request under the fast extension,
// a dropped connection (or silence, while choked) without it. Meanwhile an honest libtorrent
// leecher downloads every byte, piecework stays up and its workers' memory stays bounded.
TEST_F(SeedTest, HostileLeechersAreRejectedOrDroppedWhileAnHonestOneCompletes) {
    const std::string payload = make_payload(dir_ / "data", "hostile.bin", std::uint64_t{kPieces} * kPiece, 65);
    const std::string torrent_path = make_torrent(payload, kPiece, {}, dir_ / "hostile.torrent");
    auto parsed = Torrent::parse(read_text_file(torrent_path));
    ASSERT_TRUE(parsed.ok());
    const Torrent torrent = std::move(*parsed);
    Process& seed = start_seed(torrent_path, {"--workers", "1"});
    ASSERT_TRUE(seed_checked(kPieces)) << seed_log();
    ASSERT_TRUE(wait_for_listen(seed_port_, 30s)) << seed_log();

    // A second seed, of a torrent whose piece 3 it does not have (damaged on disk): for the
    // requests of a piece we do not have.
    fs::create_directories(dir_ / "partial");
    const std::string partial_payload = make_payload(dir_ / "partial", "partial.bin", 8 * kPiece, 66);
    const std::string partial_path = make_torrent(partial_payload, kPiece, {}, dir_ / "partial.torrent");
    damage_piece(partial_payload, 3, kPiece);
    const std::uint16_t partial_port = free_port();
    Process partial_seed = Process::start({bin("piecework"), "seed", partial_path, dir_ / "partial", "--listen-port",
                                           std::to_string(partial_port), "--workers", "1", "--log-level", "info"},
                                          dir_ / "partial-seed.log");
    auto partial_parsed = Torrent::parse(read_text_file(partial_path));
    ASSERT_TRUE(partial_parsed.ok());
    const Sha1Digest partial_hash = partial_parsed->info_hash();

    const std::uint64_t rss_before = workers_resident_kib(seed.pid());
    ASSERT_GT(rss_before, 0u) << seed_log();
    const auto unchoked = [](const wire::Message& m) { return std::holds_alternative<wire::Unchoke>(m); };
    const auto rejected = [](const wire::Message& m) { return std::holds_alternative<wire::RejectRequest>(m); };
    const auto request = [](std::uint32_t piece, std::uint32_t offset, std::uint32_t length = kBlock) {
        return wire::Request{PieceIndex{piece}, BlockOffset{offset}, BlockLength{length}};
    };
    int next_id = 0;
    // Connects; interested ones wait for the choker's unchoke (it unchokes a newly interested
    // peer at once while a slot is free).
    const auto connect = [&](std::uint16_t port, const Sha1Digest& hash, bool fast, bool interested,
                             int receive_buffer = 0) {
        auto leecher = std::make_unique<RawLeecher>(port, hash, peer_id_for(++next_id), fast, receive_buffer);
        EXPECT_TRUE(leecher->read_handshake(20s)) << leecher->problem << seed_log();
        if (interested) {
            leecher->send(wire::Interested{});
            EXPECT_TRUE(leecher->read_until(unchoked, 30s)) << "no unchoke for " << leecher->key() << seed_log();
        }
        return leecher;
    };
    // The worker says why it dropped a peer (at info), keyed by the peer's address.
    const auto dropped_with = [&](const Process& which, const RawLeecher& leecher, const std::string& words) {
        const std::regex line(std::regex_replace(leecher.key(), std::regex("\\."), "\\.") +
                              " \\(torrent [0-9]+\\): dropped: [^\n]*" + words);
        const auto deadline = std::chrono::steady_clock::now() + 120s;
        while (std::chrono::steady_clock::now() < deadline) {
            if (std::regex_search(read_text_file(which.log_path()), line)) return true;
            std::this_thread::sleep_for(200ms);
        }
        return false;
    };

    // One that never reads what we send (a 4 KiB receive buffer, 480 blocks asked): dropped
    // once nothing could be written to it for a while (60 s by default).
    auto deaf = connect(seed_port_, torrent.info_hash(), true, true, 4096);
    for (std::uint32_t i = 0; i < 480; ++i) deaf->send(request(i % kPieces, (i / kPieces % 4) * kBlock));

    // A flood: far more than 500 requests at once, not read either.
    {
        auto flood = connect(seed_port_, torrent.info_hash(), true, true, 4096);
        for (std::uint32_t i = 0; i < 2000; ++i) flood->send(request(i % kPieces, (i / kPieces % 4) * kBlock));
        EXPECT_TRUE(dropped_with(seed, *flood, "more than 500 outstanding")) << seed_log();
        EXPECT_TRUE(flood->wait_closed(30s));
    }

    // The honest leecher downloads while the others misbehave.
    Process honest = start_leecher(dir_, torrent_path, dir_ / "lt", seed_port_, "leecher.log");

    // Blocks that are not blocks: outside the piece, 32 KiB long, a piece past the last.
    {
        auto outside = connect(seed_port_, torrent.info_hash(), true, false);
        outside->send(request(0, kPiece - 100));
        outside->send(request(0, 0, 2 * kBlock));
        outside->send(request(kPieces, 0));
        int rejects = 0;
        EXPECT_TRUE(outside->read_until([&](const wire::Message& m) { return rejected(m) && ++rejects == 3; }, 20s))
            << rejects << " rejects" << seed_log();
        EXPECT_FALSE(outside->closed());
        auto plain_outside = connect(seed_port_, torrent.info_hash(), false, false);
        plain_outside->send(request(1, kPiece - 100));
        EXPECT_TRUE(dropped_with(seed, *plain_outside, "invalid block")) << seed_log();
        EXPECT_TRUE(plain_outside->wait_closed(30s));
        auto plain_long = connect(seed_port_, torrent.info_hash(), false, false);
        plain_long->send(request(2, 0, 2 * kBlock));
        EXPECT_TRUE(dropped_with(seed, *plain_long, "invalid block")) << seed_log();
        EXPECT_TRUE(plain_long->wait_closed(30s));
    }

    // A piece we do not have, from the second seed: rejected, or dropped without the extension.
    {
        const auto deadline = std::chrono::steady_clock::now() + 60s;
        while (read_text_file(partial_seed.log_path()).find("resumed: 7 of 8") == std::string::npos &&
               std::chrono::steady_clock::now() < deadline && partial_seed.running()) {
            std::this_thread::sleep_for(100ms);
        }
        ASSERT_TRUE(wait_for_listen(partial_port, 30s)) << partial_seed.log_tail();
        auto missing = connect(partial_port, partial_hash, true, false);
        missing->send(request(3, 0));
        EXPECT_TRUE(missing->read_until(rejected, 20s)) << partial_seed.log_tail();
        auto plain_missing = connect(partial_port, partial_hash, false, false);
        plain_missing->send(request(3, 0));
        EXPECT_TRUE(dropped_with(partial_seed, *plain_missing, "which we do not have")) << partial_seed.log_tail();
        EXPECT_TRUE(plain_missing->wait_closed(30s));
        EXPECT_TRUE(partial_seed.running());
    }

    // While choked (never interested, so never unchoked): a piece outside BEP 6's allowed-fast
    // set for 127.0.0.1 is rejected; without the extension the request is ignored, no bytes
    // and no drop.
    {
        const auto allowed = wire::allowed_fast_set(0x7F000001, torrent.info_hash(), kPieces, 10);
        std::uint32_t not_allowed = 0;
        while (std::find(allowed.begin(), allowed.end(), not_allowed) != allowed.end()) ++not_allowed;
        auto choked = connect(seed_port_, torrent.info_hash(), true, false);
        choked->send(request(not_allowed, 0));
        EXPECT_TRUE(choked->read_until(rejected, 20s)) << seed_log();
        auto plain_choked = connect(seed_port_, torrent.info_hash(), false, false);
        plain_choked->send(request(not_allowed, 0));
        bool answered = false;
        plain_choked->read_until([&](const wire::Message& m) {
            answered = answered || std::holds_alternative<wire::Piece>(m);
            return false;
        }, 2s);
        EXPECT_FALSE(answered);
        EXPECT_FALSE(plain_choked->closed());
    }

    // The honest one completes, byte for byte, from the seed.
    ASSERT_EQ(honest.wait_for_exit(kDoneTimeout), 0) << honest.log_tail() << seed_log();
    std::string why;
    EXPECT_TRUE(same_tree(payload, dir_ / "lt/hostile.bin", &why)) << why;
    // The deaf one is gone by now or soon.
    EXPECT_TRUE(dropped_with(seed, *deaf, "not reading what we send")) << seed_log();
    EXPECT_TRUE(deaf->wait_closed(30s));

    // Still up, and the workers' memory bounded: the upload cache (16 MiB at most, here the
    // 6 MiB payload) and per-peer send queues (2 MiB each) are all it may have grown by.
    EXPECT_TRUE(seed.running()) << seed_log();
    const std::uint64_t rss_after = workers_resident_kib(seed.pid());
    EXPECT_LT(rss_after, rss_before + 24 * 1024) << rss_before << " KiB before, " << rss_after << " after";
    ::kill(seed.pid(), SIGINT);
    EXPECT_EQ(seed.wait_for_exit(30s), 0) << seed_log();
}

}  // namespace
}  // namespace pw::test
