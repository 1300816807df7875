#include "peer_worker/worker_service.hpp"

#include <algorithm>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <asio/post.hpp>
#include <asio/write.hpp>
#include <spdlog/spdlog.h>

#include "core/bus/welcome.hpp"

namespace pw::peer_worker {

namespace {

constexpr auto kTickPeriod = std::chrono::milliseconds(100);
// Bytes of whole pieces ZeroMQ may queue toward the verifier beyond the piece-memory budget.
constexpr std::uint64_t kVerifierQueueBytes = 8ull << 20;
// Batches queued toward the verifier in arena mode: they only name slots, and the arenas
// bound the memory of their pieces.
constexpr int kArenaBatchesQueued = 16;
// Long enough for the batches flushed at the end to reach the verifier.
constexpr int kPiecesLingerMs = 1000;
// The choker hears of every peer this often (and at once of a change of interest).
constexpr auto kPeerStatsPeriod = std::chrono::seconds(5);
// With many peers sending pieces the piece budget may grow to this many times its size.
constexpr std::uint64_t kPieceBudgetGrowth = 4;
// Allowed-fast pieces offered to each peer (BEP 6's example size).
constexpr std::uint32_t kAllowedFastOffered = 10;
// ReadPiece messages ZeroMQ may queue toward the writer (they are small; reads in flight
// are bounded by the uploader).
constexpr int kReadsSendHwm = 256;

// The high-water mark toward the verifier: it counts messages, so batches of frames (each
// at most kMaxBatchFrameBytes, or one larger piece) are counted to stay near
// kVerifierQueueBytes.
int pieces_send_hwm(bool arena) {
    if (arena) return kArenaBatchesQueued;
    return static_cast<int>(
        std::clamp<std::uint64_t>(kVerifierQueueBytes / bus::kMaxBatchFrameBytes, 2, 512));
}

// Arenas need memfd and a shared mapping; where they cannot be had, pieces travel as frames
// for the whole run (the socket's high-water mark is chosen once, before it connects).
bool arenas_work() {
    try {
        bus::PieceArena probe(4096, 1);
        return true;
    } catch (const std::exception& error) {
        spdlog::warn("no shared-memory arena ({}); pieces travel as frames", error.what());
        return false;
    }
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
      stage_(zmq_context_, bus::StageConfig{options_.control, options_.name,
                                            bus::v1::ROLE_PEER_WORKER, options_.timing,
                                            options_.curve, options_.metrics, options_.signal_fd}),
      pieces_(zmq_context_, zmq::socket_type::push),
      timer_(io_),
      reads_(zmq_context_, zmq::socket_type::dealer) {}

WorkerService::~WorkerService() {
    stopping_ = true;
    if (listener_) listener_->close();
    for (const auto& [torrent, connection] : all_connections()) connection->fail("worker stopping");
    // The descriptor is the stage's (the signalfd run_stage made): never ours to close.
    if (signals_) signals_->release();
}

int WorkerService::run() {
    const auto welcome = stage_.handshake();
    if (!welcome) return stage_.exit_code();  // a signal came first
    our_id_ = welcome->peer_id;
    encryption_ = welcome->encryption;
    set_up_pieces();
    set_up_reads();
    control_watch_ = std::make_unique<ZmqWatch>(io_, stage_.link().socket());
    pieces_watch_ = std::make_unique<ZmqWatch>(io_, pieces_);
    if (!options_.reads.empty()) reads_watch_ = std::make_unique<ZmqWatch>(io_, reads_);
    if (stage_.signal_fd() >= 0) {
        signals_ = std::make_unique<asio::posix::stream_descriptor>(io_, stage_.signal_fd());
        watch_signals();
    }
    spdlog::info("welcomed: up to {} peers, {} MiB of pieces (up to {} MiB with many peers sending) {}, encryption {}",
                 options_.max_peers, options_.max_piece_bytes >> 20,
                 (kPieceBudgetGrowth * options_.max_piece_bytes) >> 20,
                 memory_->kind() == PieceMemory::Kind::arenas ? "in shared-memory arenas"
                                                              : "as frames",
                 to_string(encryption_));
    open_listener(welcome->listen_port);
    // The torrents follow the Welcome and may be queued already; the descriptor will not
    // signal for them.
    drain_control();
    if (reads_watch_) drain_reads();
    schedule_timer();
    if (!stage_.finished()) io_.run();
    return stage_.exit_code();
}

void WorkerService::set_up_pieces() {
    const bool arenas = wants_arena(options_) && arenas_work();
    memory_ = std::make_unique<PieceMemory>(
        options_.max_piece_bytes, arenas ? PieceMemory::Kind::arenas : PieceMemory::Kind::buffers,
        PieceMemory::kTrimWindow, kPieceBudgetGrowth * options_.max_piece_bytes);
    batches_ = std::make_unique<PieceBatches>(
        io_, options_.name, [this](OutgoingBatch& batch) { return send_batch(batch); });
    // ZeroMQ's queue toward the verifier holds a bounded number of bytes, not a bounded
    // number of (possibly huge) pieces; its high-water mark counts whole messages.
    bus::SocketLimits limits;
    limits.send_hwm = pieces_send_hwm(arenas);
    bus::configure(pieces_, limits);
    bus::secure_client(pieces_, options_.curve, bus::kPiecesServer);
    pieces_.connect(options_.pieces);
}

void WorkerService::set_up_reads() {
    UploadOptions upload;
    upload.reads = !options_.reads.empty();
    upload.cache.bytes = options_.upload_cache_bytes;
    uploader_ = std::make_unique<Uploader>(upload, [this](bus::v1::Envelope& envelope) {
        return send_read(envelope);
    });
    if (options_.reads.empty()) {
        spdlog::info("no --reads endpoint: pieces are announced, requests refused");
        return;
    }
    bus::SocketLimits limits;
    limits.send_hwm = kReadsSendHwm;
    bus::configure(reads_, limits);
    // The writer's read service tells its workers apart by this.
    reads_.set(zmq::sockopt::routing_id, options_.name);
    bus::secure_client(reads_, options_.curve, bus::kReadsServer);
    reads_.connect(options_.reads);
}

void WorkerService::open_listener(std::uint16_t port) {
    if (port == 0) {
        spdlog::info("the Welcome names no listen port: not accepting peers");
        return;
    }
    listener_ = std::make_unique<Listener>(
        io_, [this](asio::ip::tcp::socket& socket, const asio::ip::tcp::endpoint& remote,
                    Handshaken& handshaken) { on_incoming(socket, remote, handshaken); });
    listener_->set_encryption(encryption_);
    // MSE's SKEY: among the torrents this worker knows now (a handful of SHA-1s per peer).
    listener_->set_lookup([this](const Sha1Digest& req2) -> std::optional<Sha1Digest> {
        for (const auto& [id, torrent] : torrents_) {
            if (!torrent->leaving && mse::req2_hash(torrent->info_hash) == req2) return torrent->info_hash;
        }
        return std::nullopt;
    });
    auto opened = listener_->open(port);
    if (!opened) {
        // Said once, clearly; the heartbeat's port 0 tells the orchestrator, which then
        // announces no port.
        spdlog::error("cannot listen for peers on port {}: {}; no incoming peers for this worker",
                      port, opened.error().describe());
        listener_.reset();
        return;
    }
    spdlog::info("listening for peers on port {}", *opened);
}

void WorkerService::stop_if_finished() {
    if (!stage_.finished()) return;
    timer_.cancel();
    io_.stop();
}

// --- the stage's end ---

void WorkerService::on_terminate(const std::string& reason) {
    spdlog::info("stopping: {}", reason);
    // Whole pieces are still worth verifying: what ZeroMQ takes now leaves, and is reported
    // delivered before the control link's last reports go.
    if (batches_ && !stopping_) {
        for (const auto& [torrent, connection] : all_connections()) {
            if (!connection->closed()) collect_completed(*torrent, *connection);
        }
        batches_->flush();
        pieces_.set(zmq::sockopt::linger, kPiecesLingerMs);
    }
    stopping_ = true;
    if (listener_) listener_->close();
    for (const auto& [torrent, connection] : all_connections()) connection->fail("worker stopping");
    if (uploader_) uploader_->send_released();  // the writer's slots, given back at once
    timer_.cancel();
}

bus::v1::Heartbeat WorkerService::heartbeat() {
    bus::v1::Heartbeat beat;
    std::uint32_t connected_total = 0;
    for (const auto& [id, torrent] : torrents_) {
        std::uint32_t connected = 0;
        for (const auto& [key, connection] : torrent->peers) {
            if (connection->session().handshake_done()) ++connected;
        }
        connected_total += connected;
        if (torrent->peers.empty() && torrent->bytes_downloaded == 0 && torrent->bytes_uploaded == 0) {
            continue;
        }
        auto* counters = beat.add_torrents();
        counters->set_torrent(id.get());
        counters->set_bytes_downloaded(torrent->bytes_downloaded);
        counters->set_bytes_uploaded(torrent->bytes_uploaded);
        counters->set_peers_connected(connected);
    }
    beat.set_bytes_downloaded(bytes_downloaded_);
    beat.set_bytes_uploaded(bytes_uploaded_);
    beat.set_listen_port(listener_ && listener_->is_open() ? listener_->port() : 0);
    beat.set_peers_connected(connected_total);
    beat.set_queue_depth(batches_ ? static_cast<std::uint32_t>(batches_->waiting()) : 0);
    return beat;
}

// --- control socket ---

void WorkerService::drain_control() {
    // A send from inside on_control lands here again: the stage re-reads ZMQ_EVENTS after
    // each message, so it sees whatever that send changed.
    if (draining_control_ || stopping_) return;
    draining_control_ = true;
    stage_.on_control_ready(*this);
    draining_control_ = false;
    stop_if_finished();
    if (!stopping_ && !stage_.finished()) control_watch_->arm([this] { drain_control(); });
}

void WorkerService::watch_signals() {
    signals_->async_wait(asio::posix::stream_descriptor::wait_read,
                         [this](const asio::error_code& error) {
                             if (error) return;
                             stage_.on_signal_ready(*this);
                             stop_if_finished();
                             if (!stage_.finished()) watch_signals();
                         });
}

void WorkerService::send_control(bus::v1::Envelope& envelope, std::span<zmq::message_t> frames) {
    stage_.link().send(envelope, frames);
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

void WorkerService::on_control(bus::Incoming& message) {
    const auto& envelope = message.envelope;
    switch (envelope.body_case()) {
        case bus::v1::Envelope::kTorrentAdded: add_torrent(envelope.torrent_added()); break;
        case bus::v1::Envelope::kTorrentInfo: learn_torrent_info(message); break;
        case bus::v1::Envelope::kTorrentRemoved:
            remove_torrent(TorrentId{envelope.torrent_removed().torrent()});
            break;
        case bus::v1::Envelope::kAddPeers: add_peers(envelope.add_peers()); break;
        case bus::v1::Envelope::kLeases: grant_leases(envelope.leases()); break;
        case bus::v1::Envelope::kCancelPiece:
            cancel_piece(TorrentId{envelope.cancel_piece().torrent()},
                         PieceIndex{envelope.cancel_piece().piece()});
            break;
        case bus::v1::Envelope::kBanPeer:
            ban(envelope.ban_peer());
            break;
        case bus::v1::Envelope::kSlotsFreed: free_slots(envelope.slots_freed()); break;
        case bus::v1::Envelope::kPiecesAvailable: pieces_available(message); break;
        case bus::v1::Envelope::kChokeDecision: choke_decision(envelope.choke_decision()); break;
        case bus::v1::Envelope::kRateBudget: rate_budget(envelope.rate_budget()); break;
        case bus::v1::Envelope::kDhtPort:
            dht_port_ = static_cast<std::uint16_t>(std::min<std::uint32_t>(envelope.dht_port().port(), 65535));
            break;
        case bus::v1::Envelope::kEncryptionPolicy:
            set_encryption(bus::from_proto(envelope.encryption_policy().encryption()));
            break;
        default: spdlog::debug("ignored a {} message", bus::body_name(envelope)); break;
    }
}

TorrentContext* WorkerService::find_torrent(std::uint32_t id) {
    const auto found = torrents_.find(TorrentId{id});
    return found == torrents_.end() ? nullptr : found->second.get();
}

void WorkerService::add_torrent(const bus::v1::TorrentAdded& message) {
    auto added = bus::read_torrent_added(message);
    if (!added) {
        spdlog::warn("ignored a torrent: {}", added.error().describe());
        return;
    }
    auto& slot = torrents_[added->id];
    if (slot) {
        // Repeated after each Welcome: nothing new. The same id for another torrent is the
        // orchestrator's bug; the first one stays.
        if (slot->info_hash != added->info_hash) {
            spdlog::warn("torrent {} added again with another info-hash: ignored", added->id.get());
        }
        return;
    }
    slot = std::make_unique<TorrentContext>(added->id, added->info_hash, added->name);
    TorrentContext* torrent = slot.get();
    torrent->callbacks.on_handshake = [this, torrent](PeerConnection& c) { on_handshake(*torrent, c); };
    torrent->callbacks.on_activity = [this, torrent](PeerConnection& c) { on_activity(*torrent, c); };
    torrent->callbacks.on_closed = [this, torrent](PeerConnection& c, const std::string& reason) {
        on_closed(*torrent, c, reason);
    };
    torrent->callbacks.on_blocks_done = [this, torrent](PeerConnection& c, std::span<const OutBlock> blocks,
                                                        bool sent) {
        return on_blocks_done(*torrent, c, blocks, sent);
    };
    torrent->callbacks.on_read_bytes = [this, torrent](PeerConnection&, std::size_t bytes) {
        return on_read_bytes(*torrent, bytes);
    };
    // Until a TorrentInfo says otherwise, its peers fetch the info dictionary.
    torrent->fetch.emplace(torrent->info_hash);
    spdlog::debug("torrent {} '{}' added", added->id.get(), added->name);
}

void WorkerService::learn_torrent_info(const bus::Incoming& message) {
    const std::uint32_t id = message.envelope.torrent_info().torrent();
    TorrentContext* torrent = find_torrent(id);
    if (torrent == nullptr) {
        spdlog::warn("ignored the info of torrent {}: it was never added", id);
        return;
    }
    if (torrent->has_info()) return;  // repeated after a Welcome
    {
        // Only the geometry stays: the parsed torrent goes before the trim below.
        auto parsed = bus::read_torrent_info(torrent->info_hash, message, PieceHashes::forget);
        if (!parsed) {
            spdlog::warn("torrent {}: {}", id, parsed.error().describe());
            return;
        }
        torrent->learn_info(*parsed);
        torrent->metadata.assign(message.frames.front().to_string_view());
    }
    spdlog::info("torrent {} '{}': {} pieces of {} bytes", id, torrent->name,
                 torrent->geometry->piece_count(), torrent->geometry->piece_length());
    // Peers that came before the info (a magnet's) take its geometry and go on as any other.
    const auto now = Clock::now();
    std::vector<ConnectionPtr> waiting;
    for (const auto& [key, connection] : torrent->peers) waiting.push_back(connection);
    for (const auto& connection : waiting) {
        connection->learn_info(*torrent->geometry, &torrent->ours, torrent->parser_limits, now);
        if (!connection->closed() && connection->session().handshake_done()) on_activity(*torrent, *connection);
    }
    bus::release_start_up_memory();
}

void WorkerService::remove_torrent(TorrentId id) {
    const auto found = torrents_.find(id);
    if (found == torrents_.end()) return;
    TorrentContext& torrent = *found->second;
    // The orchestrator forgot the torrent: its peers close, its leases and their room go,
    // and nothing of it is reported.
    torrent.leaving = true;
    std::vector<ConnectionPtr> connections;
    for (const auto& [key, connection] : torrent.peers) connections.push_back(connection);
    for (const auto& connection : connections) connection->fail("torrent removed");
    batches_->drop_torrent(id, [this](std::uint64_t lease_id) { memory_->release(lease_id); });
    uploader_->drop_torrent(id);
    schedule_released();
    stats_due_.erase(id);
    const std::uint32_t length = torrent.piece_length();
    spdlog::info("torrent {} removed ({} peers closed)", id.get(), connections.size());
    torrents_.erase(found);
    // Its delivered slots come back through SlotsFreed as usual; an arena of a length nobody
    // fetches any more gives back the pages its free slots kept.
    const bool length_in_use = std::any_of(torrents_.begin(), torrents_.end(), [&](const auto& entry) {
        return entry.second->piece_length() == length;
    });
    if (length != 0 && !length_in_use) memory_->retire(length);
    resume_peers();  // room came back, and the backpressure may be gone
}

void WorkerService::add_peers(const bus::v1::AddPeers& add) {
    const TorrentId id{add.torrent()};
    TorrentContext* torrent = find_torrent(add.torrent());
    if (torrent == nullptr || torrent->leaving) {
        for (const auto& peer : add.peers()) {
            report_disconnected(id, bus::peer_key(peer.ip(), peer.port()), "torrent not known here");
        }
        return;
    }
    const auto now = Clock::now();
    for (const auto& peer : add.peers()) {
        const std::string key = bus::peer_key(peer.ip(), peer.port());
        if (torrent->peers.count(key) != 0) continue;
        asio::error_code error;
        const auto address = asio::ip::make_address(peer.ip(), error);
        if (error || peer.port() == 0 || peer.port() > 65535) {
            report_disconnected(id, key, "invalid address");
            continue;
        }
        if (banned_.refuses(address, static_cast<std::uint16_t>(peer.port()))) {
            report_disconnected(id, key, "banned");
            continue;
        }
        if (self_endpoints_.count(key) != 0) {
            report_disconnected(id, key, "connected to ourselves");
            continue;
        }
        if (peer_count_ >= options_.max_peers) {
            report_disconnected(id, key, "worker already has --max-peers peers");
            continue;
        }
        auto connection = std::make_shared<PeerConnection>(
            io_, key, asio::ip::tcp::endpoint(address, static_cast<std::uint16_t>(peer.port())),
            make_session(*torrent, address, now), torrent->parser_limits, torrent->callbacks);
        torrent->peers.emplace(key, connection);
        ++peer_count_;
        connection->set_encryption(encryption_);
        connection->start(now);
    }
}

void WorkerService::set_encryption(Encryption encryption) {
    if (encryption == encryption_) return;
    spdlog::info("encryption {} (was {}): for connections from now on", to_string(encryption),
                 to_string(encryption_));
    encryption_ = encryption;
    if (listener_) listener_->set_encryption(encryption);
}

void WorkerService::grant_leases(const bus::v1::Leases& leases) {
    const TorrentId id{leases.torrent()};
    std::vector<std::uint64_t> refused;
    TorrentContext* torrent = find_torrent(leases.torrent());
    const auto refuse_all = [&](const char* reason) {
        for (const auto& lease : leases.leases()) refused.push_back(lease.lease_id());
        if (!refused.empty()) report_released(id, leases.peer(), refused, reason);
    };
    if (torrent == nullptr || !torrent->has_info()) return refuse_all("torrent not known here");
    const auto found = torrent->peers.find(leases.peer());
    if (found == torrent->peers.end() || found->second->closed() ||
        !found->second->session().handshake_done()) {
        return refuse_all("peer gone");
    }
    const auto now = Clock::now();
    const PieceGeometry& geometry = *torrent->geometry;
    PeerConnection& connection = *found->second;
    PeerSession& session = connection.session();
    session.note_work_answer(leases.leases_size() > 0, now);
    for (const auto& lease : leases.leases()) {
        const PieceIndex piece{lease.piece()};
        const std::uint32_t size = geometry.contains(piece) ? geometry.piece_size(piece) : 0;
        auto destination = size == 0 ? std::nullopt
                                     : memory_->reserve(lease.lease_id(), geometry.piece_length(), size);
        if (!destination) {
            // Not ours to free: the id may be a duplicate of a lease we are working on.
            refused.push_back(lease.lease_id());
        } else if (!session.add_lease(piece, lease.lease_id(), std::move(*destination))) {
            memory_->release(lease.lease_id());
            refused.push_back(lease.lease_id());
        } else if (lease.endgame()) {
            share_piece(*torrent, connection, piece, now);
        }
    }
    if (!refused.empty()) {
        report_released(id, leases.peer(), refused,
                        "lease refused (out of range, duplicate or over the worker's memory cap)");
    }
    session.fill_requests(now, !backpressured());
    connection.flush();
}

void WorkerService::cancel_piece(TorrentId id, PieceIndex piece) {
    const auto found = torrents_.find(id);
    if (found == torrents_.end()) return;
    const auto now = Clock::now();
    for (const auto& [key, connection] : found->second->peers) {
        if (const auto lease_id = connection->session().cancel_piece(piece, now)) {
            release(id, key, {*lease_id}, "piece cancelled");
            connection->session().fill_requests(now, !backpressured());
            connection->flush();
        }
    }
}

void WorkerService::share_piece(TorrentContext& torrent, PeerConnection& connection,
                                PieceIndex piece, Clock::time_point now) {
    PeerSession& session = connection.session();
    std::size_t holders = 0;
    for (const auto& [key, other] : torrent.peers) {
        if (other.get() == &connection || other->closed() || !other->session().holds_lease(piece)) {
            continue;
        }
        if (++holders > 1) continue;  // the first holder's copy already holds the others' blocks
        PeerSession& holder = other->session();
        forward_blocks(torrent, *other);
        holder.share_lease(piece);
        // What the holder has so far: from here on both copies hold every block either has.
        std::optional<std::uint64_t> finished;
        holder.for_each_received(piece, [&](BlockOffset offset, std::span<const std::uint8_t> data) {
            if (!finished) finished = session.absorb_block(piece, offset, data, key, now);
        });
        if (finished) {  // cannot happen (a complete copy is not held), but must not leak
            release(torrent.id, connection.key(), {*finished}, "fetched by another peer of this worker");
            return;
        }
    }
    // A second holder here asks from the end, a third from the middle. With none (the other
    // lease is another worker's, fetched from its start), from the end too.
    const auto order = holders >= 2 ? PieceAssembly::Order::from_middle : PieceAssembly::Order::from_end;
    if (holders > 0) {
        spdlog::debug("{} (torrent {}): piece {} shared with {} other peer(s), asking from the {}",
                      connection.key(), torrent.id.get(), piece.get(), holders,
                      order == PieceAssembly::Order::from_middle ? "middle" : "end");
    }
    if (session.share_lease(piece, order)) forward_blocks(torrent, connection);
}

void WorkerService::forward_blocks(TorrentContext& torrent, PeerConnection& connection) {
    if (connection.session().shares_blocks()) return;
    connection.session().set_block_share(
        [this, t = &torrent, from = connection.key()](PieceIndex piece, BlockOffset offset,
                                                     std::span<const std::uint8_t> data) {
            share_block(*t, from, piece, offset, data);
        });
}

void WorkerService::share_block(TorrentContext& torrent, const std::string& from, PieceIndex piece,
                                BlockOffset offset, std::span<const std::uint8_t> data) {
    const auto now = Clock::now();
    for (const auto& [key, connection] : torrent.peers) {
        if (key == from || connection->closed() || !connection->session().holds_lease(piece)) continue;
        if (const auto finished = connection->session().absorb_block(piece, offset, data, from, now)) {
            release(torrent.id, key, {*finished}, "fetched together with another peer of this worker");
        }
        if (std::find(torrent.absorbed_by.begin(), torrent.absorbed_by.end(), key) == torrent.absorbed_by.end()) {
            torrent.absorbed_by.push_back(key);
        }
    }
}

void WorkerService::wake_absorbers(TorrentContext& torrent, Clock::time_point now) {
    // Swapped out first: a flush that fails closes a connection, which may land here again.
    std::vector<std::string> keys;
    keys.swap(torrent.absorbed_by);
    for (const auto& key : keys) {
        const auto found = torrent.peers.find(key);
        if (found == torrent.peers.end() || found->second->closed()) continue;
        PeerConnection& connection = *found->second;
        request_work(torrent, connection, now);
        connection.session().fill_requests(now, !backpressured());
        connection.flush();
    }
}

void WorkerService::free_slots(const bus::v1::SlotsFreed& freed) {
    const std::size_t count = memory_->free_delivered(freed);
    spdlog::debug("{} arena slots freed ({} still delivered)", count, memory_->delivered_count());
    if (count > 0) resume_peers();
}

void WorkerService::ban(const bus::v1::BanPeer& ban) {
    asio::error_code error;
    const auto address = asio::ip::make_address(ban.ip(), error);
    if (error || ban.port() > 65535) {
        spdlog::warn("ignored a ban of '{}' port {}: not an address", ban.ip(), ban.port());
        return;
    }
    const auto port = static_cast<std::uint16_t>(ban.port());
    banned_.add(address, port, ban.peer_id());
    if (port == 0 && ban.peer_id().empty()) {
        spdlog::info("banned address {}: {}", ban.ip(), ban.reason());
    } else {
        spdlog::info("banned peer {}: {}", bus::peer_key(ban.ip(), port), ban.reason());
    }
    for (const auto& [torrent, connection] : all_connections()) {
        const auto& id = connection->session().peer_id();
        const std::string peer_id = connection->session().handshake_done() ? std::string(id.begin(), id.end()) : std::string{};
        if (BanList::names(address, port, ban.peer_id(), connection->address(), connection->port(), peer_id)) {
            connection->fail("banned: " + ban.reason());
        }
    }
}

// --- peers ---

std::vector<std::pair<TorrentContext*, WorkerService::ConnectionPtr>> WorkerService::all_connections() const {
    std::vector<std::pair<TorrentContext*, ConnectionPtr>> connections;
    connections.reserve(peer_count_);
    for (const auto& [id, torrent] : torrents_) {
        for (const auto& [key, connection] : torrent->peers) connections.emplace_back(torrent.get(), connection);
    }
    return connections;
}

void WorkerService::on_handshake(TorrentContext& torrent, PeerConnection& connection) {
    const auto& id = connection.session().peer_id();
    // A banned peer dialled at a new port, or come back from one, is known by its peer id.
    if (banned_.refuses(connection.address(), connection.port(), std::string(id.begin(), id.end()))) {
        return connection.fail("banned");
    }
    spdlog::info("{} (torrent {}): connected{}{}{}", connection.key(), torrent.id.get(),
                 connection.incoming() ? ", incoming" : "", connection.session().fast() ? ", fast" : "",
                 connection.encrypted() ? ", RC4-encrypted" : "");
    bus::v1::Envelope envelope;
    auto* connected = envelope.mutable_peer_connected();
    connected->set_peer(connection.key());
    connected->set_torrent(torrent.id.get());
    connected->set_peer_id(std::string(id.begin(), id.end()));
    connected->set_incoming(connection.incoming());
    send_control(envelope);
}

void WorkerService::on_activity(TorrentContext& torrent, PeerConnection& connection) {
    const auto now = Clock::now();
    PeerSession& session = connection.session();
    forward_learned_peers(torrent, connection);
    if (session.awaiting_info()) return fetch_metadata(torrent, connection, now);
    const std::uint64_t downloaded = session.take_downloaded();
    torrent.bytes_downloaded += downloaded;
    bytes_downloaded_ += downloaded;
    collect_completed(torrent, connection);
    report_has(torrent, connection, false);  // a bitfield goes out at once; haves are batched
    if (!session.rejected_leases().empty()) {
        release(torrent.id, connection.key(), session.rejected_leases(), "the peer rejected our request");
        session.rejected_leases().clear();
    }
    // A peer that unchokes us counts in the budget before it asks for work, not a tick
    // later: when 48 seeders unchoked us at once, half of them waited one or two ticks
    // (100-200 ms) for room and started their first pieces that much later.
    if (session.take_unchoked()) size_piece_budget();
    request_work(torrent, connection, now);
    session.fill_requests(now, !backpressured());
    if (session.take_interest_changed()) schedule_peer_stats(torrent);
    if (session.has_requests()) serve(torrent, connection, now);
    if (!torrent.absorbed_by.empty()) wake_absorbers(torrent, now);
}

void WorkerService::on_closed(TorrentContext& torrent, PeerConnection& connection,
                              const std::string& reason) {
    if (stopping_) return;  // the worker is ending: nothing to report, nothing to keep
    const std::string key = connection.key();
    PeerSession& session = connection.session();
    const std::uint64_t downloaded = session.take_downloaded();
    torrent.bytes_downloaded += downloaded;
    bytes_downloaded_ += downloaded;
    if (torrent.fetch) torrent.fetch->peer_gone(key);
    if (torrent.leaving) {
        // Nobody wants its pieces now: their room comes back, unreported.
        for (const auto& piece : session.completed()) memory_->release(piece.lease_id);
        session.completed().clear();
        for (const auto id : session.release_leases()) memory_->release(id);
    } else {
        spdlog::info("{} (torrent {}): dropped: {}", key, torrent.id.get(), reason);
        collect_completed(torrent, connection);  // whole pieces are still worth verifying
        const auto lease_ids = session.release_leases();
        if (!lease_ids.empty()) release(torrent.id, key, lease_ids, "peer gone: " + reason);
        report_disconnected(torrent.id, key, reason, session.handshake_done() && session.peer_is_seed());
    }
    // Our own listening address: dialling it again would only find ourselves again (another
    // worker of ours, perhaps: they share the peer id).
    if (session.found_ourselves() && !connection.incoming()) self_endpoints_.insert(key);
    // Every caller of fail() holds its own reference, so erasing here is safe.
    torrent.peers.erase(key);
    --peer_count_;
}

void WorkerService::fetch_metadata(TorrentContext& torrent, PeerConnection& connection, Clock::time_point now) {
    if (!torrent.fetch || connection.closed()) return;
    MetadataFetch& fetch = *torrent.fetch;
    PeerSession& session = connection.session();
    for (const MetadataReply& reply : std::exchange(session.metadata_replies(), {})) {
        if (reply.rejected) {
            fetch.on_reject(connection.key(), reply.piece);
            continue;
        }
        if (auto status = fetch.on_data(connection.key(), reply.piece, reply.total_size, reply.data); !status) {
            return connection.fail("bad metadata: " + status.error().describe());
        }
    }
    for (const auto& liar : fetch.take_liars()) {
        spdlog::warn("{} (torrent {}): sent metadata that does not match the info-hash", liar, torrent.id.get());
        if (const auto found = torrent.peers.find(liar); found != torrent.peers.end()) {
            const ConnectionPtr keep = found->second;
            keep->fail("sent metadata that does not match the info-hash");
        }
    }
    if (connection.closed()) return;
    if (fetch.done()) return report_metadata(torrent);
    if (const auto size = session.metadata_size_offered()) {
        for (const std::uint32_t piece : fetch.pieces_for(connection.key(), *size, now)) {
            session.request_metadata(piece, now);
        }
    } else if (!session.extended()) {
        return connection.fail("does not speak the extension protocol: it cannot give the info dictionary");
    } else if (session.their_extensions() && session.their_extensions()->id_of(ext::kUtMetadata) == 0) {
        // It cannot give the info dictionary, and we have nothing else to do with it yet. A
        // peer that said nothing of ut_metadata may still send its handshake: it stays.
        return connection.fail("has no metadata to give (no ut_metadata), and we have no info yet");
    }
    connection.flush();
}

void WorkerService::report_metadata(TorrentContext& torrent) {
    if (torrent.metadata_reported || !torrent.fetch) return;
    auto metadata = torrent.fetch->take_metadata();
    if (!metadata) return;
    torrent.metadata_reported = true;
    spdlog::info("torrent {}: metadata fetched from {} peer(s) ({} bytes)", torrent.id.get(),
                 torrent.fetch->sources().size(), metadata->size());
    bus::v1::Envelope envelope;
    auto* found = envelope.mutable_metadata_found();
    found->set_torrent(torrent.id.get());
    for (const auto& source : torrent.fetch->sources()) found->add_sources(source);
    zmq::message_t frame(metadata->data(), metadata->size());
    send_control(envelope, std::span<zmq::message_t>(&frame, 1));
}

void WorkerService::forward_learned_peers(TorrentContext& torrent, PeerConnection& connection) {
    if (const auto port = connection.session().take_dht_port(); port && !torrent.is_private) {
        bus::v1::Envelope nodes;
        auto* node = nodes.mutable_dht_nodes()->add_nodes();
        node->set_ip(connection.address().to_string());
        node->set_port(*port);
        send_control(nodes);
    }
    auto pex = connection.session().take_pex();
    if (!pex || pex->added.empty() || torrent.is_private) return;
    bus::v1::Envelope envelope;
    auto* found = envelope.mutable_peers_found();
    found->set_tracker("pex");
    found->set_torrent(torrent.id.get());
    for (const auto& peer : pex->added) {
        auto* added = found->add_peers();
        added->set_ip(peer.address.ip);
        added->set_port(peer.address.port);
    }
    send_control(envelope);
}

void WorkerService::exchange_peers(TorrentContext& torrent, Clock::time_point now) {
    if (torrent.is_private) return;
    std::vector<PeerConnection*> due;
    for (const auto& [key, connection] : torrent.peers) {
        if (!connection->closed() && connection->session().pex_due(now)) due.push_back(connection.get());
    }
    if (due.empty()) return;
    // Every peer of the torrent we can name by an address it listens on: those we dialled,
    // and those that dialled us and said their port ("p"). Each is told of the others.
    std::vector<std::pair<const PeerConnection*, ext::PexPeer>> current;
    for (const auto& [key, connection] : torrent.peers) {
        PeerSession& session = connection->session();
        if (connection->closed() || !session.handshake_done()) continue;
        ext::PexPeer peer;
        peer.address.ip = connection->address().to_string();
        if (!connection->incoming()) {
            peer.address.port = connection->port();
            peer.flags |= ext::kPexReachable;
        } else if (session.their_extensions() && session.their_extensions()->listen_port) {
            peer.address.port = *session.their_extensions()->listen_port;
        } else {
            continue;
        }
        if (session.peer_is_seed()) peer.flags |= ext::kPexSeed;
        if (connection->encrypted()) peer.flags |= ext::kPexPrefersEncryption;
        current.emplace_back(connection.get(), std::move(peer));
    }
    std::vector<ext::PexPeer> others;
    for (PeerConnection* connection : due) {
        others.clear();
        for (const auto& [owner, peer] : current) {
            if (owner != connection) others.push_back(peer);
        }
        if (connection->session().tell_pex(others, now)) connection->flush();
    }
}

void WorkerService::report_has(TorrentContext& torrent, PeerConnection& connection,
                               bool include_haves) {
    auto report = connection.session().take_has_report(include_haves);
    if (!report) return;
    bus::v1::Envelope envelope;
    auto* has = envelope.mutable_peer_has();
    has->set_peer(connection.key());
    has->set_torrent(torrent.id.get());
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

void WorkerService::request_work(TorrentContext& torrent, PeerConnection& connection,
                                 Clock::time_point now) {
    if (stopping_ || connection.closed()) return;
    PeerSession& session = connection.session();
    std::uint32_t count = session.pieces_wanted(now);
    if (count == 0) return;
    // Beyond the memory budget we ask for nothing; the pipeline drains (or SlotsFreed comes)
    // and we ask again.
    const std::uint64_t room = memory_->room(torrent.piece_length());
    count = static_cast<std::uint32_t>(std::min<std::uint64_t>(count, room));
    if (count == 0) return;
    report_has(torrent, connection, true);  // the orchestrator leases from what it knows the peer has
    bus::v1::Envelope envelope;
    auto* request = envelope.mutable_work_request();
    request->set_peer(connection.key());
    request->set_count(count);
    request->set_torrent(torrent.id.get());
    send_control(envelope);
    session.note_work_requested(now);
}

void WorkerService::release(TorrentId torrent, const std::string& key,
                            const std::vector<std::uint64_t>& lease_ids, const std::string& reason) {
    for (const auto id : lease_ids) memory_->release(id);
    report_released(torrent, key, lease_ids, reason);
}

void WorkerService::report_released(TorrentId torrent, const std::string& key,
                                    const std::vector<std::uint64_t>& lease_ids,
                                    const std::string& reason) {
    if (lease_ids.empty()) return;
    bus::v1::Envelope envelope;
    auto* released = envelope.mutable_lease_released();
    released->set_peer(key);
    released->set_torrent(torrent.get());
    for (const auto id : lease_ids) released->add_lease_ids(id);
    released->set_reason(reason);
    send_control(envelope);
}

void WorkerService::report_disconnected(TorrentId torrent, const std::string& key,
                                        const std::string& reason, bool seed) {
    bus::v1::Envelope envelope;
    auto* disconnected = envelope.mutable_peer_disconnected();
    disconnected->set_peer(key);
    disconnected->set_reason(reason);
    disconnected->set_seed(seed);
    disconnected->set_torrent(torrent.get());
    send_control(envelope);
}

void WorkerService::resume_peers() {
    const auto now = Clock::now();
    for (const auto& [id, torrent] : torrents_) {
        for (const auto& [key, connection] : torrent->peers) {
            if (connection->closed() || !connection->session().handshake_done()) continue;
            request_work(*torrent, *connection, now);
            connection->session().fill_requests(now, !backpressured());
            connection->flush();
        }
    }
}

// --- verifier ---

void WorkerService::collect_completed(TorrentContext& torrent, PeerConnection& connection) {
    auto& completed = connection.session().completed();
    if (completed.empty()) return;
    // Every piece of a torrent lives in the arena of its length (made by its first lease), so
    // the lane is found once and kept.
    if (torrent.lane == nullptr) {
        torrent.lane = &batches_->lane(torrent.id, memory_->arena(torrent.piece_length()));
    }
    for (auto& piece : completed) {
        const auto slot = memory_->slot_of(piece.lease_id);
        batches_->add(*torrent.lane, std::move(piece), connection.key(), slot);
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
        ref->set_torrent(batch.torrent());
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

// --- what we have, whom we unchoke, how fast ---

void WorkerService::pieces_available(const bus::Incoming& message) {
    const auto& available = message.envelope.pieces_available();
    TorrentContext* torrent = find_torrent(available.torrent());
    if (torrent == nullptr || !torrent->has_info()) {
        spdlog::debug("ignored the pieces of torrent {}: not known here, or without its info",
                      available.torrent());
        return;
    }
    const auto now = Clock::now();
    // The whole set (after a start): have_all, a bitfield frame, or neither and no pieces.
    const bool whole = available.have_all() || available.bitfield() || available.pieces_size() == 0;
    if (whole) {
        if (available.have_all()) {
            torrent->ours.set_all();
        } else if (available.bitfield()) {
            const bool valid = message.frames.size() == 1 &&
                               torrent->ours.set_bitfield(std::span<const std::uint8_t>(
                                   static_cast<const std::uint8_t*>(message.frames.front().data()),
                                   message.frames.front().size()));
            if (!valid) {
                spdlog::warn("torrent {}: ignored pieces available: not a bitfield of its {} pieces",
                             available.torrent(), torrent->ours.piece_count());
                return;
            }
        } else {
            torrent->ours.set_none();
        }
        spdlog::debug("torrent {}: {} of {} pieces ours", available.torrent(), torrent->ours.count(),
                      torrent->ours.piece_count());
    }
    // Each new piece: a have to every peer of the torrent (but those that have it).
    std::vector<PieceIndex> added;
    for (const std::uint32_t piece : available.pieces()) {
        if (torrent->ours.add(PieceIndex{piece})) added.push_back(PieceIndex{piece});
    }
    for (const auto& [key, connection] : torrent->peers) {
        if (connection->closed() || !connection->session().handshake_done()) continue;
        PeerSession& session = connection->session();
        if (whole) session.on_local_reset(now);
        for (const PieceIndex piece : added) session.on_local_piece(piece, now);
        connection->flush();
    }
}

void WorkerService::choke_decision(const bus::v1::ChokeDecision& decision) {
    TorrentContext* torrent = find_torrent(decision.torrent());
    if (torrent == nullptr) return;
    const auto now = Clock::now();
    const auto apply = [&](const std::string& key, bool choke) {
        const auto found = torrent->peers.find(key);
        if (found == torrent->peers.end()) return;  // gone meanwhile
        PeerConnection& connection = *found->second;
        if (connection.closed() || !connection.session().handshake_done()) return;
        connection.session().set_choking(choke, now);
        if (!choke && connection.session().has_requests()) serve(*torrent, connection, now);
        connection.flush();
    };
    for (const auto& key : decision.unchoke()) apply(key, false);
    for (const auto& key : decision.choke()) apply(key, true);
}

void WorkerService::rate_budget(const bus::v1::RateBudget& budget) {
    const auto now = Clock::now();
    upload_limit_.set_rate(budget.upload_bytes_per_s(), now);
    download_limit_.set_rate(budget.download_bytes_per_s(), now);
    std::unordered_map<std::uint32_t, const bus::v1::TorrentRate*> rates;
    for (const auto& rate : budget.torrents()) rates[rate.torrent()] = &rate;
    for (const auto& [id, torrent] : torrents_) {
        const auto found = rates.find(id.get());
        // A torrent not named has no limit of its own.
        torrent->upload_limit.set_rate(found == rates.end() ? 0 : found->second->upload_bytes_per_s(), now);
        torrent->download_limit.set_rate(found == rates.end() ? 0 : found->second->download_bytes_per_s(), now);
    }
}

// --- incoming peers ---

TorrentContext* WorkerService::torrent_by_info_hash(const Sha1Digest& info_hash) {
    for (const auto& [id, torrent] : torrents_) {
        if (torrent->info_hash == info_hash) return !torrent->leaving ? torrent.get() : nullptr;
    }
    return nullptr;
}

PeerSession WorkerService::make_session(TorrentContext& torrent, const asio::ip::address& address,
                                        Clock::time_point now) {
    PeerSession session(torrent.geometry ? *torrent.geometry : PieceGeometry{}, torrent.info_hash, our_id_, now,
                        SessionLimits{}, torrent.geometry ? &torrent.ours : nullptr);
    ExtensionOffer offer;
    offer.listen_port = listener_ ? listener_->port() : 0;
    offer.their_ip = address.to_string();
    offer.metadata = &torrent.metadata;
    offer.pex = !torrent.is_private;
    offer.dht_port = torrent.is_private ? 0 : dht_port_;
    session.set_extension_offer(std::move(offer));
    if (!torrent.geometry) return session;
    // BEP 6's set is defined for IPv4 (an IPv4-mapped address is one).
    std::optional<std::uint32_t> ipv4;
    if (address.is_v4()) {
        ipv4 = address.to_v4().to_uint();
    } else if (address.to_v6().is_v4_mapped()) {
        ipv4 = asio::ip::make_address_v4(asio::ip::v4_mapped, address.to_v6()).to_uint();
    }
    if (ipv4) {
        session.offer_allowed_fast(
            wire::allowed_fast_set(*ipv4, torrent.info_hash, torrent.geometry->piece_count(), kAllowedFastOffered));
    }
    return session;
}

void WorkerService::on_incoming(asio::ip::tcp::socket& socket, const asio::ip::tcp::endpoint& remote,
                                Handshaken& handshaken) {
    if (stopping_) return;
    const wire::Handshake& theirs = handshaken.theirs;
    const std::string key = bus::peer_key(remote.address().to_string(), remote.port());
    const auto refuse = [&](const std::string& why) {
        spdlog::debug("incoming {}: refused: {}", key, why);  // the listener closes it
    };
    TorrentContext* torrent = torrent_by_info_hash(theirs.info_hash);
    if (torrent == nullptr) return refuse("torrent " + to_hex(theirs.info_hash) + " not served here");
    if (theirs.peer_id == our_id_) {
        // Ourselves (another worker of ours, or this one, dialled our own address): our
        // handshake back tells the dialler so, and it will not dial this address again.
        wire::Handshake ours;
        ours.info_hash = theirs.info_hash;
        ours.peer_id = our_id_;
        ours.set_fast();
        auto bytes = wire::encode_handshake(ours);
        if (handshaken.cipher) handshaken.cipher->encrypt(bytes);  // it dialled us with MSE
        asio::error_code ignored;
        socket.non_blocking(true, ignored);
        socket.send(asio::buffer(bytes), 0, ignored);
        return refuse("ourselves");
    }
    if (banned_.refuses(remote.address(), remote.port(),
                        std::string(theirs.peer_id.begin(), theirs.peer_id.end()))) {
        return refuse("banned");
    }
    if (peer_count_ >= options_.max_peers) return refuse("the worker already has --max-peers peers");
    for (const auto& [other_key, other] : torrent->peers) {
        if (other->session().handshake_done() && other->session().peer_id() == theirs.peer_id) {
            return refuse("already connected to this peer as " + other_key);
        }
    }
    if (torrent->peers.count(key) != 0) return refuse("already connected");
    const auto now = Clock::now();
    auto connection = std::make_shared<PeerConnection>(std::move(socket), key, remote,
                                                       make_session(*torrent, remote.address(), now),
                                                       torrent->parser_limits, torrent->callbacks);
    torrent->peers.emplace(key, connection);
    ++peer_count_;
    connection->start_incoming(std::move(handshaken), now);
}

// --- uploads ---

bool WorkerService::send_read(bus::v1::Envelope& envelope) {
    if (options_.reads.empty() || stopping_) return false;
    if (!bus::send(reads_, options_.name, envelope, {}, nullptr, zmq::send_flags::dontwait)) return false;
    // As with the control socket: a send may eat the descriptor's edge.
    if (!reads_drain_posted_) {
        reads_drain_posted_ = true;
        asio::post(io_, [this] {
            reads_drain_posted_ = false;
            drain_reads();
        });
    }
    return true;
}

void WorkerService::drain_reads() {
    if (draining_reads_ || stopping_ || !reads_watch_) return;
    draining_reads_ = true;
    const auto now = Clock::now();
    bool answered = false;
    for (;;) {
        bus::Incoming message;
        const auto status = bus::receive(reads_, false, message);
        if (status == bus::RecvStatus::would_block) break;
        if (status != bus::RecvStatus::ok) continue;
        answered = uploader_->on_read(message, [this](TorrentId id) { return find_torrent(id.get()); }, now) ||
                   answered;
    }
    draining_reads_ = false;
    if (answered) serve_all(now);
    schedule_released();
    if (!stopping_) reads_watch_->arm([this] { drain_reads(); });
}

void WorkerService::serve(TorrentContext& torrent, PeerConnection& connection, Clock::time_point now) {
    if (stopping_ || connection.closed()) return;
    uploader_->serve(torrent, connection, upload_limit_, now);
}

void WorkerService::serve_all(Clock::time_point now) {
    for (const auto& [id, torrent] : torrents_) {
        std::vector<ConnectionPtr> waiting;
        for (const auto& [key, connection] : torrent->peers) {
            if (!connection->closed() && connection->session().has_requests()) waiting.push_back(connection);
        }
        for (const auto& connection : waiting) serve(*torrent, *connection, now);
    }
}

bool WorkerService::on_blocks_done(TorrentContext& torrent, PeerConnection& connection,
                                   std::span<const OutBlock> blocks, bool sent) {
    const auto now = Clock::now();
    const bool intact = uploader_->blocks_done(blocks, sent, now);
    if (sent) {
        std::uint64_t bytes = 0;
        for (const OutBlock& block : blocks) bytes += block.data.size();
        torrent.bytes_uploaded += bytes;
        bytes_uploaded_ += bytes;
    }
    schedule_released();
    // Room in its send queue again.
    if (sent && intact && !connection.closed() && connection.session().has_requests()) {
        serve(torrent, connection, now);
    }
    return intact;
}

bool WorkerService::download_allowed(TorrentContext& torrent, Clock::time_point now) {
    return download_limit_.available(now) && torrent.download_limit.available(now);
}

bool WorkerService::on_read_bytes(TorrentContext& torrent, std::size_t bytes) {
    if (!download_limit_.limited() && !torrent.download_limit.limited()) return true;
    // Over the budget, the connection stops reading until the timer's refill: TCP then
    // slows the peer down.
    download_limit_.take(bytes);
    torrent.download_limit.take(bytes);
    return download_allowed(torrent, Clock::now());
}

void WorkerService::schedule_released() {
    if (released_posted_ || !uploader_ || !uploader_->has_released()) return;
    released_posted_ = true;
    asio::post(io_, [this] {
        released_posted_ = false;
        if (!stopping_) uploader_->send_released();
    });
}

void WorkerService::schedule_peer_stats(TorrentContext& torrent) {
    stats_due_.insert(torrent.id);
    if (stats_posted_) return;
    stats_posted_ = true;
    asio::post(io_, [this] {
        stats_posted_ = false;
        if (stopping_) return;
        const auto now = Clock::now();
        for (const TorrentId id : std::exchange(stats_due_, {})) {
            if (TorrentContext* due = find_torrent(id.get())) send_peer_stats(*due, now);
        }
    });
}

void WorkerService::send_peer_stats(TorrentContext& torrent, Clock::time_point now) {
    bus::v1::Envelope envelope;
    auto* stats = envelope.mutable_peer_stats();
    stats->set_torrent(torrent.id.get());
    for (const auto& [key, connection] : torrent.peers) {
        if (connection->closed() || !connection->session().handshake_done()) continue;
        const PeerFigures figures = connection->session().figures(now);
        auto* peer = stats->add_peers();
        peer->set_peer(key);
        peer->set_interested(figures.interested);
        peer->set_choked(figures.choked);
        peer->set_download_rate(figures.download_rate);
        peer->set_upload_rate(figures.upload_rate);
        peer->set_snubbed(figures.snubbed);
        peer->set_seed(figures.seed);
        peer->set_incoming(connection->incoming());
        peer->set_uploaded(figures.uploaded);
        if (spdlog::should_log(spdlog::level::debug)) {
            const PeerSession& session = connection->session();
            const auto min_latency = session.pipeline().min_latency();
            const long long latency_ms = min_latency == Clock::duration::max()
                ? -1 : std::chrono::duration_cast<std::chrono::milliseconds>(min_latency).count();
            spdlog::debug("{} (torrent {}): {:.0f} KiB/s in, {} of {} blocks in flight (fastest block {} ms{}), {} KiB leased{}",
                          key, torrent.id.get(), figures.download_rate / 1024.0,
                          session.requests_outstanding(), session.pipeline_depth(), latency_ms,
                          session.pipeline().ramping() ? ", ramping" : "",
                          session.leased_bytes() / 1024, figures.choked ? ", we choke it" : "");
        }
    }
    if (stats->peers_size() > 0) send_control(envelope);
}

// --- time ---

// Each peer sending us pieces needs what its full pipeline leases (twice its depth, in
// whole pieces, at least two), or it idles for a round trip to the orchestrator and for room:
// the budget grows to the sum over such peers and one piece more, up to the ceiling. A leased
// piece takes memory only when its first block comes, so what is held stays near the blocks
// in flight. 48 peers at 512 KiB/s in a 32 MiB budget left a third of them without a piece at
// any time; with one per peer, a tenth. Eight 4 MiB/s peers 200 ms away lease 4-6 MiB each: a
// budget of 32 MiB left some without work.
void WorkerService::size_piece_budget() {
    std::uint64_t wanted_bytes = 0;
    std::uint32_t longest = 0;
    for (const auto& [id, torrent] : torrents_) {
        for (const auto& [key, connection] : torrent->peers) {
            const PeerSession& session = connection->session();
            if (connection->closed() || !session.handshake_done() || session.awaiting_info() ||
                session.peer_choking() || !session.am_interested()) {
                continue;
            }
            wanted_bytes += std::uint64_t{session.pieces_held_when_full()} * torrent->piece_length();
            longest = std::max(longest, torrent->piece_length());
        }
    }
    memory_->set_budget(std::max(options_.max_piece_bytes, wanted_bytes + longest));
}

void WorkerService::schedule_timer() {
    timer_.expires_after(kTickPeriod);
    timer_.async_wait([this](const asio::error_code& error) {
        if (!error && !stopping_) on_timer();
    });
}

void WorkerService::on_timer() {
    stage_.tick(*this);  // heartbeats; gives up on a silent orchestrator
    stop_if_finished();
    if (stage_.finished()) return;
    drain_control();  // tick may have sent a heartbeat
    if (stopping_) return;

    const auto now = Clock::now();
    batches_->flush();
    memory_->trim(now);
    if (listener_) listener_->check_deadlines(now);
    uploader_->on_tick(now);
    upload_limit_.refill(now);
    download_limit_.refill(now);
    const bool stats_due = now >= next_stats_;
    if (stats_due) next_stats_ = now + kPeerStatsPeriod;
    for (const auto& [id, torrent] : torrents_) {
        if (torrent->fetch) torrent->fetch->expire(now);
        torrent->upload_limit.refill(now);
        torrent->download_limit.refill(now);
        if (stats_due && !torrent->peers.empty()) send_peer_stats(*torrent, now);
        exchange_peers(*torrent, now);
    }
    for (const auto& [torrent, connection] : all_connections()) {
        if (connection->closed()) continue;
        connection->check_deadline(now, options_.upload_stall);
        PeerSession& session = connection->session();
        if (connection->closed() || !session.handshake_done()) continue;
        if (session.awaiting_info()) {
            // Requests given up on go to other peers.
            session.on_tick(now);
            fetch_metadata(*torrent, *connection, now);
            continue;
        }
        if (session.stalled(now)) {
            connection->fail("stalled: requests outstanding and no block for 25 s");
            continue;
        }
        if (session.both_seeds()) {
            connection->fail("both seeds: nothing to trade");
            continue;
        }
        if (session.choked_too_long(now)) {
            release(torrent->id, connection->key(), session.release_leases(), "choked us for 30 s");
        }
        session.on_tick(now);
        report_has(*torrent, *connection, true);
        request_work(*torrent, *connection, now);
        session.fill_requests(now, !backpressured());
        if (connection->reading_paused() && download_allowed(*torrent, now)) connection->resume_reading();
        // Refilled buckets, reads answered or given up: the requests waiting may go now.
        if (session.has_requests() && !connection->closed()) serve(*torrent, *connection, now);
        connection->flush();
    }
    size_piece_budget();
    uploader_->send_released();
    if (!stopping_) schedule_timer();
}

}  // namespace pw::peer_worker
