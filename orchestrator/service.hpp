#pragma once
// The orchestrator's loop: owns the control ROUTER, welcomes stages, answers their requests
// from the Scheduler and PeerDirectory, watches heartbeats, and decides when we are done.
#include <chrono>
#include <cstdint>
#include <functional>
#include <iosfwd>
#include <set>
#include <string>
#include <vector>

#include <zmq.hpp>

#include "core/bus/bus.hpp"
#include "core/metainfo.hpp"
#include "orchestrator/peer_directory.hpp"
#include "orchestrator/progress.hpp"
#include "orchestrator/scheduler.hpp"
#include "orchestrator/stage_registry.hpp"

namespace pw::orchestrator {

struct ServiceConfig {
    std::string control;  // endpoint the ROUTER binds
    std::string name = "orchestrator";
    std::string torrent_bytes;  // the .torrent file, sent with every Welcome (taken over)
    // Where to read it again for a Welcome once the bytes were let go (see torrent_frame_);
    // empty: they are kept for the whole run.
    std::string torrent_path;
    std::chrono::milliseconds keep_torrent_after_welcome{2'000};
    std::vector<PeerAddress> peers;
    std::uint32_t listen_port = 6881;
    std::chrono::milliseconds heartbeat{1000};
    int missed_heartbeats = 5;
    bool quiet = false;
    bool terminal = false;  // stdout is a terminal: one updating progress line
    std::chrono::milliseconds tracker_stats_period{30'000};
    std::chrono::milliseconds completion_grace{2'000};
    std::chrono::milliseconds write_retry_delay{1'000};
    unsigned max_write_failures_in_a_row = 10;
    // A fast peer's pipeline of 16 KiB pieces wants a few hundred at a time; each request is a
    // round trip through this loop, so a small cap multiplies them (4 MiB of 16 KiB pieces).
    std::uint32_t max_leases_per_request = 256;
    SchedulerOptions scheduler;
    PeerDirectoryOptions directory;
    std::string peer_id;  // 20 bytes; made at random when empty
    bus::CurveConfig curve{};  // CurveZMQ keys; disabled in local mode
    bus::metrics::Registry* metrics = nullptr;  // the stage's counters (--metrics-port); null: none
};

// "-PW0001-" and 12 random bytes.
std::string make_peer_id();

class OrchestratorService {
public:
    OrchestratorService(zmq::context_t& context, Torrent torrent, ServiceConfig config,
                        std::ostream& out, std::ostream& err);

    // Runs until every piece is written (0), a fatal error (1), or stop_requested() (130).
    int run(const std::function<bool()>& stop_requested);

    const Scheduler& scheduler() const { return scheduler_; }

private:
    using Clock = std::chrono::steady_clock;

    void handle(bus::Incoming& in, Clock::time_point now);
    void on_hello(const std::string& identity, const bus::v1::Hello& hello, Clock::time_point now);
    void on_stage_lost(const Stage& stage);
    void on_peer_has(const bus::v1::PeerHas& has, std::vector<zmq::message_t>& frames);
    void on_work_request(const std::string& identity, const bus::v1::WorkRequest& request,
                         Clock::time_point now);
    void on_pieces_verified(const bus::v1::PiecesVerified& verified);
    void on_pieces_written(const bus::v1::PiecesWritten& written);
    void on_pieces_dropped(const std::string& identity, const bus::v1::PiecesDropped& dropped);
    void on_slots_freed(const Stage& from, bus::v1::Envelope& envelope);
    void on_piece_failed(const bus::v1::PieceFailed& failed);
    void on_piece_written(PieceIndex piece);
    void lose_verifier();
    void lose_writer();
    void free_all_delivered_slots();
    void on_write_failed(const bus::v1::WriteFailed& failed, Clock::time_point now);
    void on_resume_state(std::vector<zmq::message_t>& frames);
    void on_tracker_status(const bus::v1::TrackerStatus& status);
    // Holds the .torrent frame, reading the file again if it was let go; false (said once on
    // err_) when the file is gone or no longer the torrent we are downloading.
    bool hold_torrent_frame();
    void hold_torrent_bytes(std::string bytes);

    void wait_for_messages(bool drained);
    void run_timers(Clock::time_point now);
    void send_to(const std::string& identity, bus::v1::Envelope& envelope,
                 std::span<zmq::message_t> frames = {});
    void send_cancels(const std::vector<Cancel>& cancels);
    void send_tracker_stats(bus::v1::TrackerStats::Event event);
    void shutdown_all(const std::string& reason);
    void show_progress(bool final_line);
    void export_metrics();  // gauges for --metrics-port, once per heartbeat
    std::uint64_t bytes_left() const { return torrent_.total_size() - done_bytes_; }

    bus::Gatekeeper gatekeeper_;  // before router_: it must outlive the socket it guards
    zmq::socket_t router_;
    Torrent torrent_;
    ServiceConfig config_;
    // The .torrent file as one refcounted ZeroMQ message: every Welcome shares its bytes
    // (zmq_msg_copy), where a copy per Welcome held one per stage in the send queues, 26 MiB
    // at the start of a torrent of 262,144 pieces. Stages join at the start and seldom after,
    // so with a torrent_path the bytes (20 per piece, mostly hashes only the verifier uses)
    // are let go a little after the last Welcome and read again for a late one.
    zmq::message_t torrent_frame_;  // empty once let go (a .torrent never is)
    Clock::time_point release_torrent_frame_at_{};
    std::ostream& out_;
    std::ostream& err_;
    Scheduler scheduler_;
    PeerDirectory directory_;
    StageRegistry stages_;
    RateMeter rate_;

    std::uint64_t done_bytes_ = 0;
    // Leases wait for the writer's first ResumeState: a piece already on disk is never fetched.
    bool writer_resumed_ = false;
    std::set<bus::v1::Role> roles_joined_;  // see on_hello
    std::uint64_t resumed_bytes_ = 0;  // not downloaded this run: kept out of the rate
    unsigned write_failures_in_a_row_ = 0;
    std::string fatal_error_;
    std::vector<std::pair<Clock::time_point, PieceIndex>> write_retries_;
    std::set<std::string> printed_messages_;  // tracker and write errors: each shown once
    std::set<std::string> strangers_;         // identities that never said Hello
    bool completion_sent_ = false;
    bool tracker_answered_after_completion_ = false;
    Clock::time_point completion_deadline_{};
    Clock::time_point next_heartbeat_{};
    Clock::time_point next_tracker_stats_{};
    Clock::time_point next_progress_{};
    Clock::time_point next_rate_sample_{};
    Clock::time_point next_expiry_check_{};
    bool progress_shown_ = false;
    bus::v1::Envelope leases_reply_;  // see on_work_request
    std::uint64_t sends_ = 0;  // see wait_for_messages
    std::uint64_t sends_when_drained_ = 0;
};

}  // namespace pw::orchestrator
