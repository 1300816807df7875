#pragma once
// KRPC, the DHT's messages (BEP 5; nodes6 from BEP 32, "ro" from BEP 43, "ip" from BEP 42), and
// the compact peer and node forms the DHT and peer exchange share. Pure functions, no I/O: the
// DHT stage owns the socket, the routing table and the tokens (a token's validity is its
// business; here a token is a bounded opaque string).
//
// Every message is one bencoded dictionary in one UDP datagram. decode() refuses anything
// malformed with an Error that says what: over kMaxPacket, not exactly one dictionary, a
// missing or wrong-typed key, a transaction id or token over its bound, a node id that is not
// 20 bytes, compact strings of the wrong length, too many values. Unknown keys are ignored; a
// query of an unknown method decodes as UnknownMethod so the DHT can answer error 204.
#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "core/result.hpp"
#include "core/sha1.hpp"
#include "core/tracker_codec.hpp"

namespace pw::krpc {

inline constexpr std::size_t kMaxPacket = 1500;         // one datagram, Ethernet-sized
inline constexpr std::size_t kMaxTransactionId = 16;    // 2 bytes is typical
inline constexpr std::size_t kMaxToken = 64;            // 4 to 20 bytes in practice
inline constexpr std::size_t kMaxValues = 128;          // peers in one get_peers answer
inline constexpr std::size_t kMaxNodes = 64;            // in nodes, and again in nodes6
inline constexpr std::size_t kMaxMethodName = 32;
inline constexpr std::size_t kMaxErrorMessage = 256;    // kept of an error's text
inline constexpr std::size_t kMaxVersion = 16;          // "v": longer ones are dropped
inline constexpr std::size_t kMaxDepth = 16;            // bencode nesting

// BEP 5's error codes.
inline constexpr std::int64_t kGenericError = 201;
inline constexpr std::int64_t kServerError = 202;
inline constexpr std::int64_t kProtocolError = 203;
inline constexpr std::int64_t kMethodUnknown = 204;

using NodeId = std::array<std::uint8_t, 20>;
using tracker::PeerAddress;

// --- compact forms (BEP 5, 23, 7, 32) ---

inline constexpr std::size_t kCompactPeerV4 = 6;    // address, port (network order)
inline constexpr std::size_t kCompactPeerV6 = 18;
inline constexpr std::size_t kCompactNodeV4 = 26;   // node id, then a compact peer
inline constexpr std::size_t kCompactNodeV6 = 38;

struct NodeInfo {
    NodeId id{};
    PeerAddress address;
    friend bool operator==(const NodeInfo&, const NodeInfo&) = default;
};

// 6 bytes (IPv4) or 18 (IPv6); anything else is an Error. Port 0 is kept as it came: whether
// such a peer is usable is the caller's call.
Result<PeerAddress> decode_compact_peer(std::string_view bytes);
// 6 or 18 bytes, by the address's family; nullopt when `ip` is not a literal address.
std::optional<std::string> encode_compact_peer(const PeerAddress& peer);
// A nodes (26-byte entries) or nodes6 (38-byte entries) string. A length that is not a whole
// number of entries, or more than max_nodes entries, is an Error.
Result<std::vector<NodeInfo>> decode_compact_nodes(std::string_view bytes, bool ipv6,
                                                   std::size_t max_nodes = kMaxNodes);
// Every node must be of the family asked for (an Error names the first that is not).
Result<std::string> encode_compact_nodes(const std::vector<NodeInfo>& nodes, bool ipv6);

// --- the XOR metric ---

NodeId distance(const NodeId& a, const NodeId& b);
// True when `a` is strictly closer to `target` than `b` is.
bool closer(const NodeId& target, const NodeId& a, const NodeId& b);
// How many leading bits a and b share, 0..160 (160: the same id): the bucket a node falls in.
int shared_prefix_bits(const NodeId& a, const NodeId& b);

// --- messages ---

struct Ping {
    friend bool operator==(const Ping&, const Ping&) = default;
};
struct FindNode {
    NodeId target{};
    friend bool operator==(const FindNode&, const FindNode&) = default;
};
struct GetPeers {
    Sha1Digest info_hash{};
    friend bool operator==(const GetPeers&, const GetPeers&) = default;
};
struct AnnouncePeer {
    Sha1Digest info_hash{};
    // The port to store; 0 when absent, which is only allowed with implied_port.
    std::uint16_t port = 0;
    // The peer's port is the datagram's source port ("implied_port": 1).
    bool implied_port = false;
    std::string token;  // 1..kMaxToken bytes
    friend bool operator==(const AnnouncePeer&, const AnnouncePeer&) = default;
};
struct UnknownMethod {
    std::string name;  // 1..kMaxMethodName bytes
    friend bool operator==(const UnknownMethod&, const UnknownMethod&) = default;
};

struct Query {
    NodeId id{};  // the querying node
    std::variant<Ping, FindNode, GetPeers, AnnouncePeer, UnknownMethod> arguments;
    bool read_only = false;  // BEP 43 "ro": the querier is not to be added to routing tables
    friend bool operator==(const Query&, const Query&) = default;
};

// A response does not say which query it answers (its transaction id does), so every field a
// response may carry is decoded and the caller checks what its query expects.
struct Response {
    NodeId id{};  // the responding node
    std::vector<NodeInfo> nodes;   // IPv4 nodes
    std::vector<NodeInfo> nodes6;  // IPv6 nodes (BEP 32)
    std::optional<std::vector<PeerAddress>> values;  // get_peers: the peers (6 or 18 bytes each)
    std::optional<std::string> token;                // get_peers: for a later announce_peer
    friend bool operator==(const Response&, const Response&) = default;
};

struct ErrorReply {
    std::int64_t code = kGenericError;
    // At most kMaxErrorMessage bytes; decoded ones have every byte outside printable ASCII
    // replaced by '?', so they can go into a log line as they are.
    std::string message;
    friend bool operator==(const ErrorReply&, const ErrorReply&) = default;
};

struct Message {
    std::string transaction;  // "t": 1..kMaxTransactionId bytes, echoed in the answer
    std::variant<Query, Response, ErrorReply> body;  // "y": q, r, e
    std::optional<std::string> version;  // "v": the client, when it sent one of <= kMaxVersion bytes
    // "ip" (BEP 42): our address as the sender saw it, in responses.
    std::optional<PeerAddress> observed_address;
    friend bool operator==(const Message&, const Message&) = default;
};

Result<Message> decode(std::string_view packet, std::size_t max_packet = kMaxPacket);
// The canonical encoding (keys sorted). The result can exceed kMaxPacket when the message
// carries that much: the caller bounds what it puts in. Addresses that are not literal IPs are
// left out of values; nodes of the wrong family are left out of nodes and nodes6.
std::string encode(const Message& message);

}  // namespace pw::krpc
