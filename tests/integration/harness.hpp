#pragma once
// Integration-test harness: real processes (our stages, opentracker, libtorrent and aria2
// seeders) on 127.0.0.1, each in its own process group so a test that fails, or crashes,
// leaves nothing running behind it.
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace pw::test {

using namespace std::chrono_literals;

// A private folder under /tmp, removed (recursively) on destruction, unless the environment
// has PW_KEEP_TEST_DIRS (to read the logs of a failed run).
class TempDir {
public:
    explicit TempDir(const std::string& prefix = "pw-itest-");
    ~TempDir();
    TempDir(TempDir&& other) noexcept;
    TempDir& operator=(TempDir&& other) noexcept;
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;

    const std::string& path() const { return path_; }
    // path() + "/" + relative
    std::string operator/(const std::string& relative) const { return path_ + "/" + relative; }

private:
    std::string path_;
};

// A child process leading its own process group; stdout and stderr go to a log file.
// The destructor kills its whole group and reaps it, so grandchildren (e.g. the stages
// `piecework` spawns) go too. If the test process dies instead, the child gets SIGKILL
// (PR_SET_PDEATHSIG), and a watchdog (a forked helper blocked on a pipe only the test
// process writes to) SIGKILLs the whole group: PDEATHSIG alone reaches neither the
// grandchildren nor a child that changed its credentials (opentracker drops to nobody,
// which clears PDEATHSIG).
class Process {
public:
    static Process start(std::vector<std::string> argv, std::string log_path,
                         std::vector<std::pair<std::string, std::string>> extra_env = {});

    Process() = default;
    ~Process();
    Process(Process&& other) noexcept;
    Process& operator=(Process&& other) noexcept;
    Process(const Process&) = delete;
    Process& operator=(const Process&) = delete;

    pid_t pid() const { return pid_; }
    const std::string& log_path() const { return log_path_; }
    bool running();
    // The exit code; 128 + signal number when a signal ended it; -1 on timeout (the process
    // keeps running).
    int wait_for_exit(std::chrono::milliseconds timeout);
    void terminate();  // SIGTERM to the group
    void kill();       // SIGKILL to the group
    // The last lines of the log, for failure messages.
    std::string log_tail(std::size_t lines = 40) const;

private:
    void reap_if_exited(bool block);
    void signal_group(int signal_number);
    void kill_and_reap();

    pid_t pid_ = -1;
    pid_t watchdog_pid_ = -1;
    int watchdog_fd_ = -1;  // closing it (or dying) tells the watchdog to kill the group
    std::optional<int> exit_code_;
    std::string log_path_;
};

// Runs a command to completion (output captured); returns its exit code, -1 on timeout.
int run_command(const std::vector<std::string>& argv, std::string* output,
                std::chrono::milliseconds timeout = 120s);

// A port free for both TCP and UDP on 127.0.0.1 (at the moment of the call).
std::uint16_t free_port();

// True once something accepts TCP connections on 127.0.0.1:port.
bool wait_for_listen(std::uint16_t port, std::chrono::milliseconds timeout);

// Debian's opentracker on 127.0.0.1, HTTP and UDP on one port. It serves whitelisted
// info-hashes only.
class Tracker {
public:
    // port 0: pick a free one. Pass a port when the torrents (which carry the announce URL)
    // must be made before the tracker starts.
    static Tracker start(const TempDir& dir, std::vector<std::string> info_hashes_hex,
                         std::uint16_t port = 0);

    std::string http_announce() const;
    std::string udp_announce() const;
    std::uint16_t port() const { return port_; }
    // Whitelists one more info-hash (rewrites the list and SIGHUPs opentracker, which reloads
    // it; the reload is asynchronous, so this waits a moment).
    void allow(const std::string& info_hash_hex);
    // Peers (seeders and leechers, over all torrents) opentracker knows, via /stats.
    int peer_count() const;
    bool wait_for_peers(int n, std::chrono::milliseconds timeout) const;
    std::string log() const;
    Process& process() { return process_; }

private:
    Process process_;
    std::uint16_t port_ = 0;
    std::string root_;  // opentracker's chroot
    std::vector<std::string> hashes_;
};

// A single-file HTTP GET on 127.0.0.1; returns the body, nullopt on any failure.
std::optional<std::string> http_get(std::uint16_t port, const std::string& target,
                                    std::chrono::milliseconds timeout = 2s);

// A deterministic pseudo-random file dir/name of `size` bytes; returns its path.
std::string make_payload(const std::string& dir, const std::string& name, std::uint64_t size,
                         std::uint32_t seed);
// A folder dir/name holding the given files (relative paths, folders made as needed), each
// with deterministic content; returns dir/name.
std::string make_payload_tree(const std::string& dir, const std::string& name,
                              const std::vector<std::pair<std::string, std::uint64_t>>& files,
                              std::uint32_t seed);

// A v1 .torrent for content_path via mktorrent (via libtorrent, lt_make_torrent.py, below
// 32 KiB pieces, which mktorrent 1.1 refuses). Each inner vector is one tier (BEP 12); no
// tiers makes a trackerless torrent. piece_bytes must be a power of two. Returns out_path.
std::string make_torrent(const std::string& content_path, std::uint32_t piece_bytes,
                         const std::vector<std::vector<std::string>>& tiers,
                         const std::string& out_path);
std::string info_hash_hex(const std::string& torrent_path);

// `transmission-remote 127.0.0.1:PORT ARGS...`: the RPC client users drive the daemon with.
std::vector<std::string> transmission_remote(std::uint16_t rpc_port, std::vector<std::string> args);
// Waits until the daemon's RPC answers `transmission-remote -l`; "" then, else why not (the
// daemon exited, or the timeout passed, with its last output).
std::string wait_for_rpc(Process& daemon, std::uint16_t rpc_port, std::chrono::seconds timeout);
std::uint32_t piece_count(const std::string& torrent_path);

struct LibtorrentSeederOptions {
    std::uint32_t rate_kib = 0;  // upload cap, 0 = none
    // Pieces this seeder has; nullopt = all. With a subset the script copies the payload to
    // a private folder, zeroes the other pieces, lets libtorrent check the files (so it
    // really has only the subset) and sets priority 0 on the missing pieces so it never
    // downloads them from anyone.
    std::optional<std::vector<std::uint32_t>> pieces;
    std::uint16_t port = 0;   // 0 = pick a free one
    std::string log_path;     // default: in a TempDir the seeder owns
    std::string work_dir;     // where a subset copy goes; default: in that TempDir
    // More torrents the same session seeds on the same port, from the same data_dir (whole).
    std::vector<std::string> also;
    // lt_seeder.py's LT_ENC: "forced" (RC4 only, both ways), "disabled" (no MSE), or ""
    // (libtorrent's default: either).
    std::string encryption;
    // DHT nodes (HOST:PORT on 127.0.0.1) the seeder joins a DHT through and announces to;
    // none: no DHT.
    std::vector<std::string> dht_nodes;
};

// A python3-libtorrent seeder (tests/integration/lt_seeder.py) listening on 127.0.0.1 and
// announcing to the torrent's trackers. data_dir is the folder holding the torrent's
// content (the parent of the file or folder named in the torrent).
class LibtorrentSeeder {
public:
    static LibtorrentSeeder start(const std::string& torrent, const std::string& data_dir,
                                  LibtorrentSeederOptions options = {});
    std::uint16_t port() const { return port_; }
    // Waits for the READY line (files checked, listening). False on timeout or exit.
    bool wait_ready(std::chrono::milliseconds timeout);
    std::string log() const { return process_.log_tail(60); }
    Process& process() { return process_; }

private:
    // Declared first so it outlives the process writing into it.
    std::optional<TempDir> work_;
    Process process_;
    std::uint16_t port_ = 0;
};

// aria2c seeding the torrent from data_dir (verifies the files first, -V).
class Aria2Seeder {
public:
    static Aria2Seeder start(const std::string& torrent, const std::string& data_dir,
                             std::string log_path = {}, std::vector<std::string> extra_args = {});
    std::uint16_t port() const { return port_; }
    // True once it accepts connections on its port.
    bool wait_ready(std::chrono::milliseconds timeout);
    std::string log() const { return process_.log_tail(60); }
    Process& process() { return process_; }

private:
    std::optional<TempDir> work_;  // its log; declared first so it outlives the process
    Process process_;
    std::uint16_t port_ = 0;
};

// Byte comparison of two files or two folder trees (names, types and contents). On a
// difference, *why (when given) names the first one.
bool same_tree(const std::string& a, const std::string& b, std::string* why = nullptr);

// PW_TEST_BIN_DIR + "/" + name: our built executables.
std::string bin(const std::string& name);

// A socket bound to 127.0.0.1 on a port the kernel picks (listening, for SOCK_STREAM): what
// the tests' scripted peers and fake trackers serve on. Throws when it cannot be made; the
// caller owns (and closes) fd.
struct LoopbackSocket {
    int fd = -1;
    std::uint16_t port = 0;
};
LoopbackSocket open_loopback_socket(int type, int backlog = 8);

// A live child process of `parent` and its command line, read from /proc: how a test finds
// the stages a `piecework download` started.
struct ChildProcess {
    pid_t pid = 0;
    std::vector<std::string> argv;
    // The value given after `flag` on its command line, or "" when absent.
    std::string flag_value(const std::string& flag) const;
};
std::vector<ChildProcess> live_children(pid_t parent);
// Children of `parent` started with `--name NAME`.
std::vector<pid_t> stage_pids(pid_t parent, const std::string& name);
// PW_TEST_HELPERS_DIR + "/" + name: scripts beside this harness.
std::string helper(const std::string& name);

std::string read_text_file(const std::string& path);

// Bytes of `file` that already hold `payload`'s bytes, counted in whole pieces of
// `piece_bytes`: how far a download got (the writer preallocates files, so their size and
// blocks say nothing about progress).
std::uint64_t bytes_matching(const std::string& file, const std::string& payload,
                             std::uint32_t piece_bytes);

}  // namespace pw::test
