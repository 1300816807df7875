#pragma once
// The one skeleton every stage process runs in (tracker, workers, verifier, writer):
//  - the ready handshake: Hello until Welcome;
//  - one loop owning the process's sockets: the stage's own, the control link, and the
//    termination signals, which arrive as a descriptor (signalfd) like any other event;
//  - heartbeats both ways, and giving up on an orchestrator silent for five of them;
//  - one terminate contract: Shutdown from the orchestrator, SIGTERM and SIGINT all end in
//    StageBody::on_terminate, where the stage finishes what it must and saves its state, and
//    the process then exits 0 (after a signal the stage also says Goodbye, so the
//    orchestrator takes back what it held at once). A silent orchestrator or a fatal error
//    goes through on_terminate too, and exits 1.
// The skeleton is driven by a loop: PollLoop (zmq_poll) for stages of ZeroMQ sockets and
// plain descriptors; the peer worker drives the same calls from its Asio loop.
#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <zmq.hpp>

#include "core/bus/bus.hpp"
#include "core/bus/welcome.hpp"

namespace pw::bus {

// SIGTERM and SIGINT as a descriptor. Blocks both in the calling thread, and so in every
// thread it starts later (ZeroMQ's among them): create it before any thread starts, as
// run_stage does first thing.
class TerminationSignals {
public:
    TerminationSignals();
    ~TerminationSignals();
    TerminationSignals(const TerminationSignals&) = delete;
    TerminationSignals& operator=(const TerminationSignals&) = delete;

    int fd() const { return fd_; }
    // The name of a signal that arrived ("SIGTERM"), consuming it; nullopt when none did.
    std::optional<std::string> take();

private:
    int fd_ = -1;
};

// Reads one signal from a TerminationSignals descriptor: its name ("SIGTERM"), or nullopt
// when none is waiting.
std::optional<std::string> read_termination_signal(int fd);

// What a stage does with what the skeleton hands it.
class StageBody {
public:
    virtual ~StageBody() = default;
    // A control message that is not the skeleton's own (Welcome, Heartbeat and Shutdown are).
    virtual void on_control(Incoming& message) = 0;
    // The end of the stage, reached exactly once whatever the cause (Shutdown, a signal, a
    // silent orchestrator, a fatal error): finish what must be finished and save what must
    // be saved. Reports queued here still go out.
    virtual void on_terminate(const std::string& reason) = 0;
    // The counters of the next heartbeat; asked once per heartbeat period.
    virtual v1::Heartbeat heartbeat() = 0;
};

struct StageConfig {
    std::string control;  // the orchestrator's ROUTER
    std::string name;
    v1::Role role = v1::ROLE_UNSPECIFIED;
    Timing timing{};
    CurveConfig curve{};
    metrics::Registry* metrics = nullptr;
    int signal_fd = -1;  // TerminationSignals::fd(); -1: none (tests run stages on threads)
};

class Stage {
public:
    Stage(zmq::context_t& context, StageConfig config);

    // Hello until Welcome. Nullopt when a termination signal came first (nothing to save: the
    // process exits 0). Throws std::runtime_error when no Welcome comes in time.
    std::optional<WelcomeInfo> handshake();

    ControlLink& link() { return link_; }
    const std::string& name() const { return link_.name(); }
    int signal_fd() const { return config_.signal_fd; }

    // --- called by the loop ---
    // Reads every control message waiting, until the socket has none left (safe for an
    // edge-triggered wake-up): Shutdown ends the stage, the rest goes to body.on_control.
    void on_control_ready(StageBody& body);
    // The signal descriptor is readable.
    void on_signal_ready(StageBody& body);
    // Heartbeats and queued reports when due; ends the stage (exit 1) when the orchestrator
    // has been silent too long. Call at least every until_next_tick().
    void tick(StageBody& body);
    std::chrono::milliseconds until_next_tick() const { return link_.until_next_tick(); }

    // The stage gives up: body.on_terminate, then exit code 1. `reason` is logged as an error.
    void fail(StageBody& body, const std::string& reason);
    bool finished() const { return exit_code_.has_value(); }
    int exit_code() const { return exit_code_.value_or(0); }

private:
    // `linger_ms`: how long the last reports may wait for the orchestrator to take them.
    void terminate(StageBody& body, const std::string& reason, int exit_code, int linger_ms);

    StageConfig config_;
    ControlLink link_;
    std::optional<int> exit_code_;
};

// The loop of stages whose events are ZeroMQ sockets and plain descriptors. Each turn it asks
// every watch which events it wants (none: not polled this turn), waits for any of them, the
// control link, the signals, or the earliest timeout, then calls the handlers of what is
// ready, then the every-turn work, then the stage's tick.
class PollLoop {
public:
    using Events = std::function<short()>;
    using Handler = std::function<void(short revents)>;

    PollLoop(Stage& stage, StageBody& body) : stage_(stage), body_(body) {}

    void watch(zmq::socket_t& socket, Events events, Handler handler);
    void watch_fd(int fd, Events events, Handler handler);
    // Descriptors that change from turn to turn (curl's): `add` appends poll items each turn;
    // nothing is dispatched for them, the every-turn work drives whoever owns them.
    void watch_dynamic(std::function<void(std::vector<zmq::pollitem_t>&)> add);
    // The longest the loop may sleep, asked each turn (the stage's own timers).
    void set_timeout(std::function<std::chrono::milliseconds()> timeout) { timeout_ = std::move(timeout); }
    void every_turn(std::function<void()> work) { every_turn_ = std::move(work); }

    // Runs until the stage finishes; returns its exit code.
    int run();

private:
    struct Watch {
        zmq::socket_t* socket = nullptr;
        int fd = -1;
        Events events;
        Handler handler;
    };

    Stage& stage_;
    StageBody& body_;
    std::vector<Watch> watches_;
    std::vector<std::function<void(std::vector<zmq::pollitem_t>&)>> dynamic_;
    std::function<std::chrono::milliseconds()> timeout_;
    std::function<void()> every_turn_;
};

}  // namespace pw::bus
