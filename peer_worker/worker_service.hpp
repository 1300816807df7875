#pragma once
// The peer_worker process: one io_context on one thread owns the control link, the PUSH
// socket to the verifier and every peer connection. It turns orchestrator commands into
// connections and leases, and sessions' progress into reports and PieceBatches.
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>

#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>
#include <zmq.hpp>

#include "core/bus/bus.hpp"
#include "core/geometry.hpp"
#include "core/metainfo.hpp"
#include "core/wire.hpp"
#include "peer_worker/peer_connection.hpp"
#include "peer_worker/piece_batches.hpp"
#include "peer_worker/piece_memory.hpp"
#include "peer_worker/zmq_watch.hpp"

namespace pw::peer_worker {

// Whether pieces stay in a shared-memory arena that the verifier and writer read in place
// (they must run on this machine) or travel to the verifier as frames.
enum class SharedMemory { automatic, on, off };

struct WorkerOptions {
    std::string control;  // orchestrator's ROUTER
    std::string pieces;   // verifier's PULL
    std::string name;
    std::uint32_t max_peers = 60;
    // Piece buffers held at once (leased, assembling, waiting for the verifier). A fast peer's
    // pipeline (at most 500 blocks in flight plus half that queued: 12 MiB) fits with room
    // for several more; slow peers need far less each. Beyond it, leases are refused. In
    // arena mode it sizes the arena, which also holds pieces until the writer is done.
    std::uint64_t max_piece_bytes = 32ull << 20;
    // automatic: an arena when the verifier is reached over ipc:// (the same machine).
    SharedMemory shared_memory = SharedMemory::automatic;
    bus::CurveConfig curve{};  // CurveZMQ keys; disabled in local mode
    bus::metrics::Registry* metrics = nullptr;  // the stage's counters (--metrics-port); null: none
};

bool wants_arena(const WorkerOptions& options);

class WorkerService {
public:
    explicit WorkerService(WorkerOptions options);
    ~WorkerService();
    WorkerService(const WorkerService&) = delete;
    WorkerService& operator=(const WorkerService&) = delete;

    // Handshakes with the orchestrator and runs until Shutdown (0) or until the orchestrator
    // goes silent (non-zero). Throws on start-up failures.
    int run();

private:
    using ConnectionPtr = std::shared_ptr<PeerConnection>;

    void start(const bus::Incoming& welcome);
    void set_up_piece_memory();
    void stop(int exit_code);

    // control socket
    void watch_control();
    void drain_control();
    void send_control(bus::v1::Envelope& envelope, std::span<zmq::message_t> frames = {});
    void handle(bus::Incoming& message);
    void add_peers(const bus::v1::AddPeers& add);
    void grant_leases(const bus::v1::Leases& leases);
    void cancel_piece(PieceIndex piece);
    void ban(const std::string& ip, const std::string& reason);
    void free_slots(const bus::v1::SlotsFreed& freed);

    // peers
    void on_handshake(PeerConnection& connection);
    void on_activity(PeerConnection& connection);
    void on_closed(PeerConnection& connection, const std::string& reason);
    void drop(const std::string& key, const std::string& reason);
    void report_has(PeerConnection& connection, bool include_haves);
    void request_work(PeerConnection& connection, Clock::time_point now);
    // Leases that end here before delivery: their room is freed and they are reported.
    void release(const std::string& key, const std::vector<std::uint64_t>& lease_ids,
                 const std::string& reason);
    void report_released(const std::string& key, const std::vector<std::uint64_t>& lease_ids,
                         const std::string& reason);
    void report_disconnected(const std::string& key, const std::string& reason);
    // Asks for work and sends requests for every peer: room for pieces came back.
    void resume_peers();

    // verifier
    void collect_completed(PeerConnection& connection);
    bool send_batch(OutgoingBatch& batch);
    void report_delivered(const bus::v1::PieceBatch& batch);
    void watch_pieces_socket();
    bool backpressured() const { return batches_ && batches_->backpressured(); }

    void on_timer();
    void schedule_timer();

    WorkerOptions options_;
    zmq::context_t zmq_context_;
    bus::ControlLink control_;
    zmq::socket_t pieces_;

    std::optional<Torrent> torrent_;
    PieceGeometry geometry_;
    wire::PeerId our_id_{};
    wire::ParserLimits parser_limits_;

    asio::io_context io_;
    std::unique_ptr<ZmqWatch> control_watch_;
    std::unique_ptr<ZmqWatch> pieces_watch_;
    asio::steady_timer timer_;
    bool draining_control_ = false;
    bool drain_posted_ = false;
    int exit_code_ = 0;
    bool stopping_ = false;

    PeerConnection::Callbacks callbacks_;
    std::map<std::string, ConnectionPtr> peers_;
    std::set<asio::ip::address> banned_;
    std::unique_ptr<PieceMemory> memory_;
    std::unique_ptr<PieceBatches> batches_;
    bus::v1::Envelope delivered_report_;  // body: pieces_delivered
    Clock::time_point last_haves_flush_;

    std::uint64_t bytes_downloaded_ = 0;
};

}  // namespace pw::peer_worker
