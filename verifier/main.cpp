// verifier: checks whole pieces from the workers against the torrent's SHA-1 hashes.
#include <cstdio>
#include <exception>
#include <string>

#include <CLI/CLI.hpp>
#include <unistd.h>

#include "core/bus/log.hpp"
#include "verifier/verifier_stage.hpp"

int main(int argc, char** argv) {
    pw::verifier::VerifierOptions options;
    options.name = "verifier-" + std::to_string(::getpid());
    std::string log_level = "info";

    CLI::App app{"piecework verifier: checks pieces from the workers and hands good ones to the writer"};
    app.add_option("--control", options.control, "orchestrator's control endpoint")
        ->envname("PW_CONTROL")->required();
    app.add_option("--pieces", options.pieces, "endpoint to bind for pieces from the workers")
        ->envname("PW_PIECES")->required();
    app.add_option("--verified", options.verified, "the writer's endpoint for verified pieces")
        ->envname("PW_VERIFIED")->required();
    app.add_option("--name", options.name, "instance name")->capture_default_str();
    app.add_option("--log-level", log_level, "trace, debug, info, warn, error, critical, off")
        ->capture_default_str();
    CLI11_PARSE(app, argc, argv);

    try {
        pw::bus::init_logging(options.name, log_level);
        zmq::context_t context;
        return pw::verifier::run_verifier(context, options);
    } catch (const std::exception& error) {
        std::fprintf(stderr, "verifier: %s\n", error.what());
        return 1;
    }
}
