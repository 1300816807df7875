#include "orchestrator/peer_argument.hpp"

#include <array>
#include <charconv>

#include <netdb.h>
#include <sys/socket.h>

namespace pw::orchestrator {

Result<HostPort> parse_host_port(const std::string& text) {
    std::string host;
    std::string port_text;
    if (!text.empty() && text.front() == '[') {
        const auto close = text.find(']');
        if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':') {
            return make_error("peer '" + text + "' is not [IPv6]:PORT");
        }
        host = text.substr(1, close - 1);
        port_text = text.substr(close + 2);
    } else {
        const auto colon = text.rfind(':');
        if (colon == std::string::npos || text.find(':') != colon) {
            return make_error("peer '" + text + "' is not HOST:PORT");
        }
        host = text.substr(0, colon);
        port_text = text.substr(colon + 1);
    }
    unsigned port = 0;
    const auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
    if (host.empty() || ec != std::errc{} || end != port_text.data() + port_text.size() ||
        port == 0 || port > 65535) {
        return make_error("peer '" + text + "' is not HOST:PORT with a port in 1..65535");
    }
    return HostPort{host, port};
}

Result<PeerAddress> resolve_peer(const std::string& text) {
    auto parsed = parse_host_port(text);
    if (!parsed) return parsed.error();
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* found = nullptr;
    const int rc = ::getaddrinfo(parsed->host.c_str(), nullptr, &hints, &found);
    if (rc != 0 || found == nullptr) {
        return make_error("peer '" + text + "': cannot resolve " + parsed->host + ": " +
                          ::gai_strerror(rc));
    }
    std::array<char, NI_MAXHOST> numeric{};
    const int name_rc = ::getnameinfo(found->ai_addr, found->ai_addrlen, numeric.data(),
                                      numeric.size(), nullptr, 0, NI_NUMERICHOST);
    ::freeaddrinfo(found);
    if (name_rc != 0) return make_error("peer '" + text + "': " + ::gai_strerror(name_rc));
    return PeerAddress{numeric.data(), parsed->port};
}

}  // namespace pw::orchestrator
