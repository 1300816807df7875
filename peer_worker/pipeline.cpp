#include "peer_worker/pipeline.hpp"

#include <algorithm>

#include "core/geometry.hpp"

namespace pw::peer_worker {

void PipelineSizer::on_block(std::uint32_t bytes, Clock::duration latency, Clock::time_point now) {
    window_bytes_ += bytes;
    if (latency == Clock::duration::max()) return;
    if (window_bytes_ == bytes) window_start_ = std::max(window_start_, now - latency);
    min_latency_ = std::min(min_latency_, latency);
}

void PipelineSizer::expect_round_trip(Clock::duration round_trip) {
    // A block came: it counts in the window until the first update, in ramp_best_ after it.
    if (window_bytes_ > 0 || ramp_best_ > 0) return;
    constexpr double kStartRate = double{kInitialDepth} * kBlockSize / 0.25;
    depth_ = std::max(kInitialDepth, depth_for(kStartRate, std::max(round_trip, Clock::duration::zero())));
}

void PipelineSizer::update(Clock::time_point now) {
    const auto elapsed = now - window_start_;
    Clock::duration window = kWindow;
    if (ramping_ && min_latency_ != Clock::duration::max()) {
        window = std::clamp<Clock::duration>(2 * min_latency_, kMinRampWindow, kWindow);
    }
    if (elapsed < window) return;
    const std::uint64_t bytes = window_bytes_;
    window_start_ = now;
    window_bytes_ = 0;
    if (bytes == 0) return;
    const double sample =
        static_cast<double>(bytes) / std::chrono::duration<double>(elapsed).count();
    if (ramping_) {
        if (ramp(sample)) return;
    } else {
        // The ramp ends only after a measured window, so past it there is a rate to smooth.
        rate_ = 0.5 * rate_ + 0.5 * sample;
    }
    // At most double or halve per window, so one odd window does not swing the pipeline.
    const std::uint32_t wanted = depth_for(rate_, min_latency_);
    depth_ = std::clamp(wanted, std::max(kMinDepth, depth_ / 2), std::min(kMaxDepth, depth_ * 2));
}

// True while the ramp goes on (and has set the depth); false once it ended, with `rate_` the
// best it saw.
bool PipelineSizer::ramp(double sample) {
    const std::uint32_t wanted = depth_for(sample, min_latency_);
    // A window whose rate needs no more than half the depth was not held back by it: it never
    // doubles the depth, only counts towards the end of the ramp. One such window does not end
    // it: a seeder's first window after unchoke can be a fraction of its rate (libtorrent
    // capped at 4 MiB/s, 200 ms away: 383 KiB/s), and a peer dropped to the minimum depth
    // climbs back at one doubling per second (6 s to its rate, a tenth of the download).
    const bool slow = blocks_for(sample, min_latency_) <= depth_ / 2;
    const bool grew = !slow && sample >= kRampGrowth * ramp_best_;
    ramp_best_ = std::max(ramp_best_, sample);
    if (grew || (!slow && wanted > depth_)) {
        flat_windows_ = 0;
        rate_ = sample;
        depth_ = grew ? std::min(kMaxDepth, depth_ * 2) : std::min({wanted, kMaxDepth, depth_ * 2});
        return true;
    }
    if (++flat_windows_ < kRampFlatWindows) return true;
    ramping_ = false;
    rate_ = ramp_best_;
    return false;
}

double PipelineSizer::blocks_for(double rate_bytes_per_s, Clock::duration min_latency) {
    using Seconds = std::chrono::duration<double>;
    double horizon = 0.25;
    if (min_latency != Clock::duration::max()) {
        horizon = std::clamp(0.25 + 2 * std::chrono::duration_cast<Seconds>(min_latency).count(), 0.25, 1.0);
    }
    return rate_bytes_per_s * horizon / kBlockSize;
}

std::uint32_t PipelineSizer::depth_for(double rate_bytes_per_s, Clock::duration min_latency) {
    const double blocks = blocks_for(rate_bytes_per_s, min_latency);
    if (!(blocks < kMaxDepth)) return kMaxDepth;  // also catches NaN
    return std::clamp(static_cast<std::uint32_t>(blocks), kMinDepth, kMaxDepth);
}

}  // namespace pw::peer_worker
