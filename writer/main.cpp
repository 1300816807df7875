// writer: puts verified pieces into the torrent's files below the download directory.
#include <cstdio>
#include <exception>
#include <string>

#include <CLI/CLI.hpp>
#include <unistd.h>

#include "core/bus/log.hpp"
#include "writer/writer_stage.hpp"

int main(int argc, char** argv) {
    pw::writer::WriterOptions options;
    options.name = "writer-" + std::to_string(::getpid());
    std::string log_level = "info";
    int sync_interval_ms = 1000;

    CLI::App app{"piecework writer: writes verified pieces into the download directory"};
    app.add_option("--control", options.control, "orchestrator's control endpoint")
        ->envname("PW_CONTROL")->required();
    app.add_option("--verified", options.verified, "endpoint to bind for verified pieces")
        ->envname("PW_VERIFIED")->required();
    app.add_option("--dir", options.dir, "download directory (created when missing)")
        ->envname("PW_DIR")->required();
    app.add_option("--name", options.name, "instance name")->capture_default_str();
    app.add_option("--log-level", log_level, "trace, debug, info, warn, error, critical, off")
        ->capture_default_str();
    app.add_option("--sync-interval-ms", sync_interval_ms,
                   "make written pieces durable (and acknowledge them) at most this often")
        ->check(CLI::Range(1, 3'600'000))->capture_default_str();
    CLI11_PARSE(app, argc, argv);
    options.sync_interval = std::chrono::milliseconds(sync_interval_ms);

    try {
        pw::bus::init_logging(options.name, log_level);
        zmq::context_t context;
        return pw::writer::run_writer(context, options);
    } catch (const std::exception& error) {
        std::fprintf(stderr, "writer: %s\n", error.what());
        return 1;
    }
}
