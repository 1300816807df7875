#include <algorithm>
#include <sstream>

#include <gtest/gtest.h>

#include "cli/download.hpp"

namespace pw::cli {
namespace {

using namespace std::chrono_literals;

bool has_pair(const std::vector<std::string>& args, const std::string& flag, const std::string& value) {
    for (std::size_t i = 0; i + 1 < args.size(); ++i) {
        if (args[i] == flag && args[i + 1] == value) return true;
    }
    return false;
}

TEST(Download, EndpointsLiveInTheRuntimeFolder) {
    const Endpoints endpoints = endpoints_in("/run/user/1/piecework-abc");
    EXPECT_EQ(endpoints.control, "ipc:///run/user/1/piecework-abc/control");
    EXPECT_EQ(endpoints.pieces, "ipc:///run/user/1/piecework-abc/pieces");
    EXPECT_EQ(endpoints.verified, "ipc:///run/user/1/piecework-abc/verified");
    EXPECT_EQ(endpoints.reads, "ipc:///run/user/1/piecework-abc/reads");
}

TEST(Download, StageCommandLines) {
    DownloadOptions options;
    options.peers = {"127.0.0.1:6881", "[::1]:7000"};
    options.workers = 2;
    options.quiet = true;
    options.log_level = "debug";
    options.discovery.dht_bootstrap = {"10.0.0.9:6881"};
    options.discovery.dht_port = 7000;
    const StagePlan plan{"/t/x.torrent", "/out", "/bin-dir", true, {}};
    const Endpoints endpoints = endpoints_in("/r");
    const auto commands = stage_commands(options, plan, endpoints);

    std::vector<std::string> names;
    for (const auto& command : commands) names.push_back(command.name);
    EXPECT_EQ(names, (std::vector<std::string>{"orchestrator", "verifier", "writer", "tracker_svc", "dht_svc",
                                               "peer_worker-1", "peer_worker-2"}));
    EXPECT_TRUE(has_pair(commands[4].args, "--dht-bootstrap", "10.0.0.9:6881"));
    EXPECT_TRUE(has_pair(commands[4].args, "--dht-port", "7000"));
    for (const auto& command : commands) {
        EXPECT_TRUE(has_pair(command.args, "--control", "ipc:///r/control")) << command.name;
        EXPECT_TRUE(has_pair(command.args, "--name", command.name)) << command.name;
        EXPECT_TRUE(has_pair(command.args, "--log-level", "debug")) << command.name;
    }
    const auto& orchestrator = commands[0];
    EXPECT_EQ(orchestrator.executable, "/bin-dir/orchestrator");
    EXPECT_TRUE(has_pair(orchestrator.args, "--torrent", "/t/x.torrent"));
    EXPECT_TRUE(has_pair(orchestrator.args, "--download-dir", "/out"));
    EXPECT_NE(std::find(orchestrator.args.begin(), orchestrator.args.end(), "--exit-when-done"),
              orchestrator.args.end());
    EXPECT_TRUE(has_pair(orchestrator.args, "--peer", "127.0.0.1:6881"));
    EXPECT_TRUE(has_pair(orchestrator.args, "--peer", "[::1]:7000"));
    EXPECT_NE(std::find(orchestrator.args.begin(), orchestrator.args.end(), "--quiet"),
              orchestrator.args.end());
    EXPECT_TRUE(has_pair(commands[1].args, "--pieces", "ipc:///r/pieces"));
    EXPECT_TRUE(has_pair(commands[1].args, "--verified", "ipc:///r/verified"));
    EXPECT_TRUE(has_pair(commands[2].args, "--verified", "ipc:///r/verified"));
    EXPECT_TRUE(has_pair(commands[2].args, "--dir", "/out"));
    EXPECT_EQ(commands[6].executable, "/bin-dir/peer_worker");
    EXPECT_TRUE(has_pair(commands[6].args, "--pieces", "ipc:///r/pieces"));
    EXPECT_TRUE(has_pair(commands[6].args, "--reads", "ipc:///r/reads"));
    EXPECT_TRUE(has_pair(commands[2].args, "--reads", "ipc:///r/reads"));
}

TEST(Download, NoTrackerStageWithoutTrackersOrLocalDiscovery) {
    DownloadOptions options;
    options.discovery.no_lsd = true;
    options.discovery.no_dht = true;
    const auto commands = stage_commands(options, StagePlan{"/t", "/o", "/b", false, {}}, endpoints_in("/r"));
    for (const auto& command : commands) EXPECT_NE(command.name, "tracker_svc");
    EXPECT_EQ(commands.size(), 4u);
    // Local discovery alone runs the tracker stage, which announces on the LAN.
    options.discovery.no_lsd = false;
    options.discovery.lsd_interface = "10.1.2.3";
    const auto with_lsd = stage_commands(options, StagePlan{"/t", "/o", "/b", false, {}}, endpoints_in("/r"));
    const auto tracker = std::find_if(with_lsd.begin(), with_lsd.end(),
                                      [](const StageCommand& command) { return command.name == "tracker_svc"; });
    ASSERT_NE(tracker, with_lsd.end());
    EXPECT_TRUE(has_pair(tracker->args, "--lsd-interface", "10.1.2.3"));
}

TEST(Daemon, StageCommandLinesKeepTheSessionInTheStateFolder) {
    DaemonOptions options;
    options.download_dir = "/data/downloads";
    options.state_dir = "/data/state";
    options.allowed_dirs = {"/media/more"};
    options.rpc_port = 9999;
    options.workers = 3;
    const auto commands = daemon_stage_commands(options, "/b", endpoints_in("/r"));
    std::vector<std::string> names;
    for (const auto& command : commands) names.push_back(command.name);
    EXPECT_EQ(names, (std::vector<std::string>{"orchestrator", "verifier", "writer", "tracker_svc", "dht_svc",
                                               "peer_worker-1", "peer_worker-2", "peer_worker-3"}));
    // The DHT's routing table lives in the session's state folder.
    EXPECT_TRUE(has_pair(commands[4].args, "--state-dir", "/data/state"));
    const auto& orchestrator = commands[0];
    EXPECT_TRUE(has_pair(orchestrator.args, "--state-dir", "/data/state"));
    EXPECT_TRUE(has_pair(orchestrator.args, "--download-dir", "/data/downloads"));
    EXPECT_TRUE(has_pair(orchestrator.args, "--rpc-bind", "127.0.0.1"));
    EXPECT_TRUE(has_pair(orchestrator.args, "--rpc-port", "9999"));
    EXPECT_TRUE(has_pair(orchestrator.args, "--allow-dir", "/media/more"));
    EXPECT_EQ(std::find(orchestrator.args.begin(), orchestrator.args.end(), "--exit-when-done"),
              orchestrator.args.end());
    const auto& writer = commands[2];
    EXPECT_TRUE(has_pair(writer.args, "--dir", "/data/downloads"));
    EXPECT_TRUE(has_pair(writer.args, "--state-dir", "/data/state/resume"));
    EXPECT_TRUE(has_pair(writer.args, "--allow-dir", "/media/more"));
}

StageCommand shell(const std::string& name, const std::string& script) {
    return StageCommand{name, "/bin/sh", {"-c", script}};
}

SupervisorOptions fast() {
    SupervisorOptions options;
    options.max_restarts = 3;
    options.restart_backoff = 20ms;
    options.shutdown_grace = 500ms;
    options.tick = 10ms;
    return options;
}

TEST(Supervisor, ReturnsTheMainStagesExitCode) {
    std::ostringstream log;
    Supervisor supervisor({shell("main", "exit 7")}, "main", fast(), log);
    EXPECT_EQ(supervisor.run([] { return 0; }), 7);
}

TEST(Supervisor, RestartsADyingStageUpToTheLimit) {
    std::ostringstream log;
    Supervisor supervisor({shell("main", "sleep 2; exit 0"), shell("flaky", "exit 3")}, "main",
                          fast(), log);
    EXPECT_EQ(supervisor.run([] { return 0; }), 0);
    EXPECT_EQ(supervisor.restarts("flaky"), 3u);
    EXPECT_NE(log.str().find("flaky exited (status 3); restarting it (1/3)"), std::string::npos)
        << log.str();
    EXPECT_NE(log.str().find("not restarting it"), std::string::npos) << log.str();
}

TEST(Supervisor, DoesNotRestartACleanExit) {
    std::ostringstream log;
    Supervisor supervisor({shell("main", "sleep 0.5; exit 0"), shell("done", "exit 0")}, "main",
                          fast(), log);
    EXPECT_EQ(supervisor.run([] { return 0; }), 0);
    EXPECT_EQ(supervisor.restarts("done"), 0u);
    EXPECT_EQ(log.str(), "");
}

TEST(Supervisor, KillsStagesThatOutliveTheGracePeriod) {
    std::ostringstream log;
    Supervisor supervisor({shell("main", "sleep 0.2; exit 0"), shell("stubborn", "exec sleep 60")},
                          "main", fast(), log);
    const auto started = std::chrono::steady_clock::now();
    EXPECT_EQ(supervisor.run([] { return 0; }), 0);
    EXPECT_EQ(supervisor.restarts("stubborn"), 0u);
    // Not a speed assertion: only that we did not wait for the 60 s sleep.
    EXPECT_LT(std::chrono::steady_clock::now() - started, 30s);
}

TEST(Supervisor, ForwardsAnInterruptToTheMainStage) {
    std::ostringstream log;
    Supervisor supervisor({shell("main", "trap 'exit 130' TERM; while true; do sleep 0.05; done")},
                          "main", fast(), log);
    int calls = 0;
    EXPECT_EQ(supervisor.run([&] { return ++calls > 20 ? 1 : 0; }), 130);
}

// The daemon keeps every stage up: a stage that left cleanly (SIGTERM) and a main stage that
// died come back; an interrupt then ends everything with the main stage's code.
TEST(Supervisor, KeepRunningRestartsEveryStageUntilInterrupted) {
    std::ostringstream log;
    SupervisorOptions options = fast();
    options.keep_running = true;
    options.max_restarts = 100;
    Supervisor supervisor({shell("main", "trap 'exit 0' TERM; sleep 0.3; exit 9"), shell("leaver", "exit 0")},
                          "main", options, log);
    int calls = 0;
    // ~1.5 s of ticks, then an interrupt.
    EXPECT_EQ(supervisor.run([&] { return ++calls > 150 ? 1 : 0; }), 0);
    EXPECT_GE(supervisor.restarts("main"), 2u);
    EXPECT_GE(supervisor.restarts("leaver"), 2u);
    EXPECT_NE(log.str().find("main exited (status 9); restarting it"), std::string::npos) << log.str();
}

// A stage that dies now and then after running a good while is never given up on.
TEST(Supervisor, RestartsInARowAreCountedAfreshOnceAStageWasStable) {
    std::ostringstream log;
    SupervisorOptions options = fast();
    options.max_restarts = 1;
    options.stable_after = 50ms;
    Supervisor supervisor({shell("main", "sleep 1.2; exit 0"), shell("flaky", "sleep 0.1; exit 3")}, "main",
                          options, log);
    EXPECT_EQ(supervisor.run([] { return 0; }), 0);
    EXPECT_GE(supervisor.restarts("flaky"), 3u);
    EXPECT_EQ(log.str().find("not restarting it"), std::string::npos) << log.str();
}

TEST(Supervisor, MissingExecutableShowsAs127) {
    std::ostringstream log;
    Supervisor supervisor({StageCommand{"main", "/nonexistent/stage", {}}}, "main", fast(), log);
    EXPECT_EQ(supervisor.run([] { return 0; }), 127);
}

}  // namespace
}  // namespace pw::cli
