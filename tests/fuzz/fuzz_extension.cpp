// Extended messages (BEP 10, 9, 11) as a peer sends them: the body after message id 20, its
// first byte the extended id. Nothing may crash; what decodes must hold to its bounds and
// survive encode -> decode. A ut_metadata data message also goes through the assembler, which
// must verify metadata whose SHA-1 it was given and refuse it under another info-hash.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <variant>

#include "core/extension.hpp"
#include "core/sha1.hpp"

namespace {

using namespace pw::ext;

void check_handshake(const ExtendedHandshake& handshake) {
    if (handshake.extensions.size() > kMaxExtensionNames) __builtin_trap();
    if (handshake.metadata_size && (*handshake.metadata_size < 1 || *handshake.metadata_size > kMaxMetadataSize)) {
        __builtin_trap();
    }
    if (handshake.request_queue && (*handshake.request_queue < 1 || *handshake.request_queue > kMaxRequestQueue)) {
        __builtin_trap();
    }
    if (handshake.client && handshake.client->size() > kMaxClientName) __builtin_trap();
    auto again = decode_handshake(encode_handshake(handshake));
    if (!again.ok() || !(again.value() == handshake)) __builtin_trap();
}

void check_metadata(const MetadataMessage& message) {
    switch (message.type) {
        case MetadataType::request: {
            auto again = decode_metadata(encode_metadata_request(message.piece));
            if (!again.ok() || again.value().piece != message.piece) __builtin_trap();
            break;
        }
        case MetadataType::reject: {
            auto again = decode_metadata(encode_metadata_reject(message.piece));
            if (!again.ok() || again.value().type != MetadataType::reject) __builtin_trap();
            break;
        }
        case MetadataType::data: {
            if (message.data.size() != metadata_piece_size(message.total_size, message.piece)) __builtin_trap();
            // The decoded data is a view into the payload: keep the payload alive.
            const std::string payload = encode_metadata_data(message.piece, message.total_size, message.data);
            auto again = decode_metadata(payload);
            if (!again.ok() || again.value().data != message.data) __builtin_trap();
            // One piece that is the whole metadata: verified under its own hash, not another.
            for (const bool right : {true, false}) {
                const pw::Sha1Digest hash = pw::sha1(right ? message.data : std::string_view("other"));
                auto assembler = MetadataAssembler::create(hash, message.total_size);
                if (!assembler.ok()) __builtin_trap();
                auto added = assembler.value().add(message, "peer");
                if (!added.ok()) __builtin_trap();
                if (added.value().complete != (message.total_size == message.data.size())) __builtin_trap();
                if (!added.value().complete) break;
                auto finished = assembler.value().finish();
                if (!finished.ok()) __builtin_trap();
                const bool should = right || pw::sha1(message.data) == hash;
                if (finished.value().verified != should) __builtin_trap();
                if (!finished.value().verified && finished.value().suspects.size() != 1) __builtin_trap();
            }
            break;
        }
        case MetadataType::unknown: break;
    }
}

void check_pex(const PexMessage& message) {
    if (message.added.size() > kMaxPexReceived || message.dropped.size() > kMaxPexReceived) __builtin_trap();
    for (const PexPeer& peer : message.added) {
        if (peer.address.port == 0 || peer.address.ip.empty()) __builtin_trap();
    }
    if (message.added.size() > kMaxPexSent || message.dropped.size() > kMaxPexSent) return;
    auto encoded = encode_pex(message);
    if (!encoded.ok()) __builtin_trap();
    auto again = decode_pex(encoded.value());
    if (!again.ok() || again.value().added != message.added || again.value().dropped != message.dropped) {
        __builtin_trap();
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view body(reinterpret_cast<const char*>(data), size);
    auto incoming = decode_incoming(body);
    if (incoming.ok()) {
        if (const auto* handshake = std::get_if<ExtendedHandshake>(&incoming.value())) check_handshake(*handshake);
        if (const auto* metadata = std::get_if<MetadataMessage>(&incoming.value())) check_metadata(*metadata);
        if (const auto* pex = std::get_if<PexMessage>(&incoming.value())) check_pex(*pex);
    } else if (incoming.error().message.empty()) {
        __builtin_trap();
    }
    // The payload alone through every decoder, whatever the id said; a small metadata cap too.
    const std::string_view payload = size > 0 ? body.substr(1) : body;
    if (auto handshake = decode_handshake(payload); handshake.ok()) check_handshake(handshake.value());
    if (auto metadata = decode_metadata(payload); metadata.ok()) check_metadata(metadata.value());
    (void)decode_metadata(payload, 1 + (size > 0 ? data[0] : 0) * 97u);
    if (auto pex = decode_pex(payload); pex.ok()) check_pex(pex.value());
    return 0;
}
