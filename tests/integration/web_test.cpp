// The daemon's web page, driven in headless Chromium as its users drive it (through
// tests/integration/web_driver.py and chromedriver), against a real opentracker and a real
// libtorrent seeder on 127.0.0.1: what it shows, what its buttons do to the session (checked
// over the RPC), a hostile torrent name, a phone's screen, and how the page is served.
// Screenshots at desktop and phone width are kept in PW_TEST_ARTIFACTS_DIR/web (the build
// folder's test-artifacts/web), for a person to look at.
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
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
constexpr auto kBrowserTimeout = 300s;
const std::string kHostileName = "<img src=x onerror=alert(1)>";

fs::path artifacts() { return fs::path(PW_TEST_ARTIFACTS_DIR) / "web"; }

// The screenshot the driver just kept: a PNG (signature and IHDR) of a real page, not a blank
// one, wider than tall on a desktop and taller than wide on a phone.
void expect_screenshot(const std::string& name, bool landscape) {
    const fs::path path = artifacts() / name;
    ASSERT_TRUE(fs::exists(path)) << path << " was not kept";
    const std::string png = read_text_file(path);
    ASSERT_GT(png.size(), 24u) << path;
    EXPECT_EQ(png.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8)) << path << " is not a PNG";
    EXPECT_EQ(png.substr(12, 4), "IHDR") << path;
    const auto be32 = [&](std::size_t at) {
        std::uint32_t value = 0;
        for (std::size_t i = 0; i < 4; ++i) value = (value << 8) | static_cast<unsigned char>(png[at + i]);
        return value;
    };
    const std::uint32_t width = be32(16), height = be32(20);
    EXPECT_GT(width, 0u) << path;
    EXPECT_GT(height, 0u) << path;
    EXPECT_EQ(width > height, landscape) << path << " is " << width << "x" << height;
    // A blank viewport compresses to a few hundred bytes; text, bars and buttons do not.
    EXPECT_GT(png.size(), 10'000u) << path << " is " << png.size() << " bytes: a blank page?";
}

class WebTest : public ::testing::Test {
protected:
    void SetUp() override {
        for (const char* tool : {"/usr/bin/chromium", "/usr/bin/chromedriver", "/usr/bin/transmission-remote",
                                 "/usr/bin/curl"}) {
            if (::access(tool, X_OK) != 0) GTEST_SKIP() << tool << " is missing (scripts/install-deps)";
        }
        fs::create_directories(dir_ / "data");
        fs::create_directories(artifacts());
        ::setenv("PW_WEB_SCREENSHOTS", artifacts().c_str(), 1);  // web_driver.py keeps them there
    }

    void start_daemon(std::vector<std::string> more = {}) {
        std::vector<std::string> argv{bin("piecework"), "daemon",     "--download-dir", dir_ / "downloads",
                                      "--state-dir",    dir_ / "state", "--rpc-port",   std::to_string(rpc_port_),
                                      "--log-level",    "info"};
        argv.insert(argv.end(), more.begin(), more.end());
        daemon_.emplace(Process::start(argv, dir_ / "daemon.log"));
        ASSERT_TRUE(wait_for_listen(rpc_port_, 30s)) << daemon_->log_tail();
    }

    std::string url() const { return "http://127.0.0.1:" + std::to_string(rpc_port_); }

    std::string remote(std::vector<std::string> args) {
        std::vector<std::string> argv{"transmission-remote", "127.0.0.1:" + std::to_string(rpc_port_)};
        argv.insert(argv.end(), args.begin(), args.end());
        std::string output;
        EXPECT_EQ(run_command(argv, &output, 30s), 0) << output;
        return output;
    }

    // Runs one scenario of web_driver.py; its steps are the failure message.
    void drive(std::vector<std::string> args) {
        std::vector<std::string> argv{"/usr/bin/python3", helper("web_driver.py"), url()};
        argv.insert(argv.end(), args.begin(), args.end());
        std::string output;
        const int code = run_command(argv, &output, kBrowserTimeout);
        EXPECT_EQ(code, 0) << output << "\n--- daemon ---\n" << (daemon_ ? daemon_->log_tail(40) : "");
    }

    // `curl -s -i` of the page: status line and headers (and the body).
    std::string curl(std::vector<std::string> args) {
        std::vector<std::string> argv{"curl", "-s", "-i", "--max-time", "10"};
        argv.insert(argv.end(), args.begin(), args.end());
        std::string output;
        EXPECT_EQ(run_command(argv, &output, 20s), 0) << output;
        return output;
    }

    TempDir dir_{"pw-web-"};
    std::uint16_t rpc_port_ = free_port();
    std::optional<Process> daemon_;
};

// The list: names as text (a name made of HTML stays text and runs nothing), progress that
// moves on its own, and a torrent's detail with its files and tracker.
TEST_F(WebTest, TheListShowsNamesAsTextAndFollowsADownloadLive) {
    const std::string hostile = make_payload(dir_ / "data", kHostileName, 300'000, 71);
    const std::string tree = make_payload_tree(dir_ / "data", "tree", {{"a.bin", 900'000}, {"sub/b.bin", 1'400'000}}, 72);
    const std::uint16_t tracker_port = free_port();
    const std::string announce = "http://127.0.0.1:" + std::to_string(tracker_port) + "/announce";
    const std::string hostile_torrent = make_torrent(hostile, 32 << 10, {}, dir_ / "hostile.torrent");
    const std::string tree_torrent = make_torrent(tree, 32 << 10, {{announce}}, dir_ / "tree.torrent");
    Tracker tracker = Tracker::start(dir_, {info_hash_hex(tree_torrent)}, tracker_port);
    LibtorrentSeederOptions slow;
    slow.rate_kib = 256;  // the page sees it move, not only arrive
    LibtorrentSeeder seeder = LibtorrentSeeder::start(tree_torrent, dir_ / "data", slow);
    ASSERT_TRUE(seeder.wait_ready(kReadyTimeout)) << seeder.log();

    start_daemon();
    remote({"-a", hostile_torrent});
    remote({"-a", tree_torrent});
    for (const char* name : {"desktop-list.png", "desktop-detail.png"}) fs::remove(artifacts() / name);
    drive({"list", "2", kHostileName, "tree", "2"});
    std::string why;
    EXPECT_TRUE(same_tree(tree, dir_ / "downloads/tree", &why)) << why;
    expect_screenshot("desktop-list.png", true);
    expect_screenshot("desktop-detail.png", true);
}

// The buttons: add by upload and by path, stop, start, remove (cancelled, then confirmed
// with the data), each checked in the session over the RPC.
TEST_F(WebTest, TorrentsAreAddedStoppedStartedAndRemovedFromThePage) {
    const std::string tree = make_payload_tree(dir_ / "data", "managed", {{"x.bin", 400'000}, {"y.bin", 200'000}}, 73);
    const std::string torrent = make_torrent(tree, 32 << 10, {}, dir_ / "managed.torrent");
    const std::string other = make_payload(dir_ / "data", "by-path.bin", 100'000, 74);
    const std::string other_torrent = make_torrent(other, 32 << 10, {}, dir_ / "by-path.torrent");
    start_daemon();
    drive({"manage", torrent, "managed"});
    EXPECT_EQ(remote({"-l"}).find("managed"), std::string::npos);
    EXPECT_FALSE(fs::exists(dir_ / "downloads/managed"));
    drive({"add-path", other_torrent, "by-path.bin"});
    EXPECT_NE(remote({"-l"}).find("by-path.bin"), std::string::npos);
}

TEST_F(WebTest, SpeedLimitsAreSetAndThePageFitsAPhone) {
    const std::string payload = make_payload(dir_ / "data", "phone.bin", 100'000, 75);
    const std::string torrent = make_torrent(payload, 32 << 10, {}, dir_ / "phone.torrent");
    start_daemon();
    remote({"-a", torrent});
    drive({"limits"});
    const std::string info = remote({"-si"});
    EXPECT_NE(info.find("500"), std::string::npos) << info;
    for (const char* name : {"phone-list.png", "phone-detail.png"}) fs::remove(artifacts() / name);
    drive({"phone"});
    expect_screenshot("phone-list.png", false);
    expect_screenshot("phone-detail.png", false);
}

// A torrent's files chosen from its detail: the session (transmission-remote -f) agrees.
TEST_F(WebTest, AFileUntickedInTheDetailIsNotWanted) {
    const std::string tree = make_payload_tree(dir_ / "data", "chosen", {{"a.bin", 300'000}, {"b.bin", 300'000}}, 76);
    const std::string torrent = make_torrent(tree, 32 << 10, {}, dir_ / "chosen.torrent");
    start_daemon();
    remote({"-a", torrent});
    drive({"wanted", "chosen", "1"});
    const std::string files = remote({"-t", "1", "-f"});
    EXPECT_NE(files.find("No"), std::string::npos) << files;
}

// Served with a policy that runs no script but the page's own, behind the RPC's credentials,
// and the RPC it drives still wants the session id (cross-site requests cannot change anything).
TEST_F(WebTest, ThePageIsServedSafely) {
    const std::string auth = dir_ / "auth";
    {
        std::ofstream(auth) << "admin:secret-words\n";
    }
    fs::permissions(auth, fs::perms::owner_read | fs::perms::owner_write, fs::perm_options::replace);
    start_daemon({"--rpc-auth", auth});
    const std::string refused = curl({url() + "/"});
    EXPECT_NE(refused.find("HTTP/1.1 401"), std::string::npos) << refused;
    EXPECT_EQ(refused.find("<html"), std::string::npos) << refused;
    for (const std::string path : {"/", "/app.js", "/style.css", "/transmission/web/"}) {
        const std::string page = curl({"-u", "admin:secret-words", url() + path});
        EXPECT_NE(page.find("HTTP/1.1 200"), std::string::npos) << path << page;
        EXPECT_NE(page.find("Content-Security-Policy: default-src 'none'; script-src 'self';"), std::string::npos)
            << path << page;
        EXPECT_EQ(page.find("unsafe-inline"), std::string::npos) << path;
        EXPECT_NE(page.find("X-Content-Type-Options: nosniff"), std::string::npos) << path;
        EXPECT_NE(page.find("frame-ancestors 'none'"), std::string::npos) << path;
    }
    // No script inside the page itself: everything it runs comes from /app.js.
    const std::string index = curl({"-u", "admin:secret-words", url() + "/"});
    EXPECT_EQ(index.find("<script>"), std::string::npos);
    EXPECT_EQ(index.find("onclick"), std::string::npos) << "no inline handlers";
    EXPECT_EQ(index.find("onload"), std::string::npos) << "no inline handlers";
    // A state-changing request without the session id, as a forged cross-site form would send.
    const std::string forged = curl({"-u", "admin:secret-words", "-H", "Content-Type: text/plain", "--data",
                                     R"({"method":"torrent-remove","arguments":{"ids":[1]}})",
                                     url() + "/transmission/rpc"});
    EXPECT_NE(forged.find("HTTP/1.1 409"), std::string::npos) << forged;
}

}  // namespace
}  // namespace pw::test
