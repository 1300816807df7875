// Choosing files, their priorities and sequential order (issue 17 items 1 and 2), the way
// users do it: Debian's transmission-remote against `piecework daemon`, and `piecework
// download --select-file`, with a real opentracker and a libtorrent seeder on 127.0.0.1.
#include <filesystem>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include <gtest/gtest.h>

#include "tests/integration/harness.hpp"

namespace pw::test {
namespace {

namespace fs = std::filesystem;

constexpr auto kReadyTimeout = 120s;
constexpr auto kDoneTimeout = 240s;

// One row of `transmission-remote -t N -f`: "  0: 100% Normal Yes 1.0 MB tree/a.bin".
struct FileRow {
    int done = -1;  // percent
    std::string priority;
    std::string get;
    std::string name;
};

std::map<std::string, FileRow> parse_files(const std::string& text) {
    std::map<std::string, FileRow> rows;
    std::istringstream lines(text);
    std::string line;
    while (std::getline(lines, line)) {
        std::istringstream words(line);
        std::vector<std::string> tokens;
        for (std::string word; words >> word;) tokens.push_back(word);
        if (tokens.size() < 6 || tokens[0].empty() || tokens[0].back() != ':') continue;
        FileRow row;
        row.done = std::atoi(tokens[1].c_str());
        row.priority = tokens[2];
        row.get = tokens[3];
        row.name = tokens.back();
        rows[row.name] = row;
    }
    return rows;
}

class SelectTest : public ::testing::Test {
protected:
    void SetUp() override {
        if (::access("/usr/bin/transmission-remote", X_OK) != 0) {
            GTEST_SKIP() << "transmission-remote is missing (apt-get install transmission-cli)";
        }
        fs::create_directories(dir_ / "data");
    }

    void start_daemon() {
        daemon_.emplace(Process::start({bin("piecework"), "daemon", "--download-dir", dir_ / "downloads",
                                        "--state-dir", dir_ / "state", "--rpc-port", std::to_string(rpc_port_),
                                        "--log-level", "info"},
                                       dir_ / ("daemon-" + std::to_string(++runs_) + ".log")));
        const std::string problem = wait_for_rpc(*daemon_, rpc_port_, 30s);
        ASSERT_TRUE(problem.empty()) << problem;
    }

    std::vector<std::string> remote(std::vector<std::string> args) const {
        return transmission_remote(rpc_port_, std::move(args));
    }

    std::string tr(std::vector<std::string> args) {
        std::string output;
        const int code = run_command(remote(args), &output, 30s);
        EXPECT_EQ(code, 0) << "transmission-remote " << args.front() << ": " << output;
        return output;
    }

    std::map<std::string, FileRow> files(const std::string& id) { return parse_files(tr({"-t", id, "-f"})); }

    // Waits until `-l` shows the torrent at 100% (of what is wanted).
    bool wait_done(const std::string& id, std::chrono::seconds timeout = kDoneTimeout) {
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        while (std::chrono::steady_clock::now() < deadline) {
            std::istringstream lines(tr({"-l"}));
            for (std::string line; std::getline(lines, line);) {
                std::istringstream words(line);
                std::string first, done;
                words >> first >> done;
                if ((first == id || first == id + "*") && done == "100%") return true;
            }
            std::this_thread::sleep_for(300ms);
        }
        return false;
    }

    bool wait_file(const std::string& id, const std::string& name, std::chrono::seconds timeout = kDoneTimeout) {
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        while (std::chrono::steady_clock::now() < deadline) {
            const auto rows = files(id);
            if (rows.contains(name) && rows.at(name).done == 100) return true;
            std::this_thread::sleep_for(300ms);
        }
        return false;
    }

    std::string diagnostics() const {
        return "\n--- daemon ---\n" + (daemon_ ? daemon_->log_tail(80) : std::string{});
    }

    TempDir dir_{"pw-select-"};
    std::uint16_t rpc_port_ = free_port();
    std::optional<Process> daemon_;
    int runs_ = 0;
};

// Files 0 and 2 unwanted at the add: only file 1 on disk and the torrent done; want 2, then 0,
// and see them arrive (0's bytes of the piece it shares with 1 come from the parts file). The
// choice survives a restart of the daemon.
TEST_F(SelectTest, UnwantedFilesStayOffTheDiskUntilWanted) {
    // 32 KiB pieces: a.bin ends inside piece 30, which b.bin starts in; b.bin ends inside
    // piece 48, which c.bin starts in.
    const std::string tree = make_payload_tree(dir_ / "data", "tree",
                                               {{"a.bin", 1'000'000}, {"b.bin", 600'000}, {"c.bin", 900'000}}, 31);
    const std::uint16_t tracker_port = free_port();
    const std::string announce = "http://127.0.0.1:" + std::to_string(tracker_port) + "/announce";
    const std::string torrent = make_torrent(tree, 32 << 10, {{announce}}, dir_ / "tree.torrent");
    Tracker tracker = Tracker::start(dir_, {info_hash_hex(torrent)}, tracker_port);
    LibtorrentSeeder seeder = LibtorrentSeeder::start(torrent, dir_ / "data");
    ASSERT_TRUE(seeder.wait_ready(kReadyTimeout)) << seeder.log();

    start_daemon();
    EXPECT_NE(tr({"-a", torrent, "-G", "0,2"}).find("success"), std::string::npos);
    ASSERT_TRUE(wait_done("1")) << tr({"-l"}) << diagnostics();
    const fs::path out = fs::path(dir_ / "downloads") / "tree";
    std::string why;
    EXPECT_TRUE(same_tree(tree + "/b.bin", out / "b.bin", &why)) << why;
    EXPECT_FALSE(fs::exists(out / "a.bin"));
    EXPECT_FALSE(fs::exists(out / "c.bin"));
    auto rows = files("1");
    EXPECT_EQ(rows.at("tree/a.bin").get, "No");
    EXPECT_EQ(rows.at("tree/b.bin").get, "Yes");
    EXPECT_EQ(rows.at("tree/b.bin").done, 100);
    const std::string details = tr({"-t", "1", "-i"});
    EXPECT_NE(details.find("Percent Done: 100"), std::string::npos) << details;

    // The choice outlives the daemon.
    daemon_->terminate();
    ASSERT_EQ(daemon_->wait_for_exit(60s), 0) << diagnostics();
    start_daemon();
    rows = files("1");
    EXPECT_EQ(rows.at("tree/a.bin").get, "No");
    EXPECT_EQ(rows.at("tree/c.bin").get, "No");
    ASSERT_TRUE(wait_done("1")) << tr({"-l"}) << diagnostics();
    EXPECT_FALSE(fs::exists(out / "a.bin"));

    // Wanted later: it arrives, and the torrent is done again.
    tr({"-t", "1", "-g", "2"});
    ASSERT_TRUE(wait_file("1", "tree/c.bin")) << tr({"-t", "1", "-f"}) << diagnostics();
    EXPECT_TRUE(same_tree(tree + "/c.bin", out / "c.bin", &why)) << why;
    EXPECT_FALSE(fs::exists(out / "a.bin"));
    tr({"-t", "1", "-g", "0"});
    ASSERT_TRUE(wait_file("1", "tree/a.bin")) << tr({"-t", "1", "-f"}) << diagnostics();
    ASSERT_TRUE(wait_done("1")) << tr({"-l"}) << diagnostics();
    EXPECT_TRUE(same_tree(tree, out.string(), &why)) << why << diagnostics();
}

// A high-priority file is complete before a low-priority one is: read from the RPC's file
// progress, whatever the speed.
TEST_F(SelectTest, HighPriorityFilesComeFirst) {
    const std::string tree = make_payload_tree(dir_ / "data", "prio",
                                               {{"low.bin", 3'000'000}, {"high.bin", 1'000'000}}, 32);
    const std::uint16_t tracker_port = free_port();
    const std::string announce = "http://127.0.0.1:" + std::to_string(tracker_port) + "/announce";
    const std::string torrent = make_torrent(tree, 32 << 10, {{announce}}, dir_ / "prio.torrent");
    Tracker tracker = Tracker::start(dir_, {info_hash_hex(torrent)}, tracker_port);
    LibtorrentSeederOptions seeding;
    seeding.rate_kib = 1024;  // slow enough that the RPC sees the order
    LibtorrentSeeder seeder = LibtorrentSeeder::start(torrent, dir_ / "data", seeding);
    ASSERT_TRUE(seeder.wait_ready(kReadyTimeout)) << seeder.log();

    start_daemon();
    EXPECT_NE(tr({"-a", torrent, "--start-paused"}).find("success"), std::string::npos);
    tr({"-t", "1", "-pl", "1", "-ph", "0"});  // files are listed by name: high.bin is 0
    auto rows = files("1");
    EXPECT_EQ(rows.at("prio/low.bin").priority, "Low");
    EXPECT_EQ(rows.at("prio/high.bin").priority, "High");
    tr({"-t", "1", "-s"});
    const auto deadline = std::chrono::steady_clock::now() + kDoneTimeout;
    bool high_done = false;
    while (!high_done && std::chrono::steady_clock::now() < deadline) {
        rows = files("1");
        high_done = rows.at("prio/high.bin").done == 100;
        if (high_done) {
            EXPECT_LT(rows.at("prio/low.bin").done, 100) << tr({"-t", "1", "-f"});
        }
        std::this_thread::sleep_for(100ms);
    }
    ASSERT_TRUE(high_done) << tr({"-t", "1", "-f"}) << diagnostics();
    ASSERT_TRUE(wait_done("1")) << tr({"-l"}) << diagnostics();
    std::string why;
    EXPECT_TRUE(same_tree(tree, dir_ / "downloads/prio", &why)) << why;
}

// `piecework download --select-file 3`: exit 0 with the third file as `inspect` lists them
// (files are listed in the order the torrent has them: one, three, two), the others never made.
TEST_F(SelectTest, DownloadSelectFileFetchesOnlyThoseFiles) {
    const std::string tree = make_payload_tree(dir_ / "data", "pick",
                                               {{"one.bin", 500'000}, {"two.bin", 700'000}, {"three.bin", 400'000}}, 33);
    const std::uint16_t tracker_port = free_port();
    const std::string announce = "http://127.0.0.1:" + std::to_string(tracker_port) + "/announce";
    const std::string torrent = make_torrent(tree, 32 << 10, {{announce}}, dir_ / "pick.torrent");
    Tracker tracker = Tracker::start(dir_, {info_hash_hex(torrent)}, tracker_port);
    LibtorrentSeeder seeder = LibtorrentSeeder::start(torrent, dir_ / "data");
    ASSERT_TRUE(seeder.wait_ready(kReadyTimeout)) << seeder.log();

    std::string listing;
    ASSERT_EQ(run_command({bin("piecework"), "inspect", torrent}, &listing), 0);
    EXPECT_NE(listing.find("  3  pick/two.bin"), std::string::npos) << listing;

    const std::string out = dir_ / "out";
    auto client = Process::start({bin("piecework"), "download", torrent, "-o", out, "--select-file", "3",
                                  "--sequential", "--quiet"},
                                 dir_ / "download.log");
    const int code = client.wait_for_exit(kDoneTimeout);
    if (code == -1) client.kill();
    ASSERT_EQ(code, 0) << client.log_tail(80);
    std::string why;
    EXPECT_TRUE(same_tree(tree + "/two.bin", out + "/pick/two.bin", &why)) << why;
    EXPECT_FALSE(fs::exists(out + "/pick/one.bin"));
    EXPECT_FALSE(fs::exists(out + "/pick/three.bin"));

    std::string refused;
    EXPECT_NE(run_command({bin("piecework"), "download", torrent, "-o", out, "--select-file", "4"}, &refused), 0);
    EXPECT_NE(refused.find("there is no file 4"), std::string::npos) << refused;
}

}  // namespace
}  // namespace pw::test
