// LSD announces as anyone on the LAN may multicast them. decode_announce must never crash;
// what it accepts holds to its bounds and comes back the same through encode_announce.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "core/lsd.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using namespace pw::lsd;
    const std::string_view datagram(reinterpret_cast<const char*>(data), size);
    auto decoded = decode_announce(datagram);
    if (!decoded.ok()) {
        if (decoded.error().message.empty()) __builtin_trap();
        return 0;
    }
    if (decoded->port == 0 || decoded->info_hashes.empty() || decoded->info_hashes.size() > kMaxInfoHashes ||
        decoded->cookie.size() > kMaxCookie) {
        __builtin_trap();
    }
    auto again = decode_announce(encode_announce(*decoded));
    if (!again.ok() || !(*again == *decoded)) __builtin_trap();
    return 0;
}
