// Magnet links and peer exchange (#15), against libtorrent on 127.0.0.1: piecework fetches the info dictionary
// from peers (BEP 9 over BEP 10) and then the pieces, whether the link names only peers
// (x.pe) or only a tracker (hex and base32 info-hashes); a libtorrent client fetches our
// metadata from a piecework seed; the daemon keeps what it fetched as a .torrent in its
// state folder; peers that send wrong, oversized or truncated metadata are refused while an
// honest one serves; a link naming one libtorrent peer that has next to nothing completes
// from the seeders that peer names by peer exchange (BEP 11); a link with only the info-hash
// is found through a DHT of libtorrent sessions on 127.0.0.1. Every byte is checked; nothing
// asserts on speed.
#include <unistd.h>

#include <array>
#include <filesystem>
#include <optional>
#include <regex>
#include <sstream>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "core/metainfo.hpp"
#include "tests/integration/harness.hpp"

namespace pw::test {
namespace {

namespace fs = std::filesystem;

constexpr auto kReadyTimeout = 120s;
constexpr auto kDoneTimeout = 180s;

// RFC 4648 base32 of the 20-byte info-hash: the 32-character form magnets also use.
std::string base32_of_hex(const std::string& hex) {
    static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    std::string bytes;
    for (std::size_t i = 0; i + 1 < hex.size(); i += 2) {
        bytes.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
    }
    std::string out;
    std::uint32_t buffer = 0;
    int bits = 0;
    for (const char c : bytes) {
        buffer = (buffer << 8) | static_cast<std::uint8_t>(c);
        bits += 8;
        while (bits >= 5) {
            out.push_back(kAlphabet[(buffer >> (bits - 5)) & 31]);
            bits -= 5;
        }
    }
    return out;
}

class MagnetTest : public ::testing::Test {
protected:
    void SetUp() override { fs::create_directories(dir_ / "data"); }

    // A 6 MiB file in data/ and its torrent (64 KiB pieces: a 2 KB info dictionary; the
    // multi-piece case has its own test below).
    void make_torrent_of(std::uint64_t size, std::uint32_t piece_bytes,
                         std::vector<std::vector<std::string>> tiers = {}) {
        payload_ = make_payload(dir_ / "data", "payload.bin", size, 151);
        torrent_ = make_torrent(payload_, piece_bytes, tiers, dir_ / "payload.torrent");
        hash_ = info_hash_hex(torrent_);
    }

    LibtorrentSeeder& start_seeder() {
        seeder_.emplace(LibtorrentSeeder::start(torrent_, dir_ / "data"));
        EXPECT_TRUE(seeder_->wait_ready(kReadyTimeout)) << seeder_->log();
        return *seeder_;
    }

    // `piecework download LINK -o out`, to completion; the output compared byte for byte.
    void download(const std::string& link, const std::string& out) {
        Process client = Process::start({bin("piecework"), "download", link, "-o", out, "--log-level", "info",
                                         "--listen-port", std::to_string(free_port())},
                                        out + ".log");
        ASSERT_EQ(client.wait_for_exit(kDoneTimeout), 0) << client.log_tail(60) << seeder_log();
        std::string why;
        EXPECT_TRUE(same_tree(payload_, out + "/payload.bin", &why)) << why;
        const std::string log = read_text_file(out + ".log");
        EXPECT_NE(log.find("metadata received"), std::string::npos) << client.log_tail(60);
        last_log_ = log;
    }

    std::string seeder_log() const { return seeder_ ? "\n--- seeder ---\n" + seeder_->log() : std::string{}; }
    std::string x_pe(std::uint16_t port) const { return "&x.pe=127.0.0.1:" + std::to_string(port); }

    TempDir dir_{"pw-magnet-"};
    std::string payload_, torrent_, hash_, last_log_;
    std::optional<LibtorrentSeeder> seeder_;
};

TEST_F(MagnetTest, ALinkWithOnlyAPeerFetchesTheMetadataThenThePieces) {
    make_torrent_of(6u << 20, 64 << 10);
    start_seeder();
    download("magnet:?xt=urn:btih:" + hash_ + "&dn=payload" + x_pe(seeder_->port()), dir_ / "out");
}

// 16 MiB pieces' hashes are few; 16 KiB pieces of a 40 MiB file make a 50 KB info
// dictionary: four metadata pieces, the last one short.
TEST_F(MagnetTest, MetadataOfSeveralPiecesIsAssembledInOrder) {
    make_torrent_of(40u << 20, 16 << 10);
    start_seeder();
    download("magnet:?xt=urn:btih:" + hash_ + x_pe(seeder_->port()), dir_ / "out");
}

TEST_F(MagnetTest, ALinkWithOnlyATrackerInHexAndInBase32) {
    const std::uint16_t tracker_port = free_port();
    const std::string announce = "http://127.0.0.1:" + std::to_string(tracker_port) + "/announce";
    make_torrent_of(4u << 20, 64 << 10, {{announce}});
    Tracker tracker = Tracker::start(dir_, {hash_}, tracker_port);
    start_seeder();
    ASSERT_TRUE(tracker.wait_for_peers(1, 30s)) << seeder_log();
    const std::string tr = "&tr=" + std::string("http%3A%2F%2F127.0.0.1%3A") + std::to_string(tracker_port) +
                           "%2Fannounce";
    download("magnet:?xt=urn:btih:" + hash_ + tr, dir_ / "hex");
    download("magnet:?xt=urn:btih:" + base32_of_hex(hash_) + tr, dir_ / "base32");
}

// The other way: libtorrent, given only the info-hash and our address, fetches the info
// dictionary from `piecework seed` and then the pieces.
TEST_F(MagnetTest, LibtorrentFetchesOurMetadataFromAPieceworkSeed) {
    make_torrent_of(3u << 20, 32 << 10);
    const std::uint16_t seed_port = free_port();
    Process seed = Process::start({bin("piecework"), "seed", torrent_, dir_ / "data", "--listen-port",
                                   std::to_string(seed_port), "--log-level", "info"},
                                  dir_ / "seed.log");
    ASSERT_TRUE(wait_for_listen(seed_port, 60s)) << seed.log_tail();
    fs::create_directories(dir_ / "lt");
    Process leecher = Process::start({"/usr/bin/python3", helper("lt_leecher.py"), "magnet:?xt=urn:btih:" + hash_,
                                      dir_ / "lt", "--peer", "127.0.0.1:" + std::to_string(seed_port),
                                      "--timeout", "150"},
                                     dir_ / "leecher.log");
    ASSERT_EQ(leecher.wait_for_exit(kDoneTimeout), 0) << leecher.log_tail() << "\n--- seed ---\n" << seed.log_tail();
    EXPECT_NE(read_text_file(leecher.log_path()).find("METADATA"), std::string::npos);
    std::string why;
    EXPECT_TRUE(same_tree(payload_, dir_ / "lt/payload.bin", &why)) << why;
}

// A magnet added over the RPC: the daemon keeps the link until the metadata comes, then the
// .torrent made of it, which `piecework inspect` reads; a restart finds the torrent complete
// without fetching anything.
TEST_F(MagnetTest, TheDaemonKeepsTheFetchedTorrentInItsStateFolder) {
    if (::access("/usr/bin/transmission-remote", X_OK) != 0) {
        GTEST_SKIP() << "transmission-remote is missing (apt-get install transmission-cli)";
    }
    make_torrent_of(2u << 20, 32 << 10);
    start_seeder();
    const std::uint16_t rpc_port = free_port();
    const auto start_daemon = [&](const std::string& log) {
        return Process::start({bin("piecework"), "daemon", "--download-dir", dir_ / "downloads", "--state-dir",
                               dir_ / "state", "--rpc-port", std::to_string(rpc_port), "--listen-port",
                               std::to_string(free_port()), "--log-level", "info"},
                              dir_ / log);
    };
    Process daemon = start_daemon("daemon-1.log");
    ASSERT_EQ(wait_for_rpc(daemon, rpc_port, 30s), "");
    std::string output;
    ASSERT_EQ(run_command(transmission_remote(rpc_port, {"-a", "magnet:?xt=urn:btih:" + hash_ + "&dn=payload" +
                                                                  x_pe(seeder_->port())}),
                          &output, 30s),
              0)
        << output;
    const std::string saved = dir_ / ("state/torrents/" + hash_ + ".torrent");
    const auto deadline = std::chrono::steady_clock::now() + kDoneTimeout;
    bool done = false;
    while (!done && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(300ms);
        run_command(transmission_remote(rpc_port, {"-l"}), &output, 30s);
        done = output.find("100%") != std::string::npos && fs::exists(saved);
    }
    ASSERT_TRUE(done) << output << "\n" << daemon.log_tail(60) << seeder_log();
    std::string why;
    EXPECT_TRUE(same_tree(payload_, dir_ / "downloads/payload.bin", &why)) << why;
    EXPECT_FALSE(fs::exists(dir_ / ("state/torrents/" + hash_ + ".magnet")));
    ASSERT_EQ(run_command({bin("piecework"), "inspect", saved}, &output, 30s), 0) << output;
    EXPECT_NE(output.find(hash_), std::string::npos) << output;
    daemon.terminate();
    ASSERT_EQ(daemon.wait_for_exit(30s), 0) << daemon.log_tail();
    // Restarted without the seeder: the torrent is back from its .torrent, complete.
    seeder_.reset();
    Process again = start_daemon("daemon-2.log");
    ASSERT_EQ(wait_for_rpc(again, rpc_port, 30s), "");
    done = false;
    const auto second = std::chrono::steady_clock::now() + 60s;
    while (!done && std::chrono::steady_clock::now() < second) {
        std::this_thread::sleep_for(300ms);
        run_command(transmission_remote(rpc_port, {"-l"}), &output, 30s);
        done = output.find("100%") != std::string::npos;
    }
    EXPECT_TRUE(done) << output << "\n" << again.log_tail(60);
    EXPECT_EQ(read_text_file(again.log_path()).find("metadata received"), std::string::npos);
}

// Three peers lie about the metadata (wrong bytes, a size over the 16 MiB cap, pieces cut
// short) beside one honest libtorrent seeder: each liar is dropped with the reason, and the
// download completes.
TEST_F(MagnetTest, HostileMetadataIsRefusedAndTheHonestSeederServes) {
    make_torrent_of(3u << 20, 16 << 10);  // 192 pieces: 4 KB of metadata, one piece
    start_seeder();
    std::string peers;
    std::vector<Process> hostile;
    for (const std::string mode : {"metadata_wrong", "metadata_oversized", "metadata_truncated"}) {
        hostile.push_back(Process::start({"/usr/bin/python3", helper("hostile_peer.py"), torrent_, payload_,
                                          "--mode", mode},
                                         dir_ / (mode + ".log")));
    }
    for (auto& peer : hostile) {
        std::smatch ready;
        const auto deadline = std::chrono::steady_clock::now() + 30s;
        std::string log;
        while (std::chrono::steady_clock::now() < deadline &&
               !std::regex_search(log = read_text_file(peer.log_path()), ready, std::regex("READY (\\d+)"))) {
            std::this_thread::sleep_for(50ms);
        }
        ASSERT_FALSE(ready.empty()) << log;
        peers += x_pe(static_cast<std::uint16_t>(std::stoi(ready[1])));
    }
    download("magnet:?xt=urn:btih:" + hash_ + peers + x_pe(seeder_->port()), dir_ / "out");
    // Whichever liars were asked before the honest seeder answered are named; the oversized
    // offer is refused as soon as it is made.
    EXPECT_NE(last_log_.find("metadata_size"), std::string::npos) << last_log_;
}

// The link names one libtorrent peer that downloads at 4 KiB/s and knows two seeders; piecework
// knows them only from that peer's ut_pex messages, and completes from them.
TEST_F(MagnetTest, PeersLearnedByPeerExchangeServeTheDownload) {
    make_torrent_of(4u << 20, 32 << 10);
    std::vector<LibtorrentSeeder> seeders;
    for (int i = 0; i < 2; ++i) {
        LibtorrentSeederOptions options;
        options.log_path = dir_ / ("seeder-" + std::to_string(i) + ".log");
        seeders.push_back(LibtorrentSeeder::start(torrent_, dir_ / "data", options));
    }
    for (auto& seeder : seeders) ASSERT_TRUE(seeder.wait_ready(kReadyTimeout)) << seeder.log();
    fs::create_directories(dir_ / "middle");
    std::vector<std::string> argv{"/usr/bin/python3", helper("lt_leecher.py"), torrent_, dir_ / "middle",
                                  "--download-kib", "4", "--timeout", "240"};
    for (auto& seeder : seeders) argv.insert(argv.end(), {"--peer", "127.0.0.1:" + std::to_string(seeder.port())});
    Process middle = Process::start(argv, dir_ / "middle.log");
    std::smatch ready;
    std::string log;
    const auto deadline = std::chrono::steady_clock::now() + 60s;
    while (std::chrono::steady_clock::now() < deadline &&
           !std::regex_search(log = read_text_file(middle.log_path()), ready, std::regex("READY (\\d+)"))) {
        std::this_thread::sleep_for(50ms);
    }
    ASSERT_FALSE(ready.empty()) << log;
    const std::uint16_t middle_port = static_cast<std::uint16_t>(std::stoi(ready[1]));
    download("magnet:?xt=urn:btih:" + hash_ + x_pe(middle_port), dir_ / "out");
    bool met_a_seeder = false;
    for (auto& seeder : seeders) {
        const std::string connected = "127.0.0.1:" + std::to_string(seeder.port()) + " (torrent 1): connected";
        met_a_seeder = met_a_seeder || last_log_.find(connected) != std::string::npos;
    }
    EXPECT_TRUE(met_a_seeder) << last_log_ << "\n--- middle ---\n" << middle.log_tail();
}

// The other way: a libtorrent leecher that knows only piecework (downloading from a libtorrent
// seeder capped at 48 KiB/s, so it is still downloading, and connected to the seeder, when the
// leecher comes) gets payload from that seeder too: our ut_pex told each of the other.
TEST_F(MagnetTest, LibtorrentLearnsPeersFromOurPeerExchange) {
    make_torrent_of(3u << 20, 32 << 10);
    LibtorrentSeederOptions capped;
    capped.rate_kib = 48;
    seeder_.emplace(LibtorrentSeeder::start(torrent_, dir_ / "data", capped));
    ASSERT_TRUE(seeder_->wait_ready(kReadyTimeout)) << seeder_->log();
    const std::uint16_t our_port = free_port();
    Process ours = Process::start({bin("piecework"), "download", torrent_, "-o", dir_ / "out", "--peer",
                                   "127.0.0.1:" + std::to_string(seeder_->port()), "--listen-port",
                                   std::to_string(our_port), "--log-level", "info"},
                                  dir_ / "ours.log");
    ASSERT_TRUE(wait_for_listen(our_port, 60s)) << ours.log_tail();
    fs::create_directories(dir_ / "lt");
    Process leecher = Process::start({"/usr/bin/python3", helper("lt_leecher.py"), torrent_, dir_ / "lt", "--peer",
                                      "127.0.0.1:" + std::to_string(our_port), "--timeout", "170"},
                                     dir_ / "leecher.log");
    ASSERT_EQ(leecher.wait_for_exit(kDoneTimeout), 0) << leecher.log_tail() << "\n--- ours ---\n" << ours.log_tail();
    std::string why;
    EXPECT_TRUE(same_tree(payload_, dir_ / "lt/payload.bin", &why)) << why;
    // Payload from a peer that is not piecework: the seeder, which the two met through our
    // ut_pex (the leecher dialling the seeder it was told of, or the seeder, told of the
    // leecher, dialling it).
    const std::string log = read_text_file(leecher.log_path());
    bool from_another = false;
    const std::regex from_line("FROM 127\\.0\\.0\\.1:(\\d+) ([1-9]\\d*)");
    for (auto it = std::sregex_iterator(log.begin(), log.end(), from_line); it != std::sregex_iterator(); ++it) {
        from_another = from_another || std::stoi((*it)[1]) != our_port;
    }
    EXPECT_TRUE(from_another) << leecher.log_tail() << "\n--- ours ---\n" << ours.log_tail();
}

// A link with nothing but the info-hash: piecework's DHT node, bootstrapped from a small DHT
// of libtorrent sessions on 127.0.0.1 (and nothing else), finds a libtorrent seeder that
// announced itself there, fetches the metadata from it and then the pieces.
TEST_F(MagnetTest, ALinkWithOnlyTheInfoHashIsFoundThroughTheDht) {
    make_torrent_of(2u << 20, 32 << 10);
    std::vector<std::uint16_t> ports;
    std::string ports_text;
    for (int i = 0; i < 4; ++i) {
        ports.push_back(free_port());
        ports_text += (i ? "," : "") + std::to_string(ports.back());
    }
    Process dht = Process::start({"/usr/bin/python3", helper("lt_dht.py"), "--ports", ports_text, "--seconds", "200"},
                                 dir_ / "lt_dht.log");
    const auto ready_by = std::chrono::steady_clock::now() + 40s;
    while (read_text_file(dir_ / "lt_dht.log").find("READY") == std::string::npos &&
           std::chrono::steady_clock::now() < ready_by) {
        std::this_thread::sleep_for(100ms);
    }
    ASSERT_NE(read_text_file(dir_ / "lt_dht.log").find("READY"), std::string::npos) << dht.log_tail();
    LibtorrentSeederOptions options;
    options.dht_nodes = {"127.0.0.1:" + std::to_string(ports[0]), "127.0.0.1:" + std::to_string(ports[1])};
    seeder_.emplace(LibtorrentSeeder::start(torrent_, dir_ / "data", options));
    ASSERT_TRUE(seeder_->wait_ready(kReadyTimeout)) << seeder_->log();
    const std::string out = dir_ / "out";
    Process client = Process::start({bin("piecework"), "download", "magnet:?xt=urn:btih:" + hash_, "-o", out,
                                     "--log-level", "info", "--listen-port", std::to_string(free_port()),
                                     "--dht-port", "0", "--dht-bootstrap", "127.0.0.1:" + std::to_string(ports[2]),
                                     "--dht-bootstrap", "127.0.0.1:" + std::to_string(ports[3])},
                                    out + ".log", {{"PW_NO_DHT", "0"}});
    ASSERT_EQ(client.wait_for_exit(kDoneTimeout), 0) << client.log_tail(60) << seeder_log();
    std::string why;
    EXPECT_TRUE(same_tree(payload_, out + "/payload.bin", &why)) << why;
    EXPECT_NE(read_text_file(out + ".log").find("metadata received"), std::string::npos);
}

}  // namespace
}  // namespace pw::test
