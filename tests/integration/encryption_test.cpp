// Message Stream Encryption in the peer workers, against python3-libtorrent both ways:
// `piecework download` from a libtorrent seeder that requires encryption (out_enc_policy and
// in_enc_policy forced, RC4 only), with --encryption require and with the default prefer;
// prefer falling back to plaintext against a seeder that refuses MSE; --encryption off
// against a forced seeder failing with words that say why; and a libtorrent leecher that
// requires encryption downloading from `piecework seed` (incoming MSE). Nothing asserts on
// speed.
#include <signal.h>

#include <filesystem>
#include <optional>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "tests/integration/harness.hpp"

namespace pw::test {
namespace {

namespace fs = std::filesystem;

constexpr auto kReadyTimeout = 120s;
constexpr auto kDoneTimeout = 300s;

class EncryptionTest : public ::testing::Test {
protected:
    void SetUp() override {
        fs::create_directories(dir_ / "data");
        payload_ = make_payload(dir_ / "data", "secret.bin", 3u << 20, 29);
        torrent_ = make_torrent(payload_, 64 << 10, {}, dir_ / "secret.torrent");
    }

    // lt_seeder.py with LT_ENC: "forced" (RC4 only, both ways), "disabled" (no MSE at all).
    void start_lt_seeder(const std::string& lt_enc) {
        seeder_port_ = free_port();
        seeder_.emplace(Process::start({"/usr/bin/python3", helper("lt_seeder.py"), torrent_, dir_ / "data",
                                        "--port", std::to_string(seeder_port_)},
                                       dir_ / "lt_seeder.log", {{"LT_ENC", lt_enc}}));
        ASSERT_TRUE(wait_for_log(*seeder_, "READY", kReadyTimeout)) << seeder_->log_tail();
    }

    Process start_download(const std::vector<std::string>& more) {
        std::vector<std::string> argv{bin("piecework"), "download", torrent_, "-o", dir_ / "out",
                                      "--peer", "127.0.0.1:" + std::to_string(seeder_port_),
                                      "--listen-port", "0", "--quiet", "--log-level", "info"};
        argv.insert(argv.end(), more.begin(), more.end());
        return Process::start(argv, dir_ / "piecework.log");
    }

    void expect_download(const std::vector<std::string>& more) {
        Process client = start_download(more);
        const int code = client.wait_for_exit(kDoneTimeout);
        if (code == -1) client.kill();
        const std::string logs = "\n--- piecework ---\n" + client.log_tail(80) + "\n--- libtorrent ---\n" +
                                 (seeder_ ? seeder_->log_tail(30) : std::string{});
        ASSERT_EQ(code, 0) << logs;
        std::string why;
        EXPECT_TRUE(same_tree(payload_, dir_ / "out/secret.bin", &why)) << why << logs;
    }

    static bool wait_for_log(Process& process, const std::string& text, std::chrono::milliseconds timeout) {
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        while (std::chrono::steady_clock::now() < deadline) {
            if (read_text_file(process.log_path()).find(text) != std::string::npos) return true;
            if (!process.running()) return read_text_file(process.log_path()).find(text) != std::string::npos;
            std::this_thread::sleep_for(100ms);
        }
        return false;
    }

    TempDir dir_{"pw-encryption-"};
    std::string payload_;
    std::string torrent_;
    std::uint16_t seeder_port_ = 0;
    std::optional<Process> seeder_;
};

TEST_F(EncryptionTest, DownloadFromAForcedLibtorrentSeederWithRequire) {
    start_lt_seeder("forced");
    expect_download({"--encryption", "require"});
}

TEST_F(EncryptionTest, DownloadFromAForcedLibtorrentSeederWithTheDefault) {
    start_lt_seeder("forced");
    expect_download({});
}

TEST_F(EncryptionTest, PreferFallsBackToPlaintextForASeederWithoutMse) {
    start_lt_seeder("disabled");
    expect_download({"--encryption", "prefer"});
}

TEST_F(EncryptionTest, OffAgainstAForcedSeederSaysWhy) {
    start_lt_seeder("forced");
    Process client = start_download({"--encryption", "off"});
    // libtorrent drops a plain handshake at once; the user reads why (a warning, not only
    // at --log-level info).
    const bool said = wait_for_log(client, "the peer may require encryption", 120s);
    const std::string log = client.log_tail(60);
    client.terminate();
    client.wait_for_exit(30s);
    EXPECT_TRUE(said) << log;
    EXPECT_FALSE(fs::exists(dir_ / "out/secret.bin") && same_tree(payload_, dir_ / "out/secret.bin"));
}

TEST_F(EncryptionTest, RequireAgainstASeederWithoutMseSaysWhy) {
    start_lt_seeder("disabled");
    Process client = start_download({"--encryption", "require"});
    const bool said = wait_for_log(client, "encryption required by us", 120s);
    const std::string log = client.log_tail(60);
    client.terminate();
    client.wait_for_exit(30s);
    EXPECT_TRUE(said) << log;
}

// Incoming MSE: the leecher dials piecework and will speak nothing but RC4.
class EncryptedLeecherTest : public EncryptionTest, public ::testing::WithParamInterface<std::string> {};

TEST_P(EncryptedLeecherTest, AForcedLibtorrentLeecherDownloadsFromAPieceworkSeed) {
    const std::uint16_t seed_port = free_port();
    std::vector<std::string> argv{bin("piecework"), "seed",        torrent_,     dir_ / "data", "--listen-port",
                                  std::to_string(seed_port), "--log-level", "info"};
    if (!GetParam().empty()) argv.insert(argv.end(), {"--encryption", GetParam()});
    Process seed = Process::start(argv, dir_ / "seed.log");
    const std::string pieces = std::to_string(piece_count(torrent_));
    ASSERT_TRUE(wait_for_log(seed, "resumed: " + pieces + " of " + pieces, kReadyTimeout)) << seed.log_tail();
    fs::create_directories(dir_ / "lt");
    Process leecher = Process::start({"/usr/bin/python3", helper("lt_leecher.py"), torrent_, dir_ / "lt", "--peer",
                                      "127.0.0.1:" + std::to_string(seed_port), "--timeout", "240",
                                      "--encryption", "forced"},
                                     dir_ / "leecher.log");
    ASSERT_EQ(leecher.wait_for_exit(kDoneTimeout), 0) << leecher.log_tail() << "\n--- seed ---\n" << seed.log_tail(60);
    std::string why;
    EXPECT_TRUE(same_tree(payload_, dir_ / "lt/secret.bin", &why)) << why;
    ::kill(seed.pid(), SIGINT);
    EXPECT_EQ(seed.wait_for_exit(30s), 0) << seed.log_tail(60);
}

// Hostile MSE initiators dial the seed all at once (tests/integration/hostile_mse.py): one
// stalls after its key, one sends garbage, one a synchronisation hash made with the wrong
// secret, one 1000 bytes of padding, one a right hash for a torrent not served, one trickles a
// byte a second. Each is dropped within the handshake's deadline, and a libtorrent leecher
// that requires encryption downloads meanwhile as if they were not there.
TEST_F(EncryptionTest, HostileHandshakesAreDroppedWithoutCostToAnHonestLeecher) {
    const std::uint16_t seed_port = free_port();
    Process seed = Process::start({bin("piecework"), "seed", torrent_, dir_ / "data", "--listen-port",
                                   std::to_string(seed_port), "--log-level", "debug"},
                                  dir_ / "seed.log");
    const std::string pieces = std::to_string(piece_count(torrent_));
    ASSERT_TRUE(wait_for_log(seed, "resumed: " + pieces + " of " + pieces, kReadyTimeout)) << seed.log_tail();
    Process hostile = Process::start({"/usr/bin/python3", helper("hostile_mse.py"), "--port", std::to_string(seed_port),
                                      "--info-hash", info_hash_hex(torrent_), "--wait", "40"},
                                     dir_ / "hostile.log");
    fs::create_directories(dir_ / "lt");
    Process leecher = Process::start({"/usr/bin/python3", helper("lt_leecher.py"), torrent_, dir_ / "lt", "--peer",
                                      "127.0.0.1:" + std::to_string(seed_port), "--timeout", "240",
                                      "--encryption", "forced"},
                                     dir_ / "leecher.log");
    ASSERT_EQ(leecher.wait_for_exit(kDoneTimeout), 0) << leecher.log_tail() << "\n--- seed ---\n" << seed.log_tail(60);
    std::string why;
    EXPECT_TRUE(same_tree(payload_, dir_ / "lt/secret.bin", &why)) << why;

    ASSERT_TRUE(wait_for_log(hostile, "DONE", 90s)) << hostile.log_tail();
    const std::string report = read_text_file(hostile.log_path());
    for (const char* name : {"stall", "garbage", "wrong_hash", "oversized_padding", "unknown_torrent", "trickle"}) {
        EXPECT_NE(report.find(std::string(name) + " closed"), std::string::npos)
            << name << " was not dropped:\n" << report << "\n--- seed ---\n" << seed.log_tail(80);
    }
    EXPECT_TRUE(seed.running()) << seed.log_tail(60);
    ::kill(seed.pid(), SIGINT);
    EXPECT_EQ(seed.wait_for_exit(30s), 0) << seed.log_tail(60);
}

INSTANTIATE_TEST_SUITE_P(Policies, EncryptedLeecherTest, ::testing::Values(std::string{}, std::string{"require"}),
                         [](const auto& policy) { return policy.param.empty() ? std::string{"Default"} : policy.param; });

}  // namespace
}  // namespace pw::test
