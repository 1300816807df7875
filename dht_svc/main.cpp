// dht_svc: the session's DHT node (BEP 5). Finds peers for the session's torrents, announces
// them, and answers other nodes, on one UDP port.
#include <string>
#include <vector>

#include "core/bus/stage_cli.hpp"
#include "dht_svc/dht_service.hpp"

int main(int argc, char** argv) {
    CLI::App app{"piecework dht_svc: the session's DHT node (BEP 5)"};
    pw::bus::StageCommon common;
    pw::bus::add_common_options(app, common, "dht_svc");
    pw::dht::ServiceOptions options;
    unsigned port = options.port;
    std::vector<std::string> bootstrap;
    app.add_option("--dht-port", port, "UDP port of the DHT node; 0: one the system picks")
        ->check(CLI::Range(0, 65535))->capture_default_str();
    app.add_option("--bind", options.bind, "IPv4 address to listen on")->capture_default_str();
    app.add_option("--dht-bootstrap", bootstrap,
                   "HOST:PORT of a node to join the DHT through (repeatable); default: "
                   "router.bittorrent.com:6881, dht.transmissionbt.com:6881, router.utorrent.com:6881");
    app.add_option("--state-dir", options.state_dir,
                   "folder where the routing table and node id are kept (dht.dat); none: not kept");
    return pw::bus::run_stage(app, argc, argv, common, [&] {
        options.control = common.control;
        options.name = common.name;
        options.metrics = common.metrics;
        options.curve = pw::bus::load_curve_config(common.curve_key, common.curve_allow);
        options.signal_fd = common.signal_fd;
        options.port = static_cast<std::uint16_t>(port);
        if (!bootstrap.empty()) options.bootstrap = bootstrap;
        zmq::context_t context;
        return pw::dht::run_dht(context, options);
    });
}
