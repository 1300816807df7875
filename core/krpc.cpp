#include "core/krpc.hpp"

#include <arpa/inet.h>
#include <sys/socket.h>

#include <algorithm>
#include <bit>
#include <cstring>

#include "core/bencode.hpp"

namespace pw::krpc {
namespace {

using bencode::Dict;
using bencode::List;
using bencode::Value;

// Messages are built by appending: g++ 12 at -O3 reports `"literal" + std::string&&` as an
// overlapping memcpy (a -Wrestrict false positive) and a Release build stops there.
template <class... Parts>
std::string cat(const Parts&... parts) {
    std::string out;
    ((out += parts), ...);
    return out;
}

std::string address_text(int family, const void* raw) {
    char text[INET6_ADDRSTRLEN] = {};
    if (inet_ntop(family, raw, text, sizeof text) == nullptr) return {};
    return text;
}

std::uint16_t read_u16(const char* p) {
    return static_cast<std::uint16_t>((static_cast<unsigned char>(p[0]) << 8) | static_cast<unsigned char>(p[1]));
}

std::string printable(std::string_view text, std::size_t limit) {
    std::string out;
    const std::size_t size = std::min(text.size(), limit);
    out.reserve(size);
    for (std::size_t i = 0; i < size; ++i) {
        const auto c = static_cast<unsigned char>(text[i]);
        out.push_back(c >= 0x20 && c < 0x7F ? static_cast<char>(c) : '?');
    }
    return out;
}

Value owned(std::string_view bytes) { return Value(std::string(bytes)); }
Value owned(const std::array<std::uint8_t, 20>& bytes) {
    return Value(std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
}

// --- reading a decoded dictionary ---

Result<std::string_view> string_at(const Value& dict, std::string_view key, std::string_view where) {
    const Value* value = dict.find(key);
    if (value == nullptr) return make_error(cat(where, " has no \"", key, "\""));
    if (!value->is_string()) return make_error(cat(where, " \"", key, "\" is not a string"));
    return value->as_string();
}

Result<std::array<std::uint8_t, 20>> id_at(const Value& dict, std::string_view key, std::string_view where) {
    auto text = string_at(dict, key, where);
    if (!text) return text.error();
    if (text.value().size() != 20) {
        return make_error(cat(where, " \"", key, "\" is ", std::to_string(text.value().size()),
                              " bytes, not 20"));
    }
    std::array<std::uint8_t, 20> id{};
    std::memcpy(id.data(), text.value().data(), id.size());
    return id;
}

// An optional integer: nullopt when absent, an Error when present but not an integer.
Result<std::optional<std::int64_t>> optional_int(const Value& dict, std::string_view key, std::string_view where) {
    const Value* value = dict.find(key);
    if (value == nullptr) return std::optional<std::int64_t>();
    if (!value->is_int()) return make_error(cat(where, " \"", key, "\" is not an integer"));
    return std::optional<std::int64_t>(value->as_int());
}

Result<Query> decode_query(const Value& root) {
    auto method = string_at(root, "q", "query");
    if (!method) return method.error();
    if (method.value().empty() || method.value().size() > kMaxMethodName) {
        return make_error(cat("query method name is empty or over ", std::to_string(kMaxMethodName), " bytes"));
    }
    const Value* arguments = root.find("a");
    if (arguments == nullptr || !arguments->is_dict()) return make_error("query has no \"a\" dictionary");
    Query query;
    auto id = id_at(*arguments, "id", "query");
    if (!id) return id.error();
    query.id = id.value();
    auto read_only = optional_int(root, "ro", "query");
    if (!read_only) return read_only.error();
    query.read_only = read_only.value().value_or(0) != 0;

    const std::string_view name = method.value();
    if (name == "ping") {
        query.arguments = Ping{};
    } else if (name == "find_node") {
        auto target = id_at(*arguments, "target", "find_node");
        if (!target) return target.error();
        query.arguments = FindNode{target.value()};
    } else if (name == "get_peers") {
        auto info_hash = id_at(*arguments, "info_hash", "get_peers");
        if (!info_hash) return info_hash.error();
        query.arguments = GetPeers{info_hash.value()};
    } else if (name == "announce_peer") {
        AnnouncePeer announce;
        auto info_hash = id_at(*arguments, "info_hash", "announce_peer");
        if (!info_hash) return info_hash.error();
        announce.info_hash = info_hash.value();
        auto token = string_at(*arguments, "token", "announce_peer");
        if (!token) return token.error();
        if (token.value().empty() || token.value().size() > kMaxToken) {
            return make_error(cat("announce_peer token is empty or over ", std::to_string(kMaxToken), " bytes"));
        }
        announce.token = std::string(token.value());
        auto implied = optional_int(*arguments, "implied_port", "announce_peer");
        if (!implied) return implied.error();
        announce.implied_port = implied.value().value_or(0) != 0;
        auto port = optional_int(*arguments, "port", "announce_peer");
        if (!port) return port.error();
        if (port.value()) {
            const std::int64_t value = *port.value();
            const std::int64_t lowest = announce.implied_port ? 0 : 1;
            if (value < lowest || value > 65535) {
                return make_error(cat("announce_peer port ", std::to_string(value), " is out of range"));
            }
            announce.port = static_cast<std::uint16_t>(value);
        } else if (!announce.implied_port) {
            return make_error("announce_peer has no \"port\" (and no implied_port)");
        }
        query.arguments = std::move(announce);
    } else {
        query.arguments = UnknownMethod{std::string(name)};
    }
    return query;
}

Result<Response> decode_response(const Value& root) {
    const Value* fields = root.find("r");
    if (fields == nullptr || !fields->is_dict()) return make_error("response has no \"r\" dictionary");
    Response response;
    auto id = id_at(*fields, "id", "response");
    if (!id) return id.error();
    response.id = id.value();
    for (const bool ipv6 : {false, true}) {
        const std::string_view key = ipv6 ? "nodes6" : "nodes";
        const Value* nodes = fields->find(key);
        if (nodes == nullptr) continue;
        if (!nodes->is_string()) return make_error(cat("response \"", key, "\" is not a string"));
        auto decoded = decode_compact_nodes(nodes->as_string(), ipv6);
        if (!decoded) return make_error(cat("response \"", key, "\": ", decoded.error().message));
        (ipv6 ? response.nodes6 : response.nodes) = std::move(decoded).value();
    }
    if (const Value* values = fields->find("values")) {
        if (!values->is_list()) return make_error("response \"values\" is not a list");
        if (values->as_list().size() > kMaxValues) {
            return make_error(cat("response holds more than ", std::to_string(kMaxValues), " values"));
        }
        std::vector<PeerAddress> peers;
        peers.reserve(values->as_list().size());
        for (const Value& value : values->as_list()) {
            if (!value.is_string()) return make_error("response \"values\" holds a non-string");
            auto peer = decode_compact_peer(value.as_string());
            if (!peer) return make_error(cat("response \"values\": ", peer.error().message));
            peers.push_back(std::move(peer).value());
        }
        response.values = std::move(peers);
    }
    if (const Value* token = fields->find("token")) {
        if (!token->is_string()) return make_error("response \"token\" is not a string");
        if (token->as_string().empty() || token->as_string().size() > kMaxToken) {
            return make_error(cat("response token is empty or over ", std::to_string(kMaxToken), " bytes"));
        }
        response.token = std::string(token->as_string());
    }
    return response;
}

Result<ErrorReply> decode_error(const Value& root) {
    const Value* fields = root.find("e");
    if (fields == nullptr || !fields->is_list()) return make_error("error message has no \"e\" list");
    const List& list = fields->as_list();
    if (list.size() != 2 || !list[0].is_int() || !list[1].is_string()) {
        return make_error("error message \"e\" is not [code, message]");
    }
    return ErrorReply{list[0].as_int(), printable(list[1].as_string(), kMaxErrorMessage)};
}

Value encode_peers(const std::vector<PeerAddress>& peers) {
    List list;
    list.reserve(peers.size());
    for (const PeerAddress& peer : peers) {
        if (auto compact = encode_compact_peer(peer)) list.emplace_back(std::move(*compact));
    }
    return Value(std::move(list));
}

std::string encode_nodes_of_family(const std::vector<NodeInfo>& nodes, bool ipv6) {
    std::string out;
    for (const NodeInfo& node : nodes) {
        auto peer = encode_compact_peer(node.address);
        if (!peer || peer->size() != (ipv6 ? kCompactPeerV6 : kCompactPeerV4)) continue;
        out.append(reinterpret_cast<const char*>(node.id.data()), node.id.size());
        out += *peer;
    }
    return out;
}

struct EncodeBody {
    Dict& root;

    void operator()(const Query& query) {
        Dict arguments{{"id", owned(query.id)}};
        std::string name;
        if (std::holds_alternative<Ping>(query.arguments)) {
            name = "ping";
        } else if (const auto* find = std::get_if<FindNode>(&query.arguments)) {
            name = "find_node";
            arguments.emplace_back("target", owned(find->target));
        } else if (const auto* get = std::get_if<GetPeers>(&query.arguments)) {
            name = "get_peers";
            arguments.emplace_back("info_hash", owned(get->info_hash));
        } else if (const auto* announce = std::get_if<AnnouncePeer>(&query.arguments)) {
            name = "announce_peer";
            arguments.emplace_back("info_hash", owned(announce->info_hash));
            if (announce->implied_port) arguments.emplace_back("implied_port", Value(std::int64_t{1}));
            if (announce->port != 0 || !announce->implied_port) {
                arguments.emplace_back("port", Value(std::int64_t{announce->port}));
            }
            arguments.emplace_back("token", owned(announce->token));
        } else {
            name = std::get<UnknownMethod>(query.arguments).name;
        }
        root.emplace_back("y", Value(std::string("q")));
        root.emplace_back("q", Value(std::move(name)));
        root.emplace_back("a", Value(std::move(arguments)));
        if (query.read_only) root.emplace_back("ro", Value(std::int64_t{1}));
    }

    void operator()(const Response& response) {
        Dict fields{{"id", owned(response.id)}};
        if (!response.nodes.empty()) fields.emplace_back("nodes", Value(encode_nodes_of_family(response.nodes, false)));
        if (!response.nodes6.empty()) {
            fields.emplace_back("nodes6", Value(encode_nodes_of_family(response.nodes6, true)));
        }
        if (response.values) fields.emplace_back("values", encode_peers(*response.values));
        if (response.token) fields.emplace_back("token", owned(*response.token));
        root.emplace_back("y", Value(std::string("r")));
        root.emplace_back("r", Value(std::move(fields)));
    }

    void operator()(const ErrorReply& error) {
        List list{Value(error.code), owned(error.message)};
        root.emplace_back("y", Value(std::string("e")));
        root.emplace_back("e", Value(std::move(list)));
    }
};

}  // namespace

Result<PeerAddress> decode_compact_peer(std::string_view bytes) {
    if (bytes.size() == kCompactPeerV4) {
        return PeerAddress{address_text(AF_INET, bytes.data()), read_u16(bytes.data() + 4)};
    }
    if (bytes.size() == kCompactPeerV6) {
        return PeerAddress{address_text(AF_INET6, bytes.data()), read_u16(bytes.data() + 16)};
    }
    return make_error(cat("a compact peer is 6 or 18 bytes, not ", std::to_string(bytes.size())));
}

std::optional<std::string> encode_compact_peer(const PeerAddress& peer) {
    if (peer.ip.empty() || peer.ip.size() >= INET6_ADDRSTRLEN || peer.ip.find('\0') != std::string::npos) {
        return std::nullopt;
    }
    unsigned char raw[16] = {};
    std::string out;
    if (inet_pton(AF_INET, peer.ip.c_str(), raw) == 1) {
        out.assign(reinterpret_cast<const char*>(raw), 4);
    } else if (inet_pton(AF_INET6, peer.ip.c_str(), raw) == 1) {
        out.assign(reinterpret_cast<const char*>(raw), 16);
    } else {
        return std::nullopt;
    }
    out.push_back(static_cast<char>(peer.port >> 8));
    out.push_back(static_cast<char>(peer.port & 0xFF));
    return out;
}

Result<std::vector<NodeInfo>> decode_compact_nodes(std::string_view bytes, bool ipv6, std::size_t max_nodes) {
    const std::size_t entry = ipv6 ? kCompactNodeV6 : kCompactNodeV4;
    if (bytes.size() % entry != 0) {
        return make_error(cat("compact nodes are ", std::to_string(entry), "-byte entries; ",
                              std::to_string(bytes.size()), " bytes is not a whole number of them"));
    }
    const std::size_t count = bytes.size() / entry;
    if (count > max_nodes) {
        return make_error(cat(std::to_string(count), " compact nodes, over the ", std::to_string(max_nodes),
                              " allowed"));
    }
    std::vector<NodeInfo> nodes;
    nodes.reserve(count);
    for (std::size_t i = 0; i < count; ++i) {
        const std::string_view one = bytes.substr(i * entry, entry);
        NodeInfo node;
        std::memcpy(node.id.data(), one.data(), node.id.size());
        auto peer = decode_compact_peer(one.substr(node.id.size()));
        if (!peer) return peer.error();  // cannot happen: the length is right
        node.address = std::move(peer).value();
        nodes.push_back(std::move(node));
    }
    return nodes;
}

Result<std::string> encode_compact_nodes(const std::vector<NodeInfo>& nodes, bool ipv6) {
    std::string out;
    out.reserve(nodes.size() * (ipv6 ? kCompactNodeV6 : kCompactNodeV4));
    for (const NodeInfo& node : nodes) {
        auto peer = encode_compact_peer(node.address);
        if (!peer || peer->size() != (ipv6 ? kCompactPeerV6 : kCompactPeerV4)) {
            return make_error(cat("node at \"", node.address.ip, "\" is not a literal ", ipv6 ? "IPv6" : "IPv4",
                                  " address"));
        }
        out.append(reinterpret_cast<const char*>(node.id.data()), node.id.size());
        out += *peer;
    }
    return out;
}

NodeId distance(const NodeId& a, const NodeId& b) {
    NodeId out{};
    for (std::size_t i = 0; i < out.size(); ++i) out[i] = static_cast<std::uint8_t>(a[i] ^ b[i]);
    return out;
}

bool closer(const NodeId& target, const NodeId& a, const NodeId& b) {
    // Arrays compare lexicographically as unsigned bytes: big-endian 160-bit numbers.
    return distance(target, a) < distance(target, b);
}

int shared_prefix_bits(const NodeId& a, const NodeId& b) {
    for (std::size_t i = 0; i < a.size(); ++i) {
        const auto x = static_cast<std::uint8_t>(a[i] ^ b[i]);
        if (x != 0) return static_cast<int>(i * 8) + std::countl_zero(x);
    }
    return 160;
}

Result<Message> decode(std::string_view packet, std::size_t max_packet) {
    if (packet.size() > max_packet) {
        return make_error(cat("KRPC message of ", std::to_string(packet.size()), " bytes is over the ",
                              std::to_string(max_packet), "-byte limit"));
    }
    bencode::DecodeLimits limits;
    limits.max_depth = kMaxDepth;
    auto decoded = bencode::decode(packet, limits);
    if (!decoded) {
        Error error = decoded.error();
        error.message = cat("KRPC message is not bencoded: ", error.message);
        return error;
    }
    const Value& root = decoded.value().value;
    if (!root.is_dict()) return make_error("KRPC message is not a dictionary");

    Message message;
    auto transaction = string_at(root, "t", "KRPC message");
    if (!transaction) return transaction.error();
    if (transaction.value().empty() || transaction.value().size() > kMaxTransactionId) {
        return make_error(cat("transaction id is empty or over ", std::to_string(kMaxTransactionId), " bytes"));
    }
    message.transaction = std::string(transaction.value());

    if (const Value* version = root.find("v"); version != nullptr && version->is_string() &&
                                               version->as_string().size() <= kMaxVersion) {
        message.version = std::string(version->as_string());
    }
    if (const Value* ip = root.find("ip")) {
        if (!ip->is_string()) return make_error("KRPC \"ip\" is not a string");
        auto address = decode_compact_peer(ip->as_string());
        if (!address) return make_error(cat("KRPC \"ip\": ", address.error().message));
        message.observed_address = std::move(address).value();
    }

    auto type = string_at(root, "y", "KRPC message");
    if (!type) return type.error();
    if (type.value() == "q") {
        auto query = decode_query(root);
        if (!query) return query.error();
        message.body = std::move(query).value();
    } else if (type.value() == "r") {
        auto response = decode_response(root);
        if (!response) return response.error();
        message.body = std::move(response).value();
    } else if (type.value() == "e") {
        auto error = decode_error(root);
        if (!error) return error.error();
        message.body = std::move(error).value();
    } else {
        return make_error(cat("KRPC \"y\" is \"", printable(type.value(), 8), "\", not q, r or e"));
    }
    return message;
}

std::string encode(const Message& message) {
    Dict root{{"t", owned(message.transaction)}};
    if (message.version) root.emplace_back("v", owned(*message.version));
    if (message.observed_address) {
        if (auto compact = encode_compact_peer(*message.observed_address)) root.emplace_back("ip", Value(*compact));
    }
    std::visit(EncodeBody{root}, message.body);
    return bencode::encode(Value(std::move(root)));
}

}  // namespace pw::krpc
