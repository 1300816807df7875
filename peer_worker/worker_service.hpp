#pragma once
// The peer_worker process: one io_context on one thread owns the control link, the PUSH
// socket to the verifier and every peer connection of every torrent, and drives the stage
// skeleton (core/bus/stage.hpp) from it. It turns orchestrator commands into torrents,
// connections and leases, and sessions' progress into reports and PieceBatches.
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
#include "peer_worker/peer_connection.hpp"
#include "peer_worker/piece_batches.hpp"
#include "peer_worker/piece_memory.hpp"
#include "peer_worker/torrent_context.hpp"
#include "peer_worker/zmq_watch.hpp"

namespace pw::peer_worker {

// Whether pieces stay in a shared-memory arena that the verifier and writer read in place
// (they must run on this machine) or travel to the verifier as frames.
enum class SharedMemory { automatic, on, off };

struct WorkerOptions {
    std::string control;  // orchestrator's ROUTER
    std::string pieces;   // verifier's PULL
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
    void ban(const std::string& ip, const std::string& reason);
    void free_slots(const bus::v1::SlotsFreed& freed);

    // peers
    void on_handshake(TorrentContext& torrent, PeerConnection& connection);
    void on_activity(TorrentContext& torrent, PeerConnection& connection);
    void on_closed(TorrentContext& torrent, PeerConnection& connection, const std::string& reason);
    void report_has(TorrentContext& torrent, PeerConnection& connection, bool include_haves);
    void request_work(TorrentContext& torrent, PeerConnection& connection, Clock::time_point now);
    // Leases that end here before delivery: their room is freed and they are reported.
    void release(TorrentId torrent, const std::string& key,
                 const std::vector<std::uint64_t>& lease_ids, const std::string& reason);
    void report_released(TorrentId torrent, const std::string& key,
                         const std::vector<std::uint64_t>& lease_ids, const std::string& reason);
    void report_disconnected(TorrentId torrent, const std::string& key, const std::string& reason);
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

    WorkerOptions options_;
    zmq::context_t zmq_context_;
    bus::Stage stage_;
    zmq::socket_t pieces_;
    wire::PeerId our_id_{};

    asio::io_context io_;
    std::unique_ptr<ZmqWatch> control_watch_;
    std::unique_ptr<ZmqWatch> pieces_watch_;
    // The stage's signal descriptor: released, never closed.
    std::unique_ptr<asio::posix::stream_descriptor> signals_;
    asio::steady_timer timer_;
    bool draining_control_ = false;
    bool drain_posted_ = false;
    bool stopping_ = false;

    std::unordered_map<TorrentId, std::unique_ptr<TorrentContext>> torrents_;
    std::size_t peer_count_ = 0;  // connections over every torrent, for --max-peers
    std::set<asio::ip::address> banned_;  // in every torrent
    std::unique_ptr<PieceMemory> memory_;
    std::unique_ptr<PieceBatches> batches_;
    bus::v1::Envelope delivered_report_;  // body: pieces_delivered
    std::uint64_t bytes_downloaded_ = 0;
};

}  // namespace pw::peer_worker
