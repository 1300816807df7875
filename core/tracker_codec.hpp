#pragma once
// Tracker protocol codecs: HTTP announce URLs and bencoded responses (BEP 3, 23, 7), and the
// UDP tracker protocol (BEP 15). Pure functions; the tracker_svc stage does the I/O.
#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.hpp"
#include "core/sha1.hpp"

namespace pw::tracker {

struct PeerAddress {
    std::string ip;  // textual IPv4 or IPv6 address
    std::uint16_t port = 0;
    friend bool operator==(const PeerAddress&, const PeerAddress&) = default;
};

enum class Event : std::uint8_t { none = 0, completed = 1, started = 2, stopped = 3 };

struct AnnounceRequest {
    Sha1Digest info_hash{};
    std::array<std::uint8_t, 20> peer_id{};
    std::uint16_t port = 0;
    std::uint64_t uploaded = 0;
    std::uint64_t downloaded = 0;
    std::uint64_t left = 0;
    Event event = Event::none;
    std::int32_t numwant = 200;
    std::uint32_t key = 0;
    std::optional<std::string> tracker_id;
};

struct AnnounceResponse {
    std::optional<std::string> failure_reason;  // when set, nothing else is meaningful
    std::optional<std::string> warning;
    std::int64_t interval = 1800;  // as sent: callers clamp (see clamp_interval)
    std::optional<std::int64_t> min_interval;
    std::optional<std::string> tracker_id;
    std::optional<std::int64_t> complete;
    std::optional<std::int64_t> incomplete;
    std::vector<PeerAddress> peers;
    std::size_t skipped_peers = 0;  // malformed entries, skipped rather than fatal
};

// Largest HTTP body or UDP datagram we read from a tracker.
inline constexpr std::size_t kMaxTrackerResponse = 4u << 20;

// The GET URL for an HTTP(S) announce: `announce` with the query appended (after '&' when
// it already has one), info_hash and peer_id percent-encoded byte by byte, compact=1.
std::string build_announce_url(std::string_view announce, const AnnounceRequest& request);

// Parses an HTTP tracker's bencoded body: failure reason, warning message, interval,
// min interval, tracker id, compact "peers" (BEP 23, a length not a multiple of 6 keeps the
// whole entries), "peers6" (BEP 7), and the dictionary peer list. Malformed peers are skipped.
Result<AnnounceResponse> parse_http_response(std::string_view body);

// Interval to wait before the next announce: the tracker's, clamped to [min_seconds,
// max_seconds]; zero, negative or absent values give the default. A tracker "min interval"
// above its interval raises it (still capped by max_seconds).
std::int64_t clamp_interval(const AnnounceResponse& response, std::int64_t min_seconds = 30,
                            std::int64_t max_seconds = 3600, std::int64_t default_seconds = 1800);

// --- UDP (BEP 15) ---
inline constexpr std::uint64_t kUdpProtocolId = 0x41727101980ull;

std::array<std::uint8_t, 16> encode_udp_connect(std::uint32_t transaction_id);
// Returns the connection id, or an Error (short packet, wrong action or transaction, or the
// tracker's error message when action is 3).
Result<std::uint64_t> parse_udp_connect(std::span<const std::uint8_t> packet,
                                        std::uint32_t transaction_id);
std::array<std::uint8_t, 98> encode_udp_announce(std::uint64_t connection_id,
                                                 std::uint32_t transaction_id,
                                                 const AnnounceRequest& request);
// ipv6: whether the packet came over IPv6 (peers are then 18 bytes each).
Result<AnnounceResponse> parse_udp_announce(std::span<const std::uint8_t> packet,
                                            std::uint32_t transaction_id, bool ipv6);

}  // namespace pw::tracker
