// The image as users get it: the Dockerfile built by scripts/build-image (podman with chroot
// isolation on a debootstrapped Debian 12 base: no Docker engine, no registry), then the
// daemon run from the image's root with chroot, as the image's unprivileged user. A torrent
// added with transmission-remote completes, byte-identical. Skipped, and says why, where the
// image cannot be built (not root, no podman or debootstrap to be had, podman cannot run).
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <tuple>
#include <fstream>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "tests/integration/harness.hpp"

namespace pw::test {
namespace {

namespace fs = std::filesystem;

constexpr const char* kTag = "localhost/piecework-deploy-test:latest";

std::string trim(std::string text) {
    while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
    return text;
}

// The image's root filesystem, with /proc, /dev and the host's /tmp mounted into it for the
// test's lifetime (the daemon finds its stages through /proc/self/exe, the stages share
// piece memory through /proc/PID/fd, and the test's files live below /tmp).
class ImageRoot {
public:
    bool open(std::string& why) {
        std::string output;
        if (run_command({"podman", "image", "mount", kTag}, &output, 60s) != 0) {
            why = "podman image mount: " + output;
            return false;
        }
        root_ = trim(output);
        for (const auto& [source, target, type] : std::vector<std::tuple<std::string, std::string, std::string>>{
                 {"proc", "/proc", "proc"}, {"/dev", "/dev", ""}, {"/tmp", "/tmp", ""}}) {
            const std::string where = root_ + target;
            const int made = type.empty() ? ::mount(source.c_str(), where.c_str(), nullptr, MS_BIND | MS_REC, nullptr)
                                          : ::mount(source.c_str(), where.c_str(), type.c_str(), 0, nullptr);
            if (made != 0) {
                why = "mount " + where + ": " + std::strerror(errno);
                return false;
            }
            mounted_.push_back(where);
        }
        return true;
    }
    ~ImageRoot() {
        for (auto it = mounted_.rbegin(); it != mounted_.rend(); ++it) ::umount2(it->c_str(), MNT_DETACH);
        if (!root_.empty()) {
            std::string ignored;
            run_command({"podman", "image", "umount", kTag}, &ignored, 60s);
        }
    }
    const std::string& path() const { return root_; }

private:
    std::string root_;
    std::vector<std::string> mounted_;
};

TEST(DeployImage, TheDaemonFromTheImageCompletesADownloadAddedWithTransmissionRemote) {
    if (::geteuid() != 0) GTEST_SKIP() << "building the image needs root (debootstrap, podman)";
    std::string built;
    const int code = run_command({std::string(PW_SOURCE_DIR) + "/scripts/build-image", kTag}, &built, 3600s);
    if (code == 77) GTEST_SKIP() << trim(built.substr(built.rfind("build-image:")));
    ASSERT_EQ(code, 0) << built.substr(built.size() > 4000 ? built.size() - 4000 : 0);

    ImageRoot root;
    std::string why;
    if (!root.open(why)) GTEST_SKIP() << "the image's root cannot be entered here: " << why;

    TempDir dir("pw-deploy-");
    ::chmod(dir.path().c_str(), 0777);  // the image's user writes the downloads and the state
    fs::create_directories(dir / "data");
    const std::string payload = make_payload(dir / "data", "deployed.bin", 3u << 20, 77);
    const std::uint16_t tracker_port = free_port();
    const std::string torrent = make_torrent(
        payload, 64 << 10, {{"http://127.0.0.1:" + std::to_string(tracker_port) + "/announce"}}, dir / "deployed.torrent");
    Tracker tracker = Tracker::start(dir, {info_hash_hex(torrent)}, tracker_port);
    LibtorrentSeeder seeder = LibtorrentSeeder::start(torrent, dir / "data");
    ASSERT_TRUE(seeder.wait_ready(120s)) << seeder.log();

    const std::uint16_t rpc_port = free_port();
    Process daemon = Process::start(
        {"chroot", "--userspec=10001:10001", root.path(), "/usr/local/bin/piecework", "daemon",
         "--download-dir", dir / "downloads", "--state-dir", dir / "state", "--rpc-port",
         std::to_string(rpc_port), "--log-level", "info"},
        dir / "daemon.log", {{"HOME", dir.path()}});
    const std::string rpc = "127.0.0.1:" + std::to_string(rpc_port);
    std::string output;
    const auto up_by = std::chrono::steady_clock::now() + 60s;
    while (run_command({"transmission-remote", rpc, "-l"}, &output, 10s) != 0 && std::chrono::steady_clock::now() < up_by) {
        ASSERT_TRUE(daemon.running()) << daemon.log_tail();
        std::this_thread::sleep_for(200ms);
    }
    ASSERT_EQ(run_command({"transmission-remote", rpc, "-a", torrent}, &output), 0) << output << daemon.log_tail();
    const auto done_by = std::chrono::steady_clock::now() + 180s;
    while (std::chrono::steady_clock::now() < done_by) {
        run_command({"transmission-remote", rpc, "-l"}, &output, 10s);
        if (output.find("100%") != std::string::npos) break;
        std::this_thread::sleep_for(300ms);
    }
    EXPECT_NE(output.find("100%"), std::string::npos) << output << daemon.log_tail();
    std::string differs;
    EXPECT_TRUE(same_tree(payload, dir / "downloads/deployed.bin", &differs)) << differs;
    daemon.terminate();
    EXPECT_EQ(daemon.wait_for_exit(30s), 0) << daemon.log_tail();
}

}  // namespace
}  // namespace pw::test
