#include "tracker_svc/udp_announcer.hpp"

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <cctype>
#include <cstring>
#include <mutex>
#include <thread>

#include <fcntl.h>
#include <netdb.h>
#include <unistd.h>

namespace pw::tracker {

namespace {

constexpr auto kConnectionIdLifetime = std::chrono::seconds(60);
constexpr auto kResolvePollPeriod = std::chrono::milliseconds(50);
// The largest UDP payload: a bigger buffer can never be needed, a smaller one truncates.
constexpr std::size_t kMaxDatagram = 65536;

}  // namespace

struct UdpAnnouncer::Resolution {
    std::mutex mutex;
    bool done = false;
    sockaddr_storage address{};
    socklen_t length = 0;
    std::string error;
};

namespace {

void resolve_into(UdpAnnouncer::Resolution& slot, const std::string& host, std::uint16_t port,
                  int flags) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_DGRAM;
    hints.ai_flags = flags;
    addrinfo* found = nullptr;
    const int rc = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found);
    std::lock_guard lock(slot.mutex);
    if (rc != 0 || found == nullptr) {
        slot.error = "cannot resolve " + host + ": " + ::gai_strerror(rc);
    } else {
        std::memcpy(&slot.address, found->ai_addr, found->ai_addrlen);
        slot.length = found->ai_addrlen;
    }
    if (found != nullptr) ::freeaddrinfo(found);
    slot.done = true;
}

}  // namespace

Result<UdpTrackerAddress> parse_udp_url(std::string_view url) {
    constexpr std::string_view scheme = "udp://";
    if (url.size() < scheme.size() ||
        !std::equal(scheme.begin(), scheme.end(), url.begin(),
                    [](char a, char b) { return a == std::tolower(static_cast<unsigned char>(b)); })) {
        return make_error("not a udp:// URL");
    }
    std::string_view rest = url.substr(scheme.size());
    rest = rest.substr(0, rest.find_first_of("/?#"));
    UdpTrackerAddress out;
    std::string_view port_text;
    if (!rest.empty() && rest.front() == '[') {
        const auto close = rest.find(']');
        if (close == std::string_view::npos || close + 1 >= rest.size() || rest[close + 1] != ':') {
            return make_error("malformed IPv6 host in UDP tracker URL");
        }
        out.host = std::string(rest.substr(1, close - 1));
        port_text = rest.substr(close + 2);
    } else {
        const auto colon = rest.rfind(':');
        if (colon == std::string_view::npos) return make_error("UDP tracker URL has no port");
        out.host = std::string(rest.substr(0, colon));
        port_text = rest.substr(colon + 1);
    }
    if (out.host.empty()) return make_error("UDP tracker URL has no host");
    unsigned port = 0;
    const auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
    if (ec != std::errc{} || end != port_text.data() + port_text.size() || port == 0 || port > 65535) {
        return make_error("UDP tracker URL has a bad port '" + std::string(port_text) + "'");
    }
    out.port = static_cast<std::uint16_t>(port);
    return out;
}

std::chrono::milliseconds udp_retransmit_delay(int attempt) {
    const int capped = std::clamp(attempt, 0, 5);
    return std::chrono::milliseconds(2000) * (1 << capped);
}

std::optional<std::uint64_t> UdpConnections::find(const std::string& tracker,
                                                   Clock::time_point now) const {
    const auto cached = ids_.find(tracker);
    if (cached == ids_.end() || now - cached->second.obtained >= kConnectionIdLifetime) {
        return std::nullopt;
    }
    return cached->second.id;
}

void UdpConnections::remember(const std::string& tracker, std::uint64_t id, Clock::time_point now) {
    // Expired ids are of no use: drop them now and then, so trackers of torrents long gone do
    // not pile up.
    if (ids_.size() >= 64) {
        std::erase_if(ids_, [now](const auto& entry) {
            return now - entry.second.obtained >= kConnectionIdLifetime;
        });
    }
    ids_[tracker] = Cached{id, now};
}

UdpAnnouncer::~UdpAnnouncer() { cancel(); }

void UdpAnnouncer::cancel() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    resolution_.reset();  // a resolver thread still running fills a slot nobody reads
    stage_ = Stage::idle;
}

std::string UdpAnnouncer::cache_key() const {
    return tracker_.host + ":" + std::to_string(tracker_.port);
}

void UdpAnnouncer::start(const UdpTrackerAddress& tracker, const AnnounceRequest& request,
                         Clock::time_point now, std::chrono::milliseconds timeout) {
    cancel();
    tracker_ = tracker;
    request_ = request;
    deadline_ = now + timeout;
    resolution_ = std::make_shared<Resolution>();
    // Literal addresses resolve at once; names go to a thread (getaddrinfo blocks).
    resolve_into(*resolution_, tracker_.host, tracker_.port, AI_NUMERICHOST);
    if (!resolution_->error.empty()) {
        resolution_ = std::make_shared<Resolution>();
        std::thread([slot = resolution_, host = tracker_.host, port = tracker_.port] {
            resolve_into(*slot, host, port, 0);
        }).detach();
    }
    stage_ = Stage::resolving;
}

std::optional<Result<AnnounceResponse>> UdpAnnouncer::finish(Result<AnnounceResponse> result) {
    if (!result.ok()) connections_.forget(cache_key());  // the id may be what went wrong
    cancel();
    return result;
}

std::optional<Result<AnnounceResponse>> UdpAnnouncer::open_socket(Clock::time_point now) {
    sockaddr_storage address{};
    socklen_t length = 0;
    {
        std::lock_guard lock(resolution_->mutex);
        if (!resolution_->done) return std::nullopt;
        if (!resolution_->error.empty()) return finish(make_error(resolution_->error));
        address = resolution_->address;
        length = resolution_->length;
    }
    resolution_.reset();
    ipv6_ = address.ss_family == AF_INET6;
    fd_ = ::socket(address.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd_ < 0) return finish(make_error(std::string("socket: ") + std::strerror(errno)));
    // A connected UDP socket only receives datagrams from the tracker's address, so nobody
    // else can feed us an answer.
    if (::connect(fd_, reinterpret_cast<const sockaddr*>(&address), length) != 0) {
        return finish(make_error(std::string("connect: ") + std::strerror(errno)));
    }
    if (const auto cached = connections_.find(cache_key(), now)) {
        connection_id_ = *cached;
        stage_ = Stage::announcing;
    } else {
        stage_ = Stage::connecting;
    }
    retransmissions_ = 0;
    send_request(now);
    return std::nullopt;
}

void UdpAnnouncer::send_request(Clock::time_point now) {
    transaction_id_ = static_cast<std::uint32_t>(rng_());
    if (stage_ == Stage::connecting) {
        const auto packet = encode_udp_connect(transaction_id_);
        (void)::send(fd_, packet.data(), packet.size(), MSG_NOSIGNAL);
    } else {
        const auto packet = encode_udp_announce(connection_id_, transaction_id_, request_);
        (void)::send(fd_, packet.data(), packet.size(), MSG_NOSIGNAL);
    }
    // A failed send (no route, ICMP refusal from an earlier try) is retried like a loss.
    resend_at_ = now + udp_retransmit_delay(retransmissions_);
}

std::optional<Result<AnnounceResponse>> UdpAnnouncer::read_packets(Clock::time_point now) {
    receive_buffer_.resize(kMaxDatagram);
    for (;;) {
        const ssize_t got = ::recv(fd_, receive_buffer_.data(), receive_buffer_.size(), 0);
        if (got < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return std::nullopt;
            // ECONNREFUSED: an ICMP port unreachable answered a datagram. Nothing listens
            // there, so waiting out the deadline would only delay the next tracker.
            if (errno == ECONNREFUSED) {
                return finish(make_error("connection refused (nothing listens on that UDP port)"));
            }
            return finish(make_error(std::string("recv: ") + std::strerror(errno)));
        }
        const std::span<const std::uint8_t> packet(receive_buffer_.data(), static_cast<std::size_t>(got));
        // Only a packet naming our transaction can end the attempt; anything else (runts, late
        // answers to an earlier retransmission, noise) is skipped.
        if (packet.size() < 8) continue;
        const std::uint32_t packet_transaction =
            (std::uint32_t{packet[4]} << 24) | (std::uint32_t{packet[5]} << 16) |
            (std::uint32_t{packet[6]} << 8) | packet[7];
        if (packet_transaction != transaction_id_) continue;
        if (stage_ == Stage::announcing) {
            return finish(parse_udp_announce(packet, transaction_id_, ipv6_));
        }
        auto id = parse_udp_connect(packet, transaction_id_);
        if (!id.ok()) return finish(id.error());
        connection_id_ = *id;
        connections_.remember(cache_key(), connection_id_, now);
        stage_ = Stage::announcing;
        retransmissions_ = 0;
        send_request(now);
    }
}

std::optional<Result<AnnounceResponse>> UdpAnnouncer::drive(Clock::time_point now) {
    if (stage_ == Stage::idle) return std::nullopt;
    if (now >= deadline_) {
        const char* what = stage_ == Stage::resolving    ? "resolving the host"
                           : stage_ == Stage::connecting ? "no answer to connect"
                                                         : "no answer to announce";
        return finish(make_error(std::string("timed out (") + what + ")"));
    }
    if (stage_ == Stage::resolving) return open_socket(now);
    if (auto result = read_packets(now)) return result;
    if (stage_ != Stage::idle && now >= resend_at_) {
        ++retransmissions_;
        send_request(now);
    }
    return std::nullopt;
}

void UdpAnnouncer::add_poll_items(std::vector<zmq::pollitem_t>& items) const {
    if (fd_ >= 0) items.push_back(zmq::pollitem_t{nullptr, fd_, ZMQ_POLLIN, 0});
}

std::chrono::milliseconds UdpAnnouncer::poll_timeout(Clock::time_point now) const {
    using std::chrono::milliseconds;
    if (stage_ == Stage::idle) return milliseconds::max();
    if (stage_ == Stage::resolving) return kResolvePollPeriod;
    const auto until = std::min(resend_at_, deadline_) - now;
    return std::max(milliseconds(0), std::chrono::duration_cast<milliseconds>(until) + milliseconds(1));
}

}  // namespace pw::tracker
