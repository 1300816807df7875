#pragma once
// Runs a stage's loop on a thread of the test, with the test playing the orchestrator on a
// ROUTER over inproc://. Everything is bounded in time: a stage the test forgets to stop
// is told to shut down, and a stage that hears nothing gives up on its own.
#include <atomic>
#include <chrono>
#include <future>
#include <initializer_list>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <sys/signalfd.h>
#include <unistd.h>

#include <csignal>
#include <stdexcept>

#include <zmq.hpp>

#include "core/bus/bus.hpp"
#include "core/bus/welcome.hpp"
#include "core/metainfo.hpp"

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

// Stands in for a stage's signalfd (bus::TerminationSignals) when the stage runs on a thread
// of the test, which cannot block signals for it: a pipe the stage polls, carrying what the
// signalfd would.
class FakeSignals {
public:
    FakeSignals() {
        if (::pipe(fds_) != 0) throw std::runtime_error("FakeSignals: no pipe");
    }
    ~FakeSignals() {
        ::close(fds_[0]);
        ::close(fds_[1]);
    }
    FakeSignals(const FakeSignals&) = delete;
    FakeSignals& operator=(const FakeSignals&) = delete;

    int fd() const { return fds_[0]; }
    bool raise(int signal_number = SIGTERM) {
        signalfd_siginfo info{};
        info.ssi_signo = static_cast<std::uint32_t>(signal_number);
        return ::write(fds_[1], &info, sizeof info) == static_cast<ssize_t>(sizeof info);
    }

private:
    int fds_[2] = {-1, -1};
};

// The id FakeOrchestrator gives the torrent it is made with.
inline constexpr TorrentId kTestTorrent{1};

// The orchestrator's side of the control socket: welcomes every stage that says Hello and
// tells it about the session's torrents (TorrentAdded, then TorrentInfo with the info
// dictionary), as the real one does.
class FakeOrchestrator {
public:
    // With the .torrent file's bytes of the session's first torrent (kTestTorrent), or none.
    FakeOrchestrator(zmq::context_t& context, const std::string& torrent_bytes,
                     const std::string& download_dir = {})
        : endpoint_(unique_inproc("control")), router_(context, zmq::socket_type::router) {
        bus::configure(router_);
        router_.bind(endpoint_);
        if (!torrent_bytes.empty()) add_torrent(torrent_bytes, download_dir);
    }

    const std::string& endpoint() const { return endpoint_; }

    // Adds a torrent to the session: stages welcomed from now on hear of it, and so do those
    // welcomed already. Returns its id.
    TorrentId add_torrent(const std::string& torrent_bytes, const std::string& download_dir = {}) {
        auto parsed = Torrent::parse(torrent_bytes);
        if (!parsed) throw std::runtime_error("FakeOrchestrator: " + parsed.error().describe());
        Known known;
        known.added.id = TorrentId{static_cast<std::uint32_t>(torrents_.size() + 1)};
        known.added.info_hash = parsed->info_hash();
        known.added.name = parsed->name();
        known.added.trackers = parsed->trackers();
        known.added.download_dir = download_dir;
        known.info = parsed->info_bytes();
        torrents_.push_back(known);
        for (const std::string& identity : stages_) tell(identity, known);
        return known.added.id;
    }

    void remove_torrent(TorrentId id, bool delete_data = false) {
        for (const std::string& identity : stages_) {
            v1::Envelope envelope = bus::torrent_removed_message(id, delete_data);
            bus::send(router_, "orchestrator", envelope, {}, &identity);
        }
    }

    // Sends `envelope` (and raw frames after it) to every stage welcomed so far.
    void send_all(v1::Envelope envelope, const std::vector<std::string>& frames = {}) {
        for (const std::string& identity : stages_) {
            std::vector<zmq::message_t> raw;
            for (const std::string& frame : frames) raw.emplace_back(frame.data(), frame.size());
            bus::send(router_, "orchestrator", envelope, raw, &identity);
        }
    }

    // The next message of any of the kinds in `bodies`, as expect() does for one: for a test
    // about the order in which messages of several kinds come.
    std::optional<bus::Incoming> expect_one_of(std::initializer_list<v1::Envelope::BodyCase> bodies,
                                               std::chrono::milliseconds timeout = 5000ms) {
        const auto deadline = bus::Clock::now() + timeout;
        while (bus::Clock::now() < deadline) {
            beat_if_due();
            zmq::pollitem_t item{router_.handle(), 0, ZMQ_POLLIN, 0};
            zmq::poll(&item, 1, 20ms);
            bus::Incoming in;
            while (bus::receive(router_, true, in) == bus::RecvStatus::ok) {
                if (in.envelope.has_hello()) welcome(in.identity);
                for (const auto body : bodies) {
                    if (in.envelope.body_case() == body) return in;
                }
            }
        }
        return std::nullopt;
    }

    // The next message of kind `body` from any stage, answering Hellos on the way; other
    // messages (heartbeats...) are skipped. Nothing within `timeout`: nullopt.
    std::optional<bus::Incoming> expect(v1::Envelope::BodyCase body,
                                        std::chrono::milliseconds timeout = 5000ms) {
        return expect_one_of({body}, timeout);
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

    struct Known {
        bus::AddedTorrent added;
        std::string info;  // the info dictionary's bytes
    };

    void welcome(const std::string& identity) {
        stages_.insert(identity);
        v1::Envelope envelope;
        envelope.mutable_welcome()->set_heartbeat_ms(kTestHeartbeatMs);
        envelope.mutable_welcome()->set_peer_id(std::string(20, 'p'));
        bus::send(router_, "orchestrator", envelope, {}, &identity);
        for (const Known& known : torrents_) tell(identity, known);
    }

    void tell(const std::string& identity, const Known& known) {
        v1::Envelope added = bus::torrent_added_message(known.added);
        bus::send(router_, "orchestrator", added, {}, &identity);
        v1::Envelope info = bus::torrent_info_message(known.added.id);
        std::vector<zmq::message_t> frames;
        frames.emplace_back(known.info.data(), known.info.size());
        bus::send(router_, "orchestrator", info, frames, &identity);
    }

    std::string endpoint_;
    std::vector<Known> torrents_;
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
