#pragma once
// One torrent's side of the tracker stage: its tiers, its schedule, the round in progress,
// the tracker ids and the tracker that answered last, and what every announce carries.
// Pure: it says which announce to make and digests its outcome into reports; the stage owns
// the sockets (and the in-flight cap) and passes the time in, so a torrent's whole life
// (started when the first stats came, regular announces, completed, stopped on removal) is
// unit-tested without a tracker.
#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "core/tracker_codec.hpp"
#include "core/units.hpp"
#include "tracker_svc/announce_schedule.hpp"
#include "tracker_svc/tier_list.hpp"

namespace pw::tracker {

// One announce to one tracker.
struct Attempt {
    std::string url;
    AnnounceRequest request;
};

// An announce's outcome as the orchestrator hears of it (TrackerStatus).
struct StatusReport {
    std::string tracker;
    bool ok = false;
    std::string message;  // a failure's one line, a tracker's warning; empty otherwise
    std::chrono::seconds next_announce{0};
    std::uint32_t peers = 0;
};

// What an announce's end produced for the orchestrator.
struct Outcome {
    std::optional<StatusReport> status;
    std::string peers_tracker;  // the tracker the peers came from
    std::vector<PeerAddress> peers;
};

const char* event_name(Event event);

class TorrentAnnouncer {
public:
    using Clock = std::chrono::steady_clock;

    struct Config {
        AnnounceSchedule::Config schedule{};
        std::chrono::seconds min_interval{30};  // floor for a tracker's interval
    };

    // `identity`: info-hash, peer id, port and key (the rest is filled per announce).
    TorrentAnnouncer(TorrentId id, AnnounceRequest identity,
                     std::vector<std::vector<std::string>> tiers, std::mt19937& rng,
                     Config config);

    TorrentId id() const { return id_; }
    const TierList& tiers() const { return tiers_; }

    // The orchestrator's numbers (TrackerStats). The first makes `started` due at `now`: only
    // the orchestrator knows `left`, and which port peers can reach us on (0: none).
    // `completed` asks for the completed announce; `announce_now` for an early one (the
    // torrent ran out of peers), at least `min_interval` after the last.
    void on_stats(std::uint64_t uploaded, std::uint64_t downloaded, std::uint64_t left,
                  std::uint16_t port, bool completed, Clock::time_point now,
                  bool announce_now = false);
    bool has_stats() const { return schedule_.has_value(); }

    // The torrent leaves (removal, the stage's end): any round in progress is dropped (the
    // caller cancels its transfer) and from now on only `stopped` goes out, once, due now, to
    // the tracker that answered last. Returns false when no tracker ever answered: nobody to
    // say goodbye to, the announcer is finished.
    bool stop(Clock::time_point now);
    bool stopping() const { return stopping_; }
    // Nothing more will ever be announced.
    bool finished() const;

    // An announce is ready to go now: a round goes on with its next tracker, or one is due.
    bool wants_attempt(Clock::time_point now) const;
    // When the next round falls due by itself; nullopt when no round is waiting for a time
    // (no stats yet, no trackers, finished, or a round is in progress).
    std::optional<Clock::time_point> next_due() const;
    // The announce to make now (only when wants_attempt): begins a round when none is in
    // progress. Until its outcome arrives the announcer is in flight.
    Attempt begin_attempt();
    bool in_flight() const { return round_.has_value() && round_->in_flight; }

    // The announce in flight is over: it failed (transport, timeout, bad body, the tracker's
    // failure reason), or it got an answer. A failed round goes on with the next tracker
    // (wants_attempt), or ends and backs off.
    Outcome on_failure(std::string message, Clock::time_point now);
    Outcome on_answer(const AnnounceResponse& response, Clock::time_point now);

    const std::string& last_answered() const { return last_answered_; }
    Event next_event() const;

private:
    // One pass over the tiers carrying one event; stops at the first tracker that answers.
    struct Round {
        Event event = Event::none;
        TierList::Position position;
        bool only_this_url = false;  // `stopped` goes to the tracker that answered last only
        bool in_flight = false;
    };

    Outcome on_success(const AnnounceResponse& response, Clock::time_point now);
    std::optional<TierList::Position> find(const std::string& url) const;

    TorrentId id_;
    Config config_;
    AnnounceRequest identity_;  // + the latest stats; event, numwant, tracker id per announce
    TierList tiers_;
    std::optional<AnnounceSchedule> schedule_;  // from the first stats on
    std::optional<Round> round_;
    std::string last_answered_;                       // URL of the tracker that answered last
    std::map<std::string, std::string> tracker_ids_;  // per URL, echoed back as BEP 3 asks
    bool stopping_ = false;
};

}  // namespace pw::tracker
