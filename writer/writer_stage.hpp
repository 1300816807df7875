#pragma once
// The writer process's loop: control link and the PULL of verified pieces (bound here).
#include <chrono>
#include <string>

#include <zmq.hpp>

#include "core/bus/bus.hpp"

namespace pw::writer {

struct WriterOptions {
    std::string control;   // orchestrator's ROUTER
    std::string verified;  // bound here (PULL)
    std::string dir;       // download directory, created when missing
    std::string name;
    // Pieces are acknowledged only once durable; syncing at most this often batches the
    // fdatasync calls (and the acknowledgements) of the pieces in between.
    std::chrono::milliseconds sync_interval{1000};
    bus::Timing timing{};
    // Where the resume record lives; empty means `dir`/.piecework.
    std::string state_dir;
    // The resume record is saved after syncs at most this often (and always at Shutdown).
    std::chrono::milliseconds state_save_interval{3000};
    bus::CurveConfig curve{};  // CurveZMQ keys; disabled in local mode
    // Aligned pieces go to disk with O_DIRECT (see StoreOptions::direct_io).
    bool direct_io = true;
    bus::metrics::Registry* metrics = nullptr;  // the stage's counters (--metrics-port); null: none
};

// Batches of verified pieces buffered on our socket; see the verifier's kDataQueueDepth.
inline constexpr int kVerifiedQueueDepth = 4;

// The resume record's folder for these options.
std::string state_dir_of(const WriterOptions& options);

// Right after the Welcome, before any piece is taken: the pieces already on disk (from the
// resume record, or by hashing the files) go to the orchestrator as ResumeState + bitfield.
// Runs until Shutdown (returns 0, everything synced and acknowledged) or until the
// orchestrator falls silent (returns 1). Throws on start-up failures.
int run_writer(zmq::context_t& context, const WriterOptions& options);

}  // namespace pw::writer
