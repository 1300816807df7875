#pragma once
// UDP announces (BEP 15): connect, then announce, each retransmitted on a schedule shorter
// than BEP 15's 15 * 2^n s because one attempt is bounded by --announce-timeout: the
// request goes out at 0 s, again after 2 s, 4 s more, 8 s more, ... until the attempt's
// deadline. A connection id is reused for up to 60 s per tracker, by every torrent's announces.
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include <netinet/in.h>
#include <sys/socket.h>
#include <zmq.hpp>

#include "core/result.hpp"
#include "core/tracker_codec.hpp"

namespace pw::tracker {

struct UdpTrackerAddress {
    std::string host;  // without brackets for IPv6 literals
    std::uint16_t port = 0;
    friend bool operator==(const UdpTrackerAddress&, const UdpTrackerAddress&) = default;
};

// "udp://host:port[/anything]" -> host and port; IPv6 literals in brackets.
Result<UdpTrackerAddress> parse_udp_url(std::string_view url);

// Delay before the n-th retransmission (n from 0), see the header comment.
std::chrono::milliseconds udp_retransmit_delay(int attempt);

// BEP 15 connection ids by tracker ("host:port"), shared by the announcers of every torrent:
// one connect serves all the torrents announcing to a tracker within 60 s.
class UdpConnections {
public:
    using Clock = std::chrono::steady_clock;

    std::optional<std::uint64_t> find(const std::string& tracker, Clock::time_point now) const;
    void remember(const std::string& tracker, std::uint64_t id, Clock::time_point now);
    void forget(const std::string& tracker) { ids_.erase(tracker); }
    std::size_t size() const { return ids_.size(); }

private:
    struct Cached {
        std::uint64_t id = 0;
        Clock::time_point obtained;
    };
    std::map<std::string, Cached> ids_;
};

// One announce to one UDP tracker at a time; the stage makes one per announce in flight.
class UdpAnnouncer {
public:
    using Clock = std::chrono::steady_clock;

    UdpAnnouncer(std::mt19937& rng, UdpConnections& connections)
        : rng_(rng), connections_(connections) {}
    ~UdpAnnouncer();
    UdpAnnouncer(const UdpAnnouncer&) = delete;
    UdpAnnouncer& operator=(const UdpAnnouncer&) = delete;

    // Starts an announce; cancels any still running.
    void start(const UdpTrackerAddress& tracker, const AnnounceRequest& request,
               Clock::time_point now, std::chrono::milliseconds timeout);
    bool active() const { return stage_ != Stage::idle; }
    void cancel();

    void add_poll_items(std::vector<zmq::pollitem_t>& items) const;
    std::chrono::milliseconds poll_timeout(Clock::time_point now) const;
    // Reads what arrived, retransmits when due. Returns the answer or an Error once over.
    std::optional<Result<AnnounceResponse>> drive(Clock::time_point now);

    struct Resolution;  // filled by a resolver thread so a slow DNS never blocks the loop

private:
    enum class Stage { idle, resolving, connecting, announcing };

    std::optional<Result<AnnounceResponse>> finish(Result<AnnounceResponse> result);
    std::optional<Result<AnnounceResponse>> open_socket(Clock::time_point now);
    void send_request(Clock::time_point now);
    std::optional<Result<AnnounceResponse>> read_packets(Clock::time_point now);
    std::string cache_key() const;

    std::mt19937& rng_;
    Stage stage_ = Stage::idle;
    UdpTrackerAddress tracker_;
    AnnounceRequest request_;
    Clock::time_point deadline_;
    std::shared_ptr<Resolution> resolution_;
    int fd_ = -1;
    bool ipv6_ = false;
    std::uint32_t transaction_id_ = 0;
    std::uint64_t connection_id_ = 0;
    int retransmissions_ = 0;
    Clock::time_point resend_at_;
    UdpConnections& connections_;
    std::vector<std::uint8_t> receive_buffer_;
};

}  // namespace pw::tracker
