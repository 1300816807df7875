// orchestrator: owns the torrent's state and tells the other stages what to do.
#include <csignal>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <iterator>
#include <random>
#include <iostream>

#include <CLI/CLI.hpp>
#include <unistd.h>

#include "core/bus/log.hpp"
#include "core/metainfo.hpp"
#include "orchestrator/peer_argument.hpp"
#include "orchestrator/service.hpp"

namespace {

// Set from the signal handler only; the loop polls it at least every 250 ms.
volatile std::sig_atomic_t g_stop = 0;

void on_signal(int) { g_stop = 1; }

std::string env_or(const char* name, std::string fallback) {
    const char* value = std::getenv(name);
    return value != nullptr && *value != '\0' ? std::string(value) : fallback;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"piecework orchestrator: owns the torrent's state and drives the other stages"};
    std::string control = env_or("PW_CONTROL", "");
    std::string torrent_path;
    std::vector<std::string> peer_args;
    unsigned listen_port = 6881;
    unsigned heartbeat_ms = 1000;
    bool quiet = false;
    std::string name = "orchestrator";
    std::string log_level = "info";
    app.add_option("--control", control, "Endpoint to bind the control ROUTER on (PW_CONTROL)");
    app.add_option("--torrent", torrent_path, "The .torrent file")->required();
    app.add_option("--peer", peer_args, "HOST:PORT of a peer to use without a tracker (repeatable)");
    app.add_option("--listen-port", listen_port, "Port we announce")
        ->check(CLI::Range(1u, 65535u))->capture_default_str();
    app.add_option("--heartbeat-ms", heartbeat_ms, "Heartbeat period")
        ->check(CLI::Range(50u, 60000u))->capture_default_str();
    app.add_flag("-q,--quiet", quiet, "No progress output");
    app.add_option("--name", name, "Instance name")->capture_default_str();
    app.add_option("--log-level", log_level, "trace, debug, info, warn, error")->capture_default_str();
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e);
    }
    try {
        pw::bus::init_logging(name, log_level);
        if (control.empty()) throw std::runtime_error("no control endpoint: use --control or PW_CONTROL");
        auto torrent = pw::read_torrent_file(torrent_path);
        if (!torrent) throw std::runtime_error(torrent_path + ": " + torrent.error().describe());

        pw::orchestrator::ServiceConfig config;
        config.control = control;
        config.name = name;
        config.listen_port = listen_port;
        config.heartbeat = std::chrono::milliseconds(heartbeat_ms);
        config.quiet = quiet;
        config.terminal = ::isatty(STDOUT_FILENO) == 1;
        config.scheduler.seed = std::random_device{}();
        for (const auto& text : peer_args) {
            auto peer = pw::orchestrator::resolve_peer(text);
            if (!peer) throw std::runtime_error(peer.error().describe());
            config.peers.push_back(*peer);
        }
        {
            // The bytes are sent as they stood in the file: each stage parses them itself.
            std::ifstream file(torrent_path, std::ios::binary);
            config.torrent_bytes.assign(std::istreambuf_iterator<char>(file), {});
        }

        struct sigaction action {};
        action.sa_handler = on_signal;
        sigemptyset(&action.sa_mask);
        sigaction(SIGINT, &action, nullptr);
        sigaction(SIGTERM, &action, nullptr);

        zmq::context_t context;
        pw::orchestrator::OrchestratorService service(context, std::move(*torrent), std::move(config),
                                                      std::cout, std::cerr);
        return service.run([] { return g_stop != 0; });
    } catch (const std::exception& e) {
        std::cerr << "orchestrator: " << e.what() << "\n";
        return 1;
    }
}
