#include "orchestrator/service.hpp"

#include <poll.h>

#include <algorithm>
#include <ostream>
#include <random>

#include <spdlog/spdlog.h>

#include "core/bus/metrics.hpp"
#include "core/bus/welcome.hpp"

namespace pw::orchestrator {

namespace v1 = ::piecework::v1;
using std::chrono::milliseconds;

namespace {

constexpr std::size_t kMaxStrangersRemembered = 1024;
constexpr milliseconds kMaxPollWait{250};
constexpr milliseconds kTerminalProgressPeriod{250};
constexpr milliseconds kPlainProgressPeriod{5'000};
constexpr milliseconds kExpiryCheckPeriod{1'000};

std::span<const std::uint8_t> bytes_of(const zmq::message_t& frame) {
    return {static_cast<const std::uint8_t*>(frame.data()), frame.size()};
}

}  // namespace

std::string make_peer_id() {
    std::random_device entropy;
    std::string id = "-PW0001-";
    while (id.size() < 20) id.push_back(static_cast<char>(entropy() & 0xff));
    return id;
}

OrchestratorService::OrchestratorService(zmq::context_t& context, Torrent torrent,
                                         ServiceConfig config, std::ostream& out,
                                         std::ostream& err)
    : gatekeeper_(context, config.curve), router_(context, zmq::socket_type::router),
      torrent_(std::move(torrent)),
      config_(std::move(config)), out_(out), err_(err),
      scheduler_(torrent_.piece_count(), config_.scheduler), directory_(config_.directory) {
    if (config_.peer_id.size() != 20) config_.peer_id = make_peer_id();
    hold_torrent_bytes(std::move(config_.torrent_bytes));
    release_torrent_frame_at_ = Clock::now() + config_.keep_torrent_after_welcome;
    bus::configure(router_);
    // A stage restarted under the same name takes over its identity instead of being refused.
    router_.set(zmq::sockopt::router_handover, 1);
    gatekeeper_.secure(router_, "control");
    router_.bind(config_.control);
    for (const auto& peer : config_.peers) directory_.offer(peer);
}

void OrchestratorService::hold_torrent_bytes(std::string bytes) {
    // The bytes move to the heap, owned by the message: ZeroMQ's I/O thread may still be
    // sending a Welcome after this service is gone, and frees them with the last reference.
    auto owned = std::make_unique<std::string>(std::move(bytes));
    torrent_frame_.rebuild(owned->data(), owned->size(),
                           [](void*, void* hint) { delete static_cast<std::string*>(hint); },
                           owned.get());
    owned.release();
}

bool OrchestratorService::hold_torrent_frame() {
    if (torrent_frame_.size() > 0) return true;
    auto bytes = read_torrent_bytes(config_.torrent_path);
    std::string problem;
    if (!bytes) {
        problem = bytes.error().describe();
    } else if (auto again = Torrent::parse(*bytes, {}, PieceHashes::forget);
               !again || again->info_hash() != torrent_.info_hash()) {
        problem = "no longer the torrent being downloaded";
    }
    if (!problem.empty()) {
        const std::string line = "cannot welcome a stage: " + config_.torrent_path + ": " + problem;
        if (printed_messages_.insert(line).second) err_ << line << "\n" << std::flush;
        return false;
    }
    hold_torrent_bytes(std::move(*bytes));
    return true;
}

void OrchestratorService::send_to(const std::string& identity, v1::Envelope& envelope,
                                  std::span<zmq::message_t> frames) {
    ++sends_;
    // Never block the loop on a stage that stopped reading: its messages are dropped.
    if (!bus::send(router_, config_.name, envelope, frames, &identity, zmq::send_flags::dontwait)) {
        spdlog::debug("dropped a message to '{}' (queue full or gone)", identity);
        return;
    }
    bus::count_message(config_.metrics, true, envelope);
}

void OrchestratorService::send_cancels(const std::vector<Cancel>& cancels) {
    for (const Cancel& cancel : cancels) {
        v1::Envelope envelope;
        envelope.mutable_cancel_piece()->set_piece(cancel.piece.get());
        send_to(cancel.worker, envelope);
    }
}

void OrchestratorService::send_tracker_stats(v1::TrackerStats::Event event) {
    v1::Envelope envelope;
    auto* stats = envelope.mutable_tracker_stats();
    stats->set_uploaded(stages_.bytes_uploaded());
    stats->set_downloaded(done_bytes_);
    stats->set_left(bytes_left());
    stats->set_event(event);
    for (const auto& identity : stages_.identities(v1::ROLE_TRACKER)) send_to(identity, envelope);
}

void OrchestratorService::shutdown_all(const std::string& reason) {
    send_tracker_stats(v1::TrackerStats::STOPPED);
    v1::Envelope envelope;
    envelope.mutable_shutdown()->set_reason(reason);
    for (const auto& identity : stages_.identities()) send_to(identity, envelope);
    // Give ZeroMQ a moment to hand the Shutdowns over before the socket closes.
    router_.set(zmq::sockopt::linger, 2000);
}

void OrchestratorService::on_hello(const std::string& identity, const v1::Hello& hello,
                                   Clock::time_point now) {
    const Stage* known = stages_.find(identity);
    // ControlLink repeats Hello until its Welcome arrives: the same process again is no restart.
    const bool repeat = known != nullptr && known->pid == hello.pid() && known->role == hello.role();
    if (!repeat) {
        const bool first_of_its_role = roles_joined_.insert(hello.role()).second;
        if (auto previous = stages_.remove(identity)) {
            spdlog::info("'{}' restarted: releasing what its previous run held", identity);
            if (config_.metrics != nullptr) {
                config_.metrics
                    ->counter("piecework_stage_restarts_total",
                              "Stages that said Hello again under their name with a new pid",
                              {{"role", v1::Role_Name(hello.role())}})
                    .add();
            }
            on_stage_lost(*previous);
        } else if (hello.role() == v1::ROLE_VERIFIER && !first_of_its_role) {
            // A previous verifier may have been declared gone while frozen, then taken
            // deliveries until it exited: whatever is still marked delivered went to a dead
            // process. (A duplicate, if its data does arrive, is harmless.) Not so for the
            // first verifier: pieces delivered before its Hello wait in its socket's queue,
            // and re-queuing them fetched each twice.
            lose_verifier();
        } else if (hello.role() == v1::ROLE_WRITER && !first_of_its_role) {
            lose_writer();  // the same for pieces verified towards a dead writer
        }
        stages_.add(identity, hello.role(), hello.pid(), now);
        if (hello.role() == v1::ROLE_PEER_WORKER) directory_.add_worker(identity);
        spdlog::info("'{}' joined (role {}, pid {})", identity, v1::Role_Name(hello.role()),
                     hello.pid());
    } else {
        stages_.find(identity)->last_heard = now;
    }
    // Unwelcomed, the stage keeps saying Hello, and joins if the file comes back.
    if (!hold_torrent_frame()) return;
    release_torrent_frame_at_ = now + config_.keep_torrent_after_welcome;
    v1::Envelope envelope;
    auto* welcome = envelope.mutable_welcome();
    welcome->set_peer_id(config_.peer_id);
    welcome->set_heartbeat_ms(static_cast<std::uint32_t>(config_.heartbeat.count()));
    welcome->set_listen_port(config_.listen_port);
    std::vector<zmq::message_t> frames(1);
    frames.front().copy(torrent_frame_);
    send_to(identity, envelope, frames);
    if (hello.role() == v1::ROLE_TRACKER) {
        v1::Envelope stats;
        auto* body = stats.mutable_tracker_stats();
        body->set_uploaded(stages_.bytes_uploaded());
        body->set_downloaded(done_bytes_);
        body->set_left(bytes_left());
        send_to(identity, stats);
    }
}

void OrchestratorService::handle(bus::Incoming& in, Clock::time_point now) {
    const v1::Envelope& envelope = in.envelope;
    bus::count_message(config_.metrics, false, envelope);
    if (envelope.has_hello()) {
        on_hello(in.identity, envelope.hello(), now);
        return;
    }
    Stage* stage = stages_.find(in.identity);
    if (stage == nullptr) {
        if (strangers_.size() < kMaxStrangersRemembered && strangers_.insert(in.identity).second) {
            spdlog::warn("ignoring messages from '{}': it never said Hello", in.identity);
        }
        return;
    }
    stage->last_heard = now;
    switch (envelope.body_case()) {
        case v1::Envelope::kHeartbeat:
            stage->counters = envelope.heartbeat();
            break;
        case v1::Envelope::kPeersFound:
            for (const auto& peer : envelope.peers_found().peers()) {
                directory_.offer(PeerAddress{peer.ip(), peer.port()});
            }
            if (completion_sent_) tracker_answered_after_completion_ = true;
            break;
        case v1::Envelope::kTrackerStatus:
            on_tracker_status(envelope.tracker_status());
            if (completion_sent_) tracker_answered_after_completion_ = true;
            break;
        case v1::Envelope::kPeerConnected:
            directory_.connected(envelope.peer_connected().peer());
            break;
        case v1::Envelope::kPeerDisconnected:
            directory_.disconnected(envelope.peer_disconnected().peer(), now);
            scheduler_.peer_gone(envelope.peer_disconnected().peer());
            break;
        case v1::Envelope::kPeerHas:
            on_peer_has(envelope.peer_has(), in.frames);
            break;
        case v1::Envelope::kWorkRequest:
            on_work_request(in.identity, envelope.work_request(), now);
            break;
        case v1::Envelope::kLeaseReleased:
            for (const auto id : envelope.lease_released().lease_ids()) scheduler_.release(id);
            break;
        case v1::Envelope::kPiecesDelivered:
            for (const auto& ref : envelope.pieces_delivered().pieces()) {
                scheduler_.delivered(ref.lease_id());
            }
            break;
        case v1::Envelope::kPiecesVerified:
            on_pieces_verified(envelope.pieces_verified());
            break;
        case v1::Envelope::kPieceFailed:
            on_piece_failed(envelope.piece_failed());
            break;
        case v1::Envelope::kPiecesWritten:
            on_pieces_written(envelope.pieces_written());
            break;
        case v1::Envelope::kPiecesDropped:
            on_pieces_dropped(in.identity, envelope.pieces_dropped());
            break;
        case v1::Envelope::kSlotsFreed:
            on_slots_freed(*stage, in.envelope);
            break;
        case v1::Envelope::kWriteFailed:
            on_write_failed(envelope.write_failed(), now);
            break;
        case v1::Envelope::kResumeState:
            on_resume_state(in.frames);
            break;
        default:
            spdlog::debug("ignoring a message of type {} from '{}'",
                          static_cast<int>(envelope.body_case()), in.identity);
    }
}

void OrchestratorService::on_stage_lost(const Stage& stage) {
    if (config_.metrics != nullptr) {
        config_.metrics
            ->counter("piecework_stages_lost_total", "Stages that went silent or were replaced",
                      {{"role", v1::Role_Name(stage.role)}})
            .add();
    }
    switch (stage.role) {
        case v1::ROLE_PEER_WORKER:
            scheduler_.worker_gone(stage.identity);
            for (const auto& key : directory_.remove_worker(stage.identity)) {
                scheduler_.peer_gone(key);
            }
            break;
        case v1::ROLE_WRITER:
            lose_writer();
            break;
        case v1::ROLE_VERIFIER:
            lose_verifier();
            break;
        default:
            break;
    }
}

void OrchestratorService::lose_verifier() {
    scheduler_.verifier_lost();
    free_all_delivered_slots();
}

void OrchestratorService::lose_writer() {
    scheduler_.writer_lost();
    free_all_delivered_slots();
}

void OrchestratorService::free_all_delivered_slots() {
    // Pieces in a worker's arena may have been in the dead stage's hands or queued towards
    // it: nobody would ever free their slots. A piece still in flight whose slot is reused
    // fails the readers' tag check and comes back as PiecesDropped.
    v1::Envelope envelope;
    auto* freed = envelope.mutable_slots_freed();
    freed->set_all_delivered(true);
    for (const auto& worker : stages_.identities(v1::ROLE_PEER_WORKER)) {
        freed->set_worker(worker);
        send_to(worker, envelope);
    }
}

void OrchestratorService::on_pieces_verified(const v1::PiecesVerified& verified) {
    for (const auto& ref : verified.pieces()) {
        send_cancels(scheduler_.verified(PieceIndex{ref.piece()}, ref.lease_id()));
    }
}

void OrchestratorService::on_pieces_written(const v1::PiecesWritten& written) {
    if (written.pieces_size() > 0) write_failures_in_a_row_ = 0;
    for (const auto& ref : written.pieces()) on_piece_written(PieceIndex{ref.piece()});
}

void OrchestratorService::on_pieces_dropped(const std::string& identity,
                                            const v1::PiecesDropped& dropped) {
    spdlog::debug("'{}' dropped {} piece(s), fetching them again: {}", identity,
                  dropped.pieces_size(), dropped.reason());
    for (const auto& ref : dropped.pieces()) {
        scheduler_.dropped(PieceIndex{ref.piece()}, ref.lease_id());
    }
}

void OrchestratorService::on_slots_freed(const Stage& from, v1::Envelope& envelope) {
    if (from.role != v1::ROLE_VERIFIER && from.role != v1::ROLE_WRITER) {
        spdlog::debug("ignoring SlotsFreed from '{}': only a verifier or a writer frees slots",
                      from.identity);
        return;
    }
    auto* freed = envelope.mutable_slots_freed();
    const Stage* worker = stages_.find(freed->worker());
    if (worker == nullptr || worker->role != v1::ROLE_PEER_WORKER) {
        spdlog::debug("ignoring SlotsFreed from '{}' for '{}': not a worker we know",
                      from.identity, freed->worker());
        return;
    }
    // Freeing everything a worker delivered is only safe when a stage is known to be dead,
    // which only the orchestrator can tell: a live stage may name its own leases only.
    freed->set_all_delivered(false);
    if (freed->lease_ids().empty()) return;
    const std::string identity = freed->worker();
    send_to(identity, envelope);
}

void OrchestratorService::on_peer_has(const v1::PeerHas& has, std::vector<zmq::message_t>& frames) {
    PiecePicker& pieces = scheduler_.pieces();
    if (has.have_all()) {
        pieces.set_have_all(has.peer());
    } else if (has.bitfield()) {
        if (frames.empty() || !pieces.set_bitfield(has.peer(), bytes_of(frames[0]))) {
            spdlog::warn("ignoring a malformed bitfield for peer {}", has.peer());
        }
    }
    for (const auto piece : has.haves()) {
        if (!pieces.add_have(has.peer(), PieceIndex{piece})) {
            spdlog::warn("ignoring have {} for peer {}: out of range", piece, has.peer());
        }
    }
}

void OrchestratorService::on_work_request(const std::string& identity,
                                          const v1::WorkRequest& request, Clock::time_point now) {
    const std::size_t count =
        writer_resumed_ ? std::min(request.count(), config_.max_leases_per_request) : 0;
    // One envelope for every answer: clearing its Leases keeps their elements for reuse, so
    // an answer costs no allocation per lease.
    auto* leases = leases_reply_.mutable_leases();
    leases->Clear();
    leases->set_peer(request.peer());
    for (const Grant& grant : scheduler_.request(identity, request.peer(), count, now)) {
        auto* lease = leases->add_leases();
        lease->set_piece(grant.piece.get());
        lease->set_lease_id(grant.lease_id);
        lease->set_endgame(grant.endgame);
    }
    send_to(identity, leases_reply_);
}

void OrchestratorService::on_piece_failed(const v1::PieceFailed& failed) {
    scheduler_.failed(PieceIndex{failed.piece()}, failed.lease_id());
    const std::vector<std::string> contributors(failed.contributors().begin(),
                                                failed.contributors().end());
    for (const auto& ip : directory_.record_failure(contributors)) {
        spdlog::warn("banning {}: sent data that failed its hash check", ip);
        if (config_.metrics != nullptr) {
            config_.metrics->counter("piecework_peers_banned_total", "Peers banned for bad data").add();
        }
        v1::Envelope envelope;
        envelope.mutable_ban_peer()->set_ip(ip);
        envelope.mutable_ban_peer()->set_reason("sent data that failed its hash check");
        for (const auto& worker : stages_.identities(v1::ROLE_PEER_WORKER)) {
            send_to(worker, envelope);
        }
    }
}

void OrchestratorService::on_piece_written(PieceIndex piece) {
    if (piece.get() >= torrent_.piece_count()) return;
    if (!scheduler_.pieces().is_done(piece)) done_bytes_ += torrent_.piece_size(piece);
    send_cancels(scheduler_.written(piece));
}

void OrchestratorService::on_write_failed(const v1::WriteFailed& failed, Clock::time_point now) {
    const std::string line = "write failed: " + failed.error();
    if (printed_messages_.insert(line).second) err_ << line << "\n" << std::flush;
    const PieceIndex piece{failed.piece()};
    if (piece.get() >= torrent_.piece_count()) return;
    scheduler_.write_failed(piece);
    write_retries_.emplace_back(now + config_.write_retry_delay, piece);
    if (++write_failures_in_a_row_ >= config_.max_write_failures_in_a_row) fatal_error_ = line;
}

void OrchestratorService::on_resume_state(std::vector<zmq::message_t>& frames) {
    // Merged, never replacing: a restarted writer cannot un-mark an acknowledged piece. A
    // malformed one still opens the gate (its pieces are fetched again, which is only slower).
    const bool first = !writer_resumed_;
    writer_resumed_ = true;
    const auto bits = frames.empty() ? std::span<const std::uint8_t>{} : bytes_of(frames[0]);
    if (bits.size() != (std::uint64_t{torrent_.piece_count()} + 7) / 8) {
        spdlog::warn("ignoring a resume bitfield of the wrong length");
        return;
    }
    std::uint32_t on_disk = 0;
    for (std::uint32_t piece = 0; piece < torrent_.piece_count(); ++piece) {
        if (((bits[piece / 8] >> (7 - piece % 8)) & 1u) == 0) continue;
        ++on_disk;
        if (first && !scheduler_.pieces().is_done(PieceIndex{piece})) {
            resumed_bytes_ += torrent_.piece_size(PieceIndex{piece});
        }
        on_piece_written(PieceIndex{piece});
    }
    if (first && on_disk > 0 && !config_.quiet) {
        if (progress_shown_ && config_.terminal) out_ << "\n";
        out_ << "resumed: " << on_disk << " of " << torrent_.piece_count()
             << " pieces already on disk\n" << std::flush;
    }
}

void OrchestratorService::on_tracker_status(const v1::TrackerStatus& status) {
    if (status.message().empty()) return;
    if (status.ok() && config_.quiet) return;  // warnings are chatter under --quiet
    const std::string line = "tracker " + status.tracker() + ": " + status.message();
    if (printed_messages_.insert(line).second) {
        if (progress_shown_ && config_.terminal) out_ << "\n";
        err_ << line << "\n" << std::flush;
    }
}

void OrchestratorService::show_progress(bool final_line) {
    if (config_.quiet) return;
    const std::string line = format_progress(ProgressSnapshot{
        done_bytes_, torrent_.total_size(), rate_.rate(), stages_.peers_connected()});
    if (config_.terminal) {
        out_ << "\r" << line << "\x1b[K";
        if (final_line) out_ << "\n";
    } else {
        out_ << line << "\n";
    }
    out_ << std::flush;
    progress_shown_ = true;
}

void OrchestratorService::export_metrics() {
    if (config_.metrics == nullptr) return;
    auto& registry = *config_.metrics;
    const auto as_int = [](auto value) { return static_cast<std::int64_t>(value); };
    registry.gauge("piecework_pieces_done", "Pieces written and acknowledged")
        .set(scheduler_.pieces().done_count());
    registry.gauge("piecework_pieces_total", "Pieces in the torrent").set(torrent_.piece_count());
    registry.gauge("piecework_bytes_done", "Bytes written and acknowledged").set(as_int(done_bytes_));
    registry.gauge("piecework_bytes_total", "Bytes in the torrent").set(as_int(torrent_.total_size()));
    registry.gauge("piecework_download_rate_bytes", "Download rate, bytes per second")
        .set(as_int(rate_.rate()));
    registry.gauge("piecework_peers_known", "Peers known from trackers and --peer")
        .set(as_int(directory_.known_peers()));
    registry.gauge("piecework_peers_connected", "Peers connected across all workers")
        .set(stages_.peers_connected());
    for (const auto role : {v1::ROLE_TRACKER, v1::ROLE_PEER_WORKER, v1::ROLE_VERIFIER, v1::ROLE_WRITER}) {
        registry.gauge("piecework_stages", "Stages registered now", {{"role", v1::Role_Name(role)}})
            .set(as_int(stages_.identities(role).size()));
    }
}

void OrchestratorService::run_timers(Clock::time_point now) {
    if (torrent_frame_.size() > 0 && !config_.torrent_path.empty() &&
        now >= release_torrent_frame_at_) {
        torrent_frame_.rebuild();  // Welcomes still queued keep their reference
        bus::release_start_up_memory();  // freed pages stay otherwise (stage_cli.cpp)
    }
    if (now >= next_heartbeat_) {
        next_heartbeat_ = now + config_.heartbeat;
        export_metrics();
        v1::Envelope beat;
        beat.mutable_heartbeat();
        for (const auto& identity : stages_.identities()) send_to(identity, beat);
        for (const Stage& stage :
             stages_.take_silent_since(now - config_.heartbeat * config_.missed_heartbeats)) {
            spdlog::warn("'{}' has been silent for {} heartbeats: treating it as gone",
                         stage.identity, config_.missed_heartbeats);
            on_stage_lost(stage);
        }
    }
    for (auto& assignment : directory_.assign(now)) {
        v1::Envelope envelope;
        for (const auto& peer : assignment.peers) {
            auto* added = envelope.mutable_add_peers()->add_peers();
            added->set_ip(peer.ip);
            added->set_port(peer.port);
        }
        send_to(assignment.worker, envelope);
    }
    if (now >= next_expiry_check_) {
        next_expiry_check_ = now + kExpiryCheckPeriod;
        send_cancels(scheduler_.expire(now));
    }
    auto due = std::partition(write_retries_.begin(), write_retries_.end(),
                              [&](const auto& entry) { return entry.first > now; });
    for (auto it = due; it != write_retries_.end(); ++it) scheduler_.requeue_held(it->second);
    write_retries_.erase(due, write_retries_.end());
    if (now >= next_tracker_stats_) {
        next_tracker_stats_ = now + config_.tracker_stats_period;
        send_tracker_stats(v1::TrackerStats::NONE);
    }
    if (now >= next_rate_sample_) {
        next_rate_sample_ = now + kTerminalProgressPeriod;
        rate_.sample(now, done_bytes_ - resumed_bytes_);
    }
    if (now >= next_progress_) {
        next_progress_ = now + (config_.terminal ? kTerminalProgressPeriod : kPlainProgressPeriod);
        show_progress(false);
    }
}

void OrchestratorService::wait_for_messages(bool drained) {
    // The socket's ZMQ_FD only signals news: right after a receive found nothing, waiting on
    // it alone is enough, and saves zmq::poll's own look at the socket (a poll and a getpid
    // per wake-up, a good part of the loop's cost with small pieces). A send since then may
    // have taken that news in (ZeroMQ processes its commands on send), so after a send, or
    // when the last batch stopped short of draining the socket, the socket is asked instead.
    // (Plain poll(2), not zmq::poll: that polls once without waiting before it waits.)
    if (drained && sends_ == sends_when_drained_) {
        pollfd wait{router_.get(zmq::sockopt::fd), POLLIN, 0};
        ::poll(&wait, 1, static_cast<int>(kMaxPollWait.count()));  // EINTR: the loop goes on
        return;
    }
    zmq::pollitem_t item{router_.handle(), 0, ZMQ_POLLIN, 0};
    try {
        zmq::poll(&item, 1, kMaxPollWait);
    } catch (const zmq::error_t& e) {
        if (e.num() != EINTR) throw;
    }
}

int OrchestratorService::run(const std::function<bool()>& stop_requested) {
    const auto started = Clock::now();
    next_progress_ = started + (config_.terminal ? kTerminalProgressPeriod : kPlainProgressPeriod);
    next_tracker_stats_ = started + config_.tracker_stats_period;
    bus::Incoming in;  // reused: its buffers outlive one message
    bool drained = false;
    while (true) {
        if (stop_requested()) {
            if (progress_shown_ && config_.terminal) out_ << "\n" << std::flush;
            shutdown_all("interrupted");
            return 130;
        }
        wait_for_messages(drained);
        auto now = Clock::now();
        // Bounded batch per wake-up so timers still run under a flood.
        drained = false;
        for (int read = 0; read < 1000; ++read) {
            const auto status = bus::receive(router_, true, in);
            if (status == bus::RecvStatus::would_block) {
                drained = true;
                sends_when_drained_ = sends_;
                break;
            }
            if (status == bus::RecvStatus::ok) handle(in, now);
        }
        now = Clock::now();
        run_timers(now);
        if (!fatal_error_.empty()) {
            if (progress_shown_ && config_.terminal) out_ << "\n" << std::flush;
            err_ << "orchestrator: giving up: " << fatal_error_ << "\n" << std::flush;
            shutdown_all(fatal_error_);
            return 1;
        }
        if (scheduler_.complete() && !completion_sent_) {
            completion_sent_ = true;
            send_tracker_stats(v1::TrackerStats::COMPLETED);
            const bool tracker = stages_.has_role(v1::ROLE_TRACKER) && !torrent_.trackers().empty();
            completion_deadline_ = now + (tracker ? config_.completion_grace : milliseconds(0));
        }
        if (completion_sent_ && (now >= completion_deadline_ || tracker_answered_after_completion_)) {
            show_progress(true);
            shutdown_all("complete");
            if (!config_.quiet) {
                const double seconds = std::chrono::duration<double>(now - started).count();
                out_ << "done: " << torrent_.name() << ", " << format_bytes(static_cast<double>(torrent_.total_size()))
                     << " in " << format_duration(std::chrono::seconds(static_cast<long long>(seconds + 0.5)))
                     << "\n" << std::flush;
            }
            return 0;
        }
    }
}

}  // namespace pw::orchestrator
