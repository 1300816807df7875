#include "orchestrator/service.hpp"

#include <poll.h>

#include <algorithm>
#include <ctime>
#include <ostream>
#include <stdexcept>

#include <spdlog/spdlog.h>

#include "core/bus/metrics.hpp"
#include "core/bus/stage.hpp"
#include "core/magnet.hpp"
#include "core/bus/welcome.hpp"
#include "orchestrator/progress.hpp"
#include "orchestrator/web_page.hpp"

namespace pw::orchestrator {

namespace v1 = ::piecework::v1;
using std::chrono::milliseconds;

namespace {

constexpr milliseconds kMaxPollWait{250};
// Nothing fetching or connected and no progress line to redraw: the session's own timers are
// a second apart, and news (a message, a signal, an RPC request) wakes the loop anyway.
constexpr milliseconds kIdlePollWait{1'000};
constexpr milliseconds kTerminalProgressPeriod{250};
constexpr milliseconds kPlainProgressPeriod{5'000};
constexpr int kExitLingerMs = 2000;
// Ctrl-C of `piecework download`, shell style.
constexpr int kInterruptedExitCode = 130;

std::int64_t wall_seconds() { return static_cast<std::int64_t>(std::time(nullptr)); }

}  // namespace

OrchestratorService::OrchestratorService(zmq::context_t& context, ServiceConfig config,
                                         std::ostream& out, std::ostream& err)
    : gatekeeper_(context, config.curve), router_(context, zmq::socket_type::router),
      config_(std::move(config)), out_(out), err_(err), session_(config_.session) {
    bus::configure(router_);
    // A stage restarted under the same name takes over its identity instead of being refused.
    router_.set(zmq::sockopt::router_handover, 1);
    gatekeeper_.secure(router_, "control");
    router_.bind(config_.control);
    settings_.download_dir = config_.download_dir;
    if (!config_.state_dir.empty()) {
        store_.emplace(config_.state_dir);
        restore();
    }
    session_.set_max_peers(settings_.peer_limit_global);
    if (config_.max_upload_rate != 0 || config_.max_download_rate != 0) {
        // Transmission counts speeds in kB/s (1000 bytes).
        settings_.speed_limit_up_enabled = config_.max_upload_rate != 0;
        settings_.speed_limit_up_kbps = static_cast<std::uint32_t>(std::max<std::uint64_t>(1, config_.max_upload_rate / 1000));
        settings_.speed_limit_down_enabled = config_.max_download_rate != 0;
        settings_.speed_limit_down_kbps = static_cast<std::uint32_t>(std::max<std::uint64_t>(1, config_.max_download_rate / 1000));
    }
    if (config_.seed_ratio) {
        settings_.seed_ratio_limited = true;
        settings_.seed_ratio_limit = *config_.seed_ratio;
    }
    apply_settings();
    add_command_line_torrents();
    if (config_.rpc) {
        rpc_ = std::make_unique<RpcServer>(*config_.rpc);
        add_web_page(*rpc_);
        if (const Status started = rpc_->start(); !started.ok()) {
            throw std::runtime_error("the RPC cannot start: " + started.error().describe());
        }
        RpcContext rpc_context;
        rpc_context.allowed_dirs = config_.allowed_dirs;
        rpc_context.peer_port = static_cast<std::uint16_t>(config_.session.listen_port);
        rpc_context.session_id = rpc_->session_id();
        rpc_context.state_dir = config_.state_dir;
        rpc_context.limits = rpc_->limits();
        rpc_context.started = wall_seconds();
        rpc_methods_ = std::make_unique<RpcMethods>(session_, settings_, store_ ? &*store_ : nullptr, rpc_context);
        spdlog::info("RPC on http://{0}:{1}/transmission/rpc, the web page on http://{0}:{1}/", config_.rpc->bind_address, rpc_->port());
    }
}

std::uint16_t OrchestratorService::rpc_port() const { return rpc_ ? rpc_->port() : 0; }

void OrchestratorService::restore() {
    std::string problem;
    if (auto saved = store_->load_session(problem)) {
        const std::string root = settings_.download_dir;
        settings_ = std::move(*saved);
        if (settings_.download_dir.empty()) settings_.download_dir = root;
    } else if (!problem.empty()) {
        spdlog::warn("session settings not restored: {}", problem);
    }
    ++settings_.session_count;
    std::vector<std::string> problems;
    const auto now = Clock::now();
    for (auto& saved : store_->load(problems)) {
        auto added = session_.add(Session::AddRequest{std::move(saved.metainfo), saved.metainfo_path,
                                                      std::move(saved.settings), saved.id},
                                  now, wall_seconds());
        if (!added) problems.push_back(saved.metainfo_path + ": " + added.error().describe());
    }
    for (const auto& line : problems) spdlog::error("not restored: {}", line);
    spdlog::info("session restored from {}: {} torrent(s)", store_->dir(), session_.torrents().size());
    session_.reserve_ids_below(settings_.next_torrent_id);
    session_.take_changed();  // just read: nothing to write back
}

void OrchestratorService::add_command_line_torrents() {
    const auto now = Clock::now();
    for (auto& file : config_.torrents) {
        TorrentSettings settings;
        settings.download_dir = config_.download_dir;
        settings.sequential = config_.sequential;
        const bool magnet = magnet::is_magnet(file.bytes);
        const std::string shown = magnet ? std::string("the magnet link") : file.path;
        if (!config_.select_files.empty() && magnet) {
            // Its files are not known before its metadata.
            spdlog::warn("--select-file is not applied to a magnet link: every file is fetched");
        } else if (!config_.select_files.empty()) {
            auto parsed = Torrent::parse(file.bytes, {}, PieceHashes::forget);
            if (!parsed) throw std::runtime_error(file.path + ": " + parsed.error().describe());
            std::size_t listed = 0;
            for (const FileEntry& entry : parsed->files()) listed += entry.pad ? 0 : 1;
            auto unwanted = parse_file_selection(config_.select_files, listed);
            if (!unwanted) throw std::runtime_error("--select-file: " + unwanted.error().describe());
            settings.file_unwanted = std::move(*unwanted);
        }
        auto added = session_.add(Session::AddRequest{std::move(file.bytes), file.path, settings, {}},
                                  now, wall_seconds());
        if (!added) throw std::runtime_error(shown + ": " + added.error().describe());
        if (TorrentState* torrent = session_.find(added->id)) {
            for (const auto& peer : config_.peers) torrent->offer_peer(peer);
        }
    }
    config_.torrents.clear();
}

void OrchestratorService::apply_settings() {
    const auto rate = [](bool enabled, std::uint32_t kbps, std::uint64_t exact) -> std::uint64_t {
        if (!enabled) return 0;
        // The command line's exact bytes when it set them; the RPC's kB/s otherwise.
        return exact != 0 && exact / 1000 == kbps ? exact : std::uint64_t{kbps} * 1000;
    };
    session_.set_rate_limits(rate(settings_.speed_limit_up_enabled, settings_.speed_limit_up_kbps, config_.max_upload_rate),
                             rate(settings_.speed_limit_down_enabled, settings_.speed_limit_down_kbps, config_.max_download_rate));
    session_.set_seed_ratio(settings_.seed_ratio_limited ? std::optional<double>(settings_.seed_ratio_limit) : std::nullopt);
    session_.set_max_peers(settings_.peer_limit_global);
}

bool OrchestratorService::done_seeding(Clock::time_point now) const {
    if (!session_.all_complete()) return false;
    if (!config_.seed_ratio && !config_.seed_time) return true;
    for (const auto& [id, torrent] : session_.torrents()) {
        if (torrent.finished()) continue;  // its ratio
        const auto since = torrent.seeding_since();
        if (config_.seed_time && since && now - *since >= *config_.seed_time) continue;
        return false;
    }
    return true;
}

void OrchestratorService::flush_outbox() {
    for (Outgoing& message : session_.outbox()) {
        ++sends_;
        // Never block the loop on a stage that stopped reading: its messages are dropped.
        if (!bus::send(router_, config_.session.name, message.envelope, message.frames,
                       &message.identity, zmq::send_flags::dontwait)) {
            spdlog::debug("dropped a message to '{}' (queue full or gone)", message.identity);
            continue;
        }
        bus::count_message(config_.session.metrics, true, message.envelope);
    }
    session_.outbox().clear();
}

void OrchestratorService::show_notices() {
    for (const Notice& notice : session_.take_notices()) {
        if (!config_.state_dir.empty()) {  // a daemon logs; a run of the command line prints
            const TorrentState* torrent = session_.find(notice.torrent);
            const std::string prefix = torrent != nullptr ? "torrent " + std::to_string(notice.torrent.get()) + ": " : "";
            switch (notice.kind) {
                case Notice::Kind::info: spdlog::info("{}{}", prefix, notice.text); break;
                case Notice::Kind::warning: spdlog::warn("{}{}", prefix, notice.text); break;
                case Notice::Kind::error: spdlog::error("{}{}", prefix, notice.text); break;
            }
            continue;
        }
        if (notice.kind == Notice::Kind::info && config_.quiet) continue;
        if (progress_shown_ && config_.terminal) out_ << "\n";
        std::ostream& to = notice.kind == Notice::Kind::info ? out_ : err_;
        to << notice.text << "\n" << std::flush;
    }
}

void OrchestratorService::save_changes(bool everything) {
    const bool settings_changed = session_.take_session_changed();
    if (settings_changed) apply_settings();
    // A magnet's fetched info dictionary is kept as its .torrent (without a state folder, the
    // session holds it in memory for the run).
    for (const auto& fetched : session_.take_fetched()) {
        if (!store_) continue;
        if (const Status saved = store_->save_metainfo(fetched.info_hash, fetched.metainfo); !saved.ok()) {
            spdlog::error("the fetched metadata of torrent {} was not saved: {}", fetched.id.get(),
                          saved.error().describe());
            continue;
        }
        session_.set_metainfo_path(fetched.id, store_->metainfo_path(fetched.info_hash));
    }
    if (!store_) return;
    for (const Sha1Digest& gone : session_.take_removed()) store_->forget(gone);
    std::set<TorrentId> changed = session_.take_changed();
    const auto now = Clock::now();
    if (settings_changed) everything = true;
    if (everything || now >= next_save_) {
        next_save_ = now + config_.save_period;
        for (const auto& [id, torrent] : session_.torrents()) changed.insert(id);
        SessionSettings totals = settings_;
        totals.next_torrent_id = session_.next_id();
        totals.downloaded_ever += session_.downloaded_this_run();
        totals.uploaded_ever += session_.uploaded_this_run();
        totals.seconds_active += static_cast<std::uint64_t>(
            std::chrono::duration_cast<std::chrono::seconds>(now - started_).count());
        if (const Status saved = store_->save_session(totals); !saved.ok()) {
            spdlog::error("session settings not saved: {}", saved.error().describe());
        }
    }
    for (const TorrentId id : changed) {
        const TorrentState* torrent = session_.find(id);
        if (torrent == nullptr) continue;
        if (const Status saved = store_->save_state(*torrent); !saved.ok()) {
            spdlog::error("torrent {} not saved: {}", id.get(), saved.error().describe());
        }
    }
}

void OrchestratorService::show_progress(bool final_line) {
    // Download and seed runs (torrents from the command line) show it; a daemon logs instead.
    if (config_.quiet || !config_.state_dir.empty()) return;
    ProgressSnapshot snapshot;
    for (const auto& [id, torrent] : session_.torrents()) {
        snapshot.done_bytes += torrent.wanted_done_bytes();  // the files chosen only
        snapshot.total_bytes += torrent.size_when_done();
        snapshot.bytes_per_second += torrent.progress_rate();
        snapshot.upload_bytes_per_second += torrent.upload_rate();
        snapshot.size_unknown = snapshot.size_unknown || torrent.phase() == TorrentPhase::metadata;
    }
    snapshot.peers = session_.peers_connected();
    snapshot.note = session_.stall_note();
    const std::string line = format_progress(snapshot);
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
    bus::metrics::Registry* registry = config_.session.metrics;
    if (registry == nullptr) return;
    const auto as_int = [](auto value) { return static_cast<std::int64_t>(value); };
    std::uint64_t pieces_done = 0, pieces = 0, done = 0, total = 0, known = 0;
    double rate = 0;
    for (const auto& [id, torrent] : session_.torrents()) {
        pieces_done += torrent.pieces_done();
        pieces += torrent.piece_count();
        done += torrent.done_bytes();
        total += torrent.total_size();
        rate += torrent.download_rate();
        known += torrent.directory().known_peers();
    }
    registry->gauge("piecework_torrents", "Torrents in the session").set(as_int(session_.torrents().size()));
    registry->gauge("piecework_pieces_done", "Pieces written and acknowledged").set(as_int(pieces_done));
    registry->gauge("piecework_pieces_total", "Pieces in the session's torrents").set(as_int(pieces));
    registry->gauge("piecework_bytes_done", "Bytes written and acknowledged").set(as_int(done));
    registry->gauge("piecework_bytes_total", "Bytes in the session's torrents").set(as_int(total));
    registry->gauge("piecework_download_rate_bytes", "Download rate, bytes per second").set(as_int(rate));
    registry->gauge("piecework_peers_known", "Peers known from trackers and --peer").set(as_int(known));
    registry->gauge("piecework_peers_connected", "Peers connected across all workers")
        .set(session_.peers_connected());
    for (const auto role : {v1::ROLE_TRACKER, v1::ROLE_PEER_WORKER, v1::ROLE_VERIFIER, v1::ROLE_WRITER, v1::ROLE_DHT}) {
        registry->gauge("piecework_stages", "Stages registered now", {{"role", v1::Role_Name(role)}})
            .set(as_int(session_.stages().identities(role).size()));
    }
}

void OrchestratorService::wait_for_messages(bool drained) {
    // The socket's ZMQ_FD only signals news: right after a receive found nothing, waiting on
    // it alone is enough, and saves zmq::poll's own look at the socket (a poll and a getpid
    // per wake-up, a good part of the loop's cost with small pieces). A send since then may
    // have taken that news in (ZeroMQ processes its commands on send), so after a send, or
    // when the last batch stopped short of draining the socket, the socket is asked instead.
    // (Plain poll(2), not zmq::poll: that polls once without waiting before it waits.)
    // The signals and the RPC's bridge are plain descriptors beside the socket.
    const milliseconds wait = config_.terminal || session_.any_busy() ? kMaxPollWait : kIdlePollWait;
    int extra[2];
    int extras = 0;
    if (config_.signal_fd >= 0) extra[extras++] = config_.signal_fd;
    if (rpc_) extra[extras++] = rpc_->wake_fd();
    if (drained && sends_ == sends_when_drained_) {
        pollfd waits[3] = {{router_.get(zmq::sockopt::fd), POLLIN, 0}, {}, {}};
        for (int i = 0; i < extras; ++i) waits[1 + i] = pollfd{extra[i], POLLIN, 0};
        ::poll(waits, static_cast<nfds_t>(1 + extras), static_cast<int>(wait.count()));  // EINTR: the loop goes on
        return;
    }
    zmq::pollitem_t items[3] = {{router_.handle(), 0, ZMQ_POLLIN, 0}, {}, {}};
    for (int i = 0; i < extras; ++i) items[1 + i] = zmq::pollitem_t{nullptr, extra[i], ZMQ_POLLIN, 0};
    try {
        zmq::poll(items, static_cast<std::size_t>(1 + extras), wait);
    } catch (const zmq::error_t& e) {
        if (e.num() != EINTR) throw;
    }
}

int OrchestratorService::finish(int code, const std::string& reason) {
    if (progress_shown_ && config_.terminal && code != 0) out_ << "\n" << std::flush;
    if (rpc_) rpc_->stop();
    session_.shutdown_all(reason);
    flush_outbox();
    show_notices();
    save_changes(true);
    // Give ZeroMQ a moment to hand the Shutdowns over before the socket closes.
    router_.set(zmq::sockopt::linger, kExitLingerMs);
    return code;
}

int OrchestratorService::run(const std::function<bool()>& stop_requested) {
    started_ = Clock::now();
    next_progress_ = started_ + (config_.terminal ? kTerminalProgressPeriod : kPlainProgressPeriod);
    next_save_ = started_ + config_.save_period;
    const int interrupted = config_.exit_when_done ? kInterruptedExitCode : 0;
    bus::Incoming in;  // reused: its buffers outlive one message
    bool drained = false;
    while (true) {
        if (stop_requested()) return finish(interrupted, "interrupted");
        wait_for_messages(drained);
        if (config_.signal_fd >= 0) {
            if (const auto signal = bus::read_termination_signal(config_.signal_fd)) {
                spdlog::info("{}: telling every stage to finish, saving the session", *signal);
                return finish(interrupted, "interrupted");
            }
        }
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
            if (status == bus::RecvStatus::ok) session_.handle(in, now);
        }
        if (rpc_) {
            rpc_->serve_pending([&](const std::string& body) {
                return rpc_methods_->handle(body, Clock::now(), wall_seconds());
            });
        }
        now = Clock::now();
        session_.tick(now, wall_seconds());
        flush_outbox();
        show_notices();
        save_changes(false);
        if (now >= next_progress_) {
            next_progress_ = now + (config_.terminal ? kTerminalProgressPeriod : kPlainProgressPeriod);
            show_progress(false);
            export_metrics();
        }
        if (!config_.exit_when_done) continue;
        for (const auto& [id, torrent] : session_.torrents()) {
            if (torrent.phase() == TorrentPhase::failed) {
                if (progress_shown_ && config_.terminal) out_ << "\n";
                err_ << "orchestrator: giving up: " << torrent.error() << "\n" << std::flush;
                return finish(1, torrent.error());
            }
        }
        if (!done_seeding(now)) continue;
        bool with_trackers = false;
        bool announced = true;
        for (const auto& [id, torrent] : session_.torrents()) {
            if (torrent.trackers().empty()) continue;
            with_trackers = true;
            announced = announced && torrent.completion_announced();
        }
        if (!completion_deadline_) {
            const bool tracker = with_trackers && session_.stages().has_role(v1::ROLE_TRACKER);
            completion_deadline_ = now + (tracker ? config_.completion_grace : milliseconds(0));
        }
        if (now < *completion_deadline_ && !announced) continue;
        show_progress(true);
        if (!config_.quiet) {
            std::uint64_t total = 0;
            std::string names;
            for (const auto& [id, torrent] : session_.torrents()) {
                total += torrent.total_size();
                names += (names.empty() ? "" : ", ") + torrent.name();
            }
            const double seconds = std::chrono::duration<double>(now - started_).count();
            out_ << "done: " << names << ", " << format_bytes(static_cast<double>(total)) << " in "
                 << format_duration(std::chrono::seconds(static_cast<long long>(seconds + 0.5)))
                 << "\n" << std::flush;
        }
        return finish(0, "complete");
    }
}

}  // namespace pw::orchestrator
