#include "tests/integration/harness.hpp"

#include "core/metainfo.hpp"
#include "core/sha1.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace pw::test {

namespace {
// Nothing a test starts may reach past 127.0.0.1 or the namespaces it made: local service
// discovery multicasts to the LAN and the DHT bootstraps from routers on the internet, so both
// are off in every process the tests start unless a test turns one on for itself (extra_env
// PW_NO_LSD=0 in its namespaces, PW_NO_DHT=0 with --dht-bootstrap on 127.0.0.1). A
// developer's own value wins.
[[maybe_unused]] const bool kQuietOnTheNetwork = [] {
    ::setenv("PW_NO_LSD", "1", 0);
    ::setenv("PW_NO_DHT", "1", 0);
    return true;
}();
}  // namespace
namespace fs = std::filesystem;

namespace {

[[noreturn]] void fail(const std::string& what) {
    throw std::runtime_error(what + ": " + std::strerror(errno));
}

class FileDescriptor {
public:
    explicit FileDescriptor(int fd) : fd_(fd) {}
    ~FileDescriptor() {
        if (fd_ >= 0) ::close(fd_);
    }
    FileDescriptor(const FileDescriptor&) = delete;
    FileDescriptor& operator=(const FileDescriptor&) = delete;
    int get() const { return fd_; }

private:
    int fd_;
};

sockaddr_in loopback(std::uint16_t port) {
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(port);
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return address;
}

bool bind_loopback(int fd, std::uint16_t port) {
    const sockaddr_in address = loopback(port);
    return ::bind(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0;
}

// splitmix64: tiny, deterministic, and good enough that no two pieces collide.
class PayloadGenerator {
public:
    explicit PayloadGenerator(std::uint64_t seed) : state_(seed * 0x9E3779B97F4A7C15ull + 1) {}
    std::uint64_t next() {
        std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        return z ^ (z >> 31);
    }
    void fill(char* data, std::size_t size) {
        std::size_t i = 0;
        while (i < size) {
            const std::uint64_t word = next();
            const std::size_t n = std::min<std::size_t>(8, size - i);
            std::memcpy(data + i, &word, n);
            i += n;
        }
    }

private:
    std::uint64_t state_;
};

void write_payload_file(const std::string& path, std::uint64_t size, std::uint64_t seed) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    if (!out) throw std::runtime_error("cannot create " + path);
    PayloadGenerator generator(seed);
    std::vector<char> chunk(1 << 20);
    std::uint64_t left = size;
    while (left > 0) {
        const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(left, chunk.size()));
        generator.fill(chunk.data(), n);
        out.write(chunk.data(), static_cast<std::streamsize>(n));
        left -= n;
    }
    if (!out.flush()) throw std::runtime_error("cannot write " + path);
}

}  // namespace

// ---------------------------------------------------------------------------------------
// TempDir

TempDir::TempDir(const std::string& prefix) {
    std::string pattern = "/tmp/" + prefix + "XXXXXX";
    if (::mkdtemp(pattern.data()) == nullptr) fail("mkdtemp " + pattern);
    path_ = pattern;
}

TempDir::~TempDir() {
    if (path_.empty()) return;
    if (std::getenv("PW_KEEP_TEST_DIRS") != nullptr) {
        std::fprintf(stderr, "kept %s\n", path_.c_str());
        return;
    }
    std::error_code ignored;
    fs::remove_all(path_, ignored);
}

TempDir::TempDir(TempDir&& other) noexcept : path_(std::exchange(other.path_, {})) {}

TempDir& TempDir::operator=(TempDir&& other) noexcept {
    if (this != &other) {
        if (!path_.empty()) {
            std::error_code ignored;
            fs::remove_all(path_, ignored);
        }
        path_ = std::exchange(other.path_, {});
    }
    return *this;
}

// ---------------------------------------------------------------------------------------
// Process

namespace {
// Waits for end-of-file on read_end (the test process closed the pipe or died), then kills
// the group. Only async-signal-safe calls after fork.
pid_t start_watchdog(pid_t group, int read_end) {
    const pid_t pid = ::fork();
    if (pid < 0) fail("fork");
    if (pid != 0) return pid;
    // Ctrl-C reaches the test's whole foreground group; the watchdog must outlive the test.
    struct sigaction ignore {};
    ignore.sa_handler = SIG_IGN;
    for (const int signal_number : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGPIPE})
        ::sigaction(signal_number, &ignore, nullptr);
    // Inherited write ends of other watchdogs' pipes would delay their end-of-file.
    for (int fd = 0; fd < 4096; ++fd)
        if (fd != read_end) ::close(fd);
    char byte;
    while (true) {
        const ssize_t n = ::read(read_end, &byte, 1);
        if (n == 0 || (n < 0 && errno != EINTR)) break;
    }
    ::killpg(group, SIGKILL);
    ::_exit(0);
}
}  // namespace

Process Process::start(std::vector<std::string> argv, std::string log_path,
                       std::vector<std::pair<std::string, std::string>> extra_env) {
    if (argv.empty()) throw std::invalid_argument("Process::start: empty argv");
    const int log_fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (log_fd < 0) fail("open " + log_path);
    FileDescriptor log(log_fd);

    // Everything the child needs is prepared before fork: only async-signal-safe calls after.
    std::vector<char*> args;
    for (auto& arg : argv) args.push_back(arg.data());
    args.push_back(nullptr);
    std::vector<std::string> env_strings;
    for (char** entry = environ; *entry != nullptr; ++entry) {
        const std::string_view text(*entry);
        const auto name = text.substr(0, text.find('='));
        const bool overridden = std::any_of(extra_env.begin(), extra_env.end(),
                                            [&](const auto& kv) { return kv.first == name; });
        if (!overridden) env_strings.emplace_back(text);
    }
    for (const auto& [name, value] : extra_env) env_strings.push_back(name + "=" + value);
    std::vector<char*> env;
    for (auto& entry : env_strings) env.push_back(entry.data());
    env.push_back(nullptr);
    const pid_t parent = ::getpid();
    int watchdog_pipe[2];
    if (::pipe2(watchdog_pipe, O_CLOEXEC) != 0) fail("pipe2");

    const pid_t pid = ::fork();
    if (pid < 0) fail("fork");
    if (pid == 0) {
        ::setpgid(0, 0);
        ::prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (::getppid() != parent) ::_exit(127);  // the test died before prctl took effect
        const int null_fd = ::open("/dev/null", O_RDONLY);
        if (null_fd >= 0) ::dup2(null_fd, 0);
        ::dup2(log.get(), 1);
        ::dup2(log.get(), 2);
        ::execvpe(args[0], args.data(), env.data());
        const char message[] = "harness: exec failed\n";
        [[maybe_unused]] const auto ignored = ::write(2, message, sizeof message - 1);
        ::_exit(127);
    }
    // Also from the parent, so the group exists before anyone signals it.
    ::setpgid(pid, pid);
    Process process;
    process.pid_ = pid;
    process.log_path_ = std::move(log_path);
    process.watchdog_fd_ = watchdog_pipe[1];
    process.watchdog_pid_ = start_watchdog(pid, watchdog_pipe[0]);
    ::close(watchdog_pipe[0]);
    return process;
}

Process::~Process() { kill_and_reap(); }

void Process::kill_and_reap() {
    if (pid_ <= 0) return;
    // The whole group, even when the leader has exited: its children may still be there.
    signal_group(SIGKILL);
    reap_if_exited(true);
    if (watchdog_fd_ >= 0) ::close(std::exchange(watchdog_fd_, -1));
    if (watchdog_pid_ > 0) {
        while (::waitpid(watchdog_pid_, nullptr, 0) < 0 && errno == EINTR) {
        }
        watchdog_pid_ = -1;
    }
    pid_ = -1;
}

Process::Process(Process&& other) noexcept
    : pid_(std::exchange(other.pid_, -1)),
      watchdog_pid_(std::exchange(other.watchdog_pid_, -1)),
      watchdog_fd_(std::exchange(other.watchdog_fd_, -1)),
      exit_code_(std::exchange(other.exit_code_, std::nullopt)),
      log_path_(std::move(other.log_path_)) {}

Process& Process::operator=(Process&& other) noexcept {
    if (this != &other) {
        kill_and_reap();
        pid_ = std::exchange(other.pid_, -1);
        watchdog_pid_ = std::exchange(other.watchdog_pid_, -1);
        watchdog_fd_ = std::exchange(other.watchdog_fd_, -1);
        exit_code_ = std::exchange(other.exit_code_, std::nullopt);
        log_path_ = std::move(other.log_path_);
    }
    return *this;
}

void Process::reap_if_exited(bool block) {
    if (pid_ <= 0 || exit_code_) return;
    int status = 0;
    pid_t result;
    do {
        result = ::waitpid(pid_, &status, block ? 0 : WNOHANG);
    } while (result < 0 && errno == EINTR);
    if (result == pid_) {
        if (WIFEXITED(status)) exit_code_ = WEXITSTATUS(status);
        else if (WIFSIGNALED(status)) exit_code_ = 128 + WTERMSIG(status);
        else exit_code_ = -1;
    } else if (result < 0) {
        exit_code_ = -1;  // not our child any more (ECHILD): treat as gone
    }
}

bool Process::running() {
    reap_if_exited(false);
    return pid_ > 0 && !exit_code_;
}

int Process::wait_for_exit(std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (true) {
        reap_if_exited(false);
        if (exit_code_) return *exit_code_;
        if (pid_ <= 0 || std::chrono::steady_clock::now() >= deadline) return -1;
        std::this_thread::sleep_for(10ms);
    }
}

void Process::signal_group(int signal_number) {
    if (pid_ <= 0) return;
    ::killpg(pid_, signal_number);
}

void Process::terminate() { signal_group(SIGTERM); }
void Process::kill() { signal_group(SIGKILL); }

std::string Process::log_tail(std::size_t lines) const {
    std::ifstream in(log_path_);
    std::deque<std::string> last;
    std::string line;
    while (std::getline(in, line)) {
        last.push_back(line);
        if (last.size() > lines) last.pop_front();
    }
    std::string text;
    for (const auto& kept : last) text += kept + "\n";
    return text;
}

int run_command(const std::vector<std::string>& argv, std::string* output,
                std::chrono::milliseconds timeout) {
    TempDir dir("pw-cmd-");
    const std::string log = dir / "output";
    auto process = Process::start(argv, log);
    const int code = process.wait_for_exit(timeout);
    if (output != nullptr) *output = read_text_file(log);
    return code;
}

// ---------------------------------------------------------------------------------------
// Ports

std::uint16_t free_port() {
    for (int attempt = 0; attempt < 200; ++attempt) {
        FileDescriptor tcp(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
        if (tcp.get() < 0) fail("socket");
        if (!bind_loopback(tcp.get(), 0)) fail("bind");
        sockaddr_in bound{};
        socklen_t length = sizeof bound;
        if (::getsockname(tcp.get(), reinterpret_cast<sockaddr*>(&bound), &length) != 0)
            fail("getsockname");
        const std::uint16_t port = ntohs(bound.sin_port);
        FileDescriptor udp(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
        if (udp.get() < 0) fail("socket");
        if (bind_loopback(udp.get(), port)) return port;
    }
    throw std::runtime_error("free_port: no port free for both TCP and UDP");
}

bool wait_for_listen(std::uint16_t port, std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
        FileDescriptor fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
        const sockaddr_in address = loopback(port);
        if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0)
            return true;
        std::this_thread::sleep_for(50ms);
    }
    return false;
}

std::optional<std::string> http_get(std::uint16_t port, const std::string& target,
                                    std::chrono::milliseconds timeout) {
    FileDescriptor fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (fd.get() < 0) return std::nullopt;
    timeval tv{};
    tv.tv_sec = static_cast<time_t>(timeout.count() / 1000);
    tv.tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000);
    ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    const sockaddr_in address = loopback(port);
    if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0)
        return std::nullopt;
    const std::string request =
        "GET " + target + " HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if (::send(fd.get(), request.data(), request.size(), MSG_NOSIGNAL) !=
        static_cast<ssize_t>(request.size()))
        return std::nullopt;
    std::string response;
    char buffer[4096];
    while (response.size() < (1u << 20)) {
        const ssize_t n = ::recv(fd.get(), buffer, sizeof buffer, 0);
        if (n < 0) return std::nullopt;
        if (n == 0) break;
        response.append(buffer, static_cast<std::size_t>(n));
    }
    if (response.rfind("HTTP/1.", 0) != 0 || response.find(" 200") == std::string::npos)
        return std::nullopt;
    const auto body = response.find("\r\n\r\n");
    if (body == std::string::npos) return std::nullopt;
    return response.substr(body + 4);
}

// ---------------------------------------------------------------------------------------
// Tracker

namespace {
void write_whitelist(const std::string& root, const std::vector<std::string>& hashes) {
    const std::string path = root + "/whitelist";
    {
        std::ofstream out(path, std::ios::trunc);
        for (const auto& hash : hashes) out << hash << "\n";
        if (!out.flush()) throw std::runtime_error("cannot write " + path);
    }
    // opentracker reads it after dropping to user nobody.
    ::chmod(path.c_str(), 0644);
}
}  // namespace

Tracker Tracker::start(const TempDir& dir, std::vector<std::string> info_hashes_hex,
                       std::uint16_t port) {
    Tracker tracker;
    tracker.port_ = port != 0 ? port : free_port();
    tracker.root_ = dir / ("opentracker-" + std::to_string(tracker.port_));
    fs::create_directories(tracker.root_);
    // opentracker chroots here and drops to nobody, who must still reach the whitelist.
    ::chmod(tracker.root_.c_str(), 0755);
    tracker.hashes_ = std::move(info_hashes_hex);
    write_whitelist(tracker.root_, tracker.hashes_);
    const std::string port_text = std::to_string(tracker.port_);
    tracker.process_ = Process::start(
        {"opentracker", "-i", "127.0.0.1", "-p", port_text, "-P", port_text, "-A", "127.0.0.1",
         "-d", tracker.root_, "-w", "whitelist"},
        dir / ("opentracker-" + port_text + ".log"));
    const auto deadline = std::chrono::steady_clock::now() + 15s;
    while (std::chrono::steady_clock::now() < deadline) {
        if (tracker.peer_count() >= 0) return tracker;
        if (!tracker.process_.running()) break;
        std::this_thread::sleep_for(50ms);
    }
    throw std::runtime_error("opentracker did not start on port " + port_text + ":\n" +
                             tracker.log());
}

std::string Tracker::http_announce() const {
    return "http://127.0.0.1:" + std::to_string(port_) + "/announce";
}

std::string Tracker::udp_announce() const {
    return "udp://127.0.0.1:" + std::to_string(port_) + "/announce";
}

void Tracker::allow(const std::string& info_hash_hex) {
    hashes_.push_back(info_hash_hex);
    write_whitelist(root_, hashes_);
    ::kill(process_.pid(), SIGHUP);
    // The reload runs on opentracker's own thread; there is no way to observe it.
    std::this_thread::sleep_for(300ms);
}

int Tracker::peer_count() const {
    const auto body = http_get(port_, "/stats?mode=peer");
    if (!body) return -1;
    const std::string first_line = body->substr(0, body->find('\n'));
    try {
        return std::stoi(first_line);
    } catch (const std::exception&) {
        return -1;
    }
}

bool Tracker::wait_for_peers(int n, std::chrono::milliseconds timeout) const {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
        if (peer_count() >= n) return true;
        std::this_thread::sleep_for(100ms);
    }
    return false;
}

std::string Tracker::log() const { return process_.log_tail(60); }

// ---------------------------------------------------------------------------------------
// Payloads and torrents

std::string make_payload(const std::string& dir, const std::string& name, std::uint64_t size,
                         std::uint32_t seed) {
    const std::string path = dir + "/" + name;
    fs::create_directories(fs::path(path).parent_path());
    write_payload_file(path, size, seed);
    return path;
}

std::string make_payload_tree(const std::string& dir, const std::string& name,
                              const std::vector<std::pair<std::string, std::uint64_t>>& files,
                              std::uint32_t seed) {
    const std::string root = dir + "/" + name;
    fs::create_directories(root);
    std::uint64_t index = 0;
    for (const auto& [relative, size] : files) {
        const std::string path = root + "/" + relative;
        fs::create_directories(fs::path(path).parent_path());
        write_payload_file(path, size, (std::uint64_t{seed} << 20) + index++);
    }
    return root;
}

std::string make_torrent(const std::string& content_path, std::uint32_t piece_bytes,
                         const std::vector<std::vector<std::string>>& tiers,
                         const std::string& out_path) {
    if (piece_bytes == 0 || (piece_bytes & (piece_bytes - 1)) != 0)
        throw std::invalid_argument("make_torrent: piece size must be a power of two");
    int log2 = 0;
    while ((1u << log2) < piece_bytes) ++log2;
    // mktorrent 1.1 takes 2^15 bytes and up; libtorrent makes the smaller ones.
    const bool use_mktorrent = log2 >= 15;
    std::vector<std::string> argv;
    if (use_mktorrent)
        argv = {"mktorrent", "-l", std::to_string(log2), "-o", out_path};
    else
        argv = {"/usr/bin/python3", helper("lt_make_torrent.py"), content_path,
                std::to_string(piece_bytes), out_path};
    for (const auto& tier : tiers) {
        std::string urls;
        for (const auto& url : tier) urls += (urls.empty() ? "" : ",") + url;
        argv.push_back(use_mktorrent ? "-a" : "--tier");
        argv.push_back(urls);
    }
    if (use_mktorrent) argv.push_back(content_path);
    std::error_code ignored;
    fs::remove(out_path, ignored);  // mktorrent refuses to overwrite
    std::string output;
    if (run_command(argv, &output) != 0)
        throw std::runtime_error("mktorrent failed for " + content_path + ":\n" + output);
    return out_path;
}

namespace {
pw::Torrent load_torrent(const std::string& torrent_path) {
    auto torrent = pw::read_torrent_file(torrent_path);
    if (!torrent) throw std::runtime_error("cannot read " + torrent_path + ": " + torrent.error().describe());
    return std::move(torrent).value();
}
}  // namespace

std::vector<std::string> transmission_remote(std::uint16_t rpc_port, std::vector<std::string> args) {
    std::vector<std::string> argv{"transmission-remote", "127.0.0.1:" + std::to_string(rpc_port)};
    argv.insert(argv.end(), args.begin(), args.end());
    return argv;
}

std::string wait_for_rpc(Process& daemon, std::uint16_t rpc_port, std::chrono::seconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    std::string output;
    while (std::chrono::steady_clock::now() < deadline) {
        if (run_command(transmission_remote(rpc_port, {"-l"}), &output, std::chrono::seconds(10)) == 0) return {};
        if (!daemon.running()) return "the daemon exited:\n" + daemon.log_tail();
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return "the RPC never answered: " + output + daemon.log_tail();
}

std::string info_hash_hex(const std::string& torrent_path) {
    return pw::to_hex(load_torrent(torrent_path).info_hash());
}

std::uint32_t piece_count(const std::string& torrent_path) {
    return load_torrent(torrent_path).piece_count();
}

// ---------------------------------------------------------------------------------------
// Seeders

LibtorrentSeeder LibtorrentSeeder::start(const std::string& torrent, const std::string& data_dir,
                                         LibtorrentSeederOptions options) {
    LibtorrentSeeder seeder;
    seeder.work_.emplace("pw-lt-seeder-");
    const std::uint16_t port = options.port != 0 ? options.port : free_port();
    std::vector<std::string> argv = {"/usr/bin/python3", helper("lt_seeder.py"), torrent,
                                     data_dir,           "--port",               std::to_string(port),
                                     "--rate-kib",       std::to_string(options.rate_kib)};
    if (options.pieces) {
        std::string list;
        for (const auto piece : *options.pieces) {
            if (!list.empty()) list += ',';
            list += std::to_string(piece);
        }
        const std::string pieces_file = *seeder.work_ / "pieces";
        std::ofstream(pieces_file) << list << "\n";
        argv.insert(argv.end(), {"--pieces-file", pieces_file, "--work-dir",
                                 options.work_dir.empty() ? *seeder.work_ / "data" : options.work_dir});
    }
    for (const auto& more : options.also) argv.insert(argv.end(), {"--also", more});
    for (const auto& node : options.dht_nodes) argv.insert(argv.end(), {"--dht-node", node});
    const std::string log =
        options.log_path.empty() ? *seeder.work_ / "lt_seeder.log" : options.log_path;
    std::vector<std::pair<std::string, std::string>> env;
    if (!options.encryption.empty()) env.emplace_back("LT_ENC", options.encryption);
    seeder.process_ = Process::start(argv, log, env);
    seeder.port_ = port;
    return seeder;
}

bool LibtorrentSeeder::wait_ready(std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
        const std::string text = read_text_file(process_.log_path());
        const auto ready = text.find("READY ");
        if (ready != std::string::npos && text.find('\n', ready) != std::string::npos) {
            std::istringstream line(text.substr(ready + 6));
            unsigned port = 0;
            if (line >> port && port > 0 && port < 65536) port_ = static_cast<std::uint16_t>(port);
            return true;
        }
        if (!process_.running()) return false;
        std::this_thread::sleep_for(50ms);
    }
    return false;
}

Aria2Seeder Aria2Seeder::start(const std::string& torrent, const std::string& data_dir,
                               std::string log_path, std::vector<std::string> extra_args) {
    Aria2Seeder seeder;
    seeder.work_.emplace("pw-aria2-seeder-");
    seeder.port_ = free_port();
    if (log_path.empty()) log_path = *seeder.work_ / "aria2.log";
    std::vector<std::string> argv = {
        "aria2c", "-V", "--seed-ratio=0.0", "--seed-time=600", "-d", data_dir,
        "--listen-port=" + std::to_string(seeder.port_), "--enable-dht=false",
        "--enable-dht6=false", "--bt-enable-lpd=false", "--enable-peer-exchange=false",
        "--disable-ipv6=true", "--file-allocation=none", "--allow-overwrite=false",
        "--auto-file-renaming=false", "--bt-external-ip=127.0.0.1", "--summary-interval=0",
        "--console-log-level=notice", "--no-conf=true"};
    argv.insert(argv.end(), extra_args.begin(), extra_args.end());
    argv.push_back(torrent);
    seeder.process_ = Process::start(argv, log_path);
    return seeder;
}

bool Aria2Seeder::wait_ready(std::chrono::milliseconds timeout) {
    return wait_for_listen(port_, timeout);
}

// ---------------------------------------------------------------------------------------
// Comparison and paths

namespace {
bool same_file(const std::string& a, const std::string& b, std::string* why) {
    const auto size_a = fs::file_size(a);
    const auto size_b = fs::file_size(b);
    if (size_a != size_b) {
        if (why) *why = a + " has " + std::to_string(size_a) + " bytes, " + b + " has " +
                        std::to_string(size_b);
        return false;
    }
    std::ifstream in_a(a, std::ios::binary), in_b(b, std::ios::binary);
    if (!in_a || !in_b) {
        if (why) *why = "cannot open " + (in_a ? b : a);
        return false;
    }
    std::vector<char> buffer_a(1 << 20), buffer_b(1 << 20);
    std::uint64_t offset = 0;
    while (offset < size_a) {
        in_a.read(buffer_a.data(), static_cast<std::streamsize>(buffer_a.size()));
        in_b.read(buffer_b.data(), static_cast<std::streamsize>(buffer_b.size()));
        const auto n = static_cast<std::size_t>(in_a.gcount());
        if (n == 0 || static_cast<std::size_t>(in_b.gcount()) != n) {
            if (why) *why = "read error comparing " + a + " and " + b;
            return false;
        }
        if (std::memcmp(buffer_a.data(), buffer_b.data(), n) != 0) {
            const auto mismatch = std::mismatch(buffer_a.begin(), buffer_a.begin() + static_cast<std::ptrdiff_t>(n),
                                                buffer_b.begin());
            const auto at = offset + static_cast<std::uint64_t>(mismatch.first - buffer_a.begin());
            if (why) *why = a + " and " + b + " differ at byte " + std::to_string(at);
            return false;
        }
        offset += n;
    }
    return true;
}

std::vector<std::string> sorted_names(const std::string& dir) {
    std::vector<std::string> names;
    for (const auto& entry : fs::directory_iterator(dir)) names.push_back(entry.path().filename());
    std::sort(names.begin(), names.end());
    return names;
}
}  // namespace

bool same_tree(const std::string& a, const std::string& b, std::string* why) {
    std::error_code error;
    const auto status_a = fs::symlink_status(a, error);
    const auto status_b = fs::symlink_status(b, error);
    if (!fs::exists(status_a) || !fs::exists(status_b)) {
        if (why) *why = (fs::exists(status_a) ? b : a) + " does not exist";
        return false;
    }
    if (fs::is_regular_file(status_a) && fs::is_regular_file(status_b)) return same_file(a, b, why);
    if (fs::is_directory(status_a) && fs::is_directory(status_b)) {
        const auto names_a = sorted_names(a);
        const auto names_b = sorted_names(b);
        if (names_a != names_b) {
            std::vector<std::string> only_a, only_b;
            std::set_difference(names_a.begin(), names_a.end(), names_b.begin(), names_b.end(),
                                std::back_inserter(only_a));
            std::set_difference(names_b.begin(), names_b.end(), names_a.begin(), names_a.end(),
                                std::back_inserter(only_b));
            if (why) {
                *why = "folders " + a + " and " + b + " differ:";
                for (const auto& name : only_a) *why += " only in first: " + name + ";";
                for (const auto& name : only_b) *why += " only in second: " + name + ";";
            }
            return false;
        }
        for (const auto& name : names_a)
            if (!same_tree(a + "/" + name, b + "/" + name, why)) return false;
        return true;
    }
    if (why) *why = a + " and " + b + " are not both regular files or both folders";
    return false;
}

std::string bin(const std::string& name) { return std::string(PW_TEST_BIN_DIR) + "/" + name; }

std::string helper(const std::string& name) {
    return std::string(PW_TEST_HELPERS_DIR) + "/" + name;
}

std::string read_text_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
}

LoopbackSocket open_loopback_socket(int type, int backlog) {
    LoopbackSocket result;
    result.fd = ::socket(AF_INET, type | SOCK_CLOEXEC, 0);
    sockaddr_in address = loopback(0);
    socklen_t length = sizeof address;
    auto* raw = reinterpret_cast<sockaddr*>(&address);
    if (result.fd < 0 || ::bind(result.fd, raw, length) != 0 ||
        (type == SOCK_STREAM && ::listen(result.fd, backlog) != 0) ||
        ::getsockname(result.fd, raw, &length) != 0) {
        const int error = errno;
        if (result.fd >= 0) ::close(result.fd);
        throw std::runtime_error(std::string("cannot open a socket on 127.0.0.1: ") +
                                 std::strerror(error));
    }
    result.port = ntohs(address.sin_port);
    return result;
}

std::string ChildProcess::flag_value(const std::string& flag) const {
    for (std::size_t i = 0; i + 1 < argv.size(); ++i) {
        if (argv[i] == flag) return argv[i + 1];
    }
    return {};
}

std::vector<ChildProcess> live_children(pid_t parent) {
    std::vector<ChildProcess> found;
    for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
        const std::string pid_text = entry.path().filename().string();
        if (pid_text.find_first_not_of("0123456789") != std::string::npos) continue;
        std::ifstream stat_file(entry.path() / "stat");
        const std::string stat((std::istreambuf_iterator<char>(stat_file)), {});
        // The command name in parentheses may itself hold spaces and ')': skip past the last.
        const auto close = stat.rfind(')');
        if (close == std::string::npos || close + 2 > stat.size()) continue;
        std::istringstream rest(stat.substr(close + 2));
        char state = 0;
        pid_t ppid = 0;
        rest >> state >> ppid;
        if (ppid != parent || state == 'Z') continue;
        std::ifstream cmdline_file(entry.path() / "cmdline");
        const std::string cmdline((std::istreambuf_iterator<char>(cmdline_file)), {});
        ChildProcess child{static_cast<pid_t>(std::stol(pid_text)), {}};
        for (std::size_t at = 0; at < cmdline.size();) {
            const auto end = cmdline.find('\0', at);
            child.argv.push_back(cmdline.substr(at, end - at));
            at = end == std::string::npos ? cmdline.size() : end + 1;
        }
        found.push_back(std::move(child));
    }
    return found;
}

std::vector<pid_t> stage_pids(pid_t parent, const std::string& name) {
    std::vector<pid_t> pids;
    for (const auto& child : live_children(parent)) {
        if (child.flag_value("--name") == name) pids.push_back(child.pid);
    }
    return pids;
}

std::uint64_t bytes_matching(const std::string& file, const std::string& payload,
                             std::uint32_t piece_bytes) {
    const std::string have = read_text_file(file);
    const std::string want = read_text_file(payload);
    std::uint64_t matching = 0;
    for (std::size_t at = 0; at < have.size() && at < want.size(); at += piece_bytes) {
        if (have.compare(at, piece_bytes, want, at, piece_bytes) == 0) {
            matching += std::min<std::size_t>(piece_bytes, want.size() - at);
        }
    }
    return matching;
}

}  // namespace pw::test
