#include "core/bus/stage.hpp"

#include <sys/signalfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <stdexcept>

#include <spdlog/spdlog.h>

namespace pw::bus {

namespace {

// Long enough for the last reports (and a Goodbye) to leave before the process ends.
constexpr int kExitLingerMs = 2000;
// After the orchestrator's own Shutdown nobody reads our last reports: the orchestrator is
// finishing. Waiting the whole linger for a peer that is gone (a DEALER keeps what it could
// not send for the reconnect) held a completed download's exit back by 2 s.
constexpr int kShutdownLingerMs = 100;

sigset_t termination_set() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    return set;
}

}  // namespace

std::optional<std::string> read_termination_signal(int fd) {
    signalfd_siginfo info{};
    const ssize_t got = ::read(fd, &info, sizeof info);
    if (got != static_cast<ssize_t>(sizeof info)) return std::nullopt;
    switch (info.ssi_signo) {
        case SIGTERM: return std::string("SIGTERM");
        case SIGINT: return std::string("SIGINT");
        default: return "signal " + std::to_string(info.ssi_signo);
    }
}

TerminationSignals::TerminationSignals() {
    const sigset_t set = termination_set();
    if (::pthread_sigmask(SIG_BLOCK, &set, nullptr) != 0) {
        throw std::runtime_error("cannot block SIGTERM and SIGINT");
    }
    fd_ = ::signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (fd_ < 0) throw std::runtime_error(std::string("signalfd: ") + std::strerror(errno));
}

TerminationSignals::~TerminationSignals() {
    if (fd_ >= 0) ::close(fd_);
}

std::optional<std::string> TerminationSignals::take() { return read_termination_signal(fd_); }

Stage::Stage(zmq::context_t& context, StageConfig config)
    : config_(std::move(config)),
      link_(context, config_.control, config_.name, config_.role, config_.timing, config_.curve) {
    link_.attach_metrics(config_.metrics);
}

std::optional<WelcomeInfo> Stage::handshake() {
    auto welcome = link_.handshake(config_.signal_fd);
    if (!welcome) {
        const auto signal = read_termination_signal(config_.signal_fd);
        spdlog::info("{} before the orchestrator answered: exiting", signal.value_or("a signal"));
        exit_code_ = 0;
        return std::nullopt;
    }
    return read_welcome(*welcome);
}

void Stage::terminate(StageBody& body, const std::string& reason, int exit_code, int linger_ms) {
    if (finished()) return;
    exit_code_ = exit_code;
    body.on_terminate(reason);
    link_.flush_reports();
    link_.socket().set(zmq::sockopt::linger, linger_ms);
}

void Stage::on_control_ready(StageBody& body) {
    // ZMQ_FD is edge-triggered for an Asio loop: read until nothing is left, re-asking after
    // every message (a handler's send may have taken in more news).
    while (!finished() && link_.readable()) {
        auto message = link_.poll_message();
        if (!message) continue;  // a heartbeat, or a malformed message already logged
        if (message->envelope.has_shutdown()) {
            const std::string& reason = message->envelope.shutdown().reason();
            spdlog::info("shutting down: {}", reason);
            terminate(body, reason, 0, kShutdownLingerMs);
            return;
        }
        if (message->envelope.has_welcome()) continue;  // a late duplicate of the handshake
        body.on_control(*message);
    }
}

void Stage::on_signal_ready(StageBody& body) {
    const auto signal = read_termination_signal(config_.signal_fd);
    if (!signal || finished()) return;
    spdlog::info("{}: finishing, saving and leaving", *signal);
    terminate(body, *signal, 0, kExitLingerMs);
    v1::Envelope goodbye;
    goodbye.mutable_goodbye()->set_reason(*signal);
    link_.send(goodbye);
}

void Stage::tick(StageBody& body) {
    if (finished()) return;
    if (!link_.tick([&body] { return body.heartbeat(); })) {
        spdlog::error("the orchestrator has been silent too long; giving up");
        terminate(body, "the orchestrator fell silent", 1, kExitLingerMs);
    }
}

void Stage::fail(StageBody& body, const std::string& reason) {
    if (finished()) return;
    spdlog::error("{}", reason);
    terminate(body, reason, 1, kExitLingerMs);
}

void PollLoop::watch(zmq::socket_t& socket, Events events, Handler handler) {
    watches_.push_back(Watch{&socket, -1, std::move(events), std::move(handler)});
}

void PollLoop::watch_fd(int fd, Events events, Handler handler) {
    watches_.push_back(Watch{nullptr, fd, std::move(events), std::move(handler)});
}

void PollLoop::watch_dynamic(std::function<void(std::vector<zmq::pollitem_t>&)> add) {
    dynamic_.push_back(std::move(add));
}

int PollLoop::run() {
    std::vector<zmq::pollitem_t> items;
    std::vector<std::size_t> watch_of;  // item index -> watch index, for the watches polled
    while (!stage_.finished()) {
        items.clear();
        watch_of.clear();
        items.push_back({stage_.link().socket().handle(), 0, ZMQ_POLLIN, 0});
        const bool signals = stage_.signal_fd() >= 0;
        if (signals) items.push_back({nullptr, stage_.signal_fd(), ZMQ_POLLIN, 0});
        const std::size_t first_watch = items.size();
        for (std::size_t i = 0; i < watches_.size(); ++i) {
            const short events = watches_[i].events();
            if (events == 0) continue;
            void* handle = watches_[i].socket != nullptr ? watches_[i].socket->handle() : nullptr;
            items.push_back({handle, watches_[i].fd, events, 0});
            watch_of.push_back(i);
        }
        for (const auto& add : dynamic_) add(items);
        auto timeout = stage_.until_next_tick();
        if (timeout_) timeout = std::min(timeout, timeout_());
        timeout = std::max(timeout, std::chrono::milliseconds(0));
        try {
            zmq::poll(items, timeout);
        } catch (const zmq::error_t& error) {
            if (error.num() != EINTR) throw;
        }
        if (signals && (items[1].revents & ZMQ_POLLIN) != 0) stage_.on_signal_ready(body_);
        stage_.on_control_ready(body_);
        for (std::size_t k = 0; k < watch_of.size() && !stage_.finished(); ++k) {
            const short revents = items[first_watch + k].revents;
            if (revents != 0) watches_[watch_of[k]].handler(revents);
        }
        if (stage_.finished()) break;
        if (every_turn_) every_turn_();
        stage_.tick(body_);
    }
    return stage_.exit_code();
}

}  // namespace pw::bus
