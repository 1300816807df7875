#include "peer_worker/worker_service.hpp"

#include <algorithm>
#include <limits>
#include <stdexcept>
#include <string_view>
#include <vector>

#include <asio/post.hpp>
#include <spdlog/spdlog.h>

#include "core/bus/welcome.hpp"

namespace pw::peer_worker {

namespace {

constexpr auto kTickPeriod = std::chrono::milliseconds(100);
// Bytes of whole pieces ZeroMQ may queue toward the verifier beyond the piece-buffer cap.
constexpr std::uint64_t kVerifierQueueBytes = 8ull << 20;
// Batches queued toward the verifier in arena mode: they only name slots, and the arena
// bounds the memory of their pieces.
constexpr int kArenaBatchesQueued = 16;

// The high-water mark toward the verifier: it counts messages, so batches of frames (each
// at most kMaxBatchFrameBytes, or one larger piece) are counted to stay near
// kVerifierQueueBytes.
int pieces_send_hwm(bool arena, std::uint32_t piece_length) {
    if (arena) return kArenaBatchesQueued;
    const std::uint64_t batch_bytes =
        std::max<std::uint64_t>(bus::kMaxBatchFrameBytes, piece_length);
    return static_cast<int>(std::clamp<std::uint64_t>(kVerifierQueueBytes / batch_bytes, 2, 512));
}

}  // namespace

bool wants_arena(const WorkerOptions& options) {
    switch (options.shared_memory) {
        case SharedMemory::on: return true;
        case SharedMemory::off: return false;
        case SharedMemory::automatic: break;
    }
    return std::string_view(options.pieces).starts_with("ipc://");
}

WorkerService::WorkerService(WorkerOptions options)
    : options_(std::move(options)),
      zmq_context_(1),
      control_(zmq_context_, options_.control, options_.name, bus::v1::ROLE_PEER_WORKER, {},
               options_.curve),
      pieces_(zmq_context_, zmq::socket_type::push),
      timer_(io_) {
    control_.attach_metrics(options_.metrics);
    callbacks_.on_handshake = [this](PeerConnection& c) { on_handshake(c); };
    callbacks_.on_activity = [this](PeerConnection& c) { on_activity(c); };
    callbacks_.on_closed = [this](PeerConnection& c, const std::string& reason) {
        on_closed(c, reason);
    };
}

WorkerService::~WorkerService() { stop(exit_code_); }

int WorkerService::run() {
    start(control_.handshake());
    bus::release_start_up_memory();
    io_.run();
    return exit_code_;
}

void WorkerService::start(const bus::Incoming& welcome) {
    bus::WelcomeInfo info = bus::read_welcome(welcome, PieceHashes::forget);
    our_id_ = info.peer_id;
    torrent_ = std::move(info.torrent);
    geometry_ = PieceGeometry(torrent_->total_size(), torrent_->piece_length());
    parser_limits_.max_message = std::max(kBlockSize + 9, geometry_.bitfield_bytes() + 1);
    parser_limits_.geometry = geometry_;
    set_up_piece_memory();

    // ZeroMQ's queue toward the verifier holds a bounded number of bytes, not a bounded
    // number of (possibly huge) pieces; its high-water mark counts whole messages.
    bus::SocketLimits limits;
    limits.send_hwm = pieces_send_hwm(memory_->arena() != nullptr, torrent_->piece_length());
    bus::configure(pieces_, limits);
    bus::secure_client(pieces_, options_.curve, bus::kPiecesServer);
    pieces_.connect(options_.pieces);

    control_watch_ = std::make_unique<ZmqWatch>(io_, control_.socket());
    pieces_watch_ = std::make_unique<ZmqWatch>(io_, pieces_);
    spdlog::info("torrent {} ({} pieces of {} bytes), up to {} peers, pieces {}", torrent_->name(),
                 geometry_.piece_count(), geometry_.piece_length(), options_.max_peers,
                 memory_->arena() ? "in a shared-memory arena" : "as frames");
    // Messages may have queued behind the Welcome; the descriptor will not signal for them.
    drain_control();
    schedule_timer();
}

void WorkerService::set_up_piece_memory() {
    batches_ = std::make_unique<PieceBatches>(
        io_, options_.name, [this](OutgoingBatch& batch) { return send_batch(batch); });
    if (wants_arena(options_)) {
        const std::uint32_t piece_length = geometry_.piece_length();
        const std::uint64_t slots = std::clamp<std::uint64_t>(
            options_.max_piece_bytes / piece_length, 2, std::numeric_limits<std::uint32_t>::max());
        try {
            memory_ = std::make_unique<PieceMemory>(
                std::make_unique<bus::PieceArena>(piece_length, static_cast<std::uint32_t>(slots)));
            batches_->use_arena(memory_->arena());
            spdlog::info("piece arena {}: {} slots of {} bytes", memory_->arena()->path, slots,
                         piece_length);
            return;
        } catch (const std::exception& error) {
            spdlog::warn("no shared-memory arena ({}); pieces travel as frames", error.what());
        }
    }
    memory_ = std::make_unique<PieceMemory>(options_.max_piece_bytes);
}

void WorkerService::stop(int exit_code) {
    if (stopping_) return;
    stopping_ = true;
    exit_code_ = exit_code;
    std::vector<ConnectionPtr> connections;
    for (const auto& [key, connection] : peers_) connections.push_back(connection);
    for (const auto& connection : connections) connection->fail("worker stopping");
    peers_.clear();
    timer_.cancel();
    io_.stop();
}

// --- control socket ---

void WorkerService::drain_control() {
    // A send from inside handle() lands here again: the loop below re-reads ZMQ_EVENTS
    // after each message, so it sees whatever that send changed.
    if (draining_control_ || stopping_) return;
    draining_control_ = true;
    while (!stopping_ && (control_watch_->events() & ZMQ_POLLIN) != 0) {
        if (auto message = control_.poll_message()) handle(*message);
    }
    draining_control_ = false;
    if (!stopping_) control_watch_->arm([this] { drain_control(); });
}

void WorkerService::send_control(bus::v1::Envelope& envelope, std::span<zmq::message_t> frames) {
    control_.send(envelope, frames);
    // A send resets the edge of ZMQ_FD: messages that arrived meanwhile would never wake
    // us. Drain right after the current handler (not inside it: it may be iterating peers).
    if (!drain_posted_) {
        drain_posted_ = true;
        asio::post(io_, [this] {
            drain_posted_ = false;
            drain_control();
        });
    }
}

void WorkerService::handle(bus::Incoming& message) {
    const auto& envelope = message.envelope;
    switch (envelope.body_case()) {
        case bus::v1::Envelope::kAddPeers: add_peers(envelope.add_peers()); break;
        case bus::v1::Envelope::kLeases: grant_leases(envelope.leases()); break;
        case bus::v1::Envelope::kCancelPiece:
            cancel_piece(PieceIndex{envelope.cancel_piece().piece()});
            break;
        case bus::v1::Envelope::kBanPeer:
            ban(envelope.ban_peer().ip(), envelope.ban_peer().reason());
            break;
        case bus::v1::Envelope::kSlotsFreed: free_slots(envelope.slots_freed()); break;
        case bus::v1::Envelope::kShutdown:
            spdlog::info("shutdown: {}", envelope.shutdown().reason());
            stop(0);
            break;
        case bus::v1::Envelope::kWelcome: break;  // a late duplicate of the handshake
        default:
            spdlog::debug("ignored a {} message", static_cast<int>(envelope.body_case()));
            break;
    }
}

void WorkerService::add_peers(const bus::v1::AddPeers& add) {
    const auto now = Clock::now();
    for (const auto& peer : add.peers()) {
        const std::string key = bus::peer_key(peer.ip(), peer.port());
        if (peers_.count(key) != 0) continue;
        asio::error_code error;
        const auto address = asio::ip::make_address(peer.ip(), error);
        if (error || peer.port() == 0 || peer.port() > 65535) {
            report_disconnected(key, "invalid address");
            continue;
        }
        if (banned_.count(address) != 0) {
            report_disconnected(key, "banned");
            continue;
        }
        if (peers_.size() >= options_.max_peers) {
            report_disconnected(key, "worker already has --max-peers peers");
            continue;
        }
        PeerSession session(geometry_, torrent_->info_hash(), our_id_, now);
        auto connection = std::make_shared<PeerConnection>(
            io_, key, asio::ip::tcp::endpoint(address, static_cast<std::uint16_t>(peer.port())),
            std::move(session), parser_limits_, callbacks_);
        peers_.emplace(key, connection);
        connection->start(now);
    }
}

void WorkerService::grant_leases(const bus::v1::Leases& leases) {
    std::vector<std::uint64_t> refused;
    const auto found = peers_.find(leases.peer());
    if (found == peers_.end() || found->second->closed() ||
        !found->second->session().handshake_done()) {
        for (const auto& lease : leases.leases()) refused.push_back(lease.lease_id());
        if (!refused.empty()) report_released(leases.peer(), refused, "peer gone");
        return;
    }
    const auto now = Clock::now();
    PeerConnection& connection = *found->second;
    PeerSession& session = connection.session();
    session.note_work_answer(leases.leases_size() > 0, now);
    for (const auto& lease : leases.leases()) {
        const PieceIndex piece{lease.piece()};
        const std::uint32_t size = geometry_.contains(piece) ? geometry_.piece_size(piece) : 0;
        auto destination = size == 0 ? std::nullopt : memory_->reserve(lease.lease_id(), size);
        if (!destination) {
            // Not ours to free: the id may be a duplicate of a lease we are working on.
            refused.push_back(lease.lease_id());
        } else if (!session.add_lease(piece, lease.lease_id(), std::move(*destination))) {
            memory_->release(lease.lease_id());
            refused.push_back(lease.lease_id());
        }
    }
    if (!refused.empty()) {
        report_released(leases.peer(), refused,
                        "lease refused (out of range, duplicate or over the worker's memory cap)");
    }
    session.fill_requests(now, !backpressured());
    connection.flush();
}

void WorkerService::cancel_piece(PieceIndex piece) {
    const auto now = Clock::now();
    for (const auto& [key, connection] : peers_) {
        if (const auto lease_id = connection->session().cancel_piece(piece, now)) {
            release(key, {*lease_id}, "piece cancelled");
            connection->session().fill_requests(now, !backpressured());
            connection->flush();
        }
    }
}

void WorkerService::free_slots(const bus::v1::SlotsFreed& freed) {
    const std::size_t count = memory_->free_delivered(freed);
    spdlog::debug("{} arena slots freed ({} still delivered)", count, memory_->delivered_count());
    if (count > 0) resume_peers();
}

void WorkerService::ban(const std::string& ip, const std::string& reason) {
    asio::error_code error;
    const auto address = asio::ip::make_address(ip, error);
    if (error) {
        spdlog::warn("ignored a ban of '{}': not an address", ip);
        return;
    }
    banned_.insert(address);
    spdlog::info("banned {}: {}", ip, reason);
    std::vector<std::string> keys;
    for (const auto& [key, connection] : peers_) {
        if (connection->address() == address) keys.push_back(key);
    }
    for (const auto& key : keys) drop(key, "banned: " + reason);
}

// --- peers ---

void WorkerService::on_handshake(PeerConnection& connection) {
    spdlog::info("{}: connected", connection.key());
    bus::v1::Envelope envelope;
    auto* connected = envelope.mutable_peer_connected();
    connected->set_peer(connection.key());
    const auto& id = connection.session().peer_id();
    connected->set_peer_id(std::string(id.begin(), id.end()));
    send_control(envelope);
}

void WorkerService::on_activity(PeerConnection& connection) {
    const auto now = Clock::now();
    PeerSession& session = connection.session();
    bytes_downloaded_ += session.take_downloaded();
    collect_completed(connection);
    report_has(connection, false);  // a bitfield goes out at once; haves are batched
    request_work(connection, now);
    session.fill_requests(now, !backpressured());
}

void WorkerService::on_closed(PeerConnection& connection, const std::string& reason) {
    if (stopping_) return;
    const std::string key = connection.key();
    spdlog::info("{}: dropped: {}", key, reason);
    PeerSession& session = connection.session();
    bytes_downloaded_ += session.take_downloaded();
    collect_completed(connection);  // whole pieces are still worth verifying
    const auto lease_ids = session.release_leases();
    if (!lease_ids.empty()) release(key, lease_ids, "peer gone: " + reason);
    report_disconnected(key, reason);
    // Our own address: connecting again would only find ourselves again.
    if (session.peer_id() == our_id_) banned_.insert(connection.address());
    // Every caller of fail() holds its own reference, so erasing here is safe.
    peers_.erase(key);
}

void WorkerService::drop(const std::string& key, const std::string& reason) {
    const auto found = peers_.find(key);
    if (found == peers_.end()) return;
    const ConnectionPtr keep = found->second;
    keep->fail(reason);
}

void WorkerService::report_has(PeerConnection& connection, bool include_haves) {
    auto report = connection.session().take_has_report(include_haves);
    if (!report) return;
    bus::v1::Envelope envelope;
    auto* has = envelope.mutable_peer_has();
    has->set_peer(connection.key());
    has->set_have_all(report->have_all);
    for (const auto index : report->haves) has->add_haves(index);
    if (report->bitfield) {
        has->set_bitfield(true);
        zmq::message_t frame = bus::frame_from_buffer(std::move(*report->bitfield));
        send_control(envelope, std::span<zmq::message_t>(&frame, 1));
    } else {
        send_control(envelope);
    }
}

void WorkerService::request_work(PeerConnection& connection, Clock::time_point now) {
    if (stopping_ || connection.closed()) return;
    PeerSession& session = connection.session();
    std::uint32_t count = session.pieces_wanted(now);
    if (count == 0) return;
    // Beyond the memory cap we ask for nothing; the pipeline drains (or SlotsFreed comes)
    // and we ask again.
    const std::uint64_t room = memory_->room(geometry_.piece_length());
    count = static_cast<std::uint32_t>(std::min<std::uint64_t>(count, room));
    if (count == 0) return;
    report_has(connection, true);  // the orchestrator leases from what it knows the peer has
    bus::v1::Envelope envelope;
    envelope.mutable_work_request()->set_peer(connection.key());
    envelope.mutable_work_request()->set_count(count);
    send_control(envelope);
    session.note_work_requested(now);
}

void WorkerService::release(const std::string& key, const std::vector<std::uint64_t>& lease_ids,
                            const std::string& reason) {
    for (const auto id : lease_ids) memory_->release(id);
    report_released(key, lease_ids, reason);
}

void WorkerService::report_released(const std::string& key,
                                    const std::vector<std::uint64_t>& lease_ids,
                                    const std::string& reason) {
    if (lease_ids.empty()) return;
    bus::v1::Envelope envelope;
    auto* released = envelope.mutable_lease_released();
    released->set_peer(key);
    for (const auto id : lease_ids) released->add_lease_ids(id);
    released->set_reason(reason);
    send_control(envelope);
}

void WorkerService::report_disconnected(const std::string& key, const std::string& reason) {
    bus::v1::Envelope envelope;
    envelope.mutable_peer_disconnected()->set_peer(key);
    envelope.mutable_peer_disconnected()->set_reason(reason);
    send_control(envelope);
}

void WorkerService::resume_peers() {
    const auto now = Clock::now();
    for (const auto& [key, connection] : peers_) {
        if (connection->closed() || !connection->session().handshake_done()) continue;
        request_work(*connection, now);
        connection->session().fill_requests(now, !backpressured());
        connection->flush();
    }
}

// --- verifier ---

void WorkerService::collect_completed(PeerConnection& connection) {
    auto& completed = connection.session().completed();
    for (auto& piece : completed) {
        const auto slot = memory_->slot_of(piece.lease_id);
        batches_->add(std::move(piece), connection.key(), slot);
    }
    completed.clear();
}

bool WorkerService::send_batch(OutgoingBatch& batch) {
    if (stopping_) return false;
    if (!bus::send(pieces_, options_.name, batch.envelope, batch.frames, nullptr,
                   zmq::send_flags::dontwait)) {
        // Backpressure: requests stay paused until the verifier takes more.
        watch_pieces_socket();
        return false;
    }
    report_delivered(batch.envelope.piece_batch());
    return true;
}

void WorkerService::report_delivered(const bus::v1::PieceBatch& batch) {
    // The pieces are the verifier's now: if the verifier dies, the orchestrator re-queues them.
    // One envelope serves every report: cleared, it keeps its PieceRefs for the next batch.
    auto* delivered = delivered_report_.mutable_pieces_delivered();
    delivered->mutable_pieces()->Clear();
    for (const auto& piece : batch.pieces()) {
        memory_->delivered(piece.lease_id());
        auto* ref = delivered->add_pieces();
        ref->set_piece(piece.piece());
        ref->set_lease_id(piece.lease_id());
    }
    send_control(delivered_report_);
}

void WorkerService::watch_pieces_socket() {
    // The timer retries too, in case the descriptor's edge came before we armed it.
    pieces_watch_->arm([this] {
        if ((pieces_watch_->events() & ZMQ_POLLOUT) != 0) batches_->flush();
        else if (batches_->backpressured()) watch_pieces_socket();
    });
}

// --- time ---

void WorkerService::schedule_timer() {
    timer_.expires_after(kTickPeriod);
    timer_.async_wait([this](const asio::error_code& error) {
        if (!error && !stopping_) on_timer();
    });
}

void WorkerService::on_timer() {
    const auto now = Clock::now();
    std::vector<ConnectionPtr> connections;
    std::uint32_t connected = 0;
    for (const auto& [key, connection] : peers_) {
        connections.push_back(connection);
        if (connection->session().handshake_done()) ++connected;
    }
    bus::v1::Heartbeat stats;
    stats.set_bytes_downloaded(bytes_downloaded_);
    stats.set_peers_connected(connected);
    stats.set_queue_depth(static_cast<std::uint32_t>(batches_->waiting()));
    const bool alive = control_.tick(stats);
    drain_control();  // tick may have sent a heartbeat
    if (!alive) {
        spdlog::error("the orchestrator has been silent too long; exiting");
        stop(1);
        return;
    }
    if (stopping_) return;

    batches_->flush();
    for (const auto& connection : connections) {
        if (connection->closed()) continue;
        connection->check_deadline(now);
        PeerSession& session = connection->session();
        if (connection->closed() || !session.handshake_done()) continue;
        if (session.stalled(now)) {
            connection->fail("stalled: requests outstanding and no block for 25 s");
            continue;
        }
        if (session.choked_too_long(now)) {
            release(connection->key(), session.release_leases(), "choked us for 30 s");
        }
        session.on_tick(now);
        report_has(*connection, true);
        request_work(*connection, now);
        session.fill_requests(now, !backpressured());
        connection->flush();
    }
    if (!stopping_) schedule_timer();
}

}  // namespace pw::peer_worker
