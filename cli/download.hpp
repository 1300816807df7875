#pragma once
// `piecework download` and `piecework daemon`: run the five stages as local processes over
// ipc:// and supervise them. Both run the same session (the orchestrator's): download adds one
// torrent and ends when it is complete; the daemon keeps its torrents in a state folder, takes
// more over the RPC, and runs until SIGTERM or Ctrl-C.
#include <chrono>
#include <functional>
#include <iosfwd>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <sys/types.h>

namespace pw::cli {

// How peers are found besides trackers (#15): local service discovery (BEP 14) in the
// tracker stage, and the DHT (BEP 5) in a stage of its own.
struct DiscoveryOptions {
    bool no_lsd = false;        // --no-lsd, or PW_NO_LSD=1 (the test suite's)
    std::string lsd_interface;  // IPv4 address of the interface to multicast on; "": default
    bool no_dht = false;        // --no-dht, or PW_NO_DHT=1 (the test suite's)
    unsigned dht_port = 6881;   // UDP
    std::vector<std::string> dht_bootstrap;  // HOST:PORT; empty: the well-known routers
    std::string dht_state_dir;  // where the routing table is kept; "": not kept
};

struct DownloadOptions {
    std::string torrent_path;
    std::string output_dir = ".";
    std::vector<std::string> peers;  // HOST:PORT, added without a tracker
    unsigned workers = 1;
    bool quiet = false;
    std::string log_level = "warn";
    // The writer's resume records; empty: the writer's default (DIR/.piecework).
    std::string state_dir;
    // Where the stage executables are; defaults to the folder of the running piecework.
    std::string bin_dir;
    // Giving back: the port peers reach us on (0: a free one), rate limits ("500K", "2M"),
    // and how long to seed once complete (neither: stop at completion).
    unsigned listen_port = 6881;
    std::string encryption = "prefer";  // peer connections: prefer, require or off
    std::string max_upload_rate;
    std::string max_download_rate;
    std::optional<double> seed_ratio;
    std::optional<unsigned> seed_time_minutes;
    // Only these files ("1,3-5", as `inspect` numbers them; empty: all), and in order.
    std::string select_files;
    bool sequential = false;
    // `piecework seed`: check the files already in output_dir and seed until interrupted.
    bool seed_only = false;
    DiscoveryOptions discovery;
};

// Starts the five stages as local processes over ipc:// in a private runtime folder,
// supervises them, and returns the exit code (0 once every piece is verified and written).
int run_download(const DownloadOptions& options);

struct DaemonOptions {
    std::string download_dir;  // default: ~/Downloads
    std::vector<std::string> allowed_dirs;  // more roots an RPC download-dir may lie below
    std::string state_dir;     // default: $XDG_STATE_HOME/piecework or ~/.local/state/piecework
    std::string rpc_bind = "127.0.0.1";
    unsigned rpc_port = 9091;
    std::string rpc_auth;      // FILE with user:password; required off loopback
    unsigned workers = 1;
    unsigned listen_port = 6881;
    unsigned max_peers = 200;
    std::string encryption = "prefer";  // the RPC's session-set may change it
    std::string max_upload_rate;
    std::string max_download_rate;
    std::string log_level = "info";
    std::string bin_dir;
    DiscoveryOptions discovery;
};

// Runs the session in the foreground until SIGTERM or SIGINT, restarting any stage that dies
// (the orchestrator too: the session is in the state folder). Returns 0 after a clean stop.
int run_daemon(const DaemonOptions& options);

// --- the pieces of run_download, exposed for tests ---

struct Endpoints {
    std::string control;
    std::string pieces;
    std::string verified;
    std::string reads;  // the writer serves verified pieces to the workers here
};

// ipc:// endpoints inside a runtime folder.
Endpoints endpoints_in(const std::string& runtime_dir);

// One stage process: what to run and under which instance name.
struct StageCommand {
    std::string name;
    std::string executable;  // a path; never looked up through a shell
    std::vector<std::string> args;  // without argv[0]
};

struct StagePlan {
    std::string torrent_path;  // absolute; empty for a magnet
    std::string output_dir;    // absolute
    std::string bin_dir;
    bool with_tracker = true;  // the torrent names at least one tracker
    std::string magnet;        // the magnet link, when that is what was given
};

// The stages of one session: what every mode shares, and the options each mode adds.
struct SessionStages {
    std::string bin_dir;
    std::string log_level;
    unsigned workers = 1;
    bool with_tracker = true;
    DiscoveryOptions discovery;  // the tracker stage also runs for LSD alone
    std::vector<std::string> orchestrator_args;
    std::vector<std::string> writer_args;
};

// Every stage's command line; the orchestrator comes first (it binds the control socket).
std::vector<StageCommand> session_stage_commands(const SessionStages& stages, const Endpoints& endpoints);
// `download`'s stages: the torrent added at once, its folder, the run ends when it is done.
std::vector<StageCommand> stage_commands(const DownloadOptions& options, const StagePlan& plan,
                                         const Endpoints& endpoints);
// `daemon`'s stages, with its folders made absolute.
std::vector<StageCommand> daemon_stage_commands(const DaemonOptions& options, const std::string& bin_dir,
                                                const Endpoints& endpoints);

// Spawns one process without a shell: its own process group (a terminal's Ctrl-C reaches
// only the front end) and PR_SET_PDEATHSIG, so it dies with the front end.
class ChildProcess {
public:
    // Throws std::runtime_error when fork fails; an exec failure shows as exit status 127.
    static pid_t spawn(const StageCommand& command);
};

struct SupervisorOptions {
    unsigned max_restarts = 5;  // per stage, in a row (see stable_after)
    std::chrono::milliseconds restart_backoff{500};  // times the restarts in a row
    // A stage that ran this long before it died starts counting its restarts afresh: a
    // daemon's stages may die now and then over weeks without ever being given up on.
    std::chrono::milliseconds stable_after{60'000};
    std::chrono::milliseconds shutdown_grace{5'000};
    // The longest wait between looks at the children. supervise() makes a stage's exit and
    // an interrupt cut it short (a SIGCHLD handler; poll(2) returns on a handled signal).
    std::chrono::milliseconds tick{500};
    // The daemon: every stage is kept up, the main one too, whatever its exit (a stage left
    // on SIGTERM, the orchestrator was killed), until an interrupt arrives.
    bool keep_running = false;
};

// Runs the stages, restarts any but the main one when it fails (exits non-zero or is killed;
// a clean exit follows a Shutdown), and returns the main stage's
// exit code once it exits (after giving the others a grace period, then SIGKILL). With
// keep_running it restarts every stage, the main one too, until interrupted.
class Supervisor {
public:
    Supervisor(std::vector<StageCommand> commands, std::string main_stage,
               SupervisorOptions options, std::ostream& log);
    ~Supervisor();
    Supervisor(const Supervisor&) = delete;
    Supervisor& operator=(const Supervisor&) = delete;

    // interrupt_count() > 0 forwards SIGTERM to the main stage; > 1 forwards SIGKILL.
    int run(const std::function<int()>& interrupt_count);
    unsigned restarts(const std::string& stage) const;

private:
    // Sleeps a tick, or less when a signal with a handler arrives (a child's exit, with the
    // SIGCHLD handler supervise() installs; an interrupt).
    void wait_a_tick() const;
    struct Child {
        StageCommand command;
        pid_t pid = -1;
        unsigned restarts = 0;          // in a row
        unsigned total_restarts = 0;
        std::chrono::steady_clock::time_point started{};
        std::optional<std::chrono::steady_clock::time_point> restart_at;
        bool gave_up = false;
    };

    void reap_others(bool restart, std::chrono::steady_clock::time_point now);
    // After `child` exited with `status`: schedules its restart, or gives up on it. Returns
    // false when it was given up on.
    bool plan_restart(Child& child, int status, std::chrono::steady_clock::time_point now);
    void spawn(Child& child, std::chrono::steady_clock::time_point now);
    void kill_all();

    std::vector<Child> children_;
    std::string main_stage_;
    SupervisorOptions options_;
    std::ostream& log_;
};

// Exit code of a waitpid status, shell style: 128 + signal for a killed process.
int exit_code_of(int status);

}  // namespace pw::cli
