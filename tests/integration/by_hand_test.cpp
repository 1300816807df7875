// The five stages started by hand, as separate processes over tcp:// (not through
// `piecework download`): binding on tcp://*:PORT and tcp://0.0.0.0:PORT, a second worker
// joining mid-download, the first one killed, and the download still completing. The
// orchestrator's --metrics-port tells the test how far the download is, and `piecework tap`
// reads its --trace-endpoint while it runs.
#include <gtest/gtest.h>

#include <optional>
#include <sstream>
#include <thread>

#include "tests/integration/harness.hpp"

namespace pw::test {
namespace {

constexpr std::uint64_t kPayloadBytes = 3 << 20;
constexpr std::uint32_t kPieceBytes = 32 * 1024;

// The value of the first series of `name` whose labels contain `label` (may be empty).
std::optional<long long> metric_value(const std::string& text, const std::string& name,
                                      const std::string& label = {}) {
    std::istringstream lines(text);
    std::string line;
    while (std::getline(lines, line)) {
        if (line.rfind(name + "{", 0) != 0) continue;
        const auto close = line.find("} ");
        if (close == std::string::npos) continue;
        if (!label.empty() && line.substr(0, close).find(label) == std::string::npos) continue;
        return std::stoll(line.substr(close + 2));
    }
    return std::nullopt;
}

// Scrapes the orchestrator until `ready(metrics text)` holds; false at the deadline.
template <typename Predicate>
bool wait_for_metrics(std::uint16_t port, std::chrono::seconds timeout, Predicate ready) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
        if (auto text = http_get(port, "/metrics"); text && ready(*text)) return true;
        std::this_thread::sleep_for(100ms);
    }
    return false;
}

TEST(ByHand, FiveStagesOverTcpSurviveAWorkerJoiningAndAnotherDying) {
    TempDir dir("pw-byhand-");
    const std::string seed_dir = dir / "seed";
    const std::string payload = make_payload(seed_dir, "payload.bin", kPayloadBytes, 6);
    const std::string torrent = make_torrent(payload, kPieceBytes, {}, dir / "payload.torrent");
    const auto total_pieces = static_cast<long long>(piece_count(torrent));

    // Slow seeders, so the download is still going when the workers change.
    std::vector<LibtorrentSeeder> seeders;
    for (int i = 0; i < 2; ++i) {
        LibtorrentSeederOptions options;
        options.rate_kib = 64;
        options.log_path = dir / ("seeder" + std::to_string(i) + ".log");
        seeders.push_back(LibtorrentSeeder::start(torrent, seed_dir, options));
    }
    for (auto& seeder : seeders) ASSERT_TRUE(seeder.wait_ready(120s)) << seeder.log();

    const std::string control = std::to_string(free_port());
    const std::string pieces = std::to_string(free_port());
    const std::string verified = std::to_string(free_port());
    const std::string trace = std::to_string(free_port());
    const std::uint16_t metrics = free_port();
    const std::string loopback = "tcp://127.0.0.1:";

    std::vector<std::string> orchestrator_argv = {
        bin("orchestrator"), "--control", "tcp://*:" + control, "--torrent", torrent, "--exit-when-done",
        "--heartbeat-ms", "200", "--metrics-port", std::to_string(metrics),
        "--metrics-address", "127.0.0.1", "--trace-endpoint", loopback + trace};
    for (auto& seeder : seeders) {
        orchestrator_argv.push_back("--peer");
        orchestrator_argv.push_back("127.0.0.1:" + std::to_string(seeder.port()));
    }
    Process orchestrator = Process::start(orchestrator_argv, dir / "orchestrator.log");
    ASSERT_TRUE(wait_for_listen(metrics, 30s)) << orchestrator.log_tail();
    Process tap = Process::start({bin("piecework"), "tap", loopback + trace, "--count", "50",
                                  "--seconds", "120"},
                                 dir / "tap.log");
    Process tracker = Process::start(
        {bin("tracker_svc"), "--control", loopback + control}, dir / "tracker_svc.log");
    Process verifier = Process::start({bin("verifier"), "--control", loopback + control,
                                       "--pieces", "tcp://0.0.0.0:" + pieces, "--verified",
                                       loopback + verified},
                                      dir / "verifier.log");
    Process writer = Process::start({bin("writer"), "--control", loopback + control, "--verified",
                                     "tcp://*:" + verified, "--dir", dir / "out"},
                                    dir / "writer.log");
    // No --name: each worker names itself peer_worker-HOST-PID.
    const std::vector<std::string> worker_argv = {bin("peer_worker"), "--control",
                                                  loopback + control, "--pieces", loopback + pieces};
    Process first_worker = Process::start(worker_argv, dir / "worker1.log");

    const auto workers_now = [](long long want) {
        return [want](const std::string& text) {
            return metric_value(text, "piecework_stages", "ROLE_PEER_WORKER") == want;
        };
    };
    ASSERT_TRUE(wait_for_metrics(metrics, 120s, [&](const std::string& text) {
        return metric_value(text, "piecework_pieces_done").value_or(0) >= total_pieces / 5;
    })) << orchestrator.log_tail() << first_worker.log_tail();
    ASSERT_TRUE(orchestrator.running()) << "the download ended before the workers changed";

    Process second_worker = Process::start(worker_argv, dir / "worker2.log");
    ASSERT_TRUE(wait_for_metrics(metrics, 30s, workers_now(2))) << orchestrator.log_tail();
    first_worker.kill();
    // Its leases go back to the queue once it is silent for 5 heartbeats (1 s here).
    ASSERT_TRUE(wait_for_metrics(metrics, 30s, [](const std::string& text) {
        return metric_value(text, "piecework_stages_lost_total", "ROLE_PEER_WORKER") == 1;
    })) << orchestrator.log_tail();

    ASSERT_EQ(orchestrator.wait_for_exit(240s), 0) << orchestrator.log_tail()
                                                   << second_worker.log_tail();
    std::string why;
    EXPECT_TRUE(same_tree(payload, dir / "out/payload.bin", &why)) << why;
    // Shutdown reaches every stage still alive; each exits 0 on its own.
    EXPECT_EQ(second_worker.wait_for_exit(30s), 0) << second_worker.log_tail();
    EXPECT_EQ(verifier.wait_for_exit(30s), 0) << verifier.log_tail();
    EXPECT_EQ(writer.wait_for_exit(30s), 0) << writer.log_tail();
    EXPECT_EQ(tracker.wait_for_exit(30s), 0) << tracker.log_tail();

    const std::string orchestrator_log = read_text_file(orchestrator.log_path());
    EXPECT_NE(orchestrator_log.find("has been silent"), std::string::npos) << orchestrator_log;

    // The tap saw readable lines: the ROUTER's traffic, envelopes in text, bulk data as sizes.
    tap.wait_for_exit(130s);
    const std::string tapped = read_text_file(tap.log_path());
    EXPECT_NE(tapped.find("recv ROUTER from 'peer_worker-"), std::string::npos) << tapped;
    EXPECT_NE(tapped.find("send ROUTER to '"), std::string::npos) << tapped;
    std::istringstream lines(tapped);
    std::string line;
    int count = 0;
    while (std::getline(lines, line)) {
        ++count;
        EXPECT_LT(line.size(), 3000u) << "a trace line carries bulk data";
        EXPECT_NE(line.find(" orchestrator TRACE "), std::string::npos) << line;
    }
    EXPECT_GT(count, 0);
}

TEST(ByHand, EveryStageListsItsEndpointsInHelp) {
    const std::vector<std::pair<std::string, std::vector<std::string>>> stages = {
        {"orchestrator", {"--control", "--torrent", "--peer", "PW_PEERS"}},
        {"tracker_svc", {"--control"}},
        {"peer_worker", {"--control", "--pieces"}},
        {"verifier", {"--control", "--pieces", "--verified"}},
        {"writer", {"--control", "--verified", "--dir"}},
    };
    for (const auto& [stage, flags] : stages) {
        std::string output;
        ASSERT_EQ(run_command({bin(stage), "--help"}, &output, 30s), 0) << stage;
        for (const auto& flag : flags) EXPECT_NE(output.find(flag), std::string::npos) << stage << " " << flag;
        for (const std::string common : {"PW_CONTROL", "--trace", "--trace-endpoint", "--metrics-port",
                                         "PW_METRICS_PORT", "--log-level", "--name"}) {
            EXPECT_NE(output.find(common), std::string::npos) << stage << " " << common;
        }
    }
}

}  // namespace
}  // namespace pw::test
