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
    // The ramp ends only after a measured window, so past it there is a rate to smooth.
    rate_ = ramping_ ? sample : 0.5 * rate_ + 0.5 * sample;
    // At most double or halve per window, so one odd window does not swing the pipeline.
    const std::uint32_t wanted = depth_for(rate_, min_latency_);
    if (wanted <= depth_) ramping_ = false;
    depth_ = std::clamp(wanted, std::max(kMinDepth, depth_ / 2), std::min(kMaxDepth, depth_ * 2));
}

std::uint32_t PipelineSizer::depth_for(double rate_bytes_per_s, Clock::duration min_latency) {
    using Seconds = std::chrono::duration<double>;
    double horizon = 0.25;
    if (min_latency != Clock::duration::max()) {
        horizon = std::clamp(2 * std::chrono::duration_cast<Seconds>(min_latency).count(), 0.25, 1.0);
    }
    const double blocks = rate_bytes_per_s * horizon / kBlockSize;
    if (!(blocks < kMaxDepth)) return kMaxDepth;  // also catches NaN
    return std::clamp(static_cast<std::uint32_t>(blocks), kMinDepth, kMaxDepth);
}

}  // namespace pw::peer_worker
