#include "tracker_svc/announce_schedule.hpp"

#include <algorithm>

namespace pw::tracker {

AnnounceSchedule::AnnounceSchedule(Config config, Clock::time_point now)
    : config_(config), next_due_(now) {}

std::int32_t AnnounceSchedule::numwant() const {
    if (event_ == Event::stopped) return 0;  // we are leaving: peers are of no use
    return answered_once_ ? config_.later_numwant : config_.first_numwant;
}

void AnnounceSchedule::advance_after(Event sent) {
    if (event_ != sent) return;
    switch (sent) {
        case Event::started:
            event_ = completed_pending_ ? Event::completed : Event::none;
            completed_pending_ = false;
            break;
        case Event::completed:
        case Event::none:
            event_ = Event::none;
            break;
        case Event::stopped:
            finished_ = true;
            break;
    }
}

void AnnounceSchedule::on_success(Clock::time_point now, Event sent,
                                  std::chrono::seconds interval) {
    answered_once_ = true;
    failures_ = 0;
    last_round_end_ = now;
    advance_after(sent);
    // An event still waiting (completed, stopped) goes out at once; otherwise wait.
    next_due_ = event_ == Event::none ? now + interval : now;
}

std::chrono::seconds AnnounceSchedule::on_all_failed(Clock::time_point now, Event sent) {
    if (sent == Event::stopped && event_ == Event::stopped) {
        // Trackers forget peers that stop announcing anyway: one try is enough.
        finished_ = true;
        return std::chrono::seconds{0};
    }
    ++failures_;
    last_round_end_ = now;
    auto delay = config_.retry_first;
    for (int i = 1; i < failures_ && delay < config_.retry_cap; ++i) delay *= 2;
    delay = std::min(delay, config_.retry_cap);
    // A stop requested meanwhile is not delayed by the backoff.
    next_due_ = event_ == Event::stopped ? now : now + delay;
    return delay;
}

void AnnounceSchedule::request_completed(Clock::time_point now) {
    if (finished_ || event_ == Event::stopped || event_ == Event::completed) return;
    if (event_ == Event::started) {
        completed_pending_ = true;
        return;
    }
    event_ = Event::completed;
    next_due_ = now;
}

void AnnounceSchedule::request_early(Clock::time_point now, std::chrono::seconds min_gap) {
    if (finished_ || event_ == Event::stopped) return;
    next_due_ = std::min(next_due_, std::max(now, last_round_end_ + min_gap));
}

void AnnounceSchedule::request_stopped(Clock::time_point now) {
    if (finished_) return;
    event_ = Event::stopped;
    completed_pending_ = false;
    next_due_ = now;
}

}  // namespace pw::tracker
