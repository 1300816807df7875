// peer_worker: fetches pieces from BitTorrent peers for the orchestrator and hands them,
// whole and unverified, to the verifier.
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>

#include <unistd.h>

#include <CLI/CLI.hpp>

#include "core/bus/log.hpp"
#include "peer_worker/worker_service.hpp"

int main(int argc, char** argv) {
    pw::peer_worker::WorkerOptions options;
    options.name = "peer_worker-" + std::to_string(::getpid());
    std::string log_level = "info";

    CLI::App app{"peer_worker: downloads pieces from peers (a piecework stage)"};
    app.add_option("--control", options.control, "orchestrator control endpoint")
        ->envname("PW_CONTROL")
        ->required();
    app.add_option("--pieces", options.pieces, "verifier's pieces endpoint (we PUSH)")
        ->envname("PW_PIECES")
        ->required();
    app.add_option("--name", options.name, "instance name");
    app.add_option("--log-level", log_level, "trace, debug, info, warn, error, critical, off");
    app.add_option("--max-peers", options.max_peers, "most peers connected at once")
        ->check(CLI::Range(1u, 10000u));
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& error) {
        return app.exit(error);
    }

    try {
        pw::bus::init_logging(options.name, log_level);
        pw::peer_worker::WorkerService service(options);
        return service.run();
    } catch (const std::exception& error) {
        std::fprintf(stderr, "peer_worker: %s\n", error.what());
        return EXIT_FAILURE;
    }
}
