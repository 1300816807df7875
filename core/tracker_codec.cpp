#include "core/tracker_codec.hpp"

#include <arpa/inet.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstdio>
#include <limits>

#include "core/bencode.hpp"

namespace pw::tracker {
namespace {

constexpr std::size_t kCompactV4 = 6;
constexpr std::size_t kCompactV6 = 18;
constexpr std::size_t kUdpHeader = 8;            // action + transaction id
constexpr std::size_t kUdpConnectResponse = 16;
constexpr std::size_t kUdpAnnounceHeader = 20;   // + interval, leechers, seeders
// A tracker's error text ends up in logs and status messages: keep it short and printable.
constexpr std::size_t kMaxTrackerMessage = 256;

enum class UdpAction : std::uint32_t { connect = 0, announce = 1, scrape = 2, error = 3 };

bool unreserved(unsigned char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '.' || c == '_' || c == '~';
}

void append_percent_encoded(std::string& out, std::span<const std::uint8_t> bytes) {
    static constexpr char kHex[] = "0123456789ABCDEF";
    for (const std::uint8_t byte : bytes) {
        if (unreserved(byte)) {
            out.push_back(static_cast<char>(byte));
        } else {
            out.push_back('%');
            out.push_back(kHex[byte >> 4]);
            out.push_back(kHex[byte & 0x0F]);
        }
    }
}

void append_percent_encoded(std::string& out, std::string_view text) {
    append_percent_encoded(
        out, std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(text.data()),
                                           text.size()));
}

const char* event_name(Event event) {
    switch (event) {
        case Event::none: return nullptr;
        case Event::completed: return "completed";
        case Event::started: return "started";
        case Event::stopped: return "stopped";
    }
    return nullptr;
}

std::string printable(std::string_view text) {
    std::string out;
    const std::size_t size = std::min(text.size(), kMaxTrackerMessage);
    out.reserve(size);
    for (std::size_t i = 0; i < size; ++i) {
        const auto c = static_cast<unsigned char>(text[i]);
        out.push_back(c >= 0x20 && c < 0x7F ? static_cast<char>(c) : '?');
    }
    if (text.size() > size) out += "...";
    return out;
}

std::uint16_t read_u16(const std::uint8_t* p) {
    return static_cast<std::uint16_t>((p[0] << 8) | p[1]);
}

std::uint32_t read_u32(const std::uint8_t* p) {
    return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) |
           (std::uint32_t{p[2]} << 8) | std::uint32_t{p[3]};
}

std::uint64_t read_u64(const std::uint8_t* p) {
    return (std::uint64_t{read_u32(p)} << 32) | read_u32(p + 4);
}

template <std::size_t N>
void put_u32(std::array<std::uint8_t, N>& out, std::size_t at, std::uint32_t v) {
    for (int i = 0; i < 4; ++i) out[at + static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(v >> (24 - 8 * i));
}

template <std::size_t N>
void put_u64(std::array<std::uint8_t, N>& out, std::size_t at, std::uint64_t v) {
    put_u32(out, at, static_cast<std::uint32_t>(v >> 32));
    put_u32(out, at + 4, static_cast<std::uint32_t>(v));
}

std::string address_text(int family, const std::uint8_t* raw) {
    char text[INET6_ADDRSTRLEN] = {};
    if (inet_ntop(family, raw, text, sizeof text) == nullptr) return {};
    return text;
}

// Compact peers (BEP 23 for IPv4, BEP 7 for IPv6). A trailing partial entry and entries
// with port 0 are counted as skipped: one bad entry should not cost us the others.
void parse_compact_peers(std::span<const std::uint8_t> bytes, bool ipv6,
                         AnnounceResponse& response) {
    const std::size_t entry = ipv6 ? kCompactV6 : kCompactV4;
    const std::size_t address_size = entry - 2;
    const std::size_t whole = bytes.size() / entry;
    response.peers.reserve(response.peers.size() + whole);
    for (std::size_t i = 0; i < whole; ++i) {
        const std::uint8_t* p = bytes.data() + i * entry;
        const std::uint16_t port = read_u16(p + address_size);
        if (port == 0) {
            ++response.skipped_peers;
            continue;
        }
        response.peers.push_back(PeerAddress{address_text(ipv6 ? AF_INET6 : AF_INET, p), port});
    }
    if (bytes.size() % entry != 0) ++response.skipped_peers;
}

std::span<const std::uint8_t> as_bytes(std::string_view text) {
    return {reinterpret_cast<const std::uint8_t*>(text.data()), text.size()};
}

// The textual address in canonical form, or nullopt when `ip` is not a literal IPv4 or IPv6
// address (host names are skipped: the codec resolves nothing).
std::optional<std::string> canonical_ip(const std::string& ip) {
    if (ip.size() >= INET6_ADDRSTRLEN || ip.find('\0') != std::string::npos) return std::nullopt;
    std::uint8_t raw[16] = {};
    if (inet_pton(AF_INET, ip.c_str(), raw) == 1) return address_text(AF_INET, raw);
    if (inet_pton(AF_INET6, ip.c_str(), raw) == 1) return address_text(AF_INET6, raw);
    return std::nullopt;
}

void parse_dict_peers(const bencode::List& list, AnnounceResponse& response) {
    for (const bencode::Value& entry : list) {
        const bencode::Value* ip = entry.find("ip");
        const bencode::Value* port = entry.find("port");
        if (ip == nullptr || port == nullptr || !ip->is_string() || !port->is_int() ||
            port->as_int() <= 0 || port->as_int() > 65535) {
            ++response.skipped_peers;
            continue;
        }
        auto address = canonical_ip(std::string(ip->as_string()));
        if (!address) {
            ++response.skipped_peers;
            continue;
        }
        response.peers.push_back(
            PeerAddress{std::move(*address), static_cast<std::uint16_t>(port->as_int())});
    }
}

std::optional<std::int64_t> int_field(const bencode::Value& dict, std::string_view key) {
    const bencode::Value* value = dict.find(key);
    if (value == nullptr || !value->is_int()) return std::nullopt;
    return value->as_int();
}

std::optional<std::string> string_field(const bencode::Value& dict, std::string_view key) {
    const bencode::Value* value = dict.find(key);
    if (value == nullptr || !value->is_string()) return std::nullopt;
    return std::string(value->as_string());
}

// Reads the action and transaction id every UDP response starts with, and turns an error
// response (action 3) into an Error carrying the tracker's message.
Result<UdpAction> check_udp_header(std::span<const std::uint8_t> packet,
                                   std::uint32_t transaction_id, UdpAction expected) {
    if (packet.size() < kUdpHeader) {
        return make_error("UDP tracker response of " + std::to_string(packet.size()) +
                          " bytes is too short");
    }
    const std::uint32_t action = read_u32(packet.data());
    const std::uint32_t received_transaction = read_u32(packet.data() + 4);
    if (received_transaction != transaction_id) {
        return make_error("UDP tracker response for transaction " +
                              std::to_string(received_transaction) + ", expected " +
                              std::to_string(transaction_id),
                          4);
    }
    if (action == static_cast<std::uint32_t>(UdpAction::error)) {
        const std::string_view message(reinterpret_cast<const char*>(packet.data()) + kUdpHeader,
                                       packet.size() - kUdpHeader);
        return make_error("tracker error: " + printable(message));
    }
    if (action != static_cast<std::uint32_t>(expected)) {
        return make_error("UDP tracker response with action " + std::to_string(action) +
                              ", expected " + std::to_string(static_cast<std::uint32_t>(expected)),
                          0);
    }
    return expected;
}

}  // namespace

std::string build_announce_url(std::string_view announce, const AnnounceRequest& request) {
    std::string url(announce);
    if (url.find('?') == std::string::npos) {
        url += '?';
    } else if (url.back() != '?' && url.back() != '&') {
        url += '&';
    }
    url += "info_hash=";
    append_percent_encoded(url, request.info_hash);
    url += "&peer_id=";
    append_percent_encoded(url, request.peer_id);
    url += "&port=" + std::to_string(request.port);
    url += "&uploaded=" + std::to_string(request.uploaded);
    url += "&downloaded=" + std::to_string(request.downloaded);
    url += "&left=" + std::to_string(request.left);
    url += "&compact=1";
    url += "&numwant=" + std::to_string(request.numwant);
    char key[9];
    std::snprintf(key, sizeof key, "%08x", static_cast<unsigned>(request.key));
    url += "&key=";
    url += key;
    if (const char* event = event_name(request.event)) {
        url += "&event=";
        url += event;
    }
    if (request.tracker_id) {
        url += "&trackerid=";
        append_percent_encoded(url, *request.tracker_id);
    }
    return url;
}

Result<AnnounceResponse> parse_http_response(std::string_view body) {
    if (body.size() > kMaxTrackerResponse) {
        return make_error("tracker response of " + std::to_string(body.size()) +
                          " bytes exceeds limit " + std::to_string(kMaxTrackerResponse));
    }
    auto decoded = bencode::decode(body);
    if (!decoded.ok()) {
        Error error = decoded.error();
        error.message = "tracker response is not bencode: " + error.message;
        return error;
    }
    const bencode::Value& root = decoded->value;
    if (!root.is_dict()) return make_error("tracker response is not a dictionary", 0);

    AnnounceResponse response;
    if (auto failure = string_field(root, "failure reason")) {
        response.failure_reason = std::move(failure);
        return response;
    }
    response.warning = string_field(root, "warning message");
    if (auto interval = int_field(root, "interval")) response.interval = *interval;
    response.min_interval = int_field(root, "min interval");
    response.tracker_id = string_field(root, "tracker id");
    response.complete = int_field(root, "complete");
    response.incomplete = int_field(root, "incomplete");

    if (const bencode::Value* peers = root.find("peers")) {
        if (peers->is_string()) {
            parse_compact_peers(as_bytes(peers->as_string()), false, response);
        } else if (peers->is_list()) {
            parse_dict_peers(peers->as_list(), response);
        } else {
            ++response.skipped_peers;
        }
    }
    if (const bencode::Value* peers6 = root.find("peers6")) {
        if (peers6->is_string()) {
            parse_compact_peers(as_bytes(peers6->as_string()), true, response);
        } else {
            ++response.skipped_peers;
        }
    }
    return response;
}

std::int64_t clamp_interval(const AnnounceResponse& response, std::int64_t min_seconds,
                            std::int64_t max_seconds, std::int64_t default_seconds) {
    if (response.interval <= 0) return default_seconds;
    std::int64_t interval = response.interval;
    // Announcing sooner than the tracker's own minimum only gets us ignored or banned.
    if (response.min_interval && *response.min_interval > interval) {
        interval = *response.min_interval;
    }
    return std::clamp(interval, min_seconds, std::max(min_seconds, max_seconds));
}

std::array<std::uint8_t, 16> encode_udp_connect(std::uint32_t transaction_id) {
    std::array<std::uint8_t, 16> out{};
    put_u64(out, 0, kUdpProtocolId);
    put_u32(out, 8, static_cast<std::uint32_t>(UdpAction::connect));
    put_u32(out, 12, transaction_id);
    return out;
}

Result<std::uint64_t> parse_udp_connect(std::span<const std::uint8_t> packet,
                                        std::uint32_t transaction_id) {
    auto header = check_udp_header(packet, transaction_id, UdpAction::connect);
    if (!header.ok()) return header.error();
    if (packet.size() < kUdpConnectResponse) {
        return make_error("UDP connect response of " + std::to_string(packet.size()) +
                          " bytes, expected 16");
    }
    return read_u64(packet.data() + 8);
}

std::array<std::uint8_t, 98> encode_udp_announce(std::uint64_t connection_id,
                                                 std::uint32_t transaction_id,
                                                 const AnnounceRequest& request) {
    std::array<std::uint8_t, 98> out{};
    put_u64(out, 0, connection_id);
    put_u32(out, 8, static_cast<std::uint32_t>(UdpAction::announce));
    put_u32(out, 12, transaction_id);
    std::copy(request.info_hash.begin(), request.info_hash.end(), out.begin() + 16);
    std::copy(request.peer_id.begin(), request.peer_id.end(), out.begin() + 36);
    put_u64(out, 56, request.downloaded);
    put_u64(out, 64, request.left);
    put_u64(out, 72, request.uploaded);
    // Event numbers on the wire are the enum's values (BEP 15).
    put_u32(out, 80, static_cast<std::uint32_t>(request.event));
    put_u32(out, 84, 0);  // ip: the tracker uses the packet's source address
    put_u32(out, 88, request.key);
    put_u32(out, 92, static_cast<std::uint32_t>(request.numwant));
    out[96] = static_cast<std::uint8_t>(request.port >> 8);
    out[97] = static_cast<std::uint8_t>(request.port);
    return out;
}

Result<AnnounceResponse> parse_udp_announce(std::span<const std::uint8_t> packet,
                                            std::uint32_t transaction_id, bool ipv6) {
    auto header = check_udp_header(packet, transaction_id, UdpAction::announce);
    if (!header.ok()) return header.error();
    if (packet.size() < kUdpAnnounceHeader) {
        return make_error("UDP announce response of " + std::to_string(packet.size()) +
                          " bytes, expected at least 20");
    }
    AnnounceResponse response;
    // Signed on the wire (int32_t in BEP 15): a negative interval falls to the default in
    // clamp_interval rather than becoming four billion seconds.
    response.interval = static_cast<std::int32_t>(read_u32(packet.data() + 8));
    response.incomplete = read_u32(packet.data() + 12);
    response.complete = read_u32(packet.data() + 16);
    parse_compact_peers(packet.subspan(kUdpAnnounceHeader), ipv6, response);
    return response;
}

}  // namespace pw::tracker
