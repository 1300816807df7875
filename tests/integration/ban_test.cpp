// Issue 16, items 2 and 3 through the whole `piecework download`: a ban punishes the peer
// that lied, not everyone on its address; and a download that cannot move says why, on its
// progress line and in its log, and what it is trying.
#include <gtest/gtest.h>

#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/integration/harness.hpp"

namespace pw::test {
namespace {

constexpr auto kDownloadTimeout = 240s;

// tests/integration/hostile_peer.py in one mode on one port of 127.0.0.1.
class HostilePeer {
public:
    static HostilePeer start(const TempDir& dir, const std::string& torrent, const std::string& payload,
                             const std::string& mode) {
        HostilePeer peer;
        const std::string log = dir / ("hostile_" + mode + ".log");
        peer.process_ = Process::start({"/usr/bin/python3", helper("hostile_peer.py"), torrent, payload,
                                        "--mode", mode, "--host", "127.0.0.1"},
                                       log);
        for (int i = 0; i < 400 && peer.port_ == 0; ++i) {
            const std::string text = read_text_file(log);
            const auto ready = text.find("READY ");
            const auto end = text.find('\n', ready == std::string::npos ? 0 : ready);
            if (ready != std::string::npos && end != std::string::npos) {
                peer.port_ = static_cast<std::uint16_t>(std::stoi(text.substr(ready + 6, end - ready - 6)));
                break;
            }
            std::this_thread::sleep_for(50ms);
        }
        return peer;
    }
    std::uint16_t port() const { return port_; }
    std::string log() const { return read_text_file(process_.log_path()); }

private:
    Process process_;
    std::uint16_t port_ = 0;
};

class BanTest : public ::testing::Test {
protected:
    // An 8 MiB payload in 256 KiB pieces, its torrent announcing to `trackers`.
    void make_single(const std::vector<std::vector<std::string>>& trackers = {}) {
        payload_ = make_payload(dir_ / "data", "payload.bin", (8ull << 20) + 100'000, 91);
        torrent_ = make_torrent(payload_, 256u << 10, trackers, dir_ / "t.torrent");
    }
    Process start_download(const std::vector<std::string>& extra) {
        std::vector<std::string> argv = {bin("piecework"), "download", torrent_, "-o", out(),
                                         "--log-level", "info"};
        argv.insert(argv.end(), extra.begin(), extra.end());
        return Process::start(argv, dir_ / "piecework.log");
    }
    std::string out() const { return dir_ / "out"; }
    std::string client_log() const { return read_text_file(dir_ / "piecework.log"); }
    // Waits until the client's log holds every one of `needles` on one line; returns it.
    std::string wait_for_line(const std::vector<std::string>& needles, std::chrono::seconds timeout) {
        const auto until = std::chrono::steady_clock::now() + timeout;
        while (std::chrono::steady_clock::now() < until) {
            std::istringstream lines(client_log());
            for (std::string line; std::getline(lines, line);) {
                bool all = true;
                for (const auto& needle : needles) all = all && line.find(needle) != std::string::npos;
                if (all) return line;
            }
            std::this_thread::sleep_for(250ms);
        }
        return {};
    }

    TempDir dir_{"pw-ban-"};
    std::string payload_;
    std::string torrent_;
};

// An honest libtorrent seeder and a peer that corrupts a block of every piece, both on
// 127.0.0.1: the liar alone is banned (by its port and peer id), the seeder is kept and the
// download completes from it.
TEST_F(BanTest, LiarAndHonestSeederOnOneAddressOnlyTheLiarIsBanned) {
    make_single();
    LibtorrentSeederOptions options;
    options.rate_kib = 1024;  // slow enough that the liar is asked for pieces too
    LibtorrentSeeder seeder = LibtorrentSeeder::start(torrent_, dir_ / "data", options);
    ASSERT_TRUE(seeder.wait_ready(120s)) << seeder.log();
    HostilePeer liar = HostilePeer::start(dir_, torrent_, payload_, "corrupt");
    ASSERT_NE(liar.port(), 0) << liar.log();
    auto client = start_download({"--peer", "127.0.0.1:" + std::to_string(liar.port()), "--peer",
                                  "127.0.0.1:" + std::to_string(seeder.port())});
    const int code = client.wait_for_exit(kDownloadTimeout);
    if (code == -1) client.kill();
    const std::string log = client_log();
    const std::string logs = "\n--- piecework ---\n" + log + "\n--- liar ---\n" + liar.log();
    ASSERT_EQ(code, 0) << logs;
    std::string why;
    EXPECT_TRUE(same_tree(payload_, out() + "/payload.bin", &why)) << why;
    EXPECT_NE(log.find("banning peer 127.0.0.1:" + std::to_string(liar.port()) + " (-HP0001-"), std::string::npos)
        << logs;
    EXPECT_EQ(log.find("banning peer 127.0.0.1:" + std::to_string(seeder.port())), std::string::npos) << logs;
    EXPECT_EQ(log.find("banning address"), std::string::npos) << logs;
    EXPECT_NE(liar.log().find("connection from"), std::string::npos) << logs;
}

// Two honest seeders, two liars and junk peers all on 127.0.0.1: each liar is banned as a
// peer, the junk peers are dropped, the honest ones are kept, no address goes whole (two
// banned peers are under the three it takes), and the download completes.
TEST_F(BanTest, SeveralHonestPeersOnOneAddressAmongLiarsAndJunk) {
    make_single();
    LibtorrentSeederOptions options;
    options.rate_kib = 1024;  // slow enough that the liars are asked for pieces too
    LibtorrentSeeder first = LibtorrentSeeder::start(torrent_, dir_ / "data", options);
    LibtorrentSeeder second = LibtorrentSeeder::start(torrent_, dir_ / "data", options);
    ASSERT_TRUE(first.wait_ready(120s)) << first.log();
    ASSERT_TRUE(second.wait_ready(120s)) << second.log();
    std::vector<HostilePeer> hostile;
    for (const char* mode : {"corrupt", "corrupt", "junk", "huge_length", "piece_out_of_range"}) {
        hostile.push_back(HostilePeer::start(dir_, torrent_, payload_, mode));
        ASSERT_NE(hostile.back().port(), 0) << hostile.back().log();
    }
    std::vector<std::string> extra;
    for (const HostilePeer& peer : hostile) {
        extra.insert(extra.end(), {"--peer", "127.0.0.1:" + std::to_string(peer.port())});
    }
    for (const LibtorrentSeeder* seeder : {&first, &second}) {
        extra.insert(extra.end(), {"--peer", "127.0.0.1:" + std::to_string(seeder->port())});
    }
    auto client = start_download(extra);
    const int code = client.wait_for_exit(kDownloadTimeout);
    if (code == -1) client.kill();
    const std::string log = client_log();
    const std::string logs = "\n--- piecework ---\n" + log;
    ASSERT_EQ(code, 0) << logs;
    std::string why;
    EXPECT_TRUE(same_tree(payload_, out() + "/payload.bin", &why)) << why;
    for (const LibtorrentSeeder* seeder : {&first, &second}) {
        EXPECT_EQ(log.find("banning peer 127.0.0.1:" + std::to_string(seeder->port())), std::string::npos) << logs;
    }
    EXPECT_EQ(log.find("banning address"), std::string::npos) << logs;
}

// The only peer lies and is banned, and the tracker knows nobody else: the progress line and
// the log say so, and the tracker is asked again early.
TEST_F(BanTest, OnlyPeerBannedTheProgressLineSaysWhyAndTheTrackerIsAskedAgain) {
    const std::uint16_t tracker_port = free_port();
    make_single({{"http://127.0.0.1:" + std::to_string(tracker_port) + "/announce"}});
    Tracker tracker = Tracker::start(dir_, {info_hash_hex(torrent_)}, tracker_port);
    HostilePeer liar = HostilePeer::start(dir_, torrent_, payload_, "corrupt");
    ASSERT_NE(liar.port(), 0) << liar.log();
    auto client = start_download({"--peer", "127.0.0.1:" + std::to_string(liar.port())});
    // The progress line (plain, every 5 s, since the output is no terminal).
    const std::string line = wait_for_line({"peers 0", "[no peers: 1 banned", "re-announcing in "}, 90s);
    EXPECT_FALSE(line.empty()) << client_log();
    EXPECT_NE(client_log().find("banning peer 127.0.0.1:" + std::to_string(liar.port())), std::string::npos)
        << client_log();
    // The early announce, 30 s after the peers ran out.
    EXPECT_FALSE(wait_for_line({"no peers: asking the trackers for more now"}, 90s).empty()) << client_log();
    EXPECT_FALSE(wait_for_line({"ran out of peers: announcing early"}, 30s).empty()) << client_log();
    client.terminate();
    client.wait_for_exit(30s);
}

// The only peer is not there at all: the line says it was dropped and when it is tried again.
TEST_F(BanTest, OnlyPeerAbsentTheProgressLineSaysWhy) {
    make_single();
    const std::uint16_t nobody = free_port();
    auto client = start_download({"--peer", "127.0.0.1:" + std::to_string(nobody)});
    const std::string line = wait_for_line({"peers 0", "[no peers: 1 dropped; retrying in ", "no tracker to ask"}, 60s);
    EXPECT_FALSE(line.empty()) << client_log();
    client.terminate();
    client.wait_for_exit(30s);
}

}  // namespace
}  // namespace pw::test
