// tracker_svc: announces the session's torrents to their trackers and hands the peers to the
// orchestrator.
#include <string>

#include "core/bus/stage_cli.hpp"
#include "tracker_svc/tracker_service.hpp"

int main(int argc, char** argv) {
    CLI::App app{"piecework tracker_svc: announces the session's torrents to their trackers"};
    pw::bus::StageCommon common;
    pw::bus::add_common_options(app, common, "tracker_svc");
    pw::tracker::ServiceOptions options;
    int announce_timeout = static_cast<int>(options.announce_timeout.count());
    int min_interval = static_cast<int>(options.min_interval.count());
    std::size_t max_in_flight = options.max_in_flight;
    app.add_option("--announce-timeout", announce_timeout,
                   "seconds allowed for one announce to one tracker")
        ->check(CLI::Range(1, 300))->capture_default_str();
    app.add_option("--min-interval", min_interval,
                   "lowest re-announce interval accepted from a tracker, in seconds")
        ->check(CLI::Range(1, 3600))->capture_default_str();
    app.add_option("--max-announces", max_in_flight,
                   "announces in flight at once, over all torrents; the rest wait their turn")
        ->check(CLI::Range(1, 1000))->capture_default_str();
    bool no_lsd = false;
    app.add_flag("--no-lsd", no_lsd, "no local service discovery (BEP 14) on the LAN")->envname("PW_NO_LSD");
    app.add_option("--lsd-interface", options.lsd_interface,
                   "the IPv4 address of the interface to multicast LSD announces on (default: the system's)");
    return pw::bus::run_stage(app, argc, argv, common, [&] {
        options.lsd = !no_lsd;
        options.control = common.control;
        options.name = common.name;
        options.metrics = common.metrics;
        options.curve = pw::bus::load_curve_config(common.curve_key, common.curve_allow);
        options.signal_fd = common.signal_fd;
        options.announce_timeout = std::chrono::seconds(announce_timeout);
        options.min_interval = std::chrono::seconds(min_interval);
        options.max_in_flight = max_in_flight;
        zmq::context_t context;
        return pw::tracker::run_tracker(context, options);
    });
}
