#pragma once
// Runs a stage's loop on a thread of the test, with the test playing the orchestrator on a
// ROUTER over inproc://. Everything is bounded in time: a stage the test forgets to stop
// is told to shut down, and a stage that hears nothing gives up on its own.
#include <atomic>
#include <chrono>
#include <future>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <zmq.hpp>

#include "core/bus/bus.hpp"

namespace pw::test {

namespace v1 = ::piecework::v1;
using namespace std::chrono_literals;

inline std::string unique_inproc(const std::string& stem) {
    static std::atomic<int> counter{0};
    return "inproc://" + stem + "-" + std::to_string(counter++);
}

// The Welcome's period: long enough that a test never races the silence detection, short
// enough that a stage left behind by a failed test gives up within seconds.
inline constexpr std::uint32_t kTestHeartbeatMs = 500;

class FakeOrchestrator {
public:
    FakeOrchestrator(zmq::context_t& context, std::string torrent_bytes)
        : endpoint_(unique_inproc("control")), torrent_(std::move(torrent_bytes)),
          router_(context, zmq::socket_type::router) {
        bus::configure(router_);
        router_.bind(endpoint_);
    }

    const std::string& endpoint() const { return endpoint_; }

    // The next message of kind `body` from any stage, answering Hellos on the way; other
    // messages (heartbeats...) are skipped. Nothing within `timeout`: nullopt.
    std::optional<bus::Incoming> expect(v1::Envelope::BodyCase body,
                                        std::chrono::milliseconds timeout = 5000ms) {
        const auto deadline = bus::Clock::now() + timeout;
        while (bus::Clock::now() < deadline) {
            beat_if_due();
            zmq::pollitem_t item{router_.handle(), 0, ZMQ_POLLIN, 0};
            zmq::poll(&item, 1, 20ms);
            bus::Incoming in;
            while (bus::receive(router_, true, in) == bus::RecvStatus::ok) {
                if (in.envelope.has_hello()) welcome(in.identity);
                if (in.envelope.body_case() == body) return in;
            }
        }
        return std::nullopt;
    }

    void shutdown_all() {
        (void)expect(v1::Envelope::BODY_NOT_SET, 50ms);  // answer any Hello still waiting
        for (const std::string& identity : stages_) {
            v1::Envelope shutdown;
            shutdown.mutable_shutdown()->set_reason("test over");
            bus::send(router_, "orchestrator", shutdown, {}, &identity);
        }
    }

private:
    // The stages hear from us while the test waits on them; between expect() calls we are
    // silent, which is how a test plays a dead orchestrator.
    void beat_if_due() {
        const auto now = bus::Clock::now();
        if (now - last_beat_ < std::chrono::milliseconds(kTestHeartbeatMs / 2)) return;
        last_beat_ = now;
        for (const std::string& identity : stages_) {
            v1::Envelope beat;
            beat.mutable_heartbeat();
            bus::send(router_, "orchestrator", beat, {}, &identity);
        }
    }

    void welcome(const std::string& identity) {
        stages_.insert(identity);
        v1::Envelope envelope;
        envelope.mutable_welcome()->set_heartbeat_ms(kTestHeartbeatMs);
        envelope.mutable_welcome()->set_peer_id(std::string(20, 'p'));
        std::vector<zmq::message_t> frames;
        frames.emplace_back(torrent_.data(), torrent_.size());
        bus::send(router_, "orchestrator", envelope, frames, &identity);
    }

    std::string endpoint_;
    std::string torrent_;
    zmq::socket_t router_;
    std::set<std::string> stages_;
    bus::Clock::time_point last_beat_{};
};

// A stage loop on its own thread; on destruction (test passed or failed) the stage is told
// to shut down and joined.
class StageThread {
public:
    template <class Run>
    StageThread(FakeOrchestrator& orchestrator, Run run)
        : orchestrator_(orchestrator), result_(std::async(std::launch::async, std::move(run))) {}
    ~StageThread() {
        if (!result_.valid()) return;
        orchestrator_.shutdown_all();
        result_.wait();
    }
    StageThread(const StageThread&) = delete;
    StageThread& operator=(const StageThread&) = delete;

    // Sends Shutdown and returns the stage's exit code (or -1 when it did not stop in time).
    int stop(std::chrono::milliseconds timeout = 10000ms) {
        orchestrator_.shutdown_all();
        if (result_.wait_for(timeout) != std::future_status::ready) return -1;
        return result_.get();
    }

private:
    FakeOrchestrator& orchestrator_;
    std::future<int> result_;
};

}  // namespace pw::test
