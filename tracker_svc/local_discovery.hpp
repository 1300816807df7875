#pragma once
// Local Service Discovery (BEP 14) for the tracker stage: the session's public torrents are
// multicast to the LAN every five minutes (and soon after they are added), and announces
// from other machines there become peers for the orchestrator, like a tracker's.
//
// LocalDiscovery is the pure part (time passed in): what to send when, and which of what
// arrives is new. LsdSocket is the UDP socket on 239.192.152.143:6771. Anyone on the LAN may
// send anything: datagrams are taken at a bounded rate, decoded by core/lsd, and a peer is
// reported once per torrent per few minutes.
#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/lsd.hpp"
#include "core/result.hpp"
#include "core/sha1.hpp"
#include "core/tracker_codec.hpp"
#include "core/units.hpp"

namespace pw::tracker {

class LocalDiscovery {
public:
    using Clock = std::chrono::steady_clock;

    struct Options {
        Clock::duration interval = std::chrono::minutes(5);
        Clock::duration first_delay = std::chrono::seconds(1);
        Clock::duration peer_memory = std::chrono::minutes(5);  // a peer reported again after
        std::size_t max_remembered = 4096;
        std::uint32_t max_datagrams_per_second = 50;  // what is read beyond is dropped
    };

    LocalDiscovery(std::string cookie, Options options);
    explicit LocalDiscovery(std::string cookie) : LocalDiscovery(std::move(cookie), Options{}) {}

    void add(TorrentId id, const Sha1Digest& info_hash, Clock::time_point now);
    void remove(TorrentId id);
    // The TCP port peers reach us on (the orchestrator's TrackerStats); 0: not announced.
    void set_port(TorrentId id, std::uint16_t port);
    bool has(TorrentId id) const { return torrents_.contains(id); }

    // The datagrams due now (torrents sharing a port share a datagram, 16 at most each).
    std::vector<std::string> due(Clock::time_point now);
    std::optional<Clock::time_point> next_due() const;

    struct Found {
        TorrentId torrent;
        tracker::PeerAddress peer;
    };
    // An announce from address `ip`: the peers of our torrents it names that are new. Our own
    // announces (our cookie) and datagrams over the rate are dropped; a malformed one is
    // returned as an Error for the log.
    Result<std::vector<Found>> on_datagram(std::string_view datagram, const std::string& ip, Clock::time_point now);

private:
    struct Torrent {
        Sha1Digest info_hash{};
        std::uint16_t port = 0;
        Clock::time_point next{};
    };
    bool remember(TorrentId id, const tracker::PeerAddress& peer, Clock::time_point now);

    std::string cookie_;
    Options options_;
    std::map<TorrentId, Torrent> torrents_;
    // (torrent, "ip:port") -> when reported, and the order to forget them in.
    std::map<std::pair<TorrentId, std::string>, Clock::time_point> reported_;
    std::deque<std::pair<TorrentId, std::string>> reported_order_;
    Clock::time_point window_start_{};
    std::uint32_t window_count_ = 0;
};

// The LSD socket: bound to port 6771 (shared with other clients on the machine), in the
// multicast group on `interface_address` (empty: the system's default), TTL 1, with our own
// datagrams looped back (two clients on one machine find each other; the cookie tells ours).
class LsdSocket {
public:
    static Result<LsdSocket> open(const std::string& interface_address);
    LsdSocket(LsdSocket&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
    LsdSocket& operator=(LsdSocket&& other) noexcept;
    LsdSocket(const LsdSocket&) = delete;
    LsdSocket& operator=(const LsdSocket&) = delete;
    ~LsdSocket();

    int fd() const { return fd_; }
    Status send(std::string_view datagram);
    // One datagram (its bytes and the sender's address), nullopt when none is waiting.
    std::optional<std::pair<std::string, std::string>> receive();

private:
    explicit LsdSocket(int fd) : fd_(fd) {}
    int fd_ = -1;
};

}  // namespace pw::tracker
