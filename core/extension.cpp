#include "core/extension.hpp"

#include <arpa/inet.h>
#include <sys/socket.h>

#include <algorithm>
#include <set>

#include "core/bencode.hpp"
#include "core/krpc.hpp"

namespace pw::ext {
namespace {

using bencode::Dict;
using bencode::Value;

// Messages are built by appending: g++ 12 at -O3 reports `"literal" + std::string&&` as an
// overlapping memcpy (a -Wrestrict false positive) and a Release build stops there.
template <class... Parts>
std::string cat(const Parts&... parts) {
    std::string out;
    ((out += parts), ...);
    return out;
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
Value integer(std::int64_t value) { return Value(value); }

// Decodes one dictionary that spans the whole payload.
Result<bencode::Decoded> decode_dict(std::string_view payload, std::string_view what) {
    bencode::DecodeLimits limits;
    limits.max_depth = 32;
    auto decoded = bencode::decode(payload, limits);
    if (!decoded) {
        Error error = decoded.error();
        error.message = cat(what, " is not bencoded: ", error.message);
        return error;
    }
    if (!decoded.value().value.is_dict()) return make_error(cat(what, " is not a dictionary"));
    return decoded;
}

// A ut_metadata data message is a bencoded dictionary followed by raw bytes. The decoder
// takes exactly one value and says where trailing bytes begin; the prefix up to there, when
// it decodes on its own, is the dictionary, and the rest is the piece. Returns the length of
// the leading value (the whole payload when nothing trails), or an Error.
Result<std::size_t> leading_value_length(std::string_view payload, const bencode::DecodeLimits& limits) {
    auto whole = bencode::decode(payload, limits);
    if (whole) return payload.size();
    const auto& offset = whole.error().offset;
    if (!offset || *offset == 0 || *offset >= payload.size()) return whole.error();
    auto prefix = bencode::decode(payload.substr(0, static_cast<std::size_t>(*offset)), limits);
    if (!prefix) return whole.error();
    return static_cast<std::size_t>(*offset);
}

std::optional<std::string> address_from_bytes(std::string_view bytes) {
    char text[INET6_ADDRSTRLEN] = {};
    if (bytes.size() == 4) {
        if (inet_ntop(AF_INET, bytes.data(), text, sizeof text) == nullptr) return std::nullopt;
    } else if (bytes.size() == 16) {
        if (inet_ntop(AF_INET6, bytes.data(), text, sizeof text) == nullptr) return std::nullopt;
    } else {
        return std::nullopt;
    }
    return std::string(text);
}

std::optional<std::string> address_bytes(const std::string& ip) {
    if (ip.empty() || ip.size() >= INET6_ADDRSTRLEN || ip.find('\0') != std::string::npos) return std::nullopt;
    unsigned char raw[16] = {};
    if (inet_pton(AF_INET, ip.c_str(), raw) == 1) return std::string(reinterpret_cast<const char*>(raw), 4);
    if (inet_pton(AF_INET6, ip.c_str(), raw) == 1) return std::string(reinterpret_cast<const char*>(raw), 16);
    return std::nullopt;
}

// An optional integer: nullopt when absent, an Error when present but not an integer.
Result<std::optional<std::int64_t>> optional_int(const Value& dict, std::string_view key, std::string_view where) {
    const Value* value = dict.find(key);
    if (value == nullptr) return std::optional<std::int64_t>();
    if (!value->is_int()) return make_error(cat(where, " \"", key, "\" is not an integer"));
    return std::optional<std::int64_t>(value->as_int());
}

}  // namespace

void advertise_extension_protocol(std::array<std::uint8_t, 8>& reserved) { reserved[5] |= 0x10; }

Result<Extended> split_extended(std::string_view body) {
    if (body.empty()) return make_error("extended message without an extended id");
    return Extended{static_cast<std::uint8_t>(body.front()), body.substr(1)};
}

void frame_extended(std::uint8_t id, std::string_view payload, std::vector<std::uint8_t>& out) {
    const auto length = static_cast<std::uint32_t>(payload.size() + 2);
    for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<std::uint8_t>(length >> shift));
    out.push_back(kExtendedMessageId);
    out.push_back(id);
    out.insert(out.end(), payload.begin(), payload.end());
}

// --- handshake ---

std::uint8_t ExtendedHandshake::id_of(std::string_view name) const {
    const auto found = extensions.find(std::string(name));
    return found == extensions.end() ? 0 : found->second;
}

Result<ExtendedHandshake> decode_handshake(std::string_view payload, std::uint32_t max_metadata_size) {
    if (payload.size() > kMaxHandshakePayload) {
        return make_error(cat("extended handshake of ", std::to_string(payload.size()), " bytes is over ",
                              std::to_string(kMaxHandshakePayload / 1024), " KiB"));
    }
    auto decoded = decode_dict(payload, "extended handshake");
    if (!decoded) return decoded.error();
    const Value& root = decoded.value().value;
    ExtendedHandshake handshake;

    if (const Value* m = root.find("m")) {
        if (!m->is_dict()) return make_error("extended handshake \"m\" is not a dictionary");
        if (m->as_dict().size() > kMaxExtensionNames) {
            return make_error(cat("extended handshake names more than ", std::to_string(kMaxExtensionNames),
                                  " extensions"));
        }
        std::set<std::uint8_t> ids;
        for (const auto& [name, id] : m->as_dict()) {
            const std::string shown = printable(name, kMaxExtensionName);
            if (name.empty() || name.size() > kMaxExtensionName) {
                return make_error(cat("extended handshake names an extension of ", std::to_string(name.size()),
                                      " bytes"));
            }
            if (!id.is_int() || id.as_int() < 0 || id.as_int() > 255) {
                return make_error(cat("extended handshake: the id of \"", shown, "\" is not 0..255"));
            }
            const auto value = static_cast<std::uint8_t>(id.as_int());
            if (value != 0 && !ids.insert(value).second) {
                return make_error(cat("extended handshake gives id ", std::to_string(value),
                                      " to two extensions (\"", shown, "\" and another)"));
            }
            handshake.extensions.emplace(name, value);
        }
    }
    if (const Value* v = root.find("v")) {
        if (!v->is_string()) return make_error("extended handshake \"v\" is not a string");
        handshake.client = printable(v->as_string(), kMaxClientName);
    }
    auto port = optional_int(root, "p", "extended handshake");
    if (!port) return port.error();
    if (port.value()) {
        if (*port.value() < 0 || *port.value() > 65535) {
            return make_error(cat("extended handshake \"p\" ", std::to_string(*port.value()), " is not a port"));
        }
        if (*port.value() != 0) handshake.listen_port = static_cast<std::uint16_t>(*port.value());
    }
    auto reqq = optional_int(root, "reqq", "extended handshake");
    if (!reqq) return reqq.error();
    if (reqq.value()) {
        if (*reqq.value() < 1) {
            return make_error(cat("extended handshake \"reqq\" ", std::to_string(*reqq.value()), " is below 1"));
        }
        handshake.request_queue = static_cast<std::uint32_t>(std::min<std::int64_t>(*reqq.value(), kMaxRequestQueue));
    }
    if (const Value* ip = root.find("yourip")) {
        if (!ip->is_string()) return make_error("extended handshake \"yourip\" is not a string");
        auto text = address_from_bytes(ip->as_string());
        if (!text) {
            return make_error(cat("extended handshake \"yourip\" is ", std::to_string(ip->as_string().size()),
                                  " bytes, not 4 or 16"));
        }
        handshake.your_ip = std::move(*text);
    }
    auto size = optional_int(root, "metadata_size", "extended handshake");
    if (!size) return size.error();
    if (size.value()) {
        const std::int64_t value = *size.value();
        if (value < 1 || value > std::int64_t{max_metadata_size}) {
            return make_error(cat("extended handshake metadata_size ", std::to_string(value), " is not 1..",
                                  std::to_string(max_metadata_size)));
        }
        handshake.metadata_size = static_cast<std::uint32_t>(value);
    }
    auto upload_only = optional_int(root, "upload_only", "extended handshake");
    if (!upload_only) return upload_only.error();
    if (upload_only.value()) handshake.upload_only = *upload_only.value() != 0;
    auto encryption = optional_int(root, "e", "extended handshake");
    if (!encryption) return encryption.error();
    if (encryption.value()) handshake.prefers_encryption = *encryption.value() != 0;
    return handshake;
}

std::string encode_handshake(const ExtendedHandshake& handshake) {
    Dict m;
    for (const auto& [name, id] : handshake.extensions) m.emplace_back(name, integer(id));
    Dict root{{"m", Value(std::move(m))}};
    if (handshake.client) root.emplace_back("v", owned(*handshake.client));
    if (handshake.listen_port) root.emplace_back("p", integer(*handshake.listen_port));
    if (handshake.request_queue) root.emplace_back("reqq", integer(*handshake.request_queue));
    if (handshake.your_ip) {
        if (auto bytes = address_bytes(*handshake.your_ip)) root.emplace_back("yourip", Value(std::move(*bytes)));
    }
    if (handshake.metadata_size) root.emplace_back("metadata_size", integer(*handshake.metadata_size));
    if (handshake.upload_only) root.emplace_back("upload_only", integer(*handshake.upload_only ? 1 : 0));
    if (handshake.prefers_encryption) root.emplace_back("e", integer(*handshake.prefers_encryption ? 1 : 0));
    return bencode::encode(Value(std::move(root)));
}

ExtendedHandshake our_handshake(std::string client, std::uint32_t request_queue,
                                std::optional<std::uint16_t> listen_port, std::optional<std::string> their_ip,
                                std::optional<std::uint32_t> metadata_size) {
    ExtendedHandshake handshake;
    handshake.extensions.emplace(std::string(kUtMetadata), kOurUtMetadataId);
    handshake.extensions.emplace(std::string(kUtPex), kOurUtPexId);
    handshake.client = std::move(client);
    handshake.request_queue = std::clamp<std::uint32_t>(request_queue, 1, kMaxRequestQueue);
    if (listen_port && *listen_port != 0) handshake.listen_port = listen_port;
    handshake.your_ip = std::move(their_ip);
    handshake.metadata_size = metadata_size;
    return handshake;
}

// --- ut_metadata ---

std::uint32_t metadata_piece_count(std::uint32_t total_size) {
    return total_size / kMetadataPieceSize + (total_size % kMetadataPieceSize != 0 ? 1 : 0);
}

std::uint32_t metadata_piece_size(std::uint32_t total_size, std::uint32_t piece) {
    if (piece >= metadata_piece_count(total_size)) return 0;
    const std::uint64_t begin = std::uint64_t{piece} * kMetadataPieceSize;
    return static_cast<std::uint32_t>(std::min<std::uint64_t>(kMetadataPieceSize, total_size - begin));
}

Result<MetadataMessage> decode_metadata(std::string_view payload, std::uint32_t max_metadata_size) {
    if (payload.size() > kMaxMetadataMessage) {
        return make_error(cat("ut_metadata message of ", std::to_string(payload.size()), " bytes is over ",
                              std::to_string(kMaxMetadataMessage)));
    }
    bencode::DecodeLimits limits;
    limits.max_depth = 32;
    auto split = leading_value_length(payload, limits);
    if (!split) {
        Error error = split.error();
        error.message = cat("ut_metadata message is not bencoded: ", error.message);
        return error;
    }
    const std::string_view head = payload.substr(0, split.value());
    const std::string_view tail = payload.substr(split.value());
    auto decoded = decode_dict(head, "ut_metadata message");
    if (!decoded) return decoded.error();
    const Value& root = decoded.value().value;

    auto type = optional_int(root, "msg_type", "ut_metadata message");
    if (!type) return type.error();
    if (!type.value()) return make_error("ut_metadata message has no msg_type");
    MetadataMessage message;
    switch (*type.value()) {
        case 0: message.type = MetadataType::request; break;
        case 1: message.type = MetadataType::data; break;
        case 2: message.type = MetadataType::reject; break;
        default: message.type = MetadataType::unknown; return message;
    }
    auto piece = optional_int(root, "piece", "ut_metadata message");
    if (!piece) return piece.error();
    if (!piece.value()) return make_error("ut_metadata message has no piece");
    const std::int64_t index = *piece.value();
    const std::uint32_t most_pieces = metadata_piece_count(max_metadata_size);
    if (index < 0 || index >= std::int64_t{most_pieces}) {
        return make_error(cat("ut_metadata piece ", std::to_string(index), " is beyond any metadata we take"));
    }
    message.piece = static_cast<std::uint32_t>(index);
    if (message.type != MetadataType::data) {
        if (!tail.empty()) {
            return make_error(cat("ut_metadata ", message.type == MetadataType::request ? "request" : "reject",
                                  " followed by ", std::to_string(tail.size()), " bytes"));
        }
        return message;
    }
    auto total = optional_int(root, "total_size", "ut_metadata data");
    if (!total) return total.error();
    if (!total.value()) return make_error("ut_metadata data has no total_size");
    if (*total.value() < 1 || *total.value() > std::int64_t{max_metadata_size}) {
        return make_error(cat("ut_metadata total_size ", std::to_string(*total.value()), " is not 1..",
                              std::to_string(max_metadata_size)));
    }
    message.total_size = static_cast<std::uint32_t>(*total.value());
    const std::uint32_t expected = metadata_piece_size(message.total_size, message.piece);
    if (expected == 0) {
        return make_error(cat("ut_metadata piece ", std::to_string(message.piece), " is beyond total_size ",
                              std::to_string(message.total_size)));
    }
    if (tail.size() != expected) {
        return make_error(cat("ut_metadata piece ", std::to_string(message.piece), " carries ",
                              std::to_string(tail.size()), " bytes, not ", std::to_string(expected)));
    }
    message.data = tail;
    return message;
}

namespace {
std::string metadata_header(std::int64_t type, std::uint32_t piece, std::optional<std::uint32_t> total_size) {
    Dict root{{"msg_type", integer(type)}, {"piece", integer(piece)}};
    if (total_size) root.emplace_back("total_size", integer(*total_size));
    return bencode::encode(Value(std::move(root)));
}
}  // namespace

std::string encode_metadata_request(std::uint32_t piece) { return metadata_header(0, piece, std::nullopt); }
std::string encode_metadata_reject(std::uint32_t piece) { return metadata_header(2, piece, std::nullopt); }

std::string encode_metadata_data(std::uint32_t piece, std::uint32_t total_size, std::string_view data) {
    std::string out = metadata_header(1, piece, total_size);
    out += data;
    return out;
}

std::string answer_metadata_request(std::string_view metadata, std::uint32_t piece) {
    if (metadata.empty() || metadata.size() > kMaxMetadataSize) return encode_metadata_reject(piece);
    const auto total = static_cast<std::uint32_t>(metadata.size());
    const std::uint32_t size = metadata_piece_size(total, piece);
    if (size == 0) return encode_metadata_reject(piece);
    return encode_metadata_data(piece, total,
                                metadata.substr(std::size_t{piece} * kMetadataPieceSize, size));
}

// --- the assembler ---

MetadataAssembler::MetadataAssembler(const Sha1Digest& info_hash, std::uint32_t total_size)
    : info_hash_(info_hash), total_size_(total_size), sources_(metadata_piece_count(total_size)) {}

Result<MetadataAssembler> MetadataAssembler::create(const Sha1Digest& info_hash, std::uint64_t total_size,
                                                    std::uint32_t max_metadata_size) {
    if (total_size < 1 || total_size > max_metadata_size) {
        return make_error(cat("metadata size ", std::to_string(total_size), " is not 1..",
                              std::to_string(max_metadata_size)));
    }
    return MetadataAssembler(info_hash, static_cast<std::uint32_t>(total_size));
}

std::vector<std::uint32_t> MetadataAssembler::missing() const {
    std::vector<std::uint32_t> out;
    for (std::uint32_t i = 0; i < sources_.size(); ++i) {
        if (sources_[i].empty()) out.push_back(i);
    }
    return out;
}

Result<MetadataAssembler::Added> MetadataAssembler::add(const MetadataMessage& message, std::string_view peer) {
    if (message.type != MetadataType::data) return make_error("not a ut_metadata data message");
    return add(message.piece, message.total_size, message.data, peer);
}

Result<MetadataAssembler::Added> MetadataAssembler::add(std::uint32_t piece, std::uint32_t total_size,
                                                        std::string_view data, std::string_view peer) {
    if (spent_) return make_error("metadata already assembled and verified");
    if (total_size != total_size_) {
        return make_error(cat("peer says the metadata is ", std::to_string(total_size), " bytes; it is ",
                              std::to_string(total_size_)));
    }
    const std::uint32_t expected = metadata_piece_size(total_size_, piece);
    if (expected == 0) {
        return make_error(cat("metadata piece ", std::to_string(piece), " is beyond its ",
                              std::to_string(sources_.size()), " pieces"));
    }
    if (data.size() != expected) {
        return make_error(cat("metadata piece ", std::to_string(piece), " is ", std::to_string(data.size()),
                              " bytes, not ", std::to_string(expected)));
    }
    Added added;
    if (!sources_[piece].empty()) {
        added.complete = complete();
        return added;
    }
    if (buffer_.empty()) buffer_.assign(total_size_, '\0');
    buffer_.replace(std::size_t{piece} * kMetadataPieceSize, data.size(), data);
    // An empty name would read as "missing": every sender has one.
    sources_[piece] = peer.empty() ? std::string("?") : std::string(peer);
    ++received_;
    added.stored = true;
    added.complete = complete();
    return added;
}

Result<MetadataAssembler::Finished> MetadataAssembler::finish() {
    if (spent_) return make_error("metadata already assembled and verified");
    if (!complete()) {
        return make_error(cat("metadata incomplete: ", std::to_string(sources_.size() - received_), " of ",
                              std::to_string(sources_.size()), " pieces missing"));
    }
    Finished finished;
    Sha1Hasher hasher;
    if (sha1(buffer_) == info_hash_) {
        finished.verified = true;
        std::set<std::string> liars;
        for (const auto& attempt : failed_attempts_) {
            for (std::uint32_t i = 0; i < attempt.size(); ++i) {
                const std::size_t begin = std::size_t{i} * kMetadataPieceSize;
                const Sha1Digest good = hasher.digest(buffer_.data() + begin, metadata_piece_size(total_size_, i));
                if (good != attempt[i].digest) liars.insert(attempt[i].peer);
            }
        }
        finished.liars.assign(liars.begin(), liars.end());
        finished.metadata = std::move(buffer_);
        buffer_.clear();
        spent_ = true;
        return finished;
    }
    std::set<std::string> suspects(sources_.begin(), sources_.end());
    finished.suspects.assign(suspects.begin(), suspects.end());
    std::vector<FailedPiece> attempt;
    attempt.reserve(sources_.size());
    for (std::uint32_t i = 0; i < sources_.size(); ++i) {
        const std::size_t begin = std::size_t{i} * kMetadataPieceSize;
        attempt.push_back(FailedPiece{hasher.digest(buffer_.data() + begin, metadata_piece_size(total_size_, i)),
                                      std::move(sources_[i])});
    }
    if (failed_attempts_.size() >= kMaxFailedAttempts) failed_attempts_.erase(failed_attempts_.begin());
    failed_attempts_.push_back(std::move(attempt));
    for (std::string& source : sources_) source.clear();
    received_ = 0;
    return finished;
}

// --- ut_pex ---

namespace {

Status read_peers(const Value& root, std::string_view key, std::string_view flags_key, bool ipv6,
                  std::vector<PexPeer>* added, std::vector<tracker::PeerAddress>* dropped, std::size_t& skipped) {
    const Value* list = root.find(key);
    if (list == nullptr) {
        if (!flags_key.empty() && root.find(flags_key) != nullptr && !root.find(flags_key)->is_string()) {
            return make_error(cat("ut_pex \"", flags_key, "\" is not a string"));
        }
        return ok_status();
    }
    if (!list->is_string()) return make_error(cat("ut_pex \"", key, "\" is not a string"));
    const std::string_view bytes = list->as_string();
    const std::size_t entry = ipv6 ? krpc::kCompactPeerV6 : krpc::kCompactPeerV4;
    if (bytes.size() % entry != 0) {
        return make_error(cat("ut_pex \"", key, "\" of ", std::to_string(bytes.size()), " bytes is not ",
                              std::to_string(entry), "-byte entries"));
    }
    const std::size_t count = bytes.size() / entry;
    std::string_view flags;
    if (!flags_key.empty()) {
        if (const Value* f = root.find(flags_key)) {
            if (!f->is_string()) return make_error(cat("ut_pex \"", flags_key, "\" is not a string"));
            flags = f->as_string();
            if (flags.size() != count) {
                return make_error(cat("ut_pex \"", flags_key, "\" has ", std::to_string(flags.size()),
                                      " flags for ", std::to_string(count), " peers"));
            }
        }
    }
    const std::size_t already = added != nullptr ? added->size() : dropped->size();
    if (already + count > kMaxPexReceived) {
        return make_error(cat("ut_pex message ", added != nullptr ? "adds" : "drops", " more than ",
                              std::to_string(kMaxPexReceived), " peers"));
    }
    for (std::size_t i = 0; i < count; ++i) {
        auto peer = krpc::decode_compact_peer(bytes.substr(i * entry, entry));
        if (!peer) return peer.error();  // cannot happen: the length is right
        if (peer.value().port == 0) {
            ++skipped;
            continue;
        }
        if (added != nullptr) {
            const auto flag = flags.empty() ? std::uint8_t{0} : static_cast<std::uint8_t>(flags[i]);
            added->push_back(PexPeer{std::move(peer).value(), flag});
        } else {
            dropped->push_back(std::move(peer).value());
        }
    }
    return ok_status();
}

}  // namespace

Result<PexMessage> decode_pex(std::string_view payload) {
    if (payload.size() > kMaxPexPayload) {
        return make_error(cat("ut_pex message of ", std::to_string(payload.size()), " bytes is over ",
                              std::to_string(kMaxPexPayload / 1024), " KiB"));
    }
    auto decoded = decode_dict(payload, "ut_pex message");
    if (!decoded) return decoded.error();
    const Value& root = decoded.value().value;
    PexMessage message;
    for (const bool ipv6 : {false, true}) {
        auto added = read_peers(root, ipv6 ? "added6" : "added", ipv6 ? "added6.f" : "added.f", ipv6,
                                &message.added, nullptr, message.skipped);
        if (!added) return added.error();
        auto dropped = read_peers(root, ipv6 ? "dropped6" : "dropped", "", ipv6, nullptr, &message.dropped,
                                  message.skipped);
        if (!dropped) return dropped.error();
    }
    return message;
}

Result<std::string> encode_pex(const PexMessage& message) {
    if (message.added.size() > kMaxPexSent || message.dropped.size() > kMaxPexSent) {
        return make_error(cat("a ut_pex message carries at most ", std::to_string(kMaxPexSent),
                              " added and as many dropped peers"));
    }
    std::string added[2], flags[2], dropped[2];
    for (const PexPeer& peer : message.added) {
        auto compact = krpc::encode_compact_peer(peer.address);
        if (!compact) return make_error(cat("ut_pex: \"", peer.address.ip, "\" is not a literal IP address"));
        const int v6 = compact->size() == krpc::kCompactPeerV6 ? 1 : 0;
        added[v6] += *compact;
        flags[v6].push_back(static_cast<char>(peer.flags));
    }
    for (const tracker::PeerAddress& peer : message.dropped) {
        auto compact = krpc::encode_compact_peer(peer);
        if (!compact) return make_error(cat("ut_pex: \"", peer.ip, "\" is not a literal IP address"));
        dropped[compact->size() == krpc::kCompactPeerV6 ? 1 : 0] += *compact;
    }
    Dict root{{"added", Value(std::move(added[0]))},
              {"added.f", Value(std::move(flags[0]))},
              {"dropped", Value(std::move(dropped[0]))}};
    if (!added[1].empty()) {
        root.emplace_back("added6", Value(std::move(added[1])));
        root.emplace_back("added6.f", Value(std::move(flags[1])));
    }
    if (!dropped[1].empty()) root.emplace_back("dropped6", Value(std::move(dropped[1])));
    return bencode::encode(Value(std::move(root)));
}

// --- dispatch ---

Result<Incoming> decode_incoming(std::string_view body, std::uint32_t max_metadata_size) {
    auto extended = split_extended(body);
    if (!extended) return extended.error();
    const std::string_view payload = extended.value().payload;
    switch (extended.value().id) {
        case kHandshakeId: {
            auto handshake = decode_handshake(payload, max_metadata_size);
            if (!handshake) return handshake.error();
            return Incoming(std::move(handshake).value());
        }
        case kOurUtMetadataId: {
            auto metadata = decode_metadata(payload, max_metadata_size);
            if (!metadata) return metadata.error();
            return Incoming(metadata.value());
        }
        case kOurUtPexId: {
            auto pex = decode_pex(payload);
            if (!pex) return pex.error();
            return Incoming(std::move(pex).value());
        }
        default: return Incoming(UnknownExtension{extended.value().id});
    }
}

}  // namespace pw::ext
