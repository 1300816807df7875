#include "peer_worker/rate_limit.hpp"

#include <algorithm>
#include <limits>

namespace pw::peer_worker {

void TokenBucket::set_rate(std::uint64_t bytes_per_s, Clock::time_point now) {
    refill(now);
    rate_ = bytes_per_s;
    burst_ = std::max<std::int64_t>(kMinBurst, static_cast<std::int64_t>(bytes_per_s / 4));
    if (!started_ || !limited()) {
        // The first limit starts full; unlimited keeps nothing to carry over.
        tokens_ = static_cast<double>(burst_);
        started_ = limited();
    }
    tokens_ = std::min(tokens_, static_cast<double>(burst_));
    last_ = now;
}

void TokenBucket::refill(Clock::time_point now) {
    if (now <= last_) return;
    if (limited()) {
        const double seconds = std::chrono::duration<double>(now - last_).count();
        tokens_ = std::min(tokens_ + seconds * static_cast<double>(rate_), static_cast<double>(burst_));
    }
    last_ = now;
}

void RateMeter::start(Clock::time_point now) {
    totals_.fill(0);
    filled_ = 0;
    next_ = 0;
    next_sample_ = now;
    rate_ = 0;
}

void RateMeter::sample(std::uint64_t total, Clock::time_point now) {
    if (now < next_sample_) return;
    // Late ticks count as on time: the window is what the samples span, a few seconds.
    next_sample_ = now + std::chrono::seconds(1);
    totals_[static_cast<std::size_t>(next_)] = total;
    next_ = (next_ + 1) % static_cast<int>(totals_.size());
    filled_ = std::min(filled_ + 1, static_cast<int>(totals_.size()));
    if (filled_ < 2) return;
    // The oldest sample kept is `filled_ - 1` seconds old.
    const int oldest = filled_ < static_cast<int>(totals_.size()) ? 0 : next_;
    const std::uint64_t then = totals_[static_cast<std::size_t>(oldest)];
    const std::uint64_t per_s = (total - std::min(total, then)) / static_cast<std::uint64_t>(filled_ - 1);
    rate_ = static_cast<std::uint32_t>(std::min<std::uint64_t>(per_s, std::numeric_limits<std::uint32_t>::max()));
}

}  // namespace pw::peer_worker
