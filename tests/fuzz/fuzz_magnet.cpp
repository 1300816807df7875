// Magnet links as users paste them and RPC clients send them. parse_magnet must never crash;
// what it accepts must hold to its bounds (trackers, peers, web seeds, a display name of valid
// UTF-8 within its length, a bounded list of warnings) and must come back unchanged from
// make_magnet, whenever that link is itself within the length parse_magnet takes.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/magnet.hpp"

namespace {

bool valid_utf8(std::string_view text) {
    std::size_t i = 0;
    while (i < text.size()) {
        const auto lead = static_cast<unsigned char>(text[i]);
        std::size_t length = lead < 0x80 ? 1 : (lead & 0xE0) == 0xC0 ? 2 : (lead & 0xF0) == 0xE0 ? 3
                                             : (lead & 0xF8) == 0xF0 ? 4 : 0;
        if (length == 0 || i + length > text.size()) return false;
        for (std::size_t k = 1; k < length; ++k) {
            if ((static_cast<unsigned char>(text[i + k]) & 0xC0) != 0x80) return false;
        }
        i += length;
    }
    return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using namespace pw::magnet;
    const std::string_view uri(reinterpret_cast<const char*>(data), size);
    auto parsed = parse_magnet(uri);
    if (!parsed.ok()) {
        if (parsed.error().message.empty()) __builtin_trap();
        return 0;
    }
    MagnetLink link = std::move(parsed).value();
    if (link.trackers.size() > kMaxTrackers || link.peers.size() > kMaxPeers ||
        link.web_seeds.size() > kMaxWebSeeds || link.select_only.size() > kMaxSelectRanges ||
        link.warnings.size() > kMaxWarnings || link.display_name.size() > kMaxDisplayName ||
        !valid_utf8(link.display_name)) {
        __builtin_trap();
    }
    for (const Peer& peer : link.peers) {
        if (peer.port == 0 || peer.host.empty()) __builtin_trap();
    }
    for (const FileRange& range : link.select_only) {
        if (range.first > range.last || range.last > kMaxFileIndex) __builtin_trap();
    }
    if (link.tracker_tiers().size() != link.trackers.size()) __builtin_trap();

    link.warnings.clear();
    const std::string again = make_magnet(link);
    if (again.size() > kMaxLength) return 0;
    auto reparsed = parse_magnet(again);
    if (!reparsed.ok()) __builtin_trap();
    if (!(reparsed.value() == link)) __builtin_trap();
    return 0;
}
