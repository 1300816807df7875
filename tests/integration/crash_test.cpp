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
#include <optional>
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
    // A fresh payload on a rate-capped libtorrent seeder (slow enough to act mid-download),
    // and `piecework download` fetching it from that seeder alone.
    void start_download(std::uint32_t seed, std::uint32_t rate_kib = kRateKib) {
        payload_ = make_payload(dir_ / "data", "payload.bin", kPayloadBytes, seed);
        const std::string torrent = make_torrent(payload_, 256u << 10, {}, dir_ / "t.torrent");
        LibtorrentSeederOptions options;
        options.rate_kib = rate_kib;
        seeder_.emplace(LibtorrentSeeder::start(torrent, dir_ / "data", options));
        ASSERT_TRUE(seeder_->wait_ready(120s)) << seeder_->log();
        client_.emplace(Process::start({bin("piecework"), "download", torrent, "-o", out_,
                                        "--peer", "127.0.0.1:" + std::to_string(seeder_->port()),
                                        "--log-level", "info"},
                                       dir_ / "piecework.log"));
    }

    // The pids of the stage the download started as `--name NAME`, once it appears.
    std::vector<pid_t> wait_for_stage(const std::string& name) {
        std::vector<pid_t> pids;
        for (int i = 0; i < 200 && pids.empty(); ++i) {
            std::this_thread::sleep_for(50ms);
            pids = stage_pids(client_->pid(), name);
        }
        return pids;
    }

    std::string diagnostics() const {
        return "\n--- piecework ---\n" + client_->log_tail(80) + "\n--- seeder ---\n" +
               seeder_->log();
    }

    TempDir dir_{"pw-crash-"};  // first member: removed after the processes below are gone
    std::string out_ = dir_ / "out";
    std::string payload_;
    std::optional<LibtorrentSeeder> seeder_;
    std::optional<Process> client_;
};

class KilledStage : public CrashTest, public ::testing::WithParamInterface<std::string> {};

TEST_P(KilledStage, IsRestartedAndTheDownloadCompletes) {
    const std::string stage = GetParam();
    ASSERT_NO_FATAL_FAILURE(start_download(41));
    // Wait for the stage, then for data to flow, then kill it mid-download.
    const std::vector<pid_t> victims = wait_for_stage(stage);
    ASSERT_EQ(victims.size(), 1u) << client_->log_tail();
    std::this_thread::sleep_for(2500ms);
    ASSERT_TRUE(client_->running()) << "finished before the kill: " << client_->log_tail();
    ASSERT_EQ(::kill(victims[0], SIGKILL), 0);

    const int code = client_->wait_for_exit(240s);
    if (code == -1) client_->kill();
    ASSERT_EQ(code, 0) << diagnostics();
    EXPECT_NE(read_text_file(client_->log_path()).find(stage + " exited (status 137); restarting"),
              std::string::npos)
        << diagnostics();
    std::string why;
    EXPECT_TRUE(same_tree(payload_, out_ + "/payload.bin", &why)) << why << diagnostics();
}

// No stage waits forever on a dead partner: with the orchestrator frozen (SIGSTOP, so the
// front end sees no exit and restarts nothing), every other stage notices the silence and
// exits on its own.
TEST_F(CrashTest, StagesExitWhenTheOrchestratorFallsSilent) {
    ASSERT_NO_FATAL_FAILURE(start_download(42, 1024));
    auto& client = *client_;
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
    ASSERT_NO_FATAL_FAILURE(start_download(43));
    auto& client = *client_;
    const std::vector<pid_t> verifier = wait_for_stage("verifier");
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
    EXPECT_TRUE(same_tree(payload_, out_ + "/payload.bin", &why)) << why;
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
