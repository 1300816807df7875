// `piecework daemon` driven the way its users drive it: Debian's transmission-remote over the
// Transmission RPC, against a real opentracker and real libtorrent seeders on 127.0.0.1.
// Torrents are added, listed, stopped, started, removed (with and without their data), many
// at once; the daemon is stopped with SIGTERM and killed with kill -9 and comes back with its
// list; and each of its stages, sent SIGTERM, leaves cleanly and comes back.
#include <signal.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
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

// One row of `transmission-remote -l`.
struct Row {
    std::string id;
    std::string done;    // "100%", "37%", "n/a"
    std::string status;  // the status words
    std::string name;
};

// Parses `-l`: the header, one row per torrent, the "Sum:" line.
std::map<std::string, Row> parse_list(const std::string& text) {
    std::map<std::string, Row> rows;
    std::istringstream lines(text);
    std::string line;
    while (std::getline(lines, line)) {
        std::istringstream words(line);
        std::vector<std::string> tokens;
        for (std::string word; words >> word;) tokens.push_back(word);
        if (tokens.size() < 9 || tokens[0] == "ID" || tokens[0] == "Sum:") continue;
        Row row;
        row.id = tokens[0];
        if (!row.id.empty() && row.id.back() == '*') row.id.pop_back();
        row.done = tokens[1];
        row.name = tokens.back();
        // "Up Down Ratio Status... Name": the status sits between the ratio and the name.
        for (std::size_t i = 0; i + 1 < tokens.size(); ++i) {
            if (tokens[i] == "Idle" || tokens[i] == "Stopped" || tokens[i] == "Seeding" ||
                tokens[i] == "Downloading" || tokens[i] == "Verifying" || tokens[i] == "Up" ||
                tokens[i] == "Will" || tokens[i] == "Queued") {
                row.status = tokens[i];
                break;
            }
        }
        rows[row.id] = row;
    }
    return rows;
}

class DaemonTest : public ::testing::Test {
protected:
    void SetUp() override {
        if (::access("/usr/bin/transmission-remote", X_OK) != 0) {
            GTEST_SKIP() << "transmission-remote is missing (apt-get install transmission-cli)";
        }
        fs::create_directories(dir_ / "data");
    }

    std::vector<std::string> daemon_argv() const {
        return {bin("piecework"), "daemon",     "--download-dir", dir_ / "downloads", "--state-dir",
                dir_ / "state",   "--rpc-port", std::to_string(rpc_port_), "--log-level", "info"};
    }

    // Starts the daemon (again) with the same command; waits until its RPC answers.
    void start_daemon() {
        daemon_.emplace(Process::start(daemon_argv(), dir_ / ("daemon-" + std::to_string(++runs_) + ".log")));
        const std::string problem = wait_for_rpc(*daemon_, rpc_port_, 30s);
        ASSERT_TRUE(problem.empty()) << problem;
    }

    std::vector<std::string> remote(std::vector<std::string> args) const {
        return transmission_remote(rpc_port_, std::move(args));
    }

    // transmission-remote's output; a failed run is a test failure.
    std::string tr(std::vector<std::string> args) {
        std::string output;
        const int code = run_command(remote(args), &output, 30s);
        EXPECT_EQ(code, 0) << "transmission-remote " << args.front() << ": " << output;
        return output;
    }

    std::map<std::string, Row> list() { return parse_list(tr({"-l"})); }

    // Waits until every listed id shows 100%.
    bool wait_done(const std::vector<std::string>& ids, std::chrono::seconds timeout = kDoneTimeout) {
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        while (std::chrono::steady_clock::now() < deadline) {
            const auto rows = list();
            bool all = true;
            for (const auto& id : ids) {
                const auto found = rows.find(id);
                all = all && found != rows.end() && found->second.done == "100%";
            }
            if (all) return true;
            std::this_thread::sleep_for(300ms);
        }
        return false;
    }

    std::string log() const {
        std::string all;
        for (int run = 1; run <= runs_; ++run) all += read_text_file(dir_ / ("daemon-" + std::to_string(run) + ".log"));
        return all;
    }
    std::string diagnostics() const { return "\n--- daemon ---\n" + (daemon_ ? daemon_->log_tail(80) : std::string{}); }

    TempDir dir_{"pw-daemon-"};
    std::uint16_t rpc_port_ = free_port();
    std::optional<Process> daemon_;
    int runs_ = 0;
};

// Issue 13's walk through the session with the tool its users already have.
TEST_F(DaemonTest, TransmissionRemoteDrivesTwoTorrentsThroughTheirLives) {
    const std::string single = make_payload(dir_ / "data", "single.bin", 3u << 20, 21);
    const std::string tree = make_payload_tree(dir_ / "data", "tree",
                                               {{"a.bin", 700'000}, {"sub/b.bin", 1'300'000}, {"sub/deeper/c.txt", 5000}}, 22);
    const std::uint16_t tracker_port = free_port();
    const std::string announce = "http://127.0.0.1:" + std::to_string(tracker_port) + "/announce";
    const std::string t1 = make_torrent(single, 64 << 10, {{announce}}, dir_ / "single.torrent");
    const std::string t2 = make_torrent(tree, 32 << 10, {{announce}}, dir_ / "tree.torrent");
    Tracker tracker = Tracker::start(dir_, {info_hash_hex(t1), info_hash_hex(t2)}, tracker_port);
    LibtorrentSeederOptions seeding;
    seeding.also = {t2};
    LibtorrentSeeder seeder = LibtorrentSeeder::start(t1, dir_ / "data", seeding);
    ASSERT_TRUE(seeder.wait_ready(kReadyTimeout)) << seeder.log();

    start_daemon();
    EXPECT_NE(tr({"-a", t1}).find("success"), std::string::npos);
    EXPECT_NE(tr({"-a", t2}).find("success"), std::string::npos);
    ASSERT_TRUE(wait_done({"1", "2"})) << tr({"-l"}) << diagnostics();
    const auto rows = list();
    EXPECT_EQ(rows.at("1").name, "single.bin");
    EXPECT_EQ(rows.at("2").name, "tree");
    std::string why;
    EXPECT_TRUE(same_tree(single, dir_ / "downloads/single.bin", &why)) << why;
    EXPECT_TRUE(same_tree(tree, dir_ / "downloads/tree", &why)) << why;

    // Stop and start again.
    tr({"-t", "1", "-S"});
    EXPECT_EQ(list().at("1").status, "Stopped");
    tr({"-t", "1", "-s"});
    const auto deadline = std::chrono::steady_clock::now() + 30s;
    while (list().at("1").status == "Stopped" && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(200ms);
    }
    EXPECT_NE(list().at("1").status, "Stopped");
    EXPECT_EQ(list().at("1").done, "100%");

    // Files, session info and stats.
    const std::string files = tr({"-t", "2", "-f"});
    for (const char* name : {"tree/a.bin", "tree/sub/b.bin", "tree/sub/deeper/c.txt"}) {
        EXPECT_NE(files.find(name), std::string::npos) << files;
    }
    EXPECT_NE(files.find("100%"), std::string::npos) << files;
    const std::string info = tr({"-si"});
    EXPECT_NE(info.find("Download directory: " + (dir_ / "downloads")), std::string::npos) << info;
    EXPECT_NE(info.find("Daemon version: piecework"), std::string::npos) << info;
    const std::string stats = tr({"-st"});
    EXPECT_NE(stats.find("CURRENT SESSION"), std::string::npos) << stats;
    EXPECT_NE(stats.find("Downloaded:"), std::string::npos) << stats;
    const std::string details = tr({"-t", "2", "-i"});
    EXPECT_NE(details.find("Name: tree"), std::string::npos) << details;
    EXPECT_NE(details.find("Percent Done: 100"), std::string::npos) << details;

    // Remove one keeping its data, the other with it.
    tr({"-t", "1", "-r"});
    EXPECT_EQ(list().count("1"), 0u);
    EXPECT_TRUE(fs::exists(dir_ / "downloads/single.bin"));
    tr({"-t", "2", "--remove-and-delete"});
    EXPECT_TRUE(list().empty());
    const auto gone_by = std::chrono::steady_clock::now() + 20s;
    while (fs::exists(dir_ / "downloads/tree") && std::chrono::steady_clock::now() < gone_by) {
        std::this_thread::sleep_for(100ms);
    }
    EXPECT_FALSE(fs::exists(dir_ / "downloads/tree")) << diagnostics();
    EXPECT_TRUE(fs::exists(dir_ / "downloads/single.bin"));
}

// What users get wrong, and what a hostile client tries: clear errors, and the daemon goes on.
TEST_F(DaemonTest, BadRequestsGetClearAnswersAndTheDaemonGoesOn) {
    start_daemon();
    // A hostile .torrent is refused with the message `inspect` gives.
    const std::string bad = std::string(PW_TEST_DATA_DIR) + "/bad_torrents/file_length_negative.torrent";
    std::string inspected;
    EXPECT_NE(run_command({bin("piecework"), "inspect", bad}, &inspected), 0);
    const std::string reason = inspected.substr(inspected.rfind(": ") + 2, inspected.find('\n') - inspected.rfind(": ") - 2);
    ASSERT_FALSE(reason.empty()) << inspected;
    std::string added;
    run_command(remote({"-a", bad}), &added);
    EXPECT_NE(added.find(reason), std::string::npos) << added << " vs " << inspected;

    // A download folder outside the allowed ones.
    const std::string payload = make_payload(dir_ / "data", "x.bin", 100'000, 5);
    const std::string torrent = make_torrent(payload, 32 << 10, {}, dir_ / "x.torrent");
    run_command(remote({"-a", torrent, "-w", "/etc"}), &added);
    EXPECT_NE(added.find("outside the folders"), std::string::npos) << added;
    run_command(remote({"-a", torrent, "-w", dir_ / "downloads/../../escape"}), &added);
    EXPECT_NE(added.find("outside the folders"), std::string::npos) << added;
    EXPECT_TRUE(list().empty());

    // An id that is not there.
    run_command(remote({"-t", "42", "-s"}), &added);
    EXPECT_NE(added.find("no torrent with id 42"), std::string::npos) << added;

    // Raw HTTP: no session id, then garbage with the right one.
    std::string reply;
    EXPECT_EQ(run_command({"curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-d", "{}",
                           "http://127.0.0.1:" + std::to_string(rpc_port_) + "/transmission/rpc"},
                          &reply),
              0);
    EXPECT_EQ(reply, "409");
    EXPECT_TRUE(daemon_->running());
    EXPECT_NE(tr({"-a", torrent}).find("success"), std::string::npos);
    EXPECT_EQ(list().size(), 1u);
}

// Five torrents downloading at once, from one libtorrent session seeding all of them.
TEST_F(DaemonTest, FiveTorrentsAtOnceComplete) {
    const std::uint16_t tracker_port = free_port();
    const std::string announce = "http://127.0.0.1:" + std::to_string(tracker_port) + "/announce";
    std::vector<std::string> payloads;
    std::vector<std::string> torrents;
    std::vector<std::string> hashes;
    for (int i = 0; i < 5; ++i) {
        const std::string name = "five-" + std::to_string(i) + ".bin";
        payloads.push_back(make_payload(dir_ / "data", name, (1u << 20) + static_cast<std::uint64_t>(i) * 77'777,
                                        static_cast<std::uint32_t>(100 + i)));
        torrents.push_back(make_torrent(payloads.back(), 32 << 10, {{announce}}, dir_ / (name + ".torrent")));
        hashes.push_back(info_hash_hex(torrents.back()));
    }
    Tracker tracker = Tracker::start(dir_, hashes, tracker_port);
    LibtorrentSeederOptions seeding;
    seeding.also.assign(torrents.begin() + 1, torrents.end());
    LibtorrentSeeder seeder = LibtorrentSeeder::start(torrents[0], dir_ / "data", seeding);
    ASSERT_TRUE(seeder.wait_ready(kReadyTimeout)) << seeder.log();

    start_daemon();
    for (const auto& torrent : torrents) EXPECT_NE(tr({"-a", torrent}).find("success"), std::string::npos);
    ASSERT_TRUE(wait_done({"1", "2", "3", "4", "5"})) << tr({"-l"}) << diagnostics();
    for (int i = 0; i < 5; ++i) {
        std::string why;
        EXPECT_TRUE(same_tree(payloads[static_cast<std::size_t>(i)],
                              dir_ / ("downloads/five-" + std::to_string(i) + ".bin"), &why)) << why;
    }
}

// The same command after SIGTERM, then after kill -9 of the whole tree, brings back the same
// list: the complete torrent is not downloaded again (its only seeder is gone by then), the
// partial one goes on from what was verified.
TEST_F(DaemonTest, RestartsKeepTheListAfterSigtermAndAfterKillNine) {
    const std::uint16_t tracker_port = free_port();
    const std::string announce = "http://127.0.0.1:" + std::to_string(tracker_port) + "/announce";
    const std::string quick = make_payload(dir_ / "data", "quick.bin", 1u << 20, 31);
    const std::string slow = make_payload(dir_ / "data", "slow.bin", 6u << 20, 32);
    const std::string tq = make_torrent(quick, 32 << 10, {{announce}}, dir_ / "quick.torrent");
    const std::string ts = make_torrent(slow, 64 << 10, {{announce}}, dir_ / "slow.torrent");
    Tracker tracker = Tracker::start(dir_, {info_hash_hex(tq), info_hash_hex(ts)}, tracker_port);
    std::optional<LibtorrentSeeder> quick_seeder = LibtorrentSeeder::start(tq, dir_ / "data");
    LibtorrentSeederOptions capped;
    capped.rate_kib = 384;  // only so that it is still downloading when the daemon stops
    LibtorrentSeeder slow_seeder = LibtorrentSeeder::start(ts, dir_ / "data", capped);
    ASSERT_TRUE(quick_seeder->wait_ready(kReadyTimeout)) << quick_seeder->log();
    ASSERT_TRUE(slow_seeder.wait_ready(kReadyTimeout)) << slow_seeder.log();

    start_daemon();
    tr({"-a", tq});
    tr({"-a", ts});
    ASSERT_TRUE(wait_done({"1"})) << tr({"-l"}) << diagnostics();
    quick_seeder.reset();  // from now on, nobody could send quick.bin again
    const std::string slow_file = dir_ / "downloads/slow.bin";
    const auto some = std::chrono::steady_clock::now() + 60s;
    while (bytes_matching(slow_file, slow, 64 << 10) < (1u << 20) && std::chrono::steady_clock::now() < some) {
        std::this_thread::sleep_for(100ms);
    }
    ASSERT_NE(list().at("2").done, "100%") << "finished before it could be interrupted";

    // SIGTERM: every stage finishes and saves; exit 0.
    daemon_->terminate();
    ASSERT_EQ(daemon_->wait_for_exit(30s), 0) << diagnostics();
    const std::uint64_t had = bytes_matching(slow_file, slow, 64 << 10);
    start_daemon();
    auto rows = list();
    ASSERT_EQ(rows.size(), 2u) << tr({"-l"});
    EXPECT_EQ(rows.at("1").name, "quick.bin");
    EXPECT_EQ(rows.at("2").name, "slow.bin");
    ASSERT_TRUE(wait_done({"1"}, 30s)) << tr({"-l"}) << diagnostics();

    // kill -9 of the whole tree, mid-download.
    const auto more = std::chrono::steady_clock::now() + 60s;
    while (bytes_matching(slow_file, slow, 64 << 10) < had + (1u << 20) && std::chrono::steady_clock::now() < more) {
        std::this_thread::sleep_for(100ms);
    }
    for (const auto& child : live_children(daemon_->pid())) ::kill(child.pid, SIGKILL);
    daemon_->kill();
    daemon_->wait_for_exit(10s);
    start_daemon();
    rows = list();
    ASSERT_EQ(rows.size(), 2u) << tr({"-l"});
    ASSERT_TRUE(wait_done({"1", "2"})) << tr({"-l"}) << diagnostics();
    std::string why;
    EXPECT_TRUE(same_tree(quick, dir_ / "downloads/quick.bin", &why)) << why;
    EXPECT_TRUE(same_tree(slow, slow_file, &why)) << why;
}

// Each stage of a running daemon, sent SIGTERM, finishes, saves and exits 0 within seconds;
// the daemon brings it back and the download completes.
TEST_F(DaemonTest, EveryStageLeavesCleanlyOnSigtermAndComesBack) {
    const std::uint16_t tracker_port = free_port();
    const std::string announce = "http://127.0.0.1:" + std::to_string(tracker_port) + "/announce";
    const std::string payload = make_payload(dir_ / "data", "payload.bin", 6u << 20, 41);
    const std::string torrent = make_torrent(payload, 64 << 10, {{announce}}, dir_ / "payload.torrent");
    Tracker tracker = Tracker::start(dir_, {info_hash_hex(torrent)}, tracker_port);
    LibtorrentSeederOptions capped;
    capped.rate_kib = 256;
    LibtorrentSeeder seeder = LibtorrentSeeder::start(torrent, dir_ / "data", capped);
    ASSERT_TRUE(seeder.wait_ready(kReadyTimeout)) << seeder.log();
    start_daemon();
    tr({"-a", torrent});

    for (const std::string stage : {"tracker_svc", "verifier", "writer", "peer_worker-1", "orchestrator"}) {
        std::vector<pid_t> pids;
        const auto found_by = std::chrono::steady_clock::now() + 30s;
        while ((pids = stage_pids(daemon_->pid(), stage)).empty() && std::chrono::steady_clock::now() < found_by) {
            std::this_thread::sleep_for(100ms);
        }
        ASSERT_EQ(pids.size(), 1u) << stage << diagnostics();
        ASSERT_EQ(::kill(pids[0], SIGTERM), 0);
        const std::string said = "piecework: " + stage + " exited (status 0)";
        const auto deadline = std::chrono::steady_clock::now() + 10s;
        while (log().find(said) == std::string::npos && std::chrono::steady_clock::now() < deadline) {
            std::this_thread::sleep_for(50ms);
        }
        EXPECT_NE(log().find(said), std::string::npos) << stage << diagnostics();
        // The RPC answers again once a new orchestrator is up (it is the one that serves it).
        const auto back_by = std::chrono::steady_clock::now() + 30s;
        std::string output;
        while (run_command(remote({"-l"}), &output, 10s) != 0 && std::chrono::steady_clock::now() < back_by) {
            std::this_thread::sleep_for(200ms);
        }
    }
    EXPECT_NE(log().find("records saved"), std::string::npos) << diagnostics();
    ASSERT_TRUE(wait_done({"1"})) << tr({"-l"}) << diagnostics();
    std::string why;
    EXPECT_TRUE(same_tree(payload, dir_ / "downloads/payload.bin", &why)) << why;
}

}  // namespace
}  // namespace pw::test
