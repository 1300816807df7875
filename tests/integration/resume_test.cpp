// Issue 4, resume: Ctrl-C and kill -9 mid-download then the same command again, files left in
// the download folder (complete, truncated, garbage), and a full disk. Every run is the real
// `piecework download` against a python3-libtorrent seeder on 127.0.0.1, checked byte for
// byte against the payload. Nothing asserts on speed; the rate cap only makes a download
// slow enough to interrupt.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <regex>
#include <thread>

#include "tests/integration/harness.hpp"

namespace pw::test {
namespace {

namespace fs = std::filesystem;

constexpr std::uint64_t kMiB = 1 << 20;
constexpr std::uint32_t kPieceBytes = 256 << 10;
constexpr auto kDownloadTimeout = 300s;
constexpr auto kReadyTimeout = 120s;

// The count from the orchestrator's "resumed: N of M pieces already on disk"; nullopt when
// the line is missing.
std::optional<std::uint32_t> resumed_pieces(const std::string& log) {
    static const std::regex line(R"(resumed: (\d+) of (\d+) pieces already on disk)");
    std::smatch match;
    if (!std::regex_search(log, match, line)) return std::nullopt;
    return static_cast<std::uint32_t>(std::stoul(match[1].str()));
}

void copy_prefix(const std::string& from, const std::string& to, std::uint64_t length) {
    fs::create_directories(fs::path(to).parent_path());
    std::ifstream in(from, std::ios::binary);
    std::ofstream out(to, std::ios::binary | std::ios::trunc);
    std::vector<char> buffer(length);
    in.read(buffer.data(), static_cast<std::streamsize>(length));
    out.write(buffer.data(), in.gcount());
}

class ResumeTest : public ::testing::Test {
protected:
    void SetUp() override {
        payload_dir_ = dir_ / "data";
        payload_ = make_payload(payload_dir_, "payload.bin", 16 * kMiB, 4);
        torrent_ = make_torrent(payload_, kPieceBytes, {}, dir_ / "t.torrent");
        pieces_ = piece_count(torrent_);
        out_ = dir_ / "out";
    }

    LibtorrentSeeder& start_seeder(std::uint32_t rate_kib = 0) {
        LibtorrentSeederOptions options;
        options.rate_kib = rate_kib;
        seeders_.push_back(LibtorrentSeeder::start(torrent_, payload_dir_, options));
        EXPECT_TRUE(seeders_.back().wait_ready(kReadyTimeout)) << seeders_.back().log();
        return seeders_.back();
    }

    std::vector<std::string> command(std::uint16_t peer_port, const std::string& out) const {
        return {bin("piecework"), "download", torrent_, "-o", out,
                "--peer", "127.0.0.1:" + std::to_string(peer_port)};
    }

    // Starts a run; its log is run-<n>.log.
    Process start(const std::vector<std::string>& argv) {
        last_log_ = dir_ / ("run-" + std::to_string(++runs_) + ".log");
        return Process::start(argv, last_log_);
    }

    // Runs to the end; returns the exit code (-1: killed at the timeout).
    int run(const std::vector<std::string>& argv, std::chrono::seconds timeout = kDownloadTimeout) {
        auto client = start(argv);
        const int code = client.wait_for_exit(timeout);
        if (code == -1) client.kill();
        return code;
    }

    std::string diagnostics() const {
        std::string text = "\n--- " + last_log_ + " ---\n" + read_text_file(last_log_);
        for (const auto& seeder : seeders_) text += "\n--- seeder ---\n" + seeder.log();
        return text;
    }

    void expect_complete(const std::string& out) {
        std::string why;
        EXPECT_TRUE(same_tree(payload_, out + "/payload.bin", &why)) << why << diagnostics();
    }

    // Waits until at least `bytes` of the download are on disk (and the run still going).
    bool wait_for_progress(Process& client, const std::string& file, std::uint64_t bytes) {
        const auto deadline = std::chrono::steady_clock::now() + kDownloadTimeout;
        while (std::chrono::steady_clock::now() < deadline) {
            if (!client.running()) return false;
            if (bytes_matching(file, payload_, kPieceBytes) >= bytes) return true;
            std::this_thread::sleep_for(100ms);
        }
        return false;
    }

    // Declared first so the processes below are gone before their folder is removed.
    TempDir dir_{"pw-resume-"};
    std::vector<LibtorrentSeeder> seeders_;
    std::string payload_dir_;
    std::string payload_;
    std::string torrent_;
    std::string out_;
    std::uint32_t pieces_ = 0;
    int runs_ = 0;
    std::string last_log_;
};

// 1. Ctrl-C (SIGINT to the front end only, as a terminal sends it): exit 130, then the same
// command resumes from what was verified and completes.
TEST_F(ResumeTest, InterruptThenSameCommandCompletes) {
    auto& seeder = start_seeder(2048);  // ~8 s for the whole payload
    const auto argv = command(seeder.port(), out_);
    {
        auto client = start(argv);
        ASSERT_TRUE(wait_for_progress(client, out_ + "/payload.bin", 4 * kMiB)) << diagnostics();
        ASSERT_EQ(::kill(client.pid(), SIGINT), 0);
        EXPECT_EQ(client.wait_for_exit(60s), 130) << diagnostics();
    }
    const std::string record = out_ + "/.piecework/" + info_hash_hex(torrent_) + ".resume";
    EXPECT_TRUE(fs::is_regular_file(record)) << diagnostics();

    ASSERT_EQ(run(argv), 0) << diagnostics();
    const auto resumed = resumed_pieces(read_text_file(last_log_));
    ASSERT_TRUE(resumed.has_value()) << diagnostics();
    // The 4 MiB seen on disk before the interrupt were synced at the Shutdown: not fetched again.
    EXPECT_GE(*resumed, (4 * kMiB) / kPieceBytes - 1) << diagnostics();
    EXPECT_LT(*resumed, pieces_);
    expect_complete(out_);
}

// 2. kill -9 of the whole tree (the front end's group; the stages die with it through
// PDEATHSIG), then the same command: the files are checked again and the download completes.
TEST_F(ResumeTest, KillNineThenSameCommandCompletes) {
    auto& seeder = start_seeder(2048);
    const auto argv = command(seeder.port(), out_);
    {
        auto client = start(argv);
        ASSERT_TRUE(wait_for_progress(client, out_ + "/payload.bin", 4 * kMiB)) << diagnostics();
        client.kill();
        EXPECT_EQ(client.wait_for_exit(30s), 128 + SIGKILL);
    }
    std::this_thread::sleep_for(1s);  // the stages' PDEATHSIG kills land
    ASSERT_EQ(run(argv), 0) << diagnostics();
    const auto resumed = resumed_pieces(read_text_file(last_log_));
    ASSERT_TRUE(resumed.has_value()) << diagnostics();
    EXPECT_GT(*resumed, 0u);
    expect_complete(out_);
}

// 3a. A complete correct copy already in the folder: done without a single peer.
TEST_F(ResumeTest, CompleteCopyFinishesWithoutDownloading) {
    fs::create_directories(out_);
    fs::copy_file(payload_, out_ + "/payload.bin");
    const std::uint16_t dead = free_port();  // nothing listens there
    ASSERT_EQ(run(command(dead, out_), 120s), 0) << diagnostics();
    EXPECT_EQ(resumed_pieces(read_text_file(last_log_)), pieces_) << diagnostics();
    expect_complete(out_);
}

// 3b. A truncated copy: its whole pieces are kept, the rest is fetched.
TEST_F(ResumeTest, TruncatedCopyIsCompleted) {
    copy_prefix(payload_, out_ + "/payload.bin", 5 * kMiB + 1000);
    auto& seeder = start_seeder();
    ASSERT_EQ(run(command(seeder.port(), out_)), 0) << diagnostics();
    EXPECT_EQ(resumed_pieces(read_text_file(last_log_)), (5 * kMiB) / kPieceBytes) << diagnostics();
    expect_complete(out_);
}

// 3c. The right size but garbage in three pieces, plus junk past the end: the good pieces are
// kept, the three repaired, the file cut to the torrent's length.
TEST_F(ResumeTest, GarbageInSomePiecesIsRepaired) {
    fs::create_directories(out_);
    fs::copy_file(payload_, out_ + "/payload.bin");
    {
        std::fstream file(out_ + "/payload.bin", std::ios::in | std::ios::out | std::ios::binary);
        for (const std::uint64_t piece : {0u, 17u, 63u}) {
            file.seekp(static_cast<std::streamoff>(piece * kPieceBytes + 100));
            file << "garbage garbage garbage";
        }
        file.seekp(0, std::ios::end);
        file << "junk past the end of the torrent";
    }
    auto& seeder = start_seeder();
    ASSERT_EQ(run(command(seeder.port(), out_)), 0) << diagnostics();
    EXPECT_EQ(resumed_pieces(read_text_file(last_log_)), pieces_ - 3) << diagnostics();
    expect_complete(out_);
}

// A tmpfs mounted for one test, unmounted however the test ends.
class SmallDisk {
public:
    static std::optional<SmallDisk> mount(const std::string& path, const std::string& size) {
        fs::create_directories(path);
        const std::string options = "size=" + size;
        if (::mount("tmpfs", path.c_str(), "tmpfs", 0, options.c_str()) != 0) return std::nullopt;
        return SmallDisk(path);
    }
    bool resize(const std::string& size) {
        const std::string options = "size=" + size;
        return ::mount("tmpfs", path_.c_str(), "tmpfs", MS_REMOUNT, options.c_str()) == 0;
    }
    SmallDisk(SmallDisk&& other) noexcept : path_(std::exchange(other.path_, {})) {}
    SmallDisk& operator=(SmallDisk&&) = delete;
    ~SmallDisk() {
        if (!path_.empty()) ::umount2(path_.c_str(), MNT_DETACH);
    }

private:
    explicit SmallDisk(std::string path) : path_(std::move(path)) {}
    std::string path_;
};

// 4. A disk smaller than the torrent: a clear error and a non-zero exit, never "done"; with
// room made, the same command completes.
TEST_F(ResumeTest, DiskFullIsAnErrorThenTheSameCommandCompletes) {
    auto disk = SmallDisk::mount(dir_ / "disk", "8m");
    if (!disk) GTEST_SKIP() << "cannot mount a tmpfs here (" << std::strerror(errno) << "); needs root";
    const std::string out = dir_ / "disk/out";
    auto& seeder = start_seeder();
    const auto argv = command(seeder.port(), out);
    const int code = run(argv);
    const std::string log = read_text_file(last_log_);
    EXPECT_NE(code, 0) << diagnostics();
    EXPECT_NE(code, -1) << "no clear end on a full disk" << diagnostics();
    EXPECT_NE(log.find("No space left on device"), std::string::npos) << diagnostics();
    EXPECT_EQ(log.find("done:"), std::string::npos) << diagnostics();
    std::string why;
    EXPECT_FALSE(same_tree(payload_, out + "/payload.bin", &why));

    ASSERT_TRUE(disk->resize("64m")) << std::strerror(errno);
    ASSERT_EQ(run(argv), 0) << diagnostics();
    const auto resumed = resumed_pieces(read_text_file(last_log_));
    ASSERT_TRUE(resumed.has_value()) << diagnostics();
    EXPECT_GT(*resumed, 0u);
    expect_complete(out);
}

}  // namespace
}  // namespace pw::test
