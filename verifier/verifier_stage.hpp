#pragma once
// The verifier process: the stage skeleton (core/bus/stage.hpp) around a PULL of piece
// batches from the workers (bound here) and a PUSH of verified batches to the writer.
#include <string>

#include <zmq.hpp>

#include "core/bus/bus.hpp"

namespace pw::verifier {

namespace v1 = ::piecework::v1;

struct VerifierOptions {
    std::string control;   // orchestrator's ROUTER
    std::string pieces;    // bound here (PULL)
    std::string verified;  // the writer's PULL (we connect a PUSH)
    std::string name;
    bus::Timing timing{};
    bus::CurveConfig curve{};  // CurveZMQ keys; disabled in local mode
    bus::metrics::Registry* metrics = nullptr;  // the stage's counters (--metrics-port); null: none
    int signal_fd = -1;  // SIGTERM/SIGINT (bus::TerminationSignals); -1: none
};

// Batches buffered per data socket: a handful keeps the pipeline busy, and since a batch of
// frames stops growing at bus::kMaxBatchFrameBytes (or one piece of up to 64 MiB) it bounds
// what a stalled writer can pile up in memory. Arena batches carry no bytes at all.
inline constexpr int kDataQueueDepth = 4;

// Runs until Shutdown or a termination signal (returns 0) or until the orchestrator falls
// silent (returns 1). Throws on start-up failures (bad endpoint, no Welcome).
int run_verifier(zmq::context_t& context, const VerifierOptions& options);

}  // namespace pw::verifier
