// Local service discovery (BEP 14) between two machines of one LAN, made of two network
// namespaces joined by a veth pair: a trackerless torrent seeded by `piecework seed` on one is
// downloaded by `piecework download` on the other, given no peer: they find each other only
// by their multicast announces. Needs root (ip netns add); skipped, and says so, elsewhere.
#include <unistd.h>

#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "tests/integration/harness.hpp"

namespace pw::test {
namespace {

namespace fs = std::filesystem;

int run_ip(const std::vector<std::string>& args, std::string* output) {
    std::vector<std::string> argv{"ip"};
    argv.insert(argv.end(), args.begin(), args.end());
    return run_command(argv, output, 20s);
}

// Hosts A (10.78.0.1) and B (10.78.0.2) on one veth link: a LAN of two.
class TwoHosts {
public:
    TwoHosts() : a_("pwlsdA" + std::to_string(::getpid())), b_("pwlsdB" + std::to_string(::getpid())) {}
    ~TwoHosts() {
        std::string ignored;
        for (const auto& ns : made_) run_ip({"netns", "del", ns}, &ignored);
    }
    TwoHosts(const TwoHosts&) = delete;
    TwoHosts& operator=(const TwoHosts&) = delete;

    std::string build() {
        std::string output;
        for (const auto* ns : {&a_, &b_}) {
            if (run_ip({"netns", "add", *ns}, &output) != 0) return "ip netns add: " + output;
            made_.push_back(*ns);
        }
        const std::string tag = std::to_string(::getpid() % 100000);
        for (const auto& args : std::vector<std::vector<std::string>>{
                 {"-n", a_, "link", "set", "lo", "up"},
                 {"-n", b_, "link", "set", "lo", "up"},
                 {"-n", a_, "link", "add", "pwla" + tag, "type", "veth", "peer", "name", "pwlb" + tag, "netns", b_},
                 {"-n", a_, "addr", "add", "10.78.0.1/24", "dev", "pwla" + tag},
                 {"-n", b_, "addr", "add", "10.78.0.2/24", "dev", "pwlb" + tag},
                 {"-n", a_, "link", "set", "pwla" + tag, "up"},
                 {"-n", b_, "link", "set", "pwlb" + tag, "up"}}) {
            if (run_ip(args, &output) != 0) return "ip " + args[2] + " " + args[3] + ": " + output;
        }
        return {};
    }
    std::vector<std::string> in(const std::string& ns, std::vector<std::string> argv) const {
        std::vector<std::string> wrapped{"ip", "netns", "exec", ns};
        wrapped.insert(wrapped.end(), argv.begin(), argv.end());
        return wrapped;
    }
    const std::string& a() const { return a_; }
    const std::string& b() const { return b_; }

private:
    std::string a_, b_;
    std::vector<std::string> made_;
};

TEST(LsdTest, TwoMachinesOfOneLanFindEachOtherWithoutATracker) {
    if (::geteuid() != 0) GTEST_SKIP() << "network namespaces need root (ip netns add)";
    TwoHosts hosts;
    if (const std::string error = hosts.build(); !error.empty()) {
        GTEST_SKIP() << "cannot make network namespaces here (" << error << ")";
    }
    TempDir dir("pw-lsd-");
    fs::create_directories(dir / "data");
    const std::string payload = make_payload(dir / "data", "lan.bin", 3u << 20, 171);
    const std::string torrent = make_torrent(payload, 64 << 10, {}, dir / "lan.torrent");  // no tracker
    const std::vector<std::pair<std::string, std::string>> lsd_on{{"PW_NO_LSD", "0"}};
    Process seed = Process::start(hosts.in(hosts.a(), {bin("piecework"), "seed", torrent, dir / "data", "--listen-port",
                                                       "16881", "--lsd-interface", "10.78.0.1", "--log-level", "info"}),
                                  dir / "seed.log", lsd_on);
    Process download = Process::start(
        hosts.in(hosts.b(), {bin("piecework"), "download", torrent, "-o", dir / "out", "--listen-port", "16882",
                             "--lsd-interface", "10.78.0.2", "--log-level", "info"}),
        dir / "download.log", lsd_on);
    const int code = download.wait_for_exit(180s);
    ASSERT_EQ(code, 0) << download.log_tail(60) << "\n--- seed ---\n" << seed.log_tail(40);
    std::string why;
    EXPECT_TRUE(same_tree(payload, dir / "out/lan.bin", &why)) << why;
    EXPECT_NE(read_text_file(download.log_path()).find("found on the local network"), std::string::npos)
        << download.log_tail(60);
    seed.terminate();
    EXPECT_EQ(seed.wait_for_exit(30s), 0) << seed.log_tail();
}

}  // namespace
}  // namespace pw::test
