// The same bytes are offered as an HTTP body and as UDP connect and announce replies. The
// transaction id is taken from the packet itself half the time so the fuzzer gets past the
// transaction check, and from elsewhere the other half so the mismatch path runs too.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "core/tracker_codec.hpp"

namespace {

std::uint32_t read_u32(const std::uint8_t* p) {
    return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) |
           (std::uint32_t{p[2]} << 8) | std::uint32_t{p[3]};
}

void check_response(const pw::tracker::AnnounceResponse& response) {
    const std::int64_t interval = pw::tracker::clamp_interval(response);
    if (interval < 30 || interval > 3600) __builtin_trap();
    for (const auto& peer : response.peers) {
        if (peer.port == 0 || peer.ip.empty()) __builtin_trap();
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view body(reinterpret_cast<const char*>(data), size);
    auto http = pw::tracker::parse_http_response(body);
    if (http.ok()) {
        check_response(http.value());
        if (http.value().tracker_id) {
            pw::tracker::AnnounceRequest request;
            request.tracker_id = http.value().tracker_id;
            (void)pw::tracker::build_announce_url("http://127.0.0.1/announce", request);
        }
    }

    const std::span<const std::uint8_t> packet(data, size);
    const std::uint32_t echoed = size >= 8 ? read_u32(data + 4) : 0;
    const std::uint32_t other = size >= 4 ? read_u32(data) ^ 0x5A5A5A5A : 1;
    for (const std::uint32_t transaction : {echoed, other}) {
        (void)pw::tracker::parse_udp_connect(packet, transaction);
        for (const bool ipv6 : {false, true}) {
            auto udp = pw::tracker::parse_udp_announce(packet, transaction, ipv6);
            if (udp.ok()) check_response(udp.value());
        }
    }
    return 0;
}
