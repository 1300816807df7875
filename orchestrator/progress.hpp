#pragma once
// What the user sees while a download runs: pure formatting plus a moving-average rate.
#include <chrono>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <utility>

namespace pw::orchestrator {

struct ProgressSnapshot {
    std::uint64_t done_bytes = 0;
    std::uint64_t total_bytes = 0;
    double bytes_per_second = 0;
    std::uint32_t peers = 0;
    double upload_bytes_per_second = 0;  // shown when uploading
};

// "431.0 MiB", "1.0 GiB", "512 B".
std::string format_bytes(double bytes);
// "0:07", "12:34", "1:02:03"; "--:--" when unknown.
std::string format_duration(std::optional<std::chrono::seconds> duration);
// "  42.1%  431.0 MiB/1.0 GiB  85.3 MiB/s  ETA 0:07  peers 12" (and "  up 1.0 MiB/s" while uploading)
std::string format_progress(const ProgressSnapshot& snapshot);

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
