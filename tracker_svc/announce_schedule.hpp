#pragma once
// When to announce next and with which event. Pure: the caller passes the time in, so the
// whole sequence (started -> none... -> completed -> stopped, intervals, backoff after
// failed rounds) is unit-tested without sockets or sleeping.
#include <chrono>
#include <cstdint>
#include <optional>

#include "core/tracker_codec.hpp"

namespace pw::tracker {

class AnnounceSchedule {
public:
    using Clock = std::chrono::steady_clock;

    struct Config {
        // After a round in which every tracker failed: first, doubling each time, up to cap.
        std::chrono::seconds retry_first{15};
        std::chrono::seconds retry_cap{300};
        // Peers asked for: many on the first answer (we have none yet), fewer afterwards.
        std::int32_t first_numwant = 200;
        std::int32_t later_numwant = 50;
    };

    // The first announce (started) is due at `now`.
    AnnounceSchedule(Config config, Clock::time_point now);

    // Nothing is due any more once the stopped announce went out (or could not).
    bool finished() const { return finished_; }
    bool due(Clock::time_point now) const { return !finished_ && now >= next_due_; }
    Clock::time_point next_due() const { return next_due_; }
    Event next_event() const { return event_; }
    std::int32_t numwant() const;
    int consecutive_failures() const { return failures_; }

    // A round carrying `sent` got an answer; `interval` is the tracker's, already clamped.
    void on_success(Clock::time_point now, Event sent, std::chrono::seconds interval);
    // Every tracker failed a round carrying `sent`. Returns the delay before the next try.
    std::chrono::seconds on_all_failed(Clock::time_point now, Event sent);

    // The orchestrator says we completed: announce `completed` now, or right after `started`
    // got through if it has not yet (a tracker must see started first).
    void request_completed(Clock::time_point now);
    // The orchestrator ran out of peers: the next announce comes now rather than at the end
    // of the interval, but never sooner than `min_gap` after the last round ended (trackers
    // ignore or ban clients that announce more often than they ask).
    void request_early(Clock::time_point now, std::chrono::seconds min_gap);
    // The orchestrator says we stop: `stopped` is due now and is tried once; after it nothing
    // more is announced.
    void request_stopped(Clock::time_point now);
    // Ends the schedule without announcing (e.g. stopped with no tracker ever answering).
    void finish() { finished_ = true; }

private:
    // After a round carrying `sent` ended, the event due next (the orchestrator may have asked
    // for another one meanwhile, which then stays).
    void advance_after(Event sent);

    Config config_;
    Event event_ = Event::started;
    bool completed_pending_ = false;
    bool answered_once_ = false;
    bool finished_ = false;
    int failures_ = 0;
    Clock::time_point next_due_;
    Clock::time_point last_round_end_{};
};

}  // namespace pw::tracker
