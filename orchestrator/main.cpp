// orchestrator: owns the torrent's state and tells the other stages what to do.
#include <csignal>
#include <iostream>
#include <random>

#include <unistd.h>

#include "core/bus/stage_cli.hpp"
#include "core/bus/welcome.hpp"
#include "core/metainfo.hpp"
#include "orchestrator/peer_argument.hpp"
#include "orchestrator/service.hpp"

namespace {

// Set from the signal handler only; the loop polls it at least every 250 ms.
volatile std::sig_atomic_t g_stop = 0;

void on_signal(int) { g_stop = 1; }

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"piecework orchestrator: owns the torrent's state and drives the other stages"};
    pw::bus::StageCommon common;
    pw::bus::add_common_options(app, common, "orchestrator");
    std::string torrent_path;
    std::vector<std::string> peer_args;
    unsigned listen_port = 6881;
    unsigned heartbeat_ms = 1000;
    bool quiet = false;
    app.add_option("--torrent", torrent_path, "The .torrent file")->envname("PW_TORRENT")->required();
    app.add_option("--peer", peer_args,
                   "HOST:PORT of a peer to use without a tracker (repeatable; comma-separated "
                   "in PW_PEERS)")
        ->envname("PW_PEERS")->delimiter(',');
    app.add_option("--listen-port", listen_port, "Port we announce")
        ->check(CLI::Range(1u, 65535u))->capture_default_str();
    app.add_option("--heartbeat-ms", heartbeat_ms, "Heartbeat period")
        ->check(CLI::Range(50u, 60000u))->capture_default_str();
    app.add_flag("-q,--quiet", quiet, "No progress output");
    return pw::bus::run_stage(app, argc, argv, common, [&] {
        // Read once: the bytes are parsed here and sent, exactly as they stand, to every stage.
        auto bytes = pw::read_torrent_bytes(torrent_path);
        if (!bytes) throw std::runtime_error(torrent_path + ": " + bytes.error().describe());
        // The verifier checks pieces; the Welcome carries the bytes to it.
        auto torrent = pw::Torrent::parse(*bytes, {}, pw::PieceHashes::forget);
        if (!torrent) throw std::runtime_error(torrent_path + ": " + torrent.error().describe());

        pw::orchestrator::ServiceConfig config;
        config.control = common.control;
        config.name = common.name;
        config.metrics = common.metrics;
        config.curve = pw::bus::load_curve_config(common.curve_key, common.curve_allow);
        config.listen_port = listen_port;
        config.heartbeat = std::chrono::milliseconds(heartbeat_ms);
        config.quiet = quiet;
        config.terminal = ::isatty(STDOUT_FILENO) == 1;
        config.scheduler.seed = std::random_device{}();
        config.scheduler.pieces_per_extent = pw::orchestrator::pieces_per_extent(torrent->piece_length());
        config.torrent_bytes = std::move(*bytes);
        config.torrent_path = torrent_path;
        for (const auto& text : peer_args) {
            auto peer = pw::orchestrator::resolve_peer(text);
            if (!peer) throw std::runtime_error(peer.error().describe());
            config.peers.push_back(*peer);
        }

        struct sigaction action {};
        action.sa_handler = on_signal;
        sigemptyset(&action.sa_mask);
        sigaction(SIGINT, &action, nullptr);
        sigaction(SIGTERM, &action, nullptr);

        zmq::context_t context;
        pw::orchestrator::OrchestratorService service(context, std::move(*torrent), std::move(config),
                                                      std::cout, std::cerr);
        pw::bus::release_start_up_memory();  // the parser's transient copies of the .torrent
        return service.run([] { return g_stop != 0; });
    });
}
