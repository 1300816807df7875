#pragma once
// The DHT stage: the stage skeleton (core/bus/stage.hpp) around one DhtNode and one UDP
// socket. The orchestrator tells it the session's torrents (TorrentAdded, TorrentRemoved),
// the port to announce (TrackerStats.port; announce_now asks for an early lookup) and nodes
// that peers named (DhtNodes); it answers with PeersFound{tracker: "dht"}. The routing table
// and our node id are kept in STATE_DIR/dht.dat across runs.
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include <zmq.hpp>

#include "core/bus/bus.hpp"
#include "core/result.hpp"
#include "dht_svc/dht_node.hpp"

namespace pw::dht {

inline constexpr const char* kStateFile = "dht.dat";

struct ServiceOptions {
    std::string control;
    std::string name = "dht_svc";
    std::string bind = "0.0.0.0";
    std::uint16_t port = 6881;  // 0: one the kernel picks
    std::vector<std::string> bootstrap = {"router.bittorrent.com:6881", "dht.transmissionbt.com:6881",
                                          "router.utorrent.com:6881"};
    std::string state_dir;  // empty: nothing saved
    std::chrono::seconds status_every{60};
    NodeConfig node{};
    bus::Timing timing{};
    bus::CurveConfig curve{};
    bus::metrics::Registry* metrics = nullptr;
    int signal_fd = -1;
};

// "HOST:PORT" to IPv4 addresses (a literal or a name, resolved now); an Error says why not.
Result<std::vector<PeerAddress>> resolve_host_port(const std::string& host_port);

int run_dht(zmq::context_t& context, const ServiceOptions& options);

}  // namespace pw::dht
