// Three hosts on one machine (network namespaces joined by veth pairs): the orchestrator,
// tracker_svc, verifier, writer and two aria2 seeders on host A, a peer_worker on each of
// hosts B and C, all over tcp:// with CurveZMQ keys from `piecework keygen`. A worker with a
// key the deployment does not list is refused; killing one worker host's worker
// mid-download still ends in a complete download. A second torrent, added over the RPC while
// the first downloads and found through an opentracker on host A, completes too. And the other
// way round, a seed whose workers are on hosts B and C (reading the pieces from the writer on
// host A over tcp://) serves a libtorrent leecher on host A every byte.
//
// Needs root (ip netns add); skipped, and says so, where namespaces cannot be made. Every
// address lives only inside the namespaces this test makes and deletes.
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <regex>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>

#include "tests/integration/harness.hpp"

namespace pw::test {
namespace {

using namespace std::chrono_literals;

int run_ip(const std::vector<std::string>& args, std::string* output = nullptr) {
    std::vector<std::string> argv{"ip"};
    argv.insert(argv.end(), args.begin(), args.end());
    std::string ignored;
    return run_command(argv, output != nullptr ? output : &ignored, 20s);
}

// Host A is joined to B and to C by one veth pair each:
//   A 10.77.1.1/24 <-> B 10.77.1.2/24      A 10.77.2.1/24 <-> C 10.77.2.2/24
// B and C route everything through A, so each reaches both of A's addresses.
class ThreeHosts {
public:
    ThreeHosts() {
        const std::string tag = std::to_string(::getpid());
        a_ = "pwnsA" + tag;
        b_ = "pwnsB" + tag;
        c_ = "pwnsC" + tag;
    }
    ~ThreeHosts() {
        for (const auto& ns : made_) run_ip({"netns", "del", ns});
    }
    ThreeHosts(const ThreeHosts&) = delete;
    ThreeHosts& operator=(const ThreeHosts&) = delete;

    // Empty on success, else what failed.
    std::string build() {
        for (const auto* ns : {&a_, &b_, &c_}) {
            std::string output;
            if (run_ip({"netns", "add", *ns}, &output) != 0) return "ip netns add " + *ns + ": " + output;
            made_.push_back(*ns);
            if (auto error = must({"-n", *ns, "link", "set", "lo", "up"}); !error.empty()) return error;
        }
        if (auto error = join(b_, "1"); !error.empty()) return error;
        return join(c_, "2");
    }

    const std::string& a() const { return a_; }
    const std::string& b() const { return b_; }
    const std::string& c() const { return c_; }

private:
    std::string must(const std::vector<std::string>& args) {
        std::string output;
        if (run_ip(args, &output) == 0) return {};
        std::string command = "ip";
        for (const auto& arg : args) command += " " + arg;
        return command + ": " + output;
    }

    std::string join(const std::string& other, const std::string& subnet) {
        const std::string near = "pwv" + subnet + "a" + std::to_string(::getpid() % 100000);
        const std::string far = "pwv" + subnet + "b" + std::to_string(::getpid() % 100000);
        const std::string prefix = "10.77." + subnet + ".";
        for (const auto& args : std::vector<std::vector<std::string>>{
                 {"-n", a_, "link", "add", near, "type", "veth", "peer", "name", far, "netns", other},
                 {"-n", a_, "addr", "add", prefix + "1/24", "dev", near},
                 {"-n", other, "addr", "add", prefix + "2/24", "dev", far},
                 {"-n", a_, "link", "set", near, "up"},
                 {"-n", other, "link", "set", far, "up"},
                 {"-n", other, "route", "add", "default", "via", prefix + "1"}}) {
            if (auto error = must(args); !error.empty()) return error;
        }
        return {};
    }

    std::string a_, b_, c_;
    std::vector<std::string> made_;
};

std::vector<std::string> in_host(const std::string& ns, std::vector<std::string> argv) {
    std::vector<std::string> wrapped{"ip", "netns", "exec", ns};
    wrapped.insert(wrapped.end(), argv.begin(), argv.end());
    return wrapped;
}

bool wait_for_log(const Process& process, const std::string& needle, std::chrono::milliseconds limit) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < deadline) {
        if (read_text_file(process.log_path()).find(needle) != std::string::npos) return true;
        std::this_thread::sleep_for(100ms);
    }
    return false;
}

std::string first_line(const std::string& path) {
    std::ifstream in(path);
    std::string line;
    std::getline(in, line);
    return line;
}

class NetnsTest : public ::testing::Test {
protected:
    void SetUp() override {
        if (::geteuid() != 0) {
            std::printf("[  SKIPPED ] netns test: network namespaces need root (ip netns add)\n");
            GTEST_SKIP() << "network namespaces need root (ip netns add); the three-host test "
                            "did not run";
        }
        hosts_ = std::make_unique<ThreeHosts>();
        if (const std::string error = hosts_->build(); !error.empty()) {
            std::printf("[  SKIPPED ] netns test: cannot make network namespaces: %s\n", error.c_str());
            GTEST_SKIP() << "cannot make network namespaces here (" << error
                         << "); the three-host test did not run";
        }
    }

    void TearDown() override {
        processes_.clear();  // every process (and its group) before the namespaces it lives in
        hosts_.reset();
    }

    Process& start(const std::string& ns, std::vector<std::string> argv, const std::string& log) {
        processes_.push_back(std::make_unique<Process>(Process::start(in_host(ns, std::move(argv)), dir_ / log)));
        return *processes_.back();
    }

    // keys/NAME.key and keys/NAME.pub; returns the public line.
    std::string keygen(const std::string& name) {
        std::string output;
        EXPECT_EQ(run_command({bin("piecework"), "keygen", dir_ / ("keys/" + name)}, &output), 0) << output;
        return first_line(dir_ / ("keys/" + name + ".pub"));
    }

    std::vector<std::string> curve(const std::string& key_name, const std::string& allow = "keys/allow") {
        return {"--curve-key", dir_ / ("keys/" + key_name + ".key"), "--curve-allow", dir_ / allow};
    }

    TempDir dir_{"pw-netns-"};
    std::unique_ptr<ThreeHosts> hosts_;
    std::vector<std::unique_ptr<Process>> processes_;
};

TEST_F(NetnsTest, ThreeHostsWithCurveKeysSurviveAWorkerLossAndRefuseAStranger) {
    std::filesystem::create_directories(dir_ / "keys");
    std::filesystem::create_directories(dir_ / "data");
    std::string allow = "# the deployment's stages\n";
    for (const char* name : {"orchestrator", "tracker_svc", "verifier", "writer", "peer_worker"}) {
        allow += keygen(name) + "\n";
    }
    const std::string stranger = keygen("stranger");
    { std::ofstream(dir_ / "keys/allow") << allow; }
    ASSERT_GE(stranger.size(), 40u);

    // 6 MiB in 64 KiB pieces from two seeders capped at 768 KiB/s each: a few seconds, long
    // enough to lose a worker half way.
    const std::string payload = make_payload(dir_ / "data", "payload.bin", 6u << 20, 0x6e65746e);
    const std::string torrent = make_torrent(payload, 64 << 10, {}, dir_ / "payload.torrent");
    const std::vector<std::string> aria_common{
        "aria2c", "-V", "--seed-ratio=0.0", "--seed-time=600", "-d", dir_ / "data",
        "--enable-dht=false", "--enable-dht6=false", "--bt-enable-lpd=false",
        "--enable-peer-exchange=false", "--disable-ipv6=true", "--file-allocation=none",
        "--allow-overwrite=false", "--auto-file-renaming=false", "--summary-interval=0",
        "--bt-external-ip=10.77.1.1", "--max-upload-limit=768K", "--console-log-level=notice",
        "--no-conf=true"};
    for (const char* port : {"6881", "6882"}) {
        auto argv = aria_common;
        argv.push_back(std::string("--listen-port=") + port);
        argv.push_back(torrent);
        Process& seeder = start(hosts_->a(), argv, std::string("aria2-") + port + ".log");
        // Listening before the orchestrator hands it out, so no early refusal backs it off.
        ASSERT_TRUE(wait_for_log(seeder, std::string("listening on TCP port ") + port, 30s))
            << seeder.log_tail();
    }

    const std::string a = hosts_->a();
    auto with = [](std::vector<std::string> argv, const std::vector<std::string>& more) {
        argv.insert(argv.end(), more.begin(), more.end());
        return argv;
    };
    // The second torrent: announced to an opentracker on host A, seeded by a third aria2.
    const std::string payload2 = make_payload(dir_ / "data", "second.bin", 2u << 20, 0x73656364);
    const std::string torrent2 =
        make_torrent(payload2, 64 << 10, {{"http://10.77.1.1:7200/announce"}}, dir_ / "second.torrent");
    std::filesystem::create_directories(dir_ / "opentracker");
    ::chmod((dir_ / "opentracker").c_str(), 0755);  // opentracker reads it after dropping to nobody
    { std::ofstream(dir_ / "opentracker/whitelist") << info_hash_hex(torrent2) << "\n"; }
    start(a, {"opentracker", "-i", "10.77.1.1", "-p", "7200", "-P", "7200", "-d", dir_ / "opentracker", "-w",
              "whitelist"},
          "opentracker.log");
    {
        auto argv = aria_common;
        argv.push_back("--listen-port=6883");
        argv.push_back(torrent2);
        Process& seeder = start(a, argv, "aria2-6883.log");
        ASSERT_TRUE(wait_for_log(seeder, "listening on TCP port 6883", 30s)) << seeder.log_tail();
        // Announced before we ask: the next announce would be half an hour away.
        const std::string hex = info_hash_hex(torrent2);
        std::string query;
        for (std::size_t i = 0; i < hex.size(); i += 2) query += "%" + hex.substr(i, 2);
        const auto deadline = std::chrono::steady_clock::now() + 30s;
        std::string scrape;
        while (std::chrono::steady_clock::now() < deadline) {
            run_command(in_host(a, {"curl", "-s", "http://10.77.1.1:7200/scrape?info_hash=" + query}), &scrape);
            if (scrape.find("8:completei1e") != std::string::npos) break;
            std::this_thread::sleep_for(200ms);
        }
        ASSERT_NE(scrape.find("8:completei1e"), std::string::npos) << scrape;
    }

    Process& orchestrator = start(
        a,
        with({bin("orchestrator"), "--control", "tcp://0.0.0.0:7100", "--torrent", torrent,
              "--peer", "10.77.1.1:6881", "--peer", "10.77.1.1:6882", "--heartbeat-ms", "200",
              "--exit-when-done", "--rpc-port", "9191", "--quiet"},
             curve("orchestrator")),
        "orchestrator.log");
    start(a, with({bin("tracker_svc"), "--control", "tcp://127.0.0.1:7100"}, curve("tracker_svc")),
          "tracker_svc.log");
    start(a,
          with({bin("verifier"), "--control", "tcp://127.0.0.1:7100", "--pieces", "tcp://0.0.0.0:7101",
                "--verified", "tcp://127.0.0.1:7102"},
               curve("verifier")),
          "verifier.log");
    start(a,
          with({bin("writer"), "--control", "tcp://127.0.0.1:7100", "--verified",
                "tcp://127.0.0.1:7102", "--dir", dir_ / "out"},
               curve("writer")),
          "writer.log");

    // The stranger knows the servers' public keys (they are public) but its own is not listed.
    Process& intruder = start(
        hosts_->c(),
        with({bin("peer_worker"), "--name", "intruder", "--control", "tcp://10.77.2.1:7100",
              "--pieces", "tcp://10.77.2.1:7101"},
             curve("stranger")),
        "intruder.log");
    Process& worker_b = start(
        hosts_->b(),
        with({bin("peer_worker"), "--name", "worker-b", "--control", "tcp://10.77.1.1:7100",
              "--pieces", "tcp://10.77.1.1:7101"},
             curve("peer_worker")),
        "worker-b.log");
    start(hosts_->c(),
          with({bin("peer_worker"), "--name", "worker-c", "--control", "tcp://10.77.2.1:7100",
                "--pieces", "tcp://10.77.2.1:7101"},
               curve("peer_worker")),
          "worker-c.log");

    ASSERT_TRUE(wait_for_log(orchestrator, "refused key " + stranger.substr(0, 40) + " from 10.77.2.2 on control", 20s))
        << orchestrator.log_tail();
    ASSERT_TRUE(wait_for_log(orchestrator, "'worker-b' joined", 20s)) << orchestrator.log_tail();
    ASSERT_TRUE(wait_for_log(orchestrator, "'worker-c' joined", 20s)) << orchestrator.log_tail();
    std::string added;
    ASSERT_EQ(run_command(in_host(a, {"transmission-remote", "127.0.0.1:9191", "-a", torrent2}), &added), 0) << added;

    // Half way (some pieces on disk, the rest to come), host B's worker dies.
    const auto deadline = std::chrono::steady_clock::now() + 60s;
    const std::string out_file = dir_ / "out/payload.bin";
    auto written = [&] { return bytes_matching(out_file, payload, 64 << 10); };
    while (written() < (1u << 20) && std::chrono::steady_clock::now() < deadline && orchestrator.running()) {
        std::this_thread::sleep_for(100ms);
    }
    ASSERT_TRUE(orchestrator.running()) << "finished before a worker could be lost; "
                                        << orchestrator.log_tail();
    worker_b.kill();

    const int exit_code = orchestrator.wait_for_exit(120s);
    ASSERT_EQ(exit_code, 0) << orchestrator.log_tail();
    std::string why;
    EXPECT_TRUE(same_tree(payload, out_file, &why)) << why;
    EXPECT_TRUE(same_tree(payload2, dir_ / "out/second.bin", &why)) << why;
    EXPECT_NE(read_text_file(orchestrator.log_path()).find("'worker-b' has been silent"), std::string::npos)
        << orchestrator.log_tail();

    // The intruder never got in: never joined, so never held a lease, and gave up on its own.
    const std::string orchestrator_log = read_text_file(orchestrator.log_path());
    EXPECT_EQ(orchestrator_log.find("'intruder'"), std::string::npos) << orchestrator_log;
    EXPECT_NE(intruder.wait_for_exit(30s), 0) << intruder.log_tail();
    EXPECT_NE(read_text_file(intruder.log_path()).find("no answer from the orchestrator"), std::string::npos)
        << intruder.log_tail();
}

// Seeding from three hosts: the orchestrator, verifier and writer on host A over files already
// there, a peer_worker on each of B and C that reads the pieces it uploads from the writer
// over tcp:// (--reads, CURVE), and a libtorrent leecher on host A that knows only the two
// workers. Every byte is checked, and every byte came from the workers' hosts. (Which of them:
// the workers hand out the session's one peer id, and libtorrent keeps one connection per peer
// id, dropping the other as a duplicate; so it downloads from whichever it kept.)
TEST_F(NetnsTest, ASeedWhoseWorkersAreOnOtherHostsServesALibtorrentLeecher) {
    std::filesystem::create_directories(dir_ / "keys");
    std::filesystem::create_directories(dir_ / "data");
    std::string allow = "# the deployment's stages\n";
    for (const char* name : {"orchestrator", "tracker_svc", "verifier", "writer", "peer_worker"}) {
        allow += keygen(name) + "\n";
    }
    { std::ofstream(dir_ / "keys/allow") << allow; }
    const std::string payload = make_payload(dir_ / "data", "seeded.bin", 8u << 20, 0x73656564);
    const std::string torrent = make_torrent(payload, 64 << 10, {}, dir_ / "seeded.torrent");
    const std::uint32_t pieces = piece_count(torrent);

    const std::string a = hosts_->a();
    auto with = [](std::vector<std::string> argv, const std::vector<std::string>& more) {
        argv.insert(argv.end(), more.begin(), more.end());
        return argv;
    };
    // No --exit-when-done: with every piece on disk it seeds until stopped.
    Process& orchestrator = start(
        a,
        with({bin("orchestrator"), "--control", "tcp://0.0.0.0:7100", "--torrent", torrent, "--download-dir",
              dir_ / "data", "--listen-port", "6881", "--heartbeat-ms", "200", "--log-level", "info"},
             curve("orchestrator")),
        "orchestrator.log");
    start(a, with({bin("tracker_svc"), "--control", "tcp://127.0.0.1:7100"}, curve("tracker_svc")), "tracker_svc.log");
    start(a,
          with({bin("verifier"), "--control", "tcp://127.0.0.1:7100", "--pieces", "tcp://0.0.0.0:7101",
                "--verified", "tcp://127.0.0.1:7102"},
               curve("verifier")),
          "verifier.log");
    Process& writer = start(a,
                            with({bin("writer"), "--control", "tcp://127.0.0.1:7100", "--verified",
                                  "tcp://127.0.0.1:7102", "--dir", dir_ / "data", "--reads", "tcp://0.0.0.0:7103",
                                  "--log-level", "info"},
                                 curve("writer")),
                            "writer.log");
    std::map<std::string, Process*> workers;
    for (const auto& [ns, name, near] : {std::tuple{hosts_->b(), "worker-b", "10.77.1.1"},
                                         std::tuple{hosts_->c(), "worker-c", "10.77.2.1"}}) {
        const std::string server = std::string("tcp://") + near;
        workers[name] = &start(ns,
                               with({bin("peer_worker"), "--name", name, "--control", server + ":7100", "--pieces",
                                     server + ":7101", "--reads", server + ":7103", "--log-level", "info"},
                                    curve("peer_worker")),
                               std::string(name) + ".log");
    }
    ASSERT_TRUE(wait_for_log(orchestrator, "'worker-b' joined", 30s)) << orchestrator.log_tail();
    ASSERT_TRUE(wait_for_log(orchestrator, "'worker-c' joined", 30s)) << orchestrator.log_tail();
    const std::string checked = "resumed: " + std::to_string(pieces) + " of " + std::to_string(pieces);
    ASSERT_TRUE(wait_for_log(orchestrator, checked, 60s)) << orchestrator.log_tail() << writer.log_tail();

    // Each worker listens on 6881 on its own host; the leecher is told those two and no other.
    std::filesystem::create_directories(dir_ / "lt");
    Process& leecher = start(a,
                             {"/usr/bin/python3", helper("lt_leecher.py"), torrent, dir_ / "lt", "--listen", "0.0.0.0",
                              "--peer", "10.77.1.2:6881", "--peer", "10.77.2.2:6881", "--timeout", "200"},
                             "leecher.log");
    ASSERT_EQ(leecher.wait_for_exit(240s), 0)
        << leecher.log_tail() << "\n--- orchestrator ---\n" << orchestrator.log_tail() << "\n--- worker-b ---\n"
        << workers["worker-b"]->log_tail() << "\n--- worker-c ---\n" << workers["worker-c"]->log_tail();
    std::string why;
    EXPECT_TRUE(same_tree(payload, dir_ / "lt/seeded.bin", &why)) << why;
    // Only the workers' hosts uploaded: every byte came over tcp from the writer on host A.
    const std::string log = read_text_file(leecher.log_path());
    std::uint64_t from_workers = 0;
    const std::regex line("FROM ([0-9.]+):([0-9]+) ([0-9]+)");
    for (auto it = std::sregex_iterator(log.begin(), log.end(), line); it != std::sregex_iterator(); ++it) {
        const std::string host = (*it)[1].str();
        EXPECT_TRUE(host == "10.77.1.2" || host == "10.77.2.2") << host << " served bytes\n" << log;
        EXPECT_EQ((*it)[2].str(), "6881") << log;
        from_workers += std::stoull((*it)[3].str());
    }
    // Counted from libtorrent's peer list, polled (its counters lag up to a second): some,
    // not all; the only peers it knows are the two workers.
    EXPECT_GT(from_workers, 0u) << log;
    EXPECT_TRUE(orchestrator.running()) << orchestrator.log_tail();
}

}  // namespace
}  // namespace pw::test
