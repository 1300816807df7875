// The interop matrix (issue 16): each of libtorrent, aria2, rtorrent, qBittorrent and
// Transmission downloads a multi-file torrent whose only source is `piecework seed`, and
// `piecework download` downloads it from each of them as the only seeder; each both over
// plaintext (piecework with --encryption off, the other side not encrypting) and with the other
// side requiring encryption (RC4 where the client can insist on it) and piecework at its
// default, `prefer`, whose log must show the encrypted handshake. One test per cell, named
// client, direction and link (`Link/InteropTest.RtorrentDownloadsFromPiecework/Encrypted`). Every client runs from a folder of the test's own, on
// 127.0.0.1, with DHT, local peer discovery and peer exchange off; peers are found through an
// opentracker (rtorrent, aria2 and Transmission take no peer address) or named (libtorrent,
// `piecework download --peer`). Every byte is checked; nothing asserts on speed.
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "tests/integration/harness.hpp"

namespace pw::test {
namespace {

namespace fs = std::filesystem;

constexpr auto kReadyTimeout = 120s;
constexpr auto kDoneTimeout = 180s;
constexpr std::uint32_t kPieceBytes = 32 << 10;

// PW_TEST_PIECEWORK swaps in another piecework build (its stages beside it), as in download_test.
std::string piecework() {
    const char* replacement = std::getenv("PW_TEST_PIECEWORK");
    return replacement != nullptr ? replacement : bin("piecework");
}

bool installed(const std::string& path) { return ::access(path.c_str(), X_OK) == 0; }

// same_tree that treats "not there yet" as a difference rather than an error.
bool complete_copy(const std::string& expected, const std::string& actual, std::string* why) {
    try {
        return same_tree(expected, actual, why);
    } catch (const std::exception& error) {
        if (why) *why = error.what();
        return false;
    }
}

// Polls `done` until it holds, the process ends, or the timeout.
bool wait_until(const std::function<bool()>& done, Process* watched, std::chrono::seconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
        if (done()) return true;
        if (watched != nullptr && !watched->running()) return done();
        std::this_thread::sleep_for(250ms);
    }
    return false;
}

void write_file(const std::string& path, const std::string& text) {
    fs::create_directories(fs::path(path).parent_path());
    std::ofstream(path) << text;
}

enum class Link { plaintext, encrypted };

class InteropTest : public ::testing::TestWithParam<Link> {
protected:
    bool encrypted() const { return GetParam() == Link::encrypted; }
    // piecework's side of the link: plaintext only, or the default (prefer) with the debug log
    // that names each connection's handshake.
    std::vector<std::string> link_args() const {
        if (encrypted()) return {"--log-level", "debug"};
        return {"--log-level", "info", "--encryption", "off"};
    }
    // aria2 insists on MSE with RC4 (it has no way to refuse MSE: plaintext cells leave it be).
    std::vector<std::string> aria2_link_args() const {
        if (encrypted()) return {"--bt-require-crypto=true", "--bt-min-crypto-level=arc4"};
        return {};
    }
    // In an encrypted cell, piecework's log shows an MSE handshake with the client.
    void expect_encrypted_link(const std::string& log_path) {
        if (!encrypted()) return;
        const std::string log = read_text_file(log_path);
        EXPECT_TRUE(log.find("RC4-encrypted") != std::string::npos ||
                    log.find(": MSE, plaintext stream") != std::string::npos)
            << "no encrypted handshake in piecework's log:\n"
            << read_tail(log_path);
    }

    void SetUp() override {
        // Several files, one in a sub-folder, one smaller than a block, pieces across files.
        tree_ = make_payload_tree(dir_ / "data", "tree",
                                  {{"a.bin", 1'500'001}, {"sub/b.bin", 2'500'000}, {"sub/deeper/c.bin", 700'003},
                                   {"tiny.bin", 100}},
                                  16);
        tracker_port_ = free_port();
        torrent_ = make_torrent(tree_, kPieceBytes, {{"http://127.0.0.1:" + std::to_string(tracker_port_) + "/announce"}},
                                dir_ / "tree.torrent");
        tracker_.emplace(Tracker::start(dir_, {info_hash_hex(torrent_)}, tracker_port_));
    }

    // --- piecework on one side -------------------------------------------------------------

    // `piecework seed` over data/, announcing to the tracker; true once it has every piece
    // and the tracker knows it (and `peers` in all, counting leechers already announced).
    bool start_seed(int peers = 1) {
        seed_port_ = free_port();
        std::vector<std::string> argv = {piecework(), "seed", torrent_, dir_ / "data", "--listen-port",
                                         std::to_string(seed_port_)};
        for (const auto& arg : link_args()) argv.push_back(arg);
        seed_.emplace(Process::start(argv, dir_ / "seed.log"));
        const std::string pieces = std::to_string(piece_count(torrent_));
        const std::string wanted = "resumed: " + pieces + " of " + pieces;
        if (!wait_until([&] { return read_text_file(seed_->log_path()).find(wanted) != std::string::npos; }, &*seed_,
                        60s)) {
            return false;
        }
        return tracker_->wait_for_peers(peers, 60s);
    }

    // `piecework download` with the seeder at 127.0.0.1:port named; checks every byte.
    void expect_download_from(std::uint16_t port, const std::string& seeder_log) {
        std::vector<std::string> argv = {piecework(), "download", torrent_, "-o", dir_ / "pw", "--peer",
                                         "127.0.0.1:" + std::to_string(port), "--listen-port",
                                         std::to_string(free_port())};
        for (const auto& arg : link_args()) argv.push_back(arg);
        Process download = Process::start(argv, dir_ / "download.log");
        const int code = download.wait_for_exit(kDoneTimeout);
        const std::string logs = "\n--- piecework download ---\n" + download.log_tail(60) + "\n--- seeder ---\n" +
                                 read_tail(seeder_log);
        ASSERT_EQ(code, 0) << logs;
        std::string why;
        EXPECT_TRUE(complete_copy(tree_, dir_ / "pw/tree", &why)) << why << logs;
        expect_encrypted_link(dir_ / "download.log");
    }

    // Waits for a leecher's copy to be complete and byte-identical.
    void expect_leecher_copy(const std::string& copy, Process& leecher, const std::string& leecher_log) {
        std::string why;
        const bool done = wait_until([&] { return complete_copy(tree_, copy, &why); }, &leecher, kDoneTimeout);
        EXPECT_TRUE(done) << why << "\n--- leecher ---\n"
                          << read_tail(leecher_log) << "\n--- piecework seed ---\n"
                          << seed_->log_tail(60);
        if (done) expect_encrypted_link(seed_->log_path());
    }

    static std::string read_tail(const std::string& path, std::size_t bytes = 6000) {
        const std::string text = read_text_file(path);
        return text.size() > bytes ? text.substr(text.size() - bytes) : text;
    }

    // --- rtorrent --------------------------------------------------------------------------

    // rtorrent in daemon mode (no terminal), loading the torrent into `directory`: it checks
    // what is there and then downloads or seeds; it finds peers through the tracker.
    Process start_rtorrent(const std::string& directory, std::uint16_t port) {
        const std::string home = dir_ / "rtorrent";
        fs::create_directories(home);
        const std::string p = std::to_string(port);
        write_file(home + "/rtorrent.rc",
                   "system.daemon.set = true\n"
                   "directory.default.set = " + directory + "\n"
                   "network.port_range.set = " + p + "-" + p + "\n"
                   "network.port_random.set = no\n"
                   "network.bind_address.set = 127.0.0.1\n"
                   "network.local_address.set = 127.0.0.1\n"
                   "dht.mode.set = disable\n"
                   "protocol.pex.set = no\n"
                   "trackers.use_udp.set = no\n"
                   "protocol.encryption.set = " +
                       std::string(encrypted() ? "allow_incoming,try_outgoing,require,require_RC4" : "none") + "\n"
                   "log.open_file = \"main\", " + home + "/rtorrent.log\n"
                   "log.add_output = \"debug\", \"main\"\n"
                   "load.start_verbose = " + torrent_ + "\n");
        return Process::start({"rtorrent", "-n", "-o", "import=" + home + "/rtorrent.rc"}, home + "/stdout.log",
                              {{"HOME", home}});
    }

    // --- qBittorrent -----------------------------------------------------------------------

    // qbittorrent-nox with a profile of the test's own: WebUI on 127.0.0.1 without a login
    // (local), the legal notice accepted, several connections per address allowed (every
    // peer here is 127.0.0.1).
    Process start_qbittorrent(std::uint16_t port) {
        const std::string home = dir_ / "qbittorrent";
        qb_webui_port_ = free_port();
        write_file(home + "/qBittorrent/config/qBittorrent.conf",
                   "[LegalNotice]\nAccepted=true\n\n"
                   "[BitTorrent]\n"
                   "Session\\DHTEnabled=false\nSession\\LSDEnabled=false\nSession\\PeXEnabled=false\n"
                   "Session\\Port=" + std::to_string(port) + "\n"
                   "Session\\Interface=lo\nSession\\InterfaceName=lo\nSession\\InterfaceAddress=127.0.0.1\n"
                   "Session\\MultiConnectionsPerIp=true\n"
                   "Session\\Encryption=" + std::string(encrypted() ? "1" : "2") + "\n"
                   "Session\\QueueingSystemEnabled=false\n"
                   "Session\\DefaultSavePath=" + home + "/downloads\n\n"
                   "[Preferences]\n"
                   "WebUI\\Port=" + std::to_string(qb_webui_port_) + "\nWebUI\\Address=127.0.0.1\n"
                   "WebUI\\LocalHostAuth=false\nWebUI\\CSRFProtection=false\nWebUI\\HostHeaderValidation=false\n"
                   "WebUI\\UseUPnP=false\nConnection\\UPnP=false\n");
        return Process::start({"qbittorrent-nox", "--profile=" + home}, home + "/stdout.log", {{"HOME", home}});
    }

    // Adds the torrent over the WebUI API, saving into save_path.
    bool qbittorrent_add(const std::string& save_path, std::string* output) {
        if (!wait_for_listen(qb_webui_port_, kReadyTimeout)) {
            *output = "the WebUI never listened";
            return false;
        }
        const int code = run_command({"curl", "-sS", "--max-time", "30", "-F", "torrents=@" + torrent_, "-F",
                                      "savepath=" + save_path,
                                      "http://127.0.0.1:" + std::to_string(qb_webui_port_) + "/api/v2/torrents/add"},
                                     output);
        return code == 0 && output->find("Ok.") != std::string::npos;
    }

    // The torrent's state as the WebUI API reports it ("uploading", "stalledUP", ...).
    std::string qbittorrent_info() {
        std::string output;
        run_command({"curl", "-sS", "--max-time", "10",
                     "http://127.0.0.1:" + std::to_string(qb_webui_port_) + "/api/v2/torrents/info"},
                    &output);
        return output;
    }

    // --- Transmission ----------------------------------------------------------------------

    // transmission-daemon with a config folder of the test's own, RPC on a free port.
    Process start_transmission(std::uint16_t port, const std::string& download_dir) {
        const std::string home = dir_ / "transmission";
        tr_rpc_port_ = free_port();
        write_file(home + "/settings.json",
                   "{\n"
                   "  \"bind-address-ipv4\": \"127.0.0.1\", \"bind-address-ipv6\": \"::1\",\n"
                   "  \"dht-enabled\": false, \"lpd-enabled\": false, \"pex-enabled\": false,\n"
                   "  \"utp-enabled\": false, \"port-forwarding-enabled\": false,\n"
                   "  \"peer-port\": " + std::to_string(port) + ", \"peer-port-random-on-start\": false,\n"
                   "  \"rpc-enabled\": true, \"rpc-bind-address\": \"127.0.0.1\",\n"
                   "  \"rpc-port\": " + std::to_string(tr_rpc_port_) + ",\n"
                   "  \"rpc-authentication-required\": false, \"rpc-whitelist-enabled\": true,\n"
                   "  \"rpc-whitelist\": \"127.0.0.1\", \"rpc-host-whitelist-enabled\": false,\n"
                   "  \"download-dir\": \"" + download_dir + "\", \"incomplete-dir-enabled\": false,\n"
                   "  \"watch-dir-enabled\": false, \"blocklist-enabled\": false,\n"
                   "  \"ratio-limit-enabled\": false, \"idle-seeding-limit-enabled\": false,\n"
                   "  \"start-added-torrents\": true, \"message-level\": 2,\n"
                   "  \"encryption\": " + std::string(encrypted() ? "2" : "0") + "\n"
                   "}\n");
        return Process::start({"transmission-daemon", "-f", "-g", home, "-e", home + "/transmission.log"},
                              home + "/stdout.log", {{"HOME", home}});
    }

    int transmission_remote(std::vector<std::string> args, std::string* output) {
        std::vector<std::string> argv{"transmission-remote", "127.0.0.1:" + std::to_string(tr_rpc_port_)};
        argv.insert(argv.end(), args.begin(), args.end());
        return run_command(argv, output, 30s);
    }

    bool transmission_add(const std::string& download_dir, std::string* output) {
        if (!wait_for_listen(tr_rpc_port_, kReadyTimeout)) {
            *output = "the RPC never listened";
            return false;
        }
        return transmission_remote({"-a", torrent_, "-w", download_dir}, output) == 0;
    }

    TempDir dir_{"pw-interop-"};
    std::string tree_;
    std::string torrent_;
    std::uint16_t tracker_port_ = 0;
    std::optional<Tracker> tracker_;
    std::uint16_t seed_port_ = 0;
    std::optional<Process> seed_;
    std::uint16_t qb_webui_port_ = 0;
    std::uint16_t tr_rpc_port_ = 0;
};

// --- Leechers: each client downloads from `piecework seed` alone ---------------------------

TEST_P(InteropTest, LibtorrentDownloadsFromPiecework) {
    ASSERT_TRUE(start_seed()) << seed_->log_tail();
    fs::create_directories(dir_ / "lt");
    Process leecher = Process::start({"/usr/bin/python3", helper("lt_leecher.py"), torrent_, dir_ / "lt", "--peer",
                                      "127.0.0.1:" + std::to_string(seed_port_), "--timeout", "220",
                                      "--encryption", encrypted() ? "forced" : "disabled"},
                                     dir_ / "lt.log");
    ASSERT_EQ(leecher.wait_for_exit(kDoneTimeout), 0) << leecher.log_tail() << seed_->log_tail();
    std::string why;
    EXPECT_TRUE(complete_copy(tree_, dir_ / "lt/tree", &why)) << why;
}

TEST_P(InteropTest, Aria2DownloadsFromPiecework) {
    ASSERT_TRUE(start_seed()) << seed_->log_tail();
    fs::create_directories(dir_ / "aria2");
    std::vector<std::string> argv = {
        "aria2c", "--seed-time=0", "-d", dir_ / "aria2", "--enable-dht=false", "--enable-dht6=false",
        "--bt-enable-lpd=false", "--enable-peer-exchange=false", "--disable-ipv6=true", "--summary-interval=0",
        "--file-allocation=none", "--console-log-level=notice", "--no-conf=true", "--bt-stop-timeout=200",
        "--listen-port=" + std::to_string(free_port())};
    for (const auto& arg : aria2_link_args()) argv.push_back(arg);
    argv.push_back(torrent_);
    Process leecher = Process::start(argv, dir_ / "aria2.log");
    ASSERT_EQ(leecher.wait_for_exit(kDoneTimeout), 0) << leecher.log_tail() << seed_->log_tail();
    std::string why;
    EXPECT_TRUE(complete_copy(tree_, dir_ / "aria2/tree", &why)) << why;
}

// rtorrent gets itself from the tracker too, and once it has met itself on 127.0.0.1 it may
// never dial the seed there; so it announces first, and the seed, announcing after it, dials it.
TEST_P(InteropTest, RtorrentDownloadsFromPiecework) {
    if (!installed("/usr/bin/rtorrent")) GTEST_SKIP() << "rtorrent is missing (scripts/install-deps)";
    fs::create_directories(dir_ / "rt");
    Process leecher = start_rtorrent(dir_ / "rt", free_port());
    ASSERT_TRUE(tracker_->wait_for_peers(1, kReadyTimeout)) << read_tail(dir_ / "rtorrent/rtorrent.log");
    ASSERT_TRUE(start_seed(2)) << seed_->log_tail();
    expect_leecher_copy(dir_ / "rt/tree", leecher, dir_ / "rtorrent/rtorrent.log");
}

TEST_P(InteropTest, QbittorrentDownloadsFromPiecework) {
    if (!installed("/usr/bin/qbittorrent-nox")) GTEST_SKIP() << "qbittorrent-nox is missing (scripts/install-deps)";
    ASSERT_TRUE(start_seed()) << seed_->log_tail();
    Process leecher = start_qbittorrent(free_port());
    std::string output;
    ASSERT_TRUE(qbittorrent_add(dir_ / "qb", &output)) << output << leecher.log_tail();
    expect_leecher_copy(dir_ / "qb/tree", leecher, dir_ / "qbittorrent/qBittorrent/data/logs/qbittorrent.log");
}

// Transmission 3.00 never connects out to a 127.x address (a "martian" to it), but it takes
// incoming connections from one: it announces first, and the seed, announcing after it, learns
// its address from the tracker and connects to it.
TEST_P(InteropTest, TransmissionDownloadsFromPiecework) {
    if (!installed("/usr/bin/transmission-daemon")) GTEST_SKIP() << "transmission-daemon is missing (scripts/install-deps)";
    fs::create_directories(dir_ / "tr");
    Process leecher = start_transmission(free_port(), dir_ / "tr");
    std::string output;
    ASSERT_TRUE(transmission_add(dir_ / "tr", &output)) << output << leecher.log_tail();
    ASSERT_TRUE(tracker_->wait_for_peers(1, kReadyTimeout)) << read_tail(dir_ / "transmission/transmission.log");
    ASSERT_TRUE(start_seed(2)) << seed_->log_tail();
    expect_leecher_copy(dir_ / "tr/tree", leecher, dir_ / "transmission/transmission.log");
}

// --- Seeders: `piecework download` from each client alone ----------------------------------

TEST_P(InteropTest, PieceworkDownloadsFromLibtorrent) {
    LibtorrentSeederOptions options;
    options.log_path = dir_ / "lt_seeder.log";
    options.encryption = encrypted() ? "forced" : "disabled";
    LibtorrentSeeder seeder = LibtorrentSeeder::start(torrent_, dir_ / "data", options);
    ASSERT_TRUE(seeder.wait_ready(kReadyTimeout)) << seeder.log();
    expect_download_from(seeder.port(), dir_ / "lt_seeder.log");
}

TEST_P(InteropTest, PieceworkDownloadsFromAria2) {
    Aria2Seeder seeder = Aria2Seeder::start(torrent_, dir_ / "data", dir_ / "aria2_seeder.log", aria2_link_args());
    ASSERT_TRUE(seeder.wait_ready(kReadyTimeout)) << seeder.log();
    expect_download_from(seeder.port(), dir_ / "aria2_seeder.log");
}

TEST_P(InteropTest, PieceworkDownloadsFromRtorrent) {
    if (!installed("/usr/bin/rtorrent")) GTEST_SKIP() << "rtorrent is missing (scripts/install-deps)";
    const std::uint16_t port = free_port();
    Process seeder = start_rtorrent(dir_ / "data", port);
    // rtorrent announces once its check of the files found them whole.
    ASSERT_TRUE(tracker_->wait_for_peers(1, kReadyTimeout)) << read_tail(dir_ / "rtorrent/rtorrent.log");
    expect_download_from(port, dir_ / "rtorrent/rtorrent.log");
}

TEST_P(InteropTest, PieceworkDownloadsFromQbittorrent) {
    if (!installed("/usr/bin/qbittorrent-nox")) GTEST_SKIP() << "qbittorrent-nox is missing (scripts/install-deps)";
    const std::uint16_t port = free_port();
    Process seeder = start_qbittorrent(port);
    std::string output;
    ASSERT_TRUE(qbittorrent_add(dir_ / "data", &output)) << output << seeder.log_tail();
    ASSERT_TRUE(wait_until([&] { return qbittorrent_info().find("\"progress\":1,") != std::string::npos; }, &seeder,
                           kReadyTimeout))
        << qbittorrent_info();
    expect_download_from(port, dir_ / "qbittorrent/qBittorrent/data/logs/qbittorrent.log");
}

TEST_P(InteropTest, PieceworkDownloadsFromTransmission) {
    if (!installed("/usr/bin/transmission-daemon")) GTEST_SKIP() << "transmission-daemon is missing (scripts/install-deps)";
    const std::uint16_t port = free_port();
    Process seeder = start_transmission(port, dir_ / "data");
    std::string output;
    ASSERT_TRUE(transmission_add(dir_ / "data", &output)) << output << seeder.log_tail();
    ASSERT_TRUE(wait_until(
        [&] {
            std::string list;
            transmission_remote({"-t", "1", "-i"}, &list);
            return list.find("Percent Done: 100%") != std::string::npos &&
                   (list.find("State: Idle") != std::string::npos || list.find("State: Seeding") != std::string::npos);
        },
        &seeder, kReadyTimeout))
        << output;
    expect_download_from(port, dir_ / "transmission/transmission.log");
}

INSTANTIATE_TEST_SUITE_P(Link, InteropTest, ::testing::Values(Link::plaintext, Link::encrypted),
                         [](const ::testing::TestParamInfo<Link>& cell) {
                             return cell.param == Link::encrypted ? std::string("Encrypted") : std::string("Plaintext");
                         });

}  // namespace
}  // namespace pw::test
