#include "core/lsd.hpp"

#include <algorithm>
#include <cctype>
#include <initializer_list>

namespace pw::lsd {

namespace {

// Joined piecewise: g++ 12 at -O3 sees a false -Wrestrict in `"literal" + std::string`.
std::string cat(std::initializer_list<std::string_view> parts) {
    std::string out;
    for (const auto part : parts) out.append(part);
    return out;
}

bool printable_token(std::string_view text) {
    return std::all_of(text.begin(), text.end(), [](char c) { return c > ' ' && c < 0x7f; });
}

std::string_view trim(std::string_view text) {
    while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
    while (!text.empty() && (text.back() == ' ' || text.back() == '\t' || text.back() == '\r')) text.remove_suffix(1);
    return text;
}

bool equals_nocase(std::string_view a, std::string_view b) {
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
               return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
           });
}

}  // namespace

std::string encode_announce(const Announce& announce) {
    std::string out = cat({"BT-SEARCH * HTTP/1.1\r\nHost: ", kGroupV4, ":", std::to_string(kPort), "\r\nPort: ",
                           std::to_string(announce.port), "\r\n"});
    const std::size_t count = std::min(announce.info_hashes.size(), kMaxInfoHashes);
    for (std::size_t i = 0; i < count; ++i) out += cat({"Infohash: ", to_hex(announce.info_hashes[i]), "\r\n"});
    if (!announce.cookie.empty() && announce.cookie.size() <= kMaxCookie && printable_token(announce.cookie)) {
        out += cat({"cookie: ", announce.cookie, "\r\n"});
    }
    out += "\r\n\r\n";
    return out;
}

Result<Announce> decode_announce(std::string_view datagram) {
    if (datagram.size() > kMaxDatagram) return make_error(cat({"LSD announce over ", std::to_string(kMaxDatagram), " bytes"}));
    const auto first_end = datagram.find('\n');
    if (first_end == std::string_view::npos || trim(datagram.substr(0, first_end)) != "BT-SEARCH * HTTP/1.1") {
        return make_error("not an LSD announce (no BT-SEARCH * HTTP/1.1 line)");
    }
    Announce announce;
    bool have_port = false;
    std::string_view rest = datagram.substr(first_end + 1);
    while (!rest.empty()) {
        const auto end = rest.find('\n');
        const std::string_view line = trim(rest.substr(0, end));
        rest = end == std::string_view::npos ? std::string_view{} : rest.substr(end + 1);
        if (line.empty()) continue;
        const auto colon = line.find(':');
        if (colon == std::string_view::npos) return make_error("LSD announce line without a ':'");
        const std::string_view name = trim(line.substr(0, colon));
        const std::string_view value = trim(line.substr(colon + 1));
        if (equals_nocase(name, "port")) {
            if (value.empty() || value.size() > 5 || !std::all_of(value.begin(), value.end(), [](char c) {
                    return c >= '0' && c <= '9';
                })) {
                return make_error("LSD announce port is not a number");
            }
            const int port = std::stoi(std::string(value));
            if (port < 1 || port > 65535) return make_error(cat({"LSD announce port ", std::to_string(port), " out of range"}));
            announce.port = static_cast<std::uint16_t>(port);
            have_port = true;
        } else if (equals_nocase(name, "infohash")) {
            if (announce.info_hashes.size() >= kMaxInfoHashes) {
                return make_error(cat({"LSD announce with more than ", std::to_string(kMaxInfoHashes), " info-hashes"}));
            }
            auto hash = value.size() == 40 ? sha1_from_hex(value) : std::nullopt;
            if (!hash) return make_error("LSD announce info-hash is not 40 hex characters");
            announce.info_hashes.push_back(*hash);
        } else if (equals_nocase(name, "cookie")) {
            if (value.size() > kMaxCookie || !printable_token(value)) return make_error("LSD announce cookie is malformed");
            announce.cookie.assign(value);
        }
        // Host and anything else: not needed.
    }
    if (!have_port) return make_error("LSD announce without a port");
    if (announce.info_hashes.empty()) return make_error("LSD announce without an info-hash");
    return announce;
}

}  // namespace pw::lsd
