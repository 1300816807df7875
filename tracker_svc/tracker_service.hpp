#pragma once
// The tracker stage: handshake with the orchestrator, then announce to the torrent's
// trackers on the schedule, report peers and failures, and say `stopped` on the way out.
// One loop polls the control socket, curl's sockets and the UDP socket together.
#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <random>
#include <string>

#include "core/bus/bus.hpp"
#include "core/metainfo.hpp"
#include "core/tracker_codec.hpp"
#include "tracker_svc/announce_schedule.hpp"
#include "tracker_svc/http_announcer.hpp"
#include "tracker_svc/tier_list.hpp"
#include "tracker_svc/udp_announcer.hpp"

namespace pw::tracker {

struct ServiceOptions {
    std::string control;
    std::string name = "tracker_svc";
    // Bound on one announce to one tracker (connect, retransmissions, body).
    std::chrono::seconds announce_timeout{15};
    // Floor for the tracker's re-announce interval; tests lower it.
    std::chrono::seconds min_interval{30};
    // Bound on the `stopped` announce made while shutting down.
    std::chrono::seconds stop_timeout{3};
    bus::CurveConfig curve{};  // CurveZMQ keys; disabled in local mode
    bus::metrics::Registry* metrics = nullptr;  // the stage's counters (--metrics-port); null: none
};

class TrackerService {
public:
    using Clock = std::chrono::steady_clock;

    explicit TrackerService(ServiceOptions options);
    // Runs until Shutdown (returns 0) or until the orchestrator goes silent (returns 1).
    // Throws on start-up failures (no Welcome, unusable torrent).
    int run();

private:
    // One pass over the tiers carrying one event; stops at the first tracker that answers.
    struct Round {
        Event event = Event::none;
        TierList::Position position;
        bool only_this_url = false;  // `stopped` goes to the tracker that answered last only
    };

    void on_welcome(bus::Incoming& welcome);
    // Returns false when the orchestrator asked us to shut down.
    bool on_control(bus::Incoming& message, Clock::time_point now);
    void begin_round(Clock::time_point now);
    // Starts an announce to the round's current URL; an error when it cannot even start.
    std::optional<std::string> start_attempt(Clock::time_point now);
    void drive_attempt(Clock::time_point now);
    void on_http_reply(Result<HttpReply> reply, Clock::time_point now);
    void on_answer(Result<AnnounceResponse> answer, Clock::time_point now);
    void attempt_failed(std::string message, Clock::time_point now);
    void attempt_succeeded(const AnnounceResponse& response, Clock::time_point now);
    void cancel_attempt();
    AnnounceRequest make_request(const std::string& url) const;
    std::chrono::milliseconds poll_timeout(Clock::time_point now) const;
    void send_status(const std::string& url, bool ok, const std::string& message,
                     std::chrono::seconds next_announce);

    ServiceOptions options_;
    std::mt19937 rng_;
    zmq::context_t context_;
    bus::ControlLink link_;
    std::optional<Torrent> torrent_;
    std::optional<TierList> tiers_;
    std::optional<AnnounceSchedule> schedule_;
    // What every announce carries, from the Welcome and the orchestrator's latest
    // TrackerStats; make_request adds the per-announce event, numwant and tracker id.
    AnnounceRequest identity_;
    HttpAnnouncer http_;
    UdpAnnouncer udp_;
    std::optional<Round> round_;
    std::string last_answered_;  // URL of the tracker that answered last
    std::map<std::string, std::string> tracker_ids_;  // per URL, echoed back as BEP 3 asks
    std::optional<Clock::time_point> exit_deadline_;  // set once Shutdown arrived
};

}  // namespace pw::tracker
