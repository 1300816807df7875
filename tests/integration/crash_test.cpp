// Issue 4, crashes: `kill -9` of one stage in the middle of a `piecework download`. The front
// end restarts it, the orchestrator puts back whatever the dead stage held (a worker's leases,
// the pieces a verifier had been handed, the verified pieces a writer never confirmed), and the
// download still ends byte-identical with exit 0. A rate-capped libtorrent seeder makes the
// download last long enough to kill a stage half-way.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/types.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "tests/integration/harness.hpp"

namespace pw::test {
namespace {

namespace fs = std::filesystem;

constexpr std::uint64_t kPayloadBytes = 48ull << 20;
constexpr std::uint32_t kRateKib = 6 * 1024;

class CrashTest : public ::testing::Test {
protected:
    TempDir dir_{"pw-crash-"};
};

class KilledStage : public CrashTest, public ::testing::WithParamInterface<std::string> {};

TEST_P(KilledStage, IsRestartedAndTheDownloadCompletes) {
    const std::string stage = GetParam();
    const std::string payload = make_payload(dir_ / "data", "payload.bin", kPayloadBytes, 41);
    const std::string torrent = make_torrent(payload, 256u << 10, {}, dir_ / "t.torrent");
    LibtorrentSeederOptions options;
    options.rate_kib = kRateKib;
    auto seeder = LibtorrentSeeder::start(torrent, dir_ / "data", options);
    ASSERT_TRUE(seeder.wait_ready(120s)) << seeder.log();

    const std::string out = dir_ / "out";
    auto client = Process::start({bin("piecework"), "download", torrent, "-o", out, "--peer",
                                  "127.0.0.1:" + std::to_string(seeder.port()), "--log-level",
                                  "info"},
                                 dir_ / "piecework.log");
    // Wait for the stage, then for data to flow, then kill it mid-download.
    std::vector<pid_t> victims;
    for (int i = 0; i < 200 && victims.empty(); ++i) {
        std::this_thread::sleep_for(50ms);
        victims = stage_pids(client.pid(), stage);
    }
    ASSERT_EQ(victims.size(), 1u) << client.log_tail();
    std::this_thread::sleep_for(2500ms);
    ASSERT_TRUE(client.running()) << "finished before the kill: " << client.log_tail();
    ASSERT_EQ(::kill(victims[0], SIGKILL), 0);

    const int code = client.wait_for_exit(240s);
    if (code == -1) client.kill();
    const std::string diagnostics =
        "\n--- piecework ---\n" + client.log_tail(80) + "\n--- seeder ---\n" + seeder.log();
    ASSERT_EQ(code, 0) << diagnostics;
    EXPECT_NE(read_text_file(client.log_path()).find(stage + " exited (status 137); restarting"),
              std::string::npos)
        << diagnostics;
    std::string why;
    EXPECT_TRUE(same_tree(payload, out + "/payload.bin", &why)) << why << diagnostics;
}

// No stage waits forever on a dead partner: with the orchestrator frozen (SIGSTOP, so the
// front end sees no exit and restarts nothing), every other stage notices the silence and
// exits on its own.
TEST_F(CrashTest, StagesExitWhenTheOrchestratorFallsSilent) {
    const std::string payload = make_payload(dir_ / "data", "payload.bin", kPayloadBytes, 42);
    const std::string torrent = make_torrent(payload, 256u << 10, {}, dir_ / "t.torrent");
    LibtorrentSeederOptions options;
    options.rate_kib = 1024;
    auto seeder = LibtorrentSeeder::start(torrent, dir_ / "data", options);
    ASSERT_TRUE(seeder.wait_ready(120s)) << seeder.log();
    auto client = Process::start({bin("piecework"), "download", torrent, "-o", dir_ / "out",
                                  "--peer", "127.0.0.1:" + std::to_string(seeder.port()),
                                  "--log-level", "info"},
                                 dir_ / "piecework.log");
    std::vector<pid_t> orchestrator;
    std::vector<pid_t> others;
    for (int i = 0; i < 200 && (orchestrator.empty() || others.size() < 3); ++i) {
        std::this_thread::sleep_for(50ms);
        orchestrator = stage_pids(client.pid(), "orchestrator");
        others.clear();
        for (const char* name : {"verifier", "writer", "peer_worker-1"}) {
            for (const pid_t pid : stage_pids(client.pid(), name)) others.push_back(pid);
        }
    }
    ASSERT_EQ(orchestrator.size(), 1u) << client.log_tail();
    ASSERT_EQ(others.size(), 3u) << client.log_tail();
    std::this_thread::sleep_for(1s);
    ASSERT_EQ(::kill(orchestrator[0], SIGSTOP), 0);
    // 5 heartbeats of 1 s make a stage give up; allow for a loaded machine.
    bool all_gone = false;
    for (int i = 0; i < 600 && !all_gone; ++i) {
        std::this_thread::sleep_for(50ms);
        all_gone = true;
        for (const pid_t pid : others) {
            std::ifstream stat_file("/proc/" + std::to_string(pid) + "/stat");
            std::string stat((std::istreambuf_iterator<char>(stat_file)), {});
            const auto close = stat.rfind(')');
            // Gone, or a zombie the front end has not reaped yet.
            if (close != std::string::npos && stat[close + 2] != 'Z') all_gone = false;
        }
    }
    ::kill(orchestrator[0], SIGCONT);
    client.kill();
    EXPECT_TRUE(all_gone) << client.log_tail();
    EXPECT_NE(read_text_file(client.log_path()).find("silent"), std::string::npos) << client.log_tail();
}

// The orchestrator notices a stage that stopped answering (SIGSTOP for longer than 5
// heartbeats): it treats it as gone and puts back what it held; the stage, once thawed, finds
// itself unknown and silent-to, exits, is restarted, and the download completes.
TEST_F(CrashTest, FrozenVerifierIsTreatedAsGoneAndTheDownloadCompletes) {
    const std::string payload = make_payload(dir_ / "data", "payload.bin", kPayloadBytes, 43);
    const std::string torrent = make_torrent(payload, 256u << 10, {}, dir_ / "t.torrent");
    LibtorrentSeederOptions options;
    options.rate_kib = kRateKib;
    auto seeder = LibtorrentSeeder::start(torrent, dir_ / "data", options);
    ASSERT_TRUE(seeder.wait_ready(120s)) << seeder.log();
    const std::string out = dir_ / "out";
    auto client = Process::start({bin("piecework"), "download", torrent, "-o", out, "--peer",
                                  "127.0.0.1:" + std::to_string(seeder.port()), "--log-level",
                                  "info"},
                                 dir_ / "piecework.log");
    std::vector<pid_t> verifier;
    for (int i = 0; i < 200 && verifier.empty(); ++i) {
        std::this_thread::sleep_for(50ms);
        verifier = stage_pids(client.pid(), "verifier");
    }
    ASSERT_EQ(verifier.size(), 1u) << client.log_tail();
    std::this_thread::sleep_for(2s);
    ASSERT_EQ(::kill(verifier[0], SIGSTOP), 0);
    std::this_thread::sleep_for(8s);
    ::kill(verifier[0], SIGCONT);
    const int code = client.wait_for_exit(240s);
    if (code == -1) client.kill();
    const std::string log = read_text_file(client.log_path());
    ASSERT_EQ(code, 0) << client.log_tail(80);
    EXPECT_NE(log.find("'verifier' has been silent"), std::string::npos) << client.log_tail(80);
    std::string why;
    EXPECT_TRUE(same_tree(payload, out + "/payload.bin", &why)) << why;
}

INSTANTIATE_TEST_SUITE_P(Stages, KilledStage,
                         ::testing::Values("peer_worker-1", "verifier", "writer"),
                         [](const auto& param_info) {
                             std::string name = param_info.param;
                             std::erase(name, '-');
                             return name;
                         });

}  // namespace
}  // namespace pw::test
