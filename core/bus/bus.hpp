#pragma once
// How every stage speaks over ZeroMQ: bounded sockets, [Envelope][raw frame]* messages, and
// the control link to the orchestrator (ready handshake, heartbeats, shutdown).
//
// ZeroMQ sockets are not thread-safe: each stage has one loop that owns all of its sockets.
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <zmq.hpp>

#include "core/bus/security.hpp"
#include "proto/piecework.pb.h"

namespace pw::bus {

namespace v1 = ::piecework::v1;

namespace metrics {
class Registry;
}

// 2: whole pieces travel in batches (PieceBatch) and may stay in a worker's arena.
// 3: one set of stages serves many torrents; every message about one names it.
inline constexpr std::uint32_t kSchemaVersion = 3;
// A piece (at most kMaxPieceBytes) plus its header; no larger frame crosses a socket.
inline constexpr std::int64_t kMaxPieceBytes = 64ll << 20;
inline constexpr std::int64_t kMaxMessageBytes = kMaxPieceBytes + (1 << 20);
// Pieces in one PieceBatch. Batches carried as frames also stop growing once they hold
// kMaxBatchFrameBytes (or a single piece larger than that), so a queue of a few batches
// stays a few megabytes.
inline constexpr std::size_t kMaxBatchPieces = 256;
inline constexpr std::size_t kMaxBatchFrameBytes = 4u << 20;
// Raw frames after an envelope: one per piece of a batch at most.
inline constexpr std::size_t kMaxFrames = kMaxBatchPieces;

using Clock = std::chrono::steady_clock;

struct SocketLimits {
    std::int64_t max_message = kMaxMessageBytes;
    int send_hwm = 1000;
    int recv_hwm = 1000;
    int linger_ms = 0;
    // The stages start together and the side that binds may come up a moment after the side
    // that connects: at ZeroMQ's default 100 ms the verifier sometimes said Hello 130 ms late,
    // after the worker had delivered its first pieces. Retries back off to the maximum.
    int reconnect_ms = 10;
    int reconnect_max_ms = 1000;
};

// Applies message-size cap, high-water marks, linger and reconnection. Call before
// bind/connect.
void configure(zmq::socket_t& socket, const SocketLimits& limits = {});

struct Incoming {
    std::string identity;  // set for messages read from a ROUTER socket
    v1::Envelope envelope;
    std::vector<zmq::message_t> frames;  // raw frames after the envelope
};

enum class RecvStatus { ok, would_block, dropped };

// Reads one whole multipart message. Malformed ones (bad protobuf, other schema version, too
// many frames, no body) are consumed, logged and reported as `dropped`, never thrown.
RecvStatus receive(zmq::socket_t& socket, bool from_router, Incoming& out,
                   zmq::recv_flags flags = zmq::recv_flags::dontwait);

// Sends [identity]? [envelope] [frames...]. Stamps version and sender. Returns false when the
// socket would block (only possible with dontwait), in which case nothing was sent.
bool send(zmq::socket_t& socket, const std::string& sender, v1::Envelope& envelope,
          std::span<zmq::message_t> frames = {}, const std::string* identity = nullptr,
          zmq::send_flags flags = zmq::send_flags::none);

// A ZeroMQ frame that owns a heap buffer and hands it to ZeroMQ without a copy.
zmq::message_t frame_from_buffer(std::vector<std::uint8_t>&& buffer);

struct Timing {
    std::chrono::milliseconds heartbeat{1000};
    int missed_heartbeats = 5;  // silence this long means the partner is gone
    std::chrono::milliseconds welcome_timeout{15000};
};

// A stage's DEALER connection to the orchestrator's ROUTER control socket.
class ControlLink {
public:
    // With `curve` enabled the link is a CURVE client that expects the orchestrator's key.
    ControlLink(zmq::context_t& context, const std::string& endpoint, std::string name,
                v1::Role role, Timing timing = {}, const CurveConfig& curve = {});

    // The ready handshake: sends Hello (again every heartbeat) until a Welcome arrives.
    // From then on the link beats at the Welcome's heartbeat_ms (when set). Nullopt when
    // `interrupt_fd` (when not -1) became readable first: a termination signal, say.
    // Throws std::runtime_error when no Welcome comes within timing.welcome_timeout, or when
    // the orchestrator answers with a Shutdown.
    std::optional<Incoming> handshake(int interrupt_fd = -1);

    zmq::socket_t& socket() { return socket_; }
    const std::string& name() const { return name_; }
    // Sends now, after any queued reports (so the orchestrator sees them in order).
    void send(v1::Envelope& envelope, std::span<zmq::message_t> frames = {});
    // A report that may wait up to kReportLinger for others of its kind: PiecesDelivered,
    // PiecesVerified, PiecesWritten, PiecesDropped, and SlotsFreed for the same worker and
    // arena, are merged into one message each. Anything else is sent at once. Every message
    // costs both sides a wake-up of their ZeroMQ I/O thread and a turn of their loop, which
    // with many small pieces cost more than the pieces themselves.
    void queue_report(v1::Envelope&& envelope);
    void flush_reports();
    std::size_t queued_reports() const { return queued_.size(); }
    // Reads one message if any; heartbeats are absorbed here. Returns nullopt when nothing
    // (or nothing but a heartbeat / a dropped frame) was read.
    std::optional<Incoming> poll_message();
    // Sends a heartbeat when one is due, and queued reports once they have waited long
    // enough. Returns false once the orchestrator has been silent for missed_heartbeats
    // periods: the caller shuts down rather than wait forever.
    bool tick(const v1::Heartbeat& stats);
    // The same, asking for the heartbeat's counters only when one is due.
    bool tick(const std::function<v1::Heartbeat()>& stats);
    // Messages are waiting to be read (ZMQ_EVENTS): ZMQ_FD only signals that this may have
    // changed, so a loop woken by it reads until this is false.
    bool readable();
    // Time until the next heartbeat or queued report is due, for the loop's poll timeout.
    std::chrono::milliseconds until_next_tick() const;
    // From now on the link counts its messages by type and mirrors every Heartbeat's counters
    // into `registry` (null: stop). The registry must outlive the link.
    void attach_metrics(metrics::Registry* registry) { metrics_ = registry; }

    static constexpr std::chrono::milliseconds kReportLinger{20};

private:
    void adopt_heartbeat(std::uint32_t heartbeat_ms);
    void send_now(v1::Envelope& envelope, std::span<zmq::message_t> frames = {});

    zmq::socket_t socket_;
    std::string name_;
    v1::Role role_;
    Timing timing_;
    Clock::time_point last_heartbeat_{};
    Clock::time_point last_heard_{};
    metrics::Registry* metrics_ = nullptr;
    std::vector<v1::Envelope> queued_;
    Clock::time_point reports_due_{};
};

// Appends `more` to `into` when both are reports of one kind that may travel as one
// (see ControlLink::queue_report); false, leaving both alone, otherwise.
bool merge_report(v1::Envelope& into, const v1::Envelope& more);

// The envelope body's field name ("piece_batch"), for logs and metrics.
std::string body_name(const v1::Envelope& envelope);

// Counts one message in `registry` (null: does nothing) as
// piecework_messages_total{direction="sent"|"received",type=BODY}.
void count_message(metrics::Registry* registry, bool sent, const v1::Envelope& envelope);

// "ip:port", or "[ip]:port" for IPv6: how peers are named between stages.
std::string peer_key(const std::string& ip, std::uint32_t port);

}  // namespace pw::bus
