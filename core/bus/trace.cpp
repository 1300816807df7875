#include "core/bus/trace.hpp"

#include <atomic>
#include <mutex>
#include <stdexcept>
#include <vector>

#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

namespace pw::bus::trace {

namespace {

// Publishes each formatted trace line as one ZeroMQ message. The sink's mutex serialises
// the socket, and the socket is private to this sink: it is not one of the loop's sockets.
class PublishSink final : public spdlog::sinks::base_sink<std::mutex> {
public:
    explicit PublishSink(const std::string& endpoint) : socket_(context_, zmq::socket_type::pub) {
        socket_.set(zmq::sockopt::sndhwm, 1000);
        socket_.set(zmq::sockopt::linger, 0);
        try {
            socket_.bind(endpoint);
        } catch (const zmq::error_t& error) {
            throw std::runtime_error("--trace-endpoint " + endpoint + ": " + error.what());
        }
    }

protected:
    void sink_it_(const spdlog::details::log_msg& message) override {
        spdlog::memory_buf_t formatted;
        formatter_->format(message, formatted);
        std::size_t size = formatted.size();
        while (size > 0 && (formatted[size - 1] == '\n' || formatted[size - 1] == '\r')) --size;
        // dontwait: with a slow tap the line is dropped, never the stage stalled.
        socket_.send(zmq::const_buffer(formatted.data(), size), zmq::send_flags::dontwait);
    }
    void flush_() override {}

private:
    zmq::context_t context_{1};
    zmq::socket_t socket_;
};

const char* socket_type_name(zmq::socket_t& socket) {
    switch (socket.get(zmq::sockopt::type)) {
        case ZMQ_ROUTER: return "ROUTER";
        case ZMQ_DEALER: return "DEALER";
        case ZMQ_PUSH: return "PUSH";
        case ZMQ_PULL: return "PULL";
        case ZMQ_PUB: return "PUB";
        case ZMQ_SUB: return "SUB";
        case ZMQ_PAIR: return "PAIR";
        default: return "socket";
    }
}

std::string escape_percent(const std::string& text) {
    std::string out;
    for (const char c : text) {
        out += c;
        if (c == '%') out += '%';
    }
    return out;
}

// Mirrors whether the trace logger is registered: bus::send and bus::receive ask on every
// message, and spdlog's registry lookup takes a mutex and copies a shared_ptr each time.
std::atomic<bool> tracing{false};

}  // namespace

void start(const std::string& stage, bool to_stderr, const std::string& publish_endpoint) {
    std::vector<spdlog::sink_ptr> sinks;
    if (to_stderr) sinks.push_back(std::make_shared<spdlog::sinks::stderr_sink_mt>());
    if (!publish_endpoint.empty()) sinks.push_back(std::make_shared<PublishSink>(publish_endpoint));
    if (sinks.empty()) return;
    auto tracer = std::make_shared<spdlog::logger>(kLoggerName, sinks.begin(), sinks.end());
    tracer->set_pattern("%H:%M:%S.%e " + escape_percent(stage) + " TRACE %v");
    tracer->set_level(spdlog::level::trace);
    tracer->flush_on(spdlog::level::trace);
    spdlog::drop(kLoggerName);
    spdlog::register_logger(tracer);
    tracing.store(true, std::memory_order_release);
}

void stop() {
    tracing.store(false, std::memory_order_release);
    if (auto tracer = spdlog::get(kLoggerName)) tracer->flush();
    spdlog::drop(kLoggerName);
}

std::shared_ptr<spdlog::logger> logger() {
    if (!tracing.load(std::memory_order_acquire)) return nullptr;
    return spdlog::get(kLoggerName);
}

std::string describe(Direction direction, zmq::socket_t& socket, const std::string* identity,
                     const ::piecework::v1::Envelope& envelope,
                     std::span<const std::size_t> frame_sizes) {
    std::string line = direction == Direction::sent ? "send " : "recv ";
    line += socket_type_name(socket);
    if (identity != nullptr) {
        line += direction == Direction::sent ? " to '" : " from '";
        line += *identity + "'";
    }
    line += ' ';  // appended piecewise: see with_suffix in core/metainfo.cpp (g++ 12, -O3)
    line += socket.get(zmq::sockopt::last_endpoint);
    line += ": ";
    std::string text = envelope.ShortDebugString();
    if (text.size() > kMaxEnvelopeText) {
        const std::size_t cut = text.size() - kMaxEnvelopeText;
        text.resize(kMaxEnvelopeText);
        text += "... (" + std::to_string(cut) + " more chars)";
    }
    line += "{" + text + "}";
    if (!frame_sizes.empty()) {
        line += " +frames[";
        for (std::size_t i = 0; i < frame_sizes.size(); ++i) {
            if (i > 0) line += ",";
            line += std::to_string(frame_sizes[i]) + " B";
        }
        line += "]";
    }
    return line;
}

}  // namespace pw::bus::trace
