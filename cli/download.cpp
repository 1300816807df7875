#include "cli/download.hpp"

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <stdexcept>

#include <poll.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/magnet.hpp"
#include "core/metainfo.hpp"

namespace pw::cli {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

Endpoints endpoints_in(const std::string& runtime_dir) {
    return Endpoints{"ipc://" + runtime_dir + "/control", "ipc://" + runtime_dir + "/pieces",
                     "ipc://" + runtime_dir + "/verified", "ipc://" + runtime_dir + "/reads"};
}

std::vector<StageCommand> session_stage_commands(const SessionStages& stages, const Endpoints& endpoints) {
    const auto exe = [&](const char* name) { return (fs::path(stages.bin_dir) / name).string(); };
    const auto common = [&](const std::string& name) {
        return std::vector<std::string>{"--control", endpoints.control, "--name", name,
                                        "--log-level", stages.log_level};
    };
    std::vector<StageCommand> commands;

    StageCommand orchestrator{"orchestrator", exe("orchestrator"), common("orchestrator")};
    orchestrator.args.insert(orchestrator.args.end(), stages.orchestrator_args.begin(),
                             stages.orchestrator_args.end());
    commands.push_back(std::move(orchestrator));

    StageCommand verifier{"verifier", exe("verifier"), common("verifier")};
    verifier.args.insert(verifier.args.end(),
                         {"--pieces", endpoints.pieces, "--verified", endpoints.verified});
    commands.push_back(std::move(verifier));

    StageCommand writer{"writer", exe("writer"), common("writer")};
    writer.args.insert(writer.args.end(), {"--verified", endpoints.verified, "--reads", endpoints.reads});
    writer.args.insert(writer.args.end(), stages.writer_args.begin(), stages.writer_args.end());
    commands.push_back(std::move(writer));

    if (stages.with_tracker || !stages.discovery.no_lsd) {
        StageCommand tracker{"tracker_svc", exe("tracker_svc"), common("tracker_svc")};
        if (stages.discovery.no_lsd) tracker.args.push_back("--no-lsd");
        if (!stages.discovery.lsd_interface.empty()) {
            tracker.args.insert(tracker.args.end(), {"--lsd-interface", stages.discovery.lsd_interface});
        }
        commands.push_back(std::move(tracker));
    }

    if (!stages.discovery.no_dht) {
        StageCommand dht{"dht_svc", exe("dht_svc"), common("dht_svc")};
        dht.args.insert(dht.args.end(), {"--dht-port", std::to_string(stages.discovery.dht_port)});
        for (const auto& node : stages.discovery.dht_bootstrap) dht.args.insert(dht.args.end(), {"--dht-bootstrap", node});
        if (!stages.discovery.dht_state_dir.empty()) {
            dht.args.insert(dht.args.end(), {"--state-dir", stages.discovery.dht_state_dir});
        }
        commands.push_back(std::move(dht));
    }

    for (unsigned i = 1; i <= stages.workers; ++i) {
        const std::string name = "peer_worker-" + std::to_string(i);
        StageCommand worker{name, exe("peer_worker"), common(name)};
        worker.args.insert(worker.args.end(), {"--pieces", endpoints.pieces, "--reads", endpoints.reads});
        commands.push_back(std::move(worker));
    }
    return commands;
}

std::vector<StageCommand> stage_commands(const DownloadOptions& options, const StagePlan& plan,
                                         const Endpoints& endpoints) {
    SessionStages stages;
    stages.bin_dir = plan.bin_dir;
    stages.log_level = options.log_level;
    stages.workers = options.workers;
    stages.with_tracker = plan.with_tracker;
    stages.discovery = options.discovery;
    stages.orchestrator_args = {plan.magnet.empty() ? "--torrent" : "--magnet",
                                plan.magnet.empty() ? plan.torrent_path : plan.magnet,
                                "--download-dir", plan.output_dir,
                                "--listen-port", std::to_string(options.listen_port),
                                "--encryption", options.encryption};
    // `seed` runs until interrupted; `download` ends once done (and done seeding, when asked).
    if (!options.seed_only) stages.orchestrator_args.push_back("--exit-when-done");
    if (options.seed_ratio) {
        stages.orchestrator_args.insert(stages.orchestrator_args.end(), {"--seed-ratio", std::to_string(*options.seed_ratio)});
    }
    if (options.seed_time_minutes) {
        stages.orchestrator_args.insert(stages.orchestrator_args.end(),
                                        {"--seed-time", std::to_string(*options.seed_time_minutes)});
    }
    for (const auto& [flag, value] : {std::pair{"--max-upload-rate", &options.max_upload_rate},
                                      std::pair{"--max-download-rate", &options.max_download_rate}}) {
        if (!value->empty()) stages.orchestrator_args.insert(stages.orchestrator_args.end(), {flag, *value});
    }
    for (const auto& peer : options.peers) {
        stages.orchestrator_args.insert(stages.orchestrator_args.end(), {"--peer", peer});
    }
    if (options.quiet) stages.orchestrator_args.push_back("--quiet");
    if (!options.select_files.empty()) {
        stages.orchestrator_args.insert(stages.orchestrator_args.end(), {"--select-file", options.select_files});
    }
    if (options.sequential) stages.orchestrator_args.push_back("--sequential");
    stages.writer_args = {"--dir", plan.output_dir};
    if (!options.state_dir.empty()) {
        stages.writer_args.insert(stages.writer_args.end(),
                                  {"--state-dir", fs::absolute(options.state_dir).string()});
    }
    return session_stage_commands(stages, endpoints);
}

std::vector<StageCommand> daemon_stage_commands(const DaemonOptions& options, const std::string& bin_dir,
                                                const Endpoints& endpoints) {
    const auto absolute = [](const std::string& path) {
        return fs::absolute(path).lexically_normal().string();
    };
    const std::string download_dir = absolute(options.download_dir);
    const std::string state_dir = absolute(options.state_dir);
    SessionStages stages;
    stages.bin_dir = bin_dir;
    stages.log_level = options.log_level;
    stages.workers = options.workers;
    stages.orchestrator_args = {"--state-dir", state_dir,
                                "--download-dir", download_dir,
                                "--rpc-bind", options.rpc_bind,
                                "--rpc-port", std::to_string(options.rpc_port),
                                "--listen-port", std::to_string(options.listen_port),
                                "--max-peers", std::to_string(options.max_peers),
                                "--encryption", options.encryption};
    if (!options.rpc_auth.empty()) {
        stages.orchestrator_args.insert(stages.orchestrator_args.end(), {"--rpc-auth", absolute(options.rpc_auth)});
    }
    for (const auto& [flag, value] : {std::pair{"--max-upload-rate", &options.max_upload_rate},
                                      std::pair{"--max-download-rate", &options.max_download_rate}}) {
        if (!value->empty()) stages.orchestrator_args.insert(stages.orchestrator_args.end(), {flag, *value});
    }
    stages.discovery = options.discovery;
    if (stages.discovery.dht_state_dir.empty()) stages.discovery.dht_state_dir = state_dir;
    stages.writer_args = {"--dir", download_dir, "--state-dir", state_dir + "/resume"};
    for (const auto& dir : options.allowed_dirs) {
        stages.orchestrator_args.insert(stages.orchestrator_args.end(), {"--allow-dir", absolute(dir)});
        stages.writer_args.insert(stages.writer_args.end(), {"--allow-dir", absolute(dir)});
    }
    return session_stage_commands(stages, endpoints);
}

pid_t ChildProcess::spawn(const StageCommand& command) {
    // Built before fork: the child only calls async-signal-safe functions.
    std::vector<std::string> strings;
    strings.push_back(command.executable);
    strings.insert(strings.end(), command.args.begin(), command.args.end());
    std::vector<char*> argv;
    for (auto& s : strings) argv.push_back(s.data());
    argv.push_back(nullptr);
    const pid_t parent = ::getpid();

    const pid_t pid = ::fork();
    if (pid < 0) throw std::runtime_error(std::string("fork failed: ") + std::strerror(errno));
    if (pid == 0) {
        ::setpgid(0, 0);
        ::prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (::getppid() != parent) ::_exit(126);  // the front end died before prctl
        sigset_t none;
        sigemptyset(&none);
        ::sigprocmask(SIG_SETMASK, &none, nullptr);
        ::signal(SIGINT, SIG_DFL);
        ::signal(SIGTERM, SIG_DFL);
        ::execv(argv[0], argv.data());
        ::_exit(127);
    }
    // Also set from the parent, so the group exists before we might signal it.
    ::setpgid(pid, pid);
    return pid;
}

int exit_code_of(int status) {
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    return 1;
}

Supervisor::Supervisor(std::vector<StageCommand> commands, std::string main_stage,
                       SupervisorOptions options, std::ostream& log)
    : main_stage_(std::move(main_stage)), options_(options), log_(log) {
    for (auto& command : commands) {
        Child child;
        child.command = std::move(command);
        children_.push_back(std::move(child));
    }
}

Supervisor::~Supervisor() { kill_all(); }

unsigned Supervisor::restarts(const std::string& stage) const {
    for (const auto& child : children_) {
        if (child.command.name == stage) return child.total_restarts;
    }
    return 0;
}

void Supervisor::kill_all() {
    for (auto& child : children_) {
        if (child.pid <= 0) continue;
        ::kill(-child.pid, SIGKILL);
        ::kill(child.pid, SIGKILL);
        int status = 0;
        ::waitpid(child.pid, &status, 0);
        child.pid = -1;
    }
}

void Supervisor::spawn(Child& child, Clock::time_point now) {
    child.pid = ChildProcess::spawn(child.command);
    child.started = now;
}

bool Supervisor::plan_restart(Child& child, int status, Clock::time_point now) {
    if (now - child.started >= options_.stable_after) child.restarts = 0;
    if (child.restarts >= options_.max_restarts) {
        if (!child.gave_up) {
            log_ << "piecework: " << child.command.name << " exited (status " << exit_code_of(status)
                 << "); not restarting it after " << child.restarts << " restarts in a row\n"
                 << std::flush;
        }
        child.gave_up = true;
        return false;
    }
    ++child.restarts;
    ++child.total_restarts;
    log_ << "piecework: " << child.command.name << " exited (status " << exit_code_of(status)
         << "); restarting it (" << child.restarts << "/" << options_.max_restarts << ")\n"
         << std::flush;
    child.restart_at = now + options_.restart_backoff * child.restarts;
    return true;
}

void Supervisor::reap_others(bool restart, Clock::time_point now) {
    for (auto& child : children_) {
        if (child.command.name == main_stage_) continue;
        if (child.pid > 0) {
            int status = 0;
            if (::waitpid(child.pid, &status, WNOHANG) != child.pid) continue;
            // Stragglers in its process group go with it.
            ::kill(-child.pid, SIGKILL);
            child.pid = -1;
            if (!restart) continue;
            // A stage exits 0 only when told to shut down, or after SIGTERM. In a download
            // the orchestrator is finishing; a daemon keeps every stage up.
            const bool clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
            if (clean && !options_.keep_running) continue;
            plan_restart(child, status, now);
        } else if (restart && child.restart_at && now >= *child.restart_at) {
            child.restart_at.reset();
            spawn(child, now);
        }
    }
}

void Supervisor::wait_a_tick() const {
    (void)::poll(nullptr, 0, static_cast<int>(options_.tick.count()));  // EINTR: woken early
}

int Supervisor::run(const std::function<int()>& interrupt_count) {
    Child* main_child = nullptr;
    const auto start = Clock::now();
    for (auto& child : children_) {
        spawn(child, start);
        if (child.command.name == main_stage_) main_child = &child;
    }
    if (main_child == nullptr) throw std::logic_error("no stage named " + main_stage_);

    int forwarded = 0;
    int main_status = 0;
    while (true) {
        const int interrupts = interrupt_count();
        if (interrupts > forwarded) {
            if (main_child->pid > 0) ::kill(main_child->pid, interrupts > 1 ? SIGKILL : SIGTERM);
            forwarded = interrupts;
        }
        const auto now = Clock::now();
        if (main_child->pid > 0 && ::waitpid(main_child->pid, &main_status, WNOHANG) == main_child->pid) {
            ::kill(-main_child->pid, SIGKILL);
            main_child->pid = -1;
            if (!options_.keep_running || forwarded > 0 || !plan_restart(*main_child, main_status, now)) break;
        }
        if (main_child->pid < 0 && main_child->restart_at && now >= *main_child->restart_at) {
            main_child->restart_at.reset();
            spawn(*main_child, now);
        }
        if (main_child->pid < 0 && forwarded > 0) break;  // interrupted while it was down
        reap_others(forwarded == 0, now);
        wait_a_tick();
    }

    // The orchestrator has told the others to shut down: give them a moment to do it cleanly
    // (the tracker's `stopped` announce, the writer's flush).
    const auto deadline = Clock::now() + options_.shutdown_grace;
    while (Clock::now() < deadline) {
        reap_others(false, Clock::now());
        bool any = false;
        for (const auto& child : children_) any = any || child.pid > 0;
        if (!any) break;
        wait_a_tick();
    }
    kill_all();
    return exit_code_of(main_status);
}

namespace {

volatile std::sig_atomic_t g_interrupts = 0;

void count_interrupt(int) { g_interrupts = g_interrupts + 1; }

// Only there so that a child's exit interrupts the supervisor's wait.
void note_child(int) {}

std::string own_folder() {
    std::error_code error;
    const fs::path self = fs::read_symlink("/proc/self/exe", error);
    if (error) throw std::runtime_error("cannot find our own executable: " + error.message());
    return self.parent_path().string();
}

// mkdtemp under $XDG_RUNTIME_DIR (or /tmp): mode 0700, so only we can reach the sockets.
std::string make_runtime_dir() {
    std::string base = "/tmp";
    if (const char* xdg = std::getenv("XDG_RUNTIME_DIR"); xdg != nullptr && *xdg != '\0') {
        // ipc:// paths must fit in sockaddr_un (108 bytes) with "/verified" after them.
        if (std::strlen(xdg) < 60 && fs::is_directory(xdg)) base = xdg;
    }
    std::string pattern = base + "/piecework-XXXXXX";
    if (::mkdtemp(pattern.data()) == nullptr) {
        throw std::runtime_error("cannot create a runtime folder in " + base + ": " +
                                 std::strerror(errno));
    }
    return pattern;
}

}  // namespace

namespace {

// The stage executables beside us (or in --bin-dir); "" when all are there, else the error.
std::string missing_stage(const std::string& bin_dir) {
    for (const char* stage : {"orchestrator", "verifier", "writer", "tracker_svc", "peer_worker", "dht_svc"}) {
        const auto path = fs::path(bin_dir) / stage;
        if (::access(path.c_str(), X_OK) != 0) return "missing stage executable " + path.string();
    }
    return {};
}

// Runs the commands made for a fresh private runtime folder under a Supervisor, with Ctrl-C
// and SIGTERM forwarded to the orchestrator, and removes the folder at the end.
int supervise(const std::function<std::vector<StageCommand>(const Endpoints&)>& make_commands,
              const SupervisorOptions& options) {
    const std::string runtime = make_runtime_dir();
    std::error_code error;
    int code = 1;
    struct sigaction action {};
    action.sa_handler = count_interrupt;
    sigemptyset(&action.sa_mask);
    struct sigaction old_int {};
    struct sigaction old_term {};
    sigaction(SIGINT, &action, &old_int);
    sigaction(SIGTERM, &action, &old_term);
    // A stage's exit and an interrupt both cut the supervisor's wait short (poll(2) returns
    // on any handled signal), so its tick can be long: polling twenty times a second was a
    // sixth of an idle daemon's CPU.
    struct sigaction child {};
    child.sa_handler = note_child;
    child.sa_flags = SA_RESTART | SA_NOCLDSTOP;
    sigemptyset(&child.sa_mask);
    struct sigaction old_child {};
    sigaction(SIGCHLD, &child, &old_child);
    try {
        Supervisor supervisor(make_commands(endpoints_in(runtime)), "orchestrator", options, std::cerr);
        code = supervisor.run([] { return static_cast<int>(g_interrupts); });
    } catch (...) {
        fs::remove_all(runtime, error);
        throw;
    }
    sigaction(SIGINT, &old_int, nullptr);
    sigaction(SIGTERM, &old_term, nullptr);
    sigaction(SIGCHLD, &old_child, nullptr);
    fs::remove_all(runtime, error);
    return code;
}

bool make_folder(const std::string& path, const char* what) {
    std::error_code error;
    fs::create_directories(path, error);
    if (error || !fs::is_directory(path)) {
        std::cerr << "piecework: cannot use " << path << " as the " << what
                  << (error ? ": " + error.message() : std::string{}) << "\n";
        return false;
    }
    return true;
}

std::string home_folder(const char* below) {
    const char* home = std::getenv("HOME");
    return std::string(home != nullptr && *home != '\0' ? home : ".") + "/" + below;
}

bool is_loopback(const std::string& address) {
    return address == "localhost" || address == "::1" || address.rfind("127.", 0) == 0;
}

}  // namespace

int run_download(const DownloadOptions& options) {
    StagePlan plan;
    if (magnet::is_magnet(options.torrent_path)) {
        auto link = magnet::parse_magnet(options.torrent_path);
        if (!link) {
            std::cerr << "piecework: bad magnet link: " << link.error().describe() << "\n";
            return 1;
        }
        for (const auto& warning : link->warnings) std::cerr << "piecework: magnet: " << warning << "\n";
        plan.with_tracker = !link->trackers.empty();
        plan.magnet = options.torrent_path;
    } else {
        // Checked here for a clear error before any stage starts, then dropped: the
        // supervisor runs for the whole download and the stages parse their own copy.
        auto torrent = read_torrent_file(options.torrent_path);
        if (!torrent) {
            std::cerr << "piecework: " << options.torrent_path << ": " << torrent.error().describe() << "\n";
            return 1;
        }
        plan.with_tracker = !torrent->trackers().empty();
        plan.torrent_path = fs::absolute(options.torrent_path).string();
    }
    plan.bin_dir = options.bin_dir.empty() ? own_folder() : options.bin_dir;
    if (const std::string missing = missing_stage(plan.bin_dir); !missing.empty()) {
        std::cerr << "piecework: " << missing << "\n";
        return 1;
    }
    if (!make_folder(options.output_dir, "download folder")) return 1;
    plan.output_dir = fs::absolute(options.output_dir).lexically_normal().string();
    return supervise([&](const Endpoints& endpoints) { return stage_commands(options, plan, endpoints); },
                     SupervisorOptions{});
}

int run_daemon(const DaemonOptions& given) {
    DaemonOptions options = given;
    if (options.download_dir.empty()) options.download_dir = home_folder("Downloads");
    if (options.state_dir.empty()) {
        const char* state_home = std::getenv("XDG_STATE_HOME");
        options.state_dir = state_home != nullptr && *state_home == '/'
                                ? std::string(state_home) + "/piecework"
                                : home_folder(".local/state/piecework");
    }
    if (!is_loopback(options.rpc_bind) && options.rpc_auth.empty()) {
        std::cerr << "piecework: refusing to serve the RPC on " << options.rpc_bind
                  << " without --rpc-auth FILE (user:password): anyone who reaches the port could "
                     "add torrents and delete data\n";
        return 1;
    }
    const std::string bin_dir = options.bin_dir.empty() ? own_folder() : options.bin_dir;
    if (const std::string missing = missing_stage(bin_dir); !missing.empty()) {
        std::cerr << "piecework: " << missing << "\n";
        return 1;
    }
    if (!make_folder(options.download_dir, "download folder") || !make_folder(options.state_dir, "state folder")) {
        return 1;
    }
    for (const auto& dir : options.allowed_dirs) {
        if (!make_folder(dir, "allowed download folder")) return 1;
    }
    std::cerr << "piecework: daemon: RPC on http://" << options.rpc_bind << ":" << options.rpc_port
              << "/transmission/rpc, downloads in " << fs::absolute(options.download_dir).string()
              << ", state in " << fs::absolute(options.state_dir).string() << "\n" << std::flush;
    SupervisorOptions supervision;
    supervision.keep_running = true;
    // The orchestrator's Shutdown reaches every stage, and the tracker's stopped announces
    // are bounded to a few seconds: past that a stage is killed.
    supervision.shutdown_grace = std::chrono::seconds(10);
    return supervise([&](const Endpoints& endpoints) { return daemon_stage_commands(options, bin_dir, endpoints); },
                     supervision);
}

}  // namespace pw::cli
