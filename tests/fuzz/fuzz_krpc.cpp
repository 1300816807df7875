// DHT datagrams, as any host on the internet may send them. decode must never crash; what it
// accepts must hold to its bounds and survive encode -> decode unchanged (the canonical form
// is never longer than what came in). The same bytes are also read as compact nodes and peers.
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <variant>

#include "core/krpc.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using namespace pw::krpc;
    const std::string_view packet(reinterpret_cast<const char*>(data), size);

    // Read with a bound from the first byte too, so larger datagrams' paths run as well.
    const std::size_t bound = size > 0 && (data[0] & 1) != 0 ? std::numeric_limits<std::size_t>::max() : kMaxPacket;
    auto message = decode(packet, bound);
    if (message.ok()) {
        const Message& m = message.value();
        if (m.transaction.empty() || m.transaction.size() > kMaxTransactionId) __builtin_trap();
        if (m.version && m.version->size() > kMaxVersion) __builtin_trap();
        if (const auto* response = std::get_if<Response>(&m.body)) {
            if (response->nodes.size() > kMaxNodes || response->nodes6.size() > kMaxNodes) __builtin_trap();
            if (response->values && response->values->size() > kMaxValues) __builtin_trap();
            if (response->token && (response->token->empty() || response->token->size() > kMaxToken)) {
                __builtin_trap();
            }
        } else if (const auto* error = std::get_if<ErrorReply>(&m.body)) {
            if (error->message.size() > kMaxErrorMessage) __builtin_trap();
        } else if (const auto* query = std::get_if<Query>(&m.body)) {
            if (const auto* announce = std::get_if<AnnouncePeer>(&query->arguments)) {
                if (announce->token.empty() || announce->token.size() > kMaxToken) __builtin_trap();
                if (announce->port == 0 && !announce->implied_port) __builtin_trap();
            }
        }
        const std::string encoded = encode(m);
        if (encoded.size() > size) __builtin_trap();
        auto again = decode(encoded, bound);
        if (!again.ok() || !(again.value() == m)) __builtin_trap();
    } else if (message.error().message.empty()) {
        __builtin_trap();
    }

    for (const bool ipv6 : {false, true}) {
        auto nodes = decode_compact_nodes(packet, ipv6, std::numeric_limits<std::size_t>::max());
        if (nodes.ok()) {
            auto encoded = encode_compact_nodes(nodes.value(), ipv6);
            if (!encoded.ok() || encoded.value() != packet) __builtin_trap();
        }
    }
    auto peer = decode_compact_peer(packet);
    if (peer.ok() && encode_compact_peer(peer.value()) != std::string(packet)) __builtin_trap();
    if (size >= 60) {
        NodeId a{}, b{}, c{};
        for (std::size_t i = 0; i < 20; ++i) {
            a[i] = data[i];
            b[i] = data[20 + i];
            c[i] = data[40 + i];
        }
        // The metric: symmetric, zero only to itself, and a strict order.
        if (distance(a, b) != distance(b, a)) __builtin_trap();
        if (shared_prefix_bits(a, b) == 160 && a != b) __builtin_trap();
        if (closer(a, b, c) && closer(a, c, b)) __builtin_trap();
    }
    return 0;
}
