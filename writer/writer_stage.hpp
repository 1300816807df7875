#pragma once
// The writer process: the stage skeleton (core/bus/stage.hpp) around the PULL of verified
// piece batches (bound here), serving every torrent of the session below its download roots.
#include <chrono>
#include <string>
#include <vector>

#include <zmq.hpp>

#include "core/bus/bus.hpp"
#include "writer/piece_store.hpp"
#include "writer/read_service.hpp"

namespace pw::writer {

// Where the answers to reads put the pieces: in read arenas (shared memory) or frames.
enum class ReadArena {
    automatic,  // arenas when --reads is ipc:// (the workers are on this host)
    on,
    off,
};

struct WriterOptions {
    std::string control;   // orchestrator's ROUTER
    std::string verified;  // bound here (PULL)
    // Bound here (ROUTER) when set: the workers' reads of pieces to upload (ReadService).
    // Empty: no reads are served.
    std::string reads;
    ReadArena read_arena = ReadArena::automatic;
    // The reads' bounds; its `arena` is decided by read_arena.
    ReadOptions read{};
    // The default download root (created when missing): a torrent whose TorrentAdded names no
    // download folder is written here.
    std::string dir;
    // More roots (created when missing). A torrent's download folder must be one of the roots
    // or lie below one; any other is refused.
    std::vector<std::string> allow_dirs;
    std::string name;
    // Pieces are acknowledged only once durable; syncing at most this often batches the
    // fdatasync calls (and the acknowledgements) of the pieces in between.
    std::chrono::milliseconds sync_interval{1000};
    bus::Timing timing{};
    // Where the resume records live; empty means `dir`/.piecework.
    std::string state_dir;
    // A record is saved after syncs at most this often (and always at the end).
    std::chrono::milliseconds state_save_interval{3000};
    bus::CurveConfig curve{};  // CurveZMQ keys; disabled in local mode
    // Aligned pieces go to disk with O_DIRECT (see StoreOptions::direct_io).
    bool direct_io = true;
    // Files kept open at once, across every torrent (one budget, least recently used closed
    // first, whichever torrent it belongs to).
    std::size_t max_open_files = kDefaultOpenFiles;
    bus::metrics::Registry* metrics = nullptr;  // the stage's counters (--metrics-port); null: none
    int signal_fd = -1;  // SIGTERM/SIGINT (bus::TerminationSignals); -1: none
};

// Batches of verified pieces buffered on our socket; see the verifier's kDataQueueDepth.
inline constexpr int kVerifiedQueueDepth = 4;
// The most a check of the files on disk hashes in one turn of the loop, over all torrents
// being checked (round-robin): the rest of the turn writes pieces and answers the control link.
inline constexpr std::chrono::milliseconds kCheckSlice{20};

// Messages taken from the reads socket per turn of the loop: more wait in ZeroMQ's queue.
// (Reads themselves are answered a few per turn: ReadOptions::reads_per_turn.)
inline constexpr int kReadMessagesPerTurn = 256;
// Answers queued towards one worker, at most (its reads in flight are fewer: ReadOptions).
inline constexpr int kReadsSendQueue = 256;

// Whether reads are answered in arenas with these options.
bool read_arena_wanted(const WriterOptions& options);

// The resume records' folder for these options.
std::string state_dir_of(const WriterOptions& options);

// Runs until Shutdown or a termination signal (returns 0: everything written is synced,
// acknowledged and in the records) or until the orchestrator falls silent (returns 1, after
// the same). Throws on start-up failures (bad endpoint, no Welcome, a root that cannot be made).
int run_writer(zmq::context_t& context, const WriterOptions& options);

}  // namespace pw::writer
