// verifier: checks whole pieces from the workers against the torrent's SHA-1 hashes.
#include <string>

#include <unistd.h>

#include "core/bus/stage_cli.hpp"
#include "verifier/verifier_stage.hpp"

int main(int argc, char** argv) {
    CLI::App app{"piecework verifier: checks pieces from the workers and hands good ones to the writer"};
    pw::bus::StageCommon common;
    pw::bus::add_common_options(app, common, "verifier-" + std::to_string(::getpid()));
    pw::verifier::VerifierOptions options;
    app.add_option("--pieces", options.pieces, "endpoint to bind for pieces from the workers")
        ->envname("PW_PIECES")->required();
    app.add_option("--verified", options.verified, "the writer's endpoint for verified pieces")
        ->envname("PW_VERIFIED")->required();
    return pw::bus::run_stage(app, argc, argv, common, [&] {
        options.control = common.control;
        options.name = common.name;
        options.metrics = common.metrics;
        options.curve = pw::bus::load_curve_config(common.curve_key, common.curve_allow);
        options.signal_fd = common.signal_fd;
        zmq::context_t context;
        return pw::verifier::run_verifier(context, options);
    });
}
