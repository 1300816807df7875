#include "core/bus/bus.hpp"

#include <algorithm>
#include <stdexcept>

#include <spdlog/spdlog.h>
#include <unistd.h>

#include "core/bus/metrics.hpp"
#include "core/bus/trace.hpp"

namespace pw::bus {

void configure(zmq::socket_t& socket, const SocketLimits& limits) {
    socket.set(zmq::sockopt::maxmsgsize, limits.max_message);
    socket.set(zmq::sockopt::sndhwm, limits.send_hwm);
    socket.set(zmq::sockopt::rcvhwm, limits.recv_hwm);
    socket.set(zmq::sockopt::linger, limits.linger_ms);
    socket.set(zmq::sockopt::reconnect_ivl, limits.reconnect_ms);
    socket.set(zmq::sockopt::reconnect_ivl_max, limits.reconnect_max_ms);
}

namespace {

// Consumes the remaining frames of a multipart message we are dropping.
void drain(zmq::socket_t& socket, bool more) {
    zmq::message_t part;
    while (more) {
        if (!socket.recv(part, zmq::recv_flags::none)) return;
        more = part.more();
    }
}

bool mergeable_kind(const v1::Envelope& envelope) {
    switch (envelope.body_case()) {
        case v1::Envelope::kPiecesDelivered:
        case v1::Envelope::kPiecesVerified:
        case v1::Envelope::kPiecesWritten:
        case v1::Envelope::kPiecesDropped: return true;
        case v1::Envelope::kSlotsFreed: return !envelope.slots_freed().all_delivered();
        default: return false;
    }
}

}  // namespace

RecvStatus receive(zmq::socket_t& socket, bool from_router, Incoming& out, zmq::recv_flags flags) {
    out.identity.clear();
    out.frames.clear();
    zmq::message_t part;
    if (!socket.recv(part, flags)) return RecvStatus::would_block;
    if (from_router) {
        out.identity = part.to_string();
        if (!part.more()) {
            spdlog::warn("dropped a message with no envelope from '{}'", out.identity);
            return RecvStatus::dropped;
        }
        if (!socket.recv(part, zmq::recv_flags::none)) return RecvStatus::dropped;
    }
    bool more = part.more();
    out.envelope.Clear();
    if (!out.envelope.ParseFromArray(part.data(), static_cast<int>(part.size()))) {
        spdlog::warn("dropped a malformed envelope ({} bytes)", part.size());
        drain(socket, more);
        return RecvStatus::dropped;
    }
    while (more) {
        if (out.frames.size() == kMaxFrames) {
            spdlog::warn("dropped a message with more than {} frames from '{}'", kMaxFrames,
                         out.envelope.sender());
            drain(socket, more);
            return RecvStatus::dropped;
        }
        zmq::message_t frame;
        if (!socket.recv(frame, zmq::recv_flags::none)) return RecvStatus::dropped;
        more = frame.more();
        out.frames.push_back(std::move(frame));
    }
    if (out.envelope.version() != kSchemaVersion) {
        spdlog::warn("dropped a message of schema version {} from '{}' (we speak {})",
                     out.envelope.version(), out.envelope.sender(), kSchemaVersion);
        return RecvStatus::dropped;
    }
    if (out.envelope.body_case() == v1::Envelope::BODY_NOT_SET) {
        spdlog::warn("dropped a message of an unknown type from '{}'", out.envelope.sender());
        return RecvStatus::dropped;
    }
    if (auto tracer = trace::logger()) {
        std::vector<std::size_t> sizes;
        for (const auto& frame : out.frames) sizes.push_back(frame.size());
        tracer->info("{}", trace::describe(trace::Direction::received, socket,
                                           from_router ? &out.identity : nullptr, out.envelope, sizes));
    }
    return RecvStatus::ok;
}

bool send(zmq::socket_t& socket, const std::string& sender, v1::Envelope& envelope,
          std::span<zmq::message_t> frames, const std::string* identity, zmq::send_flags flags) {
    envelope.set_version(kSchemaVersion);
    envelope.set_sender(sender);
    const auto more = flags | zmq::send_flags::sndmore;
    // Only the first frame can see EAGAIN: once it is queued, ZeroMQ takes the whole message.
    if (identity != nullptr) {
        if (!socket.send(zmq::buffer(*identity), more)) return false;
    }
    std::string header = envelope.SerializeAsString();
    const bool last = frames.empty();
    if (!socket.send(zmq::buffer(header), last ? flags : more)) return false;
    if (auto tracer = trace::logger()) {
        // Sizes are read before the frames are handed to ZeroMQ, which empties them.
        std::vector<std::size_t> sizes;
        for (const auto& frame : frames) sizes.push_back(frame.size());
        tracer->info("{}", trace::describe(trace::Direction::sent, socket, identity, envelope, sizes));
    }
    for (std::size_t i = 0; i < frames.size(); ++i) {
        const bool final_frame = i + 1 == frames.size();
        socket.send(frames[i], final_frame ? flags : more);
    }
    return true;
}

zmq::message_t frame_from_buffer(std::vector<std::uint8_t>&& buffer) {
    auto* owned = new std::vector<std::uint8_t>(std::move(buffer));
    return zmq::message_t(
        owned->data(), owned->size(),
        [](void*, void* hint) { delete static_cast<std::vector<std::uint8_t>*>(hint); }, owned);
}

ControlLink::ControlLink(zmq::context_t& context, const std::string& endpoint, std::string name,
                         v1::Role role, Timing timing, const CurveConfig& curve)
    : socket_(context, zmq::socket_type::dealer), name_(std::move(name)), role_(role),
      timing_(timing) {
    configure(socket_);
    socket_.set(zmq::sockopt::routing_id, name_);
    secure_client(socket_, curve, kControlServer);
    socket_.connect(endpoint);
}

std::optional<Incoming> ControlLink::handshake(int interrupt_fd) {
    const auto deadline = Clock::now() + timing_.welcome_timeout;
    Clock::time_point next_hello{};
    while (Clock::now() < deadline) {
        if (Clock::now() >= next_hello) {
            v1::Envelope hello;
            hello.mutable_hello()->set_role(role_);
            hello.mutable_hello()->set_pid(static_cast<std::uint32_t>(::getpid()));
            // Never blocks: a DEALER whose only peer refused it (CURVE key not on the list)
            // has no pipe left, and a blocking send would outlast welcome_timeout forever.
            bus::send(socket_, name_, hello, {}, nullptr, zmq::send_flags::dontwait);
            next_hello = Clock::now() + timing_.heartbeat;
        }
        zmq::pollitem_t items[2] = {{socket_.handle(), 0, ZMQ_POLLIN, 0},
                                    {nullptr, interrupt_fd, ZMQ_POLLIN, 0}};
        try {
            zmq::poll(items, interrupt_fd >= 0 ? 2 : 1, timing_.heartbeat);
        } catch (const zmq::error_t& e) {
            if (e.num() != EINTR) throw;
        }
        if (interrupt_fd >= 0 && (items[1].revents & ZMQ_POLLIN) != 0) return std::nullopt;
        Incoming in;
        while (receive(socket_, false, in) != RecvStatus::would_block) {
            if (in.envelope.has_welcome()) {
                spdlog::info("welcomed by the orchestrator on {}", socket_.get(zmq::sockopt::last_endpoint));
                last_heard_ = Clock::now();
                adopt_heartbeat(in.envelope.welcome().heartbeat_ms());
                return in;
            }
            if (in.envelope.has_shutdown()) {
                throw std::runtime_error("orchestrator refused us: " + in.envelope.shutdown().reason());
            }
        }
    }
    throw std::runtime_error("no answer from the orchestrator within " +
                             std::to_string(timing_.welcome_timeout.count() / 1000) + " s");
}

void ControlLink::adopt_heartbeat(std::uint32_t heartbeat_ms) {
    // Both sides beat at the orchestrator's period (lifecycle, step 3). Clamped, so that a
    // confused orchestrator can neither flood us nor make us wait for hours before giving up.
    if (heartbeat_ms == 0) return;
    const auto clamped = std::clamp<std::uint32_t>(heartbeat_ms, 10, 60'000);
    timing_.heartbeat = std::chrono::milliseconds(clamped);
}

void ControlLink::send(v1::Envelope& envelope, std::span<zmq::message_t> frames) {
    flush_reports();
    send_now(envelope, frames);
}

void ControlLink::send_now(v1::Envelope& envelope, std::span<zmq::message_t> frames) {
    bus::send(socket_, name_, envelope, frames);
    count_message(metrics_, true, envelope);
}

void ControlLink::queue_report(v1::Envelope&& envelope) {
    for (v1::Envelope& queued : queued_) {
        if (merge_report(queued, envelope)) return;
    }
    if (!mergeable_kind(envelope)) {
        send(envelope);
        return;
    }
    if (queued_.empty()) reports_due_ = Clock::now() + kReportLinger;
    queued_.push_back(std::move(envelope));
}

void ControlLink::flush_reports() {
    std::vector<v1::Envelope> queued;
    queued.swap(queued_);
    for (v1::Envelope& report : queued) send_now(report);
}

std::optional<Incoming> ControlLink::poll_message() {
    Incoming in;
    const RecvStatus status = receive(socket_, false, in);
    if (status == RecvStatus::would_block) return std::nullopt;
    last_heard_ = Clock::now();
    if (status == RecvStatus::ok) count_message(metrics_, false, in.envelope);
    if (status == RecvStatus::dropped || in.envelope.has_heartbeat()) return std::nullopt;
    return in;
}

bool ControlLink::tick(const v1::Heartbeat& stats) {
    return tick([&stats] { return stats; });
}

bool ControlLink::tick(const std::function<v1::Heartbeat()>& stats) {
    const auto now = Clock::now();
    if (!queued_.empty() && now >= reports_due_) flush_reports();
    // Every period even while other messages flow: those prove we are alive too, but only a
    // heartbeat carries the counters the progress line shows (peers, bytes).
    if (now - last_heartbeat_ >= timing_.heartbeat) {
        v1::Envelope beat;
        *beat.mutable_heartbeat() = stats();
        if (metrics_ != nullptr) {
            const v1::Heartbeat& counters = beat.heartbeat();
            // Set, not added: the Heartbeat already carries totals since the stage started.
            metrics_->counter("piecework_downloaded_bytes_total", "Payload bytes received from peers")
                .set(static_cast<std::int64_t>(counters.bytes_downloaded()));
            metrics_->counter("piecework_uploaded_bytes_total", "Payload bytes sent to peers")
                .set(static_cast<std::int64_t>(counters.bytes_uploaded()));
            metrics_->gauge("piecework_peers_connected", "Peers connected now")
                .set(counters.peers_connected());
            metrics_->gauge("piecework_queue_depth", "Items waiting in this stage's queue")
                .set(counters.queue_depth());
        }
        send(beat);
        last_heartbeat_ = now;
    }
    return now - last_heard_ < timing_.heartbeat * timing_.missed_heartbeats;
}

bool ControlLink::readable() {
    return (socket_.get(zmq::sockopt::events) & ZMQ_POLLIN) != 0;
}

std::chrono::milliseconds ControlLink::until_next_tick() const {
    auto next = last_heartbeat_ + timing_.heartbeat;
    if (!queued_.empty()) next = std::min(next, reports_due_);
    const auto due = next - Clock::now();
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(due);
    return ms.count() < 0 ? std::chrono::milliseconds(0) : ms;
}

bool merge_report(v1::Envelope& into, const v1::Envelope& more) {
    if (into.body_case() != more.body_case() || !mergeable_kind(into) || !mergeable_kind(more)) {
        return false;
    }
    switch (more.body_case()) {
        case v1::Envelope::kPiecesDelivered:
            into.mutable_pieces_delivered()->mutable_pieces()->MergeFrom(more.pieces_delivered().pieces());
            return true;
        case v1::Envelope::kPiecesVerified:
            into.mutable_pieces_verified()->mutable_pieces()->MergeFrom(more.pieces_verified().pieces());
            return true;
        case v1::Envelope::kPiecesWritten:
            into.mutable_pieces_written()->mutable_pieces()->MergeFrom(more.pieces_written().pieces());
            return true;
        case v1::Envelope::kPiecesDropped:  // the first reason stands for all: it is for the log
            into.mutable_pieces_dropped()->mutable_pieces()->MergeFrom(more.pieces_dropped().pieces());
            return true;
        case v1::Envelope::kSlotsFreed: {
            const v1::SlotsFreed& first = into.slots_freed();
            const v1::SlotsFreed& second = more.slots_freed();
            if (first.worker() != second.worker() || first.arena_id() != second.arena_id()) return false;
            into.mutable_slots_freed()->mutable_lease_ids()->MergeFrom(second.lease_ids());
            return true;
        }
        default: return false;
    }
}

std::string body_name(const v1::Envelope& envelope) {
    const auto* field = v1::Envelope::descriptor()->FindFieldByNumber(envelope.body_case());
    return field == nullptr ? "none" : field->name();
}

void count_message(metrics::Registry* registry, bool sent, const v1::Envelope& envelope) {
    if (registry == nullptr) return;
    registry
        ->counter("piecework_messages_total", "Control messages by direction and type",
                  {{"direction", sent ? "sent" : "received"}, {"type", body_name(envelope)}})
        .add();
}

std::string peer_key(const std::string& ip, std::uint32_t port) {
    if (ip.find(':') != std::string::npos) return "[" + ip + "]:" + std::to_string(port);
    return ip + ":" + std::to_string(port);
}

}  // namespace pw::bus
