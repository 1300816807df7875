#include "tracker_svc/torrent_announcer.hpp"

#include <utility>

#include <spdlog/spdlog.h>

namespace pw::tracker {

namespace {

using std::chrono::seconds;

seconds whole_seconds_until(TorrentAnnouncer::Clock::time_point when,
                            TorrentAnnouncer::Clock::time_point now) {
    return when <= now ? seconds{0} : std::chrono::ceil<seconds>(when - now);
}

}  // namespace

const char* event_name(Event event) {
    switch (event) {
        case Event::started: return "started";
        case Event::completed: return "completed";
        case Event::stopped: return "stopped";
        case Event::none: break;
    }
    return "regular";
}

TorrentAnnouncer::TorrentAnnouncer(TorrentId id, AnnounceRequest identity,
                                   std::vector<std::vector<std::string>> tiers,
                                   std::mt19937& rng, Config config)
    : id_(id), config_(config), identity_(std::move(identity)), tiers_(std::move(tiers), rng) {}

void TorrentAnnouncer::on_stats(std::uint64_t uploaded, std::uint64_t downloaded,
                                std::uint64_t left, std::uint16_t port, bool completed,
                                Clock::time_point now, bool announce_now) {
    identity_.port = port;
    identity_.uploaded = uploaded;
    identity_.downloaded = downloaded;
    identity_.left = left;
    if (stopping_) return;
    if (!schedule_) schedule_.emplace(config_.schedule, now);
    if (completed) schedule_->request_completed(now);
    if (announce_now) schedule_->request_early(now, config_.min_interval);
}

std::optional<TierList::Position> TorrentAnnouncer::find(const std::string& url) const {
    const auto& tiers = tiers_.tiers();
    for (std::size_t t = 0; t < tiers.size(); ++t) {
        for (std::size_t i = 0; i < tiers[t].size(); ++i) {
            if (tiers[t][i] == url) return TierList::Position{t, i};
        }
    }
    return std::nullopt;
}

bool TorrentAnnouncer::stop(Clock::time_point now) {
    if (stopping_) return !finished();
    stopping_ = true;
    round_.reset();
    if (!schedule_) return false;  // never announced: no tracker knows us
    if (last_answered_.empty() || !find(last_answered_)) {
        schedule_->finish();
        return false;
    }
    schedule_->request_stopped(now);
    return !schedule_->finished();
}

bool TorrentAnnouncer::finished() const {
    return stopping_ && (!schedule_ || schedule_->finished());
}

Event TorrentAnnouncer::next_event() const {
    if (round_) return round_->event;
    return schedule_ ? schedule_->next_event() : Event::started;
}

bool TorrentAnnouncer::wants_attempt(Clock::time_point now) const {
    if (!schedule_ || schedule_->finished() || tiers_.empty()) return false;
    if (round_) return !round_->in_flight;
    return schedule_->due(now);
}

std::optional<TorrentAnnouncer::Clock::time_point> TorrentAnnouncer::next_due() const {
    if (!schedule_ || schedule_->finished() || tiers_.empty() || round_) return std::nullopt;
    return schedule_->next_due();
}

Attempt TorrentAnnouncer::begin_attempt() {
    if (!round_) {
        Round round;
        round.event = schedule_->next_event();
        if (round.event == Event::stopped) {
            round.only_this_url = true;
            round.position = find(last_answered_).value_or(*tiers_.first());
        } else {
            round.position = *tiers_.first();
        }
        round_ = round;
    }
    round_->in_flight = true;
    Attempt attempt;
    attempt.url = tiers_.url(round_->position);
    attempt.request = identity_;
    attempt.request.event = round_->event;
    attempt.request.numwant = schedule_->numwant();
    if (const auto id = tracker_ids_.find(attempt.url); id != tracker_ids_.end()) {
        attempt.request.tracker_id = id->second;
    }
    spdlog::debug("torrent {}: announcing ({}) to {}", id_.get(), event_name(round_->event),
                  attempt.url);
    return attempt;
}

Outcome TorrentAnnouncer::on_failure(std::string message, Clock::time_point now) {
    Outcome outcome;
    if (!round_) return outcome;
    const std::string url = tiers_.url(round_->position);
    const Event event = round_->event;
    const auto next = round_->only_this_url ? std::nullopt : tiers_.next(round_->position);
    if (next) {
        spdlog::warn("torrent {}: tracker {} failed: {}; trying the next one", id_.get(), url,
                     message);
        outcome.status = StatusReport{url, false, std::move(message), seconds{0}, 0};
        round_->position = *next;
        round_->in_flight = false;
        return outcome;
    }
    round_.reset();
    const seconds delay = schedule_->on_all_failed(now, event);
    if (event == Event::stopped) {
        // The torrent is gone from the session: nobody to tell but the log.
        spdlog::warn("torrent {}: tracker {} failed the stopped announce: {}", id_.get(), url,
                     message);
        return outcome;
    }
    spdlog::warn("torrent {}: tracker {} failed: {}; every tracker failed, retrying in {} s",
                 id_.get(), url, message, delay.count());
    outcome.status = StatusReport{url, false, std::move(message), delay, 0};
    return outcome;
}

Outcome TorrentAnnouncer::on_answer(const AnnounceResponse& response, Clock::time_point now) {
    if (response.failure_reason) return on_failure("tracker says: " + *response.failure_reason, now);
    return on_success(response, now);
}

Outcome TorrentAnnouncer::on_success(const AnnounceResponse& response, Clock::time_point now) {
    Outcome outcome;
    if (!round_) return outcome;
    const Event event = round_->event;
    const auto position = tiers_.promote(round_->position);
    const std::string url = tiers_.url(position);
    round_.reset();
    last_answered_ = url;
    if (response.tracker_id) tracker_ids_[url] = *response.tracker_id;
    const seconds interval{clamp_interval(response, config_.min_interval.count())};
    schedule_->on_success(now, event, interval);
    const seconds next_in = whole_seconds_until(schedule_->next_due(), now);
    if (event == Event::stopped) {
        spdlog::info("torrent {}: tracker {} answered the stopped announce", id_.get(), url);
        return outcome;  // the peers of a goodbye are of no use, and the torrent is gone
    }
    spdlog::info("torrent {}: tracker {} answered the {} announce: {} peer(s), next in {} s",
                 id_.get(), url, event_name(event), response.peers.size(), next_in.count());
    StatusReport status{url, true, {}, next_in,
                        static_cast<std::uint32_t>(response.peers.size())};
    if (response.warning) status.message = "tracker warns: " + *response.warning;
    outcome.status = std::move(status);
    outcome.peers_tracker = url;
    outcome.peers = response.peers;
    return outcome;
}

}  // namespace pw::tracker
