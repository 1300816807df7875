#include "orchestrator/peer_argument.hpp"

#include <array>
#include <stdexcept>
#include <charconv>

#include <netdb.h>
#include <netinet/in.h>
#include <unistd.h>
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

unsigned pick_free_port() {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) throw std::runtime_error("no socket to find a free port with");
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = 0;
    address.sin_addr.s_addr = htonl(INADDR_ANY);
    socklen_t length = sizeof address;
    const bool bound = ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0 &&
                       ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0;
    ::close(fd);
    if (!bound) throw std::runtime_error("no free port to listen on");
    return ntohs(address.sin_port);
}

}  // namespace pw::orchestrator
