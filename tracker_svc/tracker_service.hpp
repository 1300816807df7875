#pragma once
// The tracker stage: the stage skeleton (core/bus/stage.hpp) around one announcer per torrent
// of the session. Each torrent announces on its own schedule once its first TrackerStats came;
// announces of different torrents run concurrently (HTTP transfers on one curl multi handle,
// a UDP socket per announce), at most `max_in_flight` at once, the rest queued in order.
// Every outcome is reported (TrackerStatus, and PeersFound when a tracker gave peers). A
// torrent removed says `stopped` to the tracker that answered last, within `stop_timeout`;
// at the stage's end every torrent does, concurrently, within `stop_timeout` altogether.
// With local discovery (BEP 14, local_discovery.hpp) public torrents are also announced to
// the LAN, and peers announced there are reported as PeersFound from "lsd".
#include <chrono>
#include <cstddef>
#include <string>

#include <zmq.hpp>

#include "core/bus/bus.hpp"

namespace pw::tracker {

struct ServiceOptions {
    std::string control;
    std::string name = "tracker_svc";
    // Bound on one announce to one tracker (connect, retransmissions, body).
    std::chrono::seconds announce_timeout{15};
    // Floor for the tracker's re-announce interval; tests lower it.
    std::chrono::seconds min_interval{30};
    // Bound on the `stopped` announce of a removed torrent, and on all of them at the end.
    std::chrono::milliseconds stop_timeout{3000};
    // Announces in flight at once, over all torrents (each one is a socket).
    std::size_t max_in_flight = 32;
    // Local Service Discovery (BEP 14) for public torrents, on this interface's address
    // (empty: the system's default multicast interface).
    bool lsd = true;
    std::string lsd_interface;
    bus::Timing timing{};
    bus::CurveConfig curve{};  // CurveZMQ keys; disabled in local mode
    bus::metrics::Registry* metrics = nullptr;  // the stage's counters (--metrics-port); null: none
    int signal_fd = -1;  // SIGTERM/SIGINT (bus::TerminationSignals); -1: none
};

// Runs until Shutdown or a termination signal (returns 0, after the stopped announces) or
// until the orchestrator falls silent (returns 1). Throws on start-up failures (bad
// endpoint, no Welcome).
int run_tracker(zmq::context_t& context, const ServiceOptions& options);

}  // namespace pw::tracker
