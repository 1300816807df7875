#pragma once
// The peer_worker process: one io_context on one thread owns the control link, the PUSH
// socket to the verifier, the DEALER to the writer's reads, the listening socket and every
// peer connection of every torrent, and drives the stage skeleton (core/bus/stage.hpp) from
// it. It turns orchestrator commands into torrents, connections, leases, choke decisions and
// rate limits, and sessions' progress into reports, PieceBatches and uploads.
#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include <asio/io_context.hpp>
#include <asio/posix/stream_descriptor.hpp>
#include <asio/steady_timer.hpp>
#include <zmq.hpp>

#include "core/bus/bus.hpp"
#include "core/bus/stage.hpp"
#include "core/units.hpp"
#include "core/wire.hpp"
#include "peer_worker/ban_list.hpp"
#include "peer_worker/listener.hpp"
#include "peer_worker/peer_connection.hpp"
#include "peer_worker/piece_batches.hpp"
#include "peer_worker/piece_memory.hpp"
#include "peer_worker/rate_limit.hpp"
#include "peer_worker/torrent_context.hpp"
#include "peer_worker/uploader.hpp"
#include "peer_worker/zmq_watch.hpp"

namespace pw::peer_worker {

// Whether pieces stay in a shared-memory arena that the verifier and writer read in place
// (they must run on this machine) or travel to the verifier as frames.
enum class SharedMemory { automatic, on, off };

struct WorkerOptions {
    std::string control;  // orchestrator's ROUTER
    std::string pieces;   // verifier's PULL
    std::string reads;    // writer's ROUTER for ReadPiece; empty: no uploads (requests refused)
    std::string name;
    // Connections at once, over every torrent.
    std::uint32_t max_peers = 60;
    // Piece memory held at once over every torrent (leased, assembling, waiting for the
    // verifier). A fast peer's pipeline (at most 500 blocks in flight plus half that queued:
    // 12 MiB) fits with room for several more; slow peers need far less each. Beyond it,
    // leases are refused. In arena mode it also holds pieces until the writer is done.
    std::uint64_t max_piece_bytes = 32ull << 20;
    // automatic: arenas when the verifier is reached over ipc:// (the same machine).
    SharedMemory shared_memory = SharedMemory::automatic;
    // Whole pieces kept for uploading, over every torrent (the upload cache).
    std::uint64_t upload_cache_bytes = 16ull << 20;
    // A peer that has read nothing of what we send for this long is dropped.
    std::chrono::seconds upload_stall{60};
    bus::Timing timing{};
    bus::CurveConfig curve{};  // CurveZMQ keys; disabled in local mode
    bus::metrics::Registry* metrics = nullptr;  // the stage's counters (--metrics-port); null: none
    int signal_fd = -1;  // SIGTERM/SIGINT (bus::TerminationSignals); -1: none
};

bool wants_arena(const WorkerOptions& options);

class WorkerService final : private bus::StageBody {
public:
    explicit WorkerService(WorkerOptions options);
    ~WorkerService() override;
    WorkerService(const WorkerService&) = delete;
    WorkerService& operator=(const WorkerService&) = delete;

    // Handshakes with the orchestrator and runs until Shutdown or a termination signal (0) or
    // until the orchestrator goes silent (non-zero). Throws on start-up failures.
    int run();

private:
    using ConnectionPtr = std::shared_ptr<PeerConnection>;

    // --- the stage skeleton's calls ---
    void on_control(bus::Incoming& message) override;
    void on_terminate(const std::string& reason) override;
    bus::v1::Heartbeat heartbeat() override;
    // After every call into the stage: its end stops the loop.
    void stop_if_finished();

    void set_up_pieces();

    // control socket
    void drain_control();
    void watch_signals();
    void send_control(bus::v1::Envelope& envelope, std::span<zmq::message_t> frames = {});
    TorrentContext* find_torrent(std::uint32_t id);
    void add_torrent(const bus::v1::TorrentAdded& added);
    void learn_torrent_info(const bus::Incoming& message);
    void remove_torrent(TorrentId id);
    void add_peers(const bus::v1::AddPeers& add);
    void grant_leases(const bus::v1::Leases& leases);
    void cancel_piece(TorrentId id, PieceIndex piece);
    // Endgame: `connection` got a lease of a piece another peer of this worker is fetching.
    void share_piece(TorrentContext& torrent, PeerConnection& connection, PieceIndex piece,
                     Clock::time_point now);
    // Has the blocks `connection`'s shared leases accept go to share_block.
    void forward_blocks(TorrentContext& torrent, PeerConnection& connection);
    // A block one peer sent, copied into the other peers' leases of its piece.
    void share_block(TorrentContext& torrent, const std::string& from, PieceIndex piece,
                     BlockOffset offset, std::span<const std::uint8_t> data);
    // The peers that took in shared blocks send their cancels and ask for more.
    void wake_absorbers(TorrentContext& torrent, Clock::time_point now);
    void ban(const bus::v1::BanPeer& ban);
    void free_slots(const bus::v1::SlotsFreed& freed);
    void pieces_available(const bus::Incoming& message);
    void choke_decision(const bus::v1::ChokeDecision& decision);
    void rate_budget(const bus::v1::RateBudget& budget);

    // incoming peers
    void open_listener(std::uint16_t port);
    void on_incoming(asio::ip::tcp::socket& socket, const asio::ip::tcp::endpoint& remote,
                     Handshaken& handshaken);
    // The orchestrator's EncryptionPolicy: new connections and the listener follow it.
    void set_encryption(Encryption encryption);
    TorrentContext* torrent_by_info_hash(const Sha1Digest& info_hash);
    // The session of a new connection of `torrent` to `address`, our allowed-fast set offered.
    PeerSession make_session(TorrentContext& torrent, const asio::ip::address& address,
                             Clock::time_point now);

    // uploads
    void set_up_reads();
    void drain_reads();
    bool send_read(bus::v1::Envelope& envelope);
    void serve(TorrentContext& torrent, PeerConnection& connection, Clock::time_point now);
    // Every peer with requests waiting: a read came, the buckets refilled.
    void serve_all(Clock::time_point now);
    bool on_blocks_done(TorrentContext& torrent, PeerConnection& connection,
                        std::span<const OutBlock> blocks, bool sent);
    bool on_read_bytes(TorrentContext& torrent, std::size_t bytes);
    bool download_allowed(TorrentContext& torrent, Clock::time_point now);
    // ReadsDone for slots given back, once per turn of the loop.
    void schedule_released();
    // PeerStats for the choker: every few seconds, and once per turn for torrents whose
    // peers' interest changed.
    void schedule_peer_stats(TorrentContext& torrent);
    void send_peer_stats(TorrentContext& torrent, Clock::time_point now);

    // peers
    void on_handshake(TorrentContext& torrent, PeerConnection& connection);
    void on_activity(TorrentContext& torrent, PeerConnection& connection);
    void on_closed(TorrentContext& torrent, PeerConnection& connection, const std::string& reason);
    // Before the info: what the peer answered to our BEP 9 requests goes to the torrent's
    // fetch, and it is asked for more; the verified dictionary goes to the orchestrator.
    void fetch_metadata(TorrentContext& torrent, PeerConnection& connection, Clock::time_point now);
    void report_metadata(TorrentContext& torrent);
    // Peers and DHT nodes the peer told us of (BEP 11, BEP 5's port message).
    void forward_learned_peers(TorrentContext& torrent, PeerConnection& connection);
    // Tells the torrent's peers that are due (BEP 11's minute) which of its peers came and went.
    void exchange_peers(TorrentContext& torrent, Clock::time_point now);
    void report_has(TorrentContext& torrent, PeerConnection& connection, bool include_haves);
    void request_work(TorrentContext& torrent, PeerConnection& connection, Clock::time_point now);
    // Leases that end here before delivery: their room is freed and they are reported.
    void release(TorrentId torrent, const std::string& key,
                 const std::vector<std::uint64_t>& lease_ids, const std::string& reason);
    void report_released(TorrentId torrent, const std::string& key,
                         const std::vector<std::uint64_t>& lease_ids, const std::string& reason);
    void report_disconnected(TorrentId torrent, const std::string& key, const std::string& reason,
                             bool seed = false);
    // Asks for work and sends requests for every peer: room for pieces came back.
    void resume_peers();
    std::vector<std::pair<TorrentContext*, ConnectionPtr>> all_connections() const;

    // verifier
    void collect_completed(TorrentContext& torrent, PeerConnection& connection);
    bool send_batch(OutgoingBatch& batch);
    void report_delivered(const bus::v1::PieceBatch& batch);
    void watch_pieces_socket();
    bool backpressured() const { return batches_ && batches_->backpressured(); }

    void on_timer();
    void schedule_timer();
    // The piece-memory budget from the peers sending us pieces now.
    void size_piece_budget();

    WorkerOptions options_;
    zmq::context_t zmq_context_;
    bus::Stage stage_;
    zmq::socket_t pieces_;
    wire::PeerId our_id_{};
    Encryption encryption_ = Encryption::prefer;  // the Welcome's, then EncryptionPolicy's
    std::uint16_t dht_port_ = 0;  // the session's DHT node (DhtPort), for BEP 5's port message

    asio::io_context io_;
    std::unique_ptr<ZmqWatch> control_watch_;
    std::unique_ptr<ZmqWatch> pieces_watch_;
    // The stage's signal descriptor: released, never closed.
    std::unique_ptr<asio::posix::stream_descriptor> signals_;
    asio::steady_timer timer_;
    bool draining_control_ = false;
    bool drain_posted_ = false;
    bool stopping_ = false;

    // Declared before the torrents: their connections give their blocks back to it.
    std::unique_ptr<Uploader> uploader_;
    std::unordered_map<TorrentId, std::unique_ptr<TorrentContext>> torrents_;
    std::size_t peer_count_ = 0;  // connections over every torrent, for --max-peers
    BanList banned_;  // in every torrent
    std::unique_ptr<PieceMemory> memory_;
    std::unique_ptr<PieceBatches> batches_;
    bus::v1::Envelope delivered_report_;  // body: pieces_delivered
    std::uint64_t bytes_downloaded_ = 0;
    std::uint64_t bytes_uploaded_ = 0;

    // --- giving back ---
    std::unique_ptr<Listener> listener_;
    // Where a connection of ours found ourselves ("ip:port"): never dialled again.
    std::set<std::string> self_endpoints_;
    zmq::socket_t reads_;
    std::unique_ptr<ZmqWatch> reads_watch_;
    bool draining_reads_ = false;
    bool reads_drain_posted_ = false;
    // The worker's share of the session's limits (RateBudget); the torrents' are theirs.
    TokenBucket upload_limit_;
    TokenBucket download_limit_;
    bool released_posted_ = false;
    std::set<TorrentId> stats_due_;
    bool stats_posted_ = false;
    Clock::time_point next_stats_{};
};

}  // namespace pw::peer_worker
