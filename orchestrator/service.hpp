#pragma once
// The orchestrator's loop: owns the control ROUTER (and, in a daemon, the RPC's bridge), feeds
// the Session what arrives, sends what it has to say, prints or logs its notices, saves what
// must outlive the run, and decides when the run is over.
//
// Two ways to run it:
//  - `piecework download`: the torrents come from the command line; the run ends (exit 0)
//    once every one is complete, or (exit 1) when one fails; Ctrl-C ends it with 130.
//  - `piecework daemon`: the torrents come from the state folder and the RPC; the run ends
//    only on SIGTERM or SIGINT (exit 0), after saving the session.
#include <chrono>
#include <cstdint>
#include <functional>
#include <iosfwd>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <zmq.hpp>

#include "core/bus/bus.hpp"
#include "orchestrator/peer_directory.hpp"
#include "orchestrator/rpc_methods.hpp"
#include "orchestrator/rpc_server.hpp"
#include "orchestrator/session.hpp"
#include "orchestrator/session_store.hpp"

namespace pw::orchestrator {

struct TorrentFile {
    std::string path;   // absolute
    std::string bytes;  // the .torrent file
};

struct ServiceConfig {
    std::string control;  // endpoint the ROUTER binds
    SessionConfig session;
    // Added at the start (download mode): their peers given with --peer.
    std::vector<TorrentFile> torrents;
    std::vector<PeerAddress> peers;
    // Where torrents go; the daemon's default and root for RPC-given folders.
    std::string download_dir;
    // More folders an RPC-given download folder may lie below.
    std::vector<std::string> allowed_dirs;
    // The Transmission RPC (daemon mode); none when unset.
    std::optional<RpcServerOptions> rpc;
    // The daemon's state folder: the session is loaded from it and saved in it. Empty: the
    // session lives only as long as the process (download mode).
    std::string state_dir;
    // Download mode: the run ends once every torrent is complete, or, with a seed limit, once
    // each has seeded up to its ratio or for its time.
    bool exit_when_done = false;
    // Download mode: the files of the --torrent files to fetch (`--select-file`, "1,3-5";
    // empty: all), and whether in order (`--sequential`).
    std::string select_files;
    bool sequential = false;
    std::optional<double> seed_ratio;
    std::optional<std::chrono::minutes> seed_time;
    // Rate limits in bytes/s (0: none); in a daemon, they replace the saved session's.
    std::uint64_t max_upload_rate = 0;
    std::uint64_t max_download_rate = 0;
    bool quiet = false;
    bool terminal = false;  // stdout is a terminal: one updating progress line
    std::chrono::milliseconds completion_grace{2'000};
    std::chrono::milliseconds save_period{30'000};
    bus::CurveConfig curve{};
    int signal_fd = -1;  // SIGTERM/SIGINT (bus::TerminationSignals); -1: none
};

class OrchestratorService {
public:
    // Throws std::runtime_error on start-up failures (endpoint, state folder, a torrent of
    // the command line that cannot be added).
    OrchestratorService(zmq::context_t& context, ServiceConfig config, std::ostream& out,
                        std::ostream& err);

    // Runs until the run is over (see above). `stop_requested` (tests) ends it as a signal does.
    int run(const std::function<bool()>& stop_requested = [] { return false; });

    Session& session() { return session_; }
    // The RPC's port (0 without an RPC): the one really bound, when asked for any.
    std::uint16_t rpc_port() const;

private:
    using Clock = std::chrono::steady_clock;

    void restore();
    void add_command_line_torrents();
    void wait_for_messages(bool drained);
    void flush_outbox();
    void show_notices();
    void save_changes(bool everything);
    void show_progress(bool final_line);
    void export_metrics();
    // The session's rate limits and seed ratio from the settings (at start, after session-set).
    void apply_settings();
    // Download mode: every torrent complete and done seeding as asked.
    bool done_seeding(Clock::time_point now) const;
    int finish(int code, const std::string& reason);

    bus::Gatekeeper gatekeeper_;  // before router_: it must outlive the socket it guards
    zmq::socket_t router_;
    ServiceConfig config_;
    std::ostream& out_;
    std::ostream& err_;
    Session session_;
    std::optional<SessionStore> store_;
    SessionSettings settings_;
    std::unique_ptr<RpcServer> rpc_;
    std::unique_ptr<RpcMethods> rpc_methods_;

    std::string fatal_error_;
    std::optional<Clock::time_point> completion_deadline_;
    Clock::time_point started_{};
    Clock::time_point next_progress_{};
    Clock::time_point next_save_{};
    bool progress_shown_ = false;
    std::uint64_t sends_ = 0;  // see wait_for_messages
    std::uint64_t sends_when_drained_ = 0;
};

}  // namespace pw::orchestrator
