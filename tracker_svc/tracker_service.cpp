#include "tracker_svc/tracker_service.hpp"

#include <algorithm>
#include <cctype>
#include <stdexcept>
#include <string_view>
#include <vector>

#include <spdlog/spdlog.h>

#include "core/bus/welcome.hpp"

namespace pw::tracker {

namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

bool starts_with_ci(std::string_view text, std::string_view prefix) {
    if (text.size() < prefix.size()) return false;
    for (std::size_t i = 0; i < prefix.size(); ++i) {
        if (std::tolower(static_cast<unsigned char>(text[i])) != prefix[i]) return false;
    }
    return true;
}

const char* event_name(Event event) {
    switch (event) {
        case Event::started: return "started";
        case Event::completed: return "completed";
        case Event::stopped: return "stopped";
        case Event::none: break;
    }
    return "regular";
}

seconds whole_seconds_until(std::chrono::steady_clock::time_point when,
                            std::chrono::steady_clock::time_point now) {
    return when <= now ? seconds{0} : std::chrono::ceil<seconds>(when - now);
}

}  // namespace

TrackerService::TrackerService(ServiceOptions options)
    : options_(std::move(options)),
      rng_(std::random_device{}()),
      context_(1),
      link_(context_, options_.control, options_.name, bus::v1::ROLE_TRACKER, {}, options_.curve),
      udp_(rng_) {
    link_.attach_metrics(options_.metrics);
}

void TrackerService::on_welcome(bus::Incoming& welcome) {
    bus::WelcomeInfo info = bus::read_welcome(welcome, PieceHashes::forget);
    torrent_.emplace(std::move(info.torrent));
    identity_.peer_id = info.peer_id;
    identity_.port = info.listen_port;
    identity_.info_hash = torrent_->info_hash();
    // BEP 7's key lets a tracker recognise us across address changes; one per session.
    identity_.key = static_cast<std::uint32_t>(rng_());
    identity_.left = torrent_->total_size();
    tiers_.emplace(torrent_->trackers(), rng_);
    schedule_.emplace(AnnounceSchedule::Config{}, Clock::now());
    if (tiers_->empty()) spdlog::warn("the torrent lists no trackers: nothing to announce to");
}

int TrackerService::run() {
    {
        bus::Incoming welcome = link_.handshake();
        on_welcome(welcome);
    }
    bus::release_start_up_memory();
    spdlog::info("announcing {} to {} tier(s)", to_hex(identity_.info_hash), tiers_->tiers().size());
    for (;;) {
        const auto now = Clock::now();
        if (!link_.tick(bus::v1::Heartbeat{})) {
            spdlog::error("the orchestrator has been silent for too long; exiting");
            return 1;
        }
        while (auto message = link_.poll_message()) {
            if (!on_control(*message, now)) break;
        }
        if (exit_deadline_ && (schedule_->finished() || now >= *exit_deadline_)) {
            if (!schedule_->finished()) spdlog::warn("gave up on the stopped announce");
            return 0;
        }
        drive_attempt(now);
        // The stopped announce may have just been answered: exit now rather than after the
        // next poll timeout (up to a heartbeat), which the whole download would wait for.
        if (exit_deadline_ && schedule_->finished()) return 0;
        if (!round_ && !tiers_->empty() && schedule_->due(now)) begin_round(now);

        std::vector<zmq::pollitem_t> items{{link_.socket().handle(), 0, ZMQ_POLLIN, 0}};
        http_.add_poll_items(items);
        udp_.add_poll_items(items);
        zmq::poll(items, poll_timeout(Clock::now()));
    }
}

std::chrono::milliseconds TrackerService::poll_timeout(Clock::time_point now) const {
    milliseconds timeout = link_.until_next_tick();
    timeout = std::min(timeout, http_.poll_timeout());
    timeout = std::min(timeout, udp_.poll_timeout(now));
    if (!round_ && !schedule_->finished() && !tiers_->empty()) {
        const auto until_due = std::chrono::ceil<milliseconds>(schedule_->next_due() - now);
        timeout = std::min(timeout, std::max(milliseconds(0), until_due));
    }
    if (exit_deadline_) {
        const auto until_exit = std::chrono::ceil<milliseconds>(*exit_deadline_ - now);
        timeout = std::min(timeout, std::max(milliseconds(0), until_exit));
    }
    return std::max(timeout, milliseconds(1));
}

bool TrackerService::on_control(bus::Incoming& message, Clock::time_point now) {
    const auto& envelope = message.envelope;
    if (envelope.has_shutdown()) {
        spdlog::info("shutting down: {}", envelope.shutdown().reason());
        if (exit_deadline_) return false;
        exit_deadline_ = now + options_.stop_timeout;
        if (last_answered_.empty()) {
            schedule_->finish();  // no tracker knows us: nobody to say goodbye to
        } else if (!schedule_->finished() && schedule_->next_event() != Event::stopped) {
            cancel_attempt();
            schedule_->request_stopped(now);
        }
        return false;
    }
    if (envelope.has_tracker_stats()) {
        const auto& stats = envelope.tracker_stats();
        identity_.uploaded = stats.uploaded();
        identity_.downloaded = stats.downloaded();
        identity_.left = stats.left();
        if (stats.event() == bus::v1::TrackerStats::COMPLETED) {
            schedule_->request_completed(now);
        } else if (stats.event() == bus::v1::TrackerStats::STOPPED) {
            if (last_answered_.empty()) {
                cancel_attempt();
                schedule_->finish();
            } else if (schedule_->next_event() != Event::stopped) {
                cancel_attempt();
                schedule_->request_stopped(now);
            }
        }
        return true;
    }
    spdlog::debug("ignored a {} message from the orchestrator",
                  static_cast<int>(envelope.body_case()));
    return true;
}

void TrackerService::begin_round(Clock::time_point now) {
    Round round;
    round.event = schedule_->next_event();
    if (round.event == Event::stopped) {
        round.only_this_url = true;
        bool found = false;
        const auto& tiers = tiers_->tiers();
        for (std::size_t t = 0; t < tiers.size() && !found; ++t) {
            for (std::size_t i = 0; i < tiers[t].size() && !found; ++i) {
                if (tiers[t][i] == last_answered_) {
                    round.position = {t, i};
                    found = true;
                }
            }
        }
        if (!found) {
            schedule_->finish();
            return;
        }
    } else {
        round.position = *tiers_->first();
    }
    round_ = round;
    if (auto error = start_attempt(now)) attempt_failed(*error, now);
}

AnnounceRequest TrackerService::make_request(const std::string& url) const {
    AnnounceRequest request = identity_;
    request.event = round_->event;
    request.numwant = schedule_->numwant();
    if (const auto id = tracker_ids_.find(url); id != tracker_ids_.end()) {
        request.tracker_id = id->second;
    }
    return request;
}

std::optional<std::string> TrackerService::start_attempt(Clock::time_point now) {
    const std::string& url = tiers_->url(round_->position);
    const AnnounceRequest request = make_request(url);
    auto timeout = milliseconds(options_.announce_timeout);
    if (exit_deadline_) {
        timeout = std::min(timeout, std::chrono::ceil<milliseconds>(*exit_deadline_ - now));
    }
    spdlog::debug("announcing ({}) to {}", event_name(request.event), url);
    if (starts_with_ci(url, "http://") || starts_with_ci(url, "https://")) {
        http_.start(build_announce_url(url, request), timeout);
    } else if (starts_with_ci(url, "udp://")) {
        auto address = parse_udp_url(url);
        if (!address.ok()) return address.error().describe();
        udp_.start(*address, request, now, timeout);
    } else {
        return "unsupported tracker URL scheme (only http, https and udp)";
    }
    return std::nullopt;
}

void TrackerService::cancel_attempt() {
    http_.cancel();
    udp_.cancel();
    round_.reset();
}

void TrackerService::drive_attempt(Clock::time_point now) {
    if (!round_) return;
    if (auto reply = http_.drive()) {
        on_http_reply(std::move(*reply), now);
    } else if (auto answer = udp_.drive(now)) {
        on_answer(std::move(*answer), now);
    }
}

void TrackerService::on_http_reply(Result<HttpReply> reply, Clock::time_point now) {
    if (!reply.ok()) {
        attempt_failed(reply.error().describe(), now);
        return;
    }
    auto parsed = parse_http_response(reply->body);
    if (reply->status != 200) {
        // Some trackers send their failure reason with an error status: prefer it.
        if (parsed.ok() && parsed->failure_reason) {
            attempt_failed("tracker says: " + *parsed->failure_reason, now);
        } else {
            attempt_failed("HTTP status " + std::to_string(reply->status), now);
        }
        return;
    }
    if (!parsed.ok()) {
        attempt_failed("malformed response: " + parsed.error().describe(), now);
        return;
    }
    on_answer(std::move(parsed), now);
}

void TrackerService::on_answer(Result<AnnounceResponse> answer, Clock::time_point now) {
    if (!answer.ok()) {
        attempt_failed(answer.error().describe(), now);
    } else if (answer->failure_reason) {
        attempt_failed("tracker says: " + *answer->failure_reason, now);
    } else {
        attempt_succeeded(*answer, now);
    }
}

void TrackerService::attempt_failed(std::string message, Clock::time_point now) {
    // A loop, not recursion: a torrent may list many trackers we cannot even start.
    for (;;) {
        const std::string url = tiers_->url(round_->position);
        const auto next = round_->only_this_url ? std::nullopt : tiers_->next(round_->position);
        if (!next) break;
        spdlog::warn("tracker {} failed: {}; trying the next one", url, message);
        send_status(url, false, message, seconds{0});
        round_->position = *next;
        auto error = start_attempt(now);
        if (!error) return;
        message = std::move(*error);
    }
    const std::string url = tiers_->url(round_->position);
    const Event event = round_->event;
    round_.reset();
    const seconds delay = schedule_->on_all_failed(now, event);
    if (schedule_->finished()) {
        spdlog::warn("tracker {} failed the {} announce: {}", url, event_name(event), message);
        send_status(url, false, message, seconds{0});
        return;
    }
    spdlog::warn("tracker {} failed: {}; every tracker failed, retrying in {} s", url, message,
                 delay.count());
    send_status(url, false, message, delay);
}

void TrackerService::attempt_succeeded(const AnnounceResponse& response, Clock::time_point now) {
    const Event event = round_->event;
    const auto position = tiers_->promote(round_->position);
    const std::string url = tiers_->url(position);
    round_.reset();
    last_answered_ = url;
    if (response.tracker_id) tracker_ids_[url] = *response.tracker_id;
    const seconds interval{clamp_interval(response, options_.min_interval.count())};
    schedule_->on_success(now, event, interval);
    spdlog::info("tracker {} answered the {} announce: {} peer(s), next in {} s", url,
                 event_name(event), response.peers.size(),
                 whole_seconds_until(schedule_->next_due(), now).count());
    if (event == Event::stopped) return;  // the peers of a goodbye are of no use
    if (!response.peers.empty()) {
        bus::v1::Envelope envelope;
        auto* found = envelope.mutable_peers_found();
        found->set_tracker(url);
        for (const auto& peer : response.peers) {
            auto* out = found->add_peers();
            out->set_ip(peer.ip);
            out->set_port(peer.port);
        }
        link_.send(envelope);
    }
    if (response.warning) send_status(url, true, "tracker warns: " + *response.warning, interval);
}

void TrackerService::send_status(const std::string& url, bool ok, const std::string& message,
                                 seconds next_announce) {
    bus::v1::Envelope envelope;
    auto* status = envelope.mutable_tracker_status();
    status->set_tracker(url);
    status->set_ok(ok);
    status->set_message(message);
    status->set_next_announce_s(static_cast<std::uint32_t>(next_announce.count()));
    link_.send(envelope);
}

}  // namespace pw::tracker
