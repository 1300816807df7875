// tracker_svc: announces the torrent to its trackers and hands the peers to the orchestrator.
#include <cstdio>
#include <exception>
#include <string>

#include <CLI/CLI.hpp>

#include "core/bus/log.hpp"
#include "tracker_svc/tracker_service.hpp"

int main(int argc, char** argv) {
    try {
        pw::tracker::ServiceOptions options;
        std::string log_level = "info";
        int announce_timeout = static_cast<int>(options.announce_timeout.count());
        int min_interval = static_cast<int>(options.min_interval.count());

        CLI::App app{"piecework tracker stage: announces to the torrent's trackers"};
        app.add_option("--control", options.control, "orchestrator's control endpoint")
            ->envname("PW_CONTROL")
            ->required();
        app.add_option("--name", options.name, "instance name on the control socket")
            ->capture_default_str();
        app.add_option("--log-level", log_level, "trace, debug, info, warn, error, off")
            ->envname("PW_LOG_LEVEL")
            ->capture_default_str();
        app.add_option("--announce-timeout", announce_timeout,
                       "seconds allowed for one announce to one tracker")
            ->check(CLI::Range(1, 300))
            ->capture_default_str();
        app.add_option("--min-interval", min_interval,
                       "lowest re-announce interval accepted from a tracker, in seconds")
            ->check(CLI::Range(1, 3600))
            ->capture_default_str();
        CLI11_PARSE(app, argc, argv);

        options.announce_timeout = std::chrono::seconds(announce_timeout);
        options.min_interval = std::chrono::seconds(min_interval);
        pw::bus::init_logging(options.name, log_level);
        pw::tracker::TrackerService service(std::move(options));
        return service.run();
    } catch (const std::exception& error) {
        std::fprintf(stderr, "tracker_svc: %s\n", error.what());
        return 1;
    }
}
