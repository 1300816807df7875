#pragma once
// Rates: token buckets that hold the worker's share of the session's limits (RateBudget),
// and meters that say how fast a peer has lately been sending or taking bytes. Pure: the
// time comes in as an argument.
#include <array>
#include <cstdint>

#include "peer_worker/pipeline.hpp"

namespace pw::peer_worker {

// Bytes per second, on average, with a small burst. Tokens accrue at the rate up to a
// quarter of a second's worth (at least two 16 KiB blocks and their headers, so one block
// always fits); a block may take the bucket below zero, and that debt is paid before the
// next one goes, so over any window the bytes that passed are at most rate x window plus the
// burst and one block. Rate 0 is unlimited: the bucket never stops anything.
class TokenBucket {
public:
    static constexpr std::int64_t kMinBurst = 2 * (16 * 1024 + 13);

    // A new rate from `now` on; the tokens in hand are kept (cut to the new burst). The first
    // rate set starts with a full burst.
    void set_rate(std::uint64_t bytes_per_s, Clock::time_point now);
    std::uint64_t rate() const { return rate_; }
    bool limited() const { return rate_ != 0; }
    // Adds what accrued since the last refill.
    void refill(Clock::time_point now);
    // Something may pass (refilled first).
    bool available(Clock::time_point now) {
        if (!limited()) return true;
        refill(now);
        return tokens_ > 0;
    }
    void take(std::uint64_t bytes) {
        if (limited()) tokens_ -= static_cast<double>(bytes);
    }
    double tokens() const { return tokens_; }
    std::int64_t burst() const { return burst_; }

private:
    std::uint64_t rate_ = 0;
    double tokens_ = 0;
    std::int64_t burst_ = kMinBurst;
    bool started_ = false;
    Clock::time_point last_{};
};

// Bytes per second over the last few seconds, from a running total sampled once a second:
// nothing is done per byte but adding to the total.
class RateMeter {
public:
    static constexpr int kSeconds = 5;

    explicit RateMeter(Clock::time_point now = {}) { start(now); }
    void start(Clock::time_point now);
    // Call as often as convenient (the worker's tick); samples once a second.
    void sample(std::uint64_t total, Clock::time_point now);
    std::uint32_t rate() const { return rate_; }

private:
    std::array<std::uint64_t, kSeconds + 1> totals_{};
    int filled_ = 0;  // samples taken, up to kSeconds + 1
    int next_ = 0;
    Clock::time_point next_sample_{};
    std::uint32_t rate_ = 0;
};

}  // namespace pw::peer_worker
