#pragma once
// What the user sees while a download runs: pure formatting plus a moving-average rate.
#include <chrono>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <utility>

#include "orchestrator/peer_directory.hpp"

namespace pw::orchestrator {

struct ProgressSnapshot {
    std::uint64_t done_bytes = 0;
    std::uint64_t total_bytes = 0;
    double bytes_per_second = 0;
    std::uint32_t peers = 0;
    double upload_bytes_per_second = 0;  // shown when uploading
    std::string note = {};  // why nothing moves, and what is being tried ("" when all is well)
    // A torrent's size is not known yet (a magnet awaiting its metadata): no share, no ETA.
    bool size_unknown = false;
};

// "431.0 MiB", "1.0 GiB", "512 B".
std::string format_bytes(double bytes);
// "0:07", "12:34", "1:02:03"; "--:--" when unknown.
std::string format_duration(std::optional<std::chrono::seconds> duration);
// "  42.1%  431.0 MiB/1.0 GiB  85.3 MiB/s  ETA 0:07  peers 12" (and "  up 1.0 MiB/s" while
// uploading, and "  [no peers: 1 banned; re-announcing in 30 s]" when stalled)
std::string format_progress(const ProgressSnapshot& snapshot);

// What a torrent that wants pieces has to go on, for StallWatch.
struct StallInputs {
    bool downloading = false;  // running, and pieces are missing
    PeerCounts peers;
    bool has_trackers = false;
    bool tracker_answered = false;  // some tracker answered in this run
    std::string tracker_error;      // every tracker's latest announce failed: the first's message
};

// Why a download is not moving and what is being tried, so that the user never watches
// "peers 0" without a word. A torrent that wants pieces and has no peer connected, connecting
// or about to be, is stalled: then the trackers are asked for peers early, first
// `first_retry` after the peers ran out, the gap doubling up to `max_retry` (and reset once
// a peer connects), and peers given up on are tried once more at the same times. A plain
// object: the time is passed in.
class StallWatch {
public:
    using Clock = std::chrono::steady_clock;
    struct Options {
        std::chrono::seconds first_retry{30};
        std::chrono::seconds max_retry{300};
    };

    StallWatch() = default;
    explicit StallWatch(Options options) : options_(options), gap_(options.first_retry) {}

    // True when an early announce (and a retry of the peers given up on) is due now.
    bool update(const StallInputs& inputs, Clock::time_point now);
    bool stalled() const { return stalled_; }
    // "no peers: 1 banned; re-announcing in 30 s"; "" while peers are connected (or none are
    // wanted).
    const std::string& reason() const { return reason_; }
    // The same without its countdowns: the log says it when it changes.
    const std::string& summary() const { return summary_; }

private:
    Options options_;
    bool stalled_ = false;
    std::chrono::seconds gap_{options_.first_retry};
    Clock::time_point next_retry_{};
    std::string reason_;
    std::string summary_;
};

// Bytes per second over the last `window`, from samples of a growing byte counter.
class RateMeter {
public:
    using Clock = std::chrono::steady_clock;
    explicit RateMeter(std::chrono::milliseconds window = std::chrono::seconds(5)) : window_(window) {}
    void sample(Clock::time_point now, std::uint64_t total_bytes);
    double rate() const;

private:
    std::chrono::milliseconds window_;
    std::deque<std::pair<Clock::time_point, std::uint64_t>> samples_;
};

}  // namespace pw::orchestrator
