#include "tracker_svc/local_discovery.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>

namespace pw::tracker {

LocalDiscovery::LocalDiscovery(std::string cookie, Options options)
    : cookie_(std::move(cookie)), options_(options) {}

void LocalDiscovery::add(TorrentId id, const Sha1Digest& info_hash, Clock::time_point now) {
    auto [it, added] = torrents_.try_emplace(id);
    it->second.info_hash = info_hash;
    if (added) it->second.next = now + options_.first_delay;
}

void LocalDiscovery::remove(TorrentId id) { torrents_.erase(id); }

void LocalDiscovery::set_port(TorrentId id, std::uint16_t port) {
    if (const auto found = torrents_.find(id); found != torrents_.end()) found->second.port = port;
}

std::vector<std::string> LocalDiscovery::due(Clock::time_point now) {
    std::map<std::uint16_t, std::vector<Sha1Digest>> by_port;
    for (auto& [id, torrent] : torrents_) {
        if (torrent.port == 0 || now < torrent.next) continue;
        torrent.next = now + options_.interval;
        by_port[torrent.port].push_back(torrent.info_hash);
    }
    std::vector<std::string> datagrams;
    for (auto& [port, hashes] : by_port) {
        for (std::size_t from = 0; from < hashes.size(); from += lsd::kMaxInfoHashes) {
            lsd::Announce announce;
            announce.port = port;
            announce.cookie = cookie_;
            const std::size_t to = std::min(hashes.size(), from + lsd::kMaxInfoHashes);
            announce.info_hashes.assign(hashes.begin() + static_cast<std::ptrdiff_t>(from),
                                        hashes.begin() + static_cast<std::ptrdiff_t>(to));
            datagrams.push_back(lsd::encode_announce(announce));
        }
    }
    return datagrams;
}

std::optional<LocalDiscovery::Clock::time_point> LocalDiscovery::next_due() const {
    std::optional<Clock::time_point> next;
    for (const auto& [id, torrent] : torrents_) {
        if (torrent.port == 0) continue;
        if (!next || torrent.next < *next) next = torrent.next;
    }
    return next;
}

bool LocalDiscovery::remember(TorrentId id, const tracker::PeerAddress& peer, Clock::time_point now) {
    auto key = std::make_pair(id, peer.ip + ":" + std::to_string(peer.port));
    const auto known = reported_.find(key);
    if (known != reported_.end() && now - known->second < options_.peer_memory) return false;
    if (known == reported_.end()) {
        if (reported_order_.size() >= options_.max_remembered) {
            reported_.erase(reported_order_.front());
            reported_order_.pop_front();
        }
        reported_order_.push_back(key);
    }
    reported_[std::move(key)] = now;
    return true;
}

Result<std::vector<LocalDiscovery::Found>> LocalDiscovery::on_datagram(std::string_view datagram,
                                                                      const std::string& ip,
                                                                      Clock::time_point now) {
    std::vector<Found> found;
    if (now - window_start_ >= std::chrono::seconds(1)) {
        window_start_ = now;
        window_count_ = 0;
    }
    if (++window_count_ > options_.max_datagrams_per_second) return found;
    auto announce = lsd::decode_announce(datagram);
    if (!announce) return announce.error();
    if (!cookie_.empty() && announce->cookie == cookie_) return found;  // ours, looped back
    for (const auto& hash : announce->info_hashes) {
        for (const auto& [id, torrent] : torrents_) {
            if (torrent.info_hash != hash) continue;
            tracker::PeerAddress peer{ip, announce->port};
            if (remember(id, peer, now)) found.push_back(Found{id, std::move(peer)});
        }
    }
    return found;
}

// --- the socket ---

Result<LsdSocket> LsdSocket::open(const std::string& interface_address) {
    in_addr interface{};
    interface.s_addr = htonl(INADDR_ANY);
    if (!interface_address.empty() && ::inet_pton(AF_INET, interface_address.c_str(), &interface) != 1) {
        return make_error("LSD interface '" + interface_address + "' is not an IPv4 address");
    }
    const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return make_error(std::string("LSD socket: ") + std::strerror(errno));
    LsdSocket socket(fd);
    const int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    sockaddr_in bound{};
    bound.sin_family = AF_INET;
    bound.sin_port = htons(lsd::kPort);
    bound.sin_addr.s_addr = htonl(INADDR_ANY);  // the group's datagrams arrive addressed to it
    if (::bind(fd, reinterpret_cast<const sockaddr*>(&bound), sizeof bound) != 0) {
        return make_error("LSD port " + std::to_string(lsd::kPort) + ": " + std::strerror(errno));
    }
    ip_mreq membership{};
    ::inet_pton(AF_INET, std::string(lsd::kGroupV4).c_str(), &membership.imr_multiaddr);
    membership.imr_interface = interface;
    if (::setsockopt(fd, IPPROTO_IP, IP_ADD_MEMBERSHIP, &membership, sizeof membership) != 0) {
        return make_error(std::string("LSD multicast group: ") + std::strerror(errno));
    }
    if (!interface_address.empty()) {
        ::setsockopt(fd, IPPROTO_IP, IP_MULTICAST_IF, &interface, sizeof interface);
    }
    const unsigned char ttl = 1;  // the LAN only
    ::setsockopt(fd, IPPROTO_IP, IP_MULTICAST_TTL, &ttl, sizeof ttl);
    const unsigned char loop = 1;
    ::setsockopt(fd, IPPROTO_IP, IP_MULTICAST_LOOP, &loop, sizeof loop);
    return socket;
}

LsdSocket& LsdSocket::operator=(LsdSocket&& other) noexcept {
    if (this != &other) {
        if (fd_ >= 0) ::close(fd_);
        fd_ = std::exchange(other.fd_, -1);
    }
    return *this;
}

LsdSocket::~LsdSocket() {
    if (fd_ >= 0) ::close(fd_);
}

Status LsdSocket::send(std::string_view datagram) {
    sockaddr_in group{};
    group.sin_family = AF_INET;
    group.sin_port = htons(lsd::kPort);
    ::inet_pton(AF_INET, std::string(lsd::kGroupV4).c_str(), &group.sin_addr);
    if (::sendto(fd_, datagram.data(), datagram.size(), 0, reinterpret_cast<const sockaddr*>(&group), sizeof group) < 0) {
        return make_error(std::string("LSD send: ") + std::strerror(errno));
    }
    return ok_status();
}

std::optional<std::pair<std::string, std::string>> LsdSocket::receive() {
    std::array<char, lsd::kMaxDatagram + 1> buffer{};
    sockaddr_in from{};
    socklen_t length = sizeof from;
    const ssize_t got = ::recvfrom(fd_, buffer.data(), buffer.size(), 0, reinterpret_cast<sockaddr*>(&from), &length);
    if (got < 0) return std::nullopt;
    std::array<char, INET_ADDRSTRLEN> text{};
    ::inet_ntop(AF_INET, &from.sin_addr, text.data(), text.size());
    return std::make_pair(std::string(buffer.data(), static_cast<std::size_t>(got)), std::string(text.data()));
}

}  // namespace pw::tracker
