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
}

TEST(Download, StageCommandLines) {
    DownloadOptions options;
    options.peers = {"127.0.0.1:6881", "[::1]:7000"};
    options.workers = 2;
    options.quiet = true;
    options.log_level = "debug";
    const StagePlan plan{"/t/x.torrent", "/out", "/bin-dir", true};
    const Endpoints endpoints = endpoints_in("/r");
    const auto commands = stage_commands(options, plan, endpoints);

    std::vector<std::string> names;
    for (const auto& command : commands) names.push_back(command.name);
    EXPECT_EQ(names, (std::vector<std::string>{"orchestrator", "verifier", "writer", "tracker_svc",
                                               "peer_worker-1", "peer_worker-2"}));
    for (const auto& command : commands) {
        EXPECT_TRUE(has_pair(command.args, "--control", "ipc:///r/control")) << command.name;
        EXPECT_TRUE(has_pair(command.args, "--name", command.name)) << command.name;
        EXPECT_TRUE(has_pair(command.args, "--log-level", "debug")) << command.name;
    }
    const auto& orchestrator = commands[0];
    EXPECT_EQ(orchestrator.executable, "/bin-dir/orchestrator");
    EXPECT_TRUE(has_pair(orchestrator.args, "--torrent", "/t/x.torrent"));
    EXPECT_TRUE(has_pair(orchestrator.args, "--peer", "127.0.0.1:6881"));
    EXPECT_TRUE(has_pair(orchestrator.args, "--peer", "[::1]:7000"));
    EXPECT_NE(std::find(orchestrator.args.begin(), orchestrator.args.end(), "--quiet"),
              orchestrator.args.end());
    EXPECT_TRUE(has_pair(commands[1].args, "--pieces", "ipc:///r/pieces"));
    EXPECT_TRUE(has_pair(commands[1].args, "--verified", "ipc:///r/verified"));
    EXPECT_TRUE(has_pair(commands[2].args, "--verified", "ipc:///r/verified"));
    EXPECT_TRUE(has_pair(commands[2].args, "--dir", "/out"));
    EXPECT_EQ(commands[5].executable, "/bin-dir/peer_worker");
    EXPECT_TRUE(has_pair(commands[5].args, "--pieces", "ipc:///r/pieces"));
}

TEST(Download, NoTrackerStageWithoutTrackers) {
    DownloadOptions options;
    const auto commands = stage_commands(options, StagePlan{"/t", "/o", "/b", false}, endpoints_in("/r"));
    for (const auto& command : commands) EXPECT_NE(command.name, "tracker_svc");
    EXPECT_EQ(commands.size(), 4u);
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

TEST(Supervisor, MissingExecutableShowsAs127) {
    std::ostringstream log;
    Supervisor supervisor({StageCommand{"main", "/nonexistent/stage", {}}}, "main", fast(), log);
    EXPECT_EQ(supervisor.run([] { return 0; }), 127);
}

}  // namespace
}  // namespace pw::cli
