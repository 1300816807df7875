#pragma once
// `--peer HOST:PORT` (or `[v6]:PORT`): parsed, and the host resolved to a numeric address so
// that its key matches the "ip:port" the workers report.
#include <string>

#include "core/result.hpp"
#include "orchestrator/peer_directory.hpp"

namespace pw::orchestrator {

struct HostPort {
    std::string host;
    std::uint32_t port = 0;
};

// Pure: splits and checks the text.
Result<HostPort> parse_host_port(const std::string& text);
// Parses, then resolves the host (getaddrinfo; numeric hosts never touch the network).
Result<PeerAddress> resolve_peer(const std::string& text);

// A TCP port free on every address right now, for --listen-port 0: the workers of this host
// then bind it (SO_REUSEPORT), and it is what trackers are told. Throws when there is none.
unsigned pick_free_port();

}  // namespace pw::orchestrator
