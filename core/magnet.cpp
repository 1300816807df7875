#include "core/magnet.hpp"

#include <arpa/inet.h>
#include <sys/socket.h>

#include <algorithm>
#include <cctype>
#include <optional>

namespace pw::magnet {
namespace {

// Messages are built by appending: g++ 12 at -O3 reports `"literal" + std::string&&` as an
// overlapping memcpy (a -Wrestrict false positive) and a Release build stops there.
template <class... Parts>
std::string cat(const Parts&... parts) {
    std::string out;
    ((out += parts), ...);
    return out;
}

bool unreserved(unsigned char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

char lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

bool starts_with_nocase(std::string_view text, std::string_view prefix) {
    if (text.size() < prefix.size()) return false;
    for (std::size_t i = 0; i < prefix.size(); ++i) {
        if (lower(text[i]) != lower(prefix[i])) return false;
    }
    return true;
}

std::string lowered(std::string_view text) {
    std::string out(text);
    for (char& c : out) c = lower(c);
    return out;
}

// What a parameter's value is called in messages: "tr #3".
std::string nth(std::string_view key, std::size_t n) { return cat(key, " #", std::to_string(n)); }

// Strict percent-decoding of one value. `plus_is_space` for dn, where links from web forms
// write spaces as '+'; in URLs a '+' stays a '+'.
Result<std::string> percent_decode(std::string_view value, bool plus_is_space, std::string_view what) {
    std::string out;
    out.reserve(value.size());
    for (std::size_t i = 0; i < value.size(); ++i) {
        const char c = value[i];
        if (c == '%') {
            const int high = i + 1 < value.size() ? hex_value(value[i + 1]) : -1;
            const int low = i + 2 < value.size() ? hex_value(value[i + 2]) : -1;
            if (high < 0 || low < 0) {
                return make_error(cat(what, ": '%' is not followed by two hex digits"));
            }
            const char byte = static_cast<char>(high * 16 + low);
            if (byte == '\0') return make_error(cat(what, ": %00 (NUL) is not allowed"));
            out.push_back(byte);
            i += 2;
        } else if (c == '+' && plus_is_space) {
            out.push_back(' ');
        } else {
            out.push_back(c);
        }
    }
    return out;
}

// --- info-hash ---

std::optional<Sha1Digest> from_base32(std::string_view text) {
    if (text.size() != 32) return std::nullopt;
    Sha1Digest digest{};
    std::uint32_t buffer = 0;
    int bits = 0;
    std::size_t out = 0;
    for (const char raw : text) {
        const char c = lower(raw);
        std::uint32_t value = 0;
        if (c >= 'a' && c <= 'z') {
            value = static_cast<std::uint32_t>(c - 'a');
        } else if (c >= '2' && c <= '7') {
            value = static_cast<std::uint32_t>(c - '2' + 26);
        } else {
            return std::nullopt;
        }
        buffer = (buffer << 5) | value;
        bits += 5;
        if (bits >= 8) {
            bits -= 8;
            digest[out++] = static_cast<std::uint8_t>(buffer >> bits);
            buffer &= (1u << bits) - 1;
        }
    }
    return digest;  // 32 * 5 = 160 bits: exactly 20 bytes, nothing left over
}

Result<Sha1Digest> parse_btih(std::string_view hash) {
    if (auto hex = sha1_from_hex(hash)) return *hex;
    if (auto base32 = from_base32(hash)) return *base32;
    return make_error(cat("info-hash is not 40 hex or 32 base32 characters (", std::to_string(hash.size()),
                          " characters)"));
}

// --- URLs ---

// scheme "://" something, with no space or control character; returns the scheme lower-cased.
Result<std::string> url_scheme(std::string_view url, std::string_view what) {
    if (url.size() > kMaxUrl) {
        return make_error(cat(what, " is longer than ", std::to_string(kMaxUrl), " bytes"));
    }
    for (const char c : url) {
        const auto byte = static_cast<unsigned char>(c);
        if (byte <= 0x20 || byte == 0x7f) {
            return make_error(cat(what, " is not a URL: it holds a space or control character"));
        }
    }
    const std::size_t colon = url.find("://");
    bool scheme_ok = colon != std::string_view::npos && colon > 0 && colon + 3 < url.size();
    for (std::size_t i = 0; scheme_ok && i < colon; ++i) {
        const char c = lower(url[i]);
        scheme_ok = (c >= 'a' && c <= 'z') || (i > 0 && ((c >= '0' && c <= '9') || c == '+' || c == '-' || c == '.'));
    }
    if (!scheme_ok) return make_error(cat(what, " is not a URL (scheme://...)"));
    return lowered(url.substr(0, colon));
}

// --- x.pe ---

std::string address_text(int family, const void* raw) {
    char text[INET6_ADDRSTRLEN] = {};
    if (inet_ntop(family, raw, text, sizeof text) == nullptr) return {};
    return text;
}

bool valid_host_name(std::string_view host) {
    if (host.empty() || host.size() > 253) return false;
    std::size_t label = 0;
    for (std::size_t i = 0; i < host.size(); ++i) {
        const char c = host[i];
        if (c == '.') {
            if (label == 0 || host[i - 1] == '-') return false;
            label = 0;
            continue;
        }
        const char l = lower(c);
        const bool ok = (l >= 'a' && l <= 'z') || (l >= '0' && l <= '9') || (l == '-' && label > 0);
        if (!ok || ++label > 63) return false;
    }
    return label > 0 && host.back() != '-';
}

Result<Peer> parse_peer(std::string_view text, std::string_view what) {
    auto malformed = [&](std::string_view why) {
        return make_error(cat(what, " is not host:port or [IPv6]:port (", why, ")"));
    };
    std::string_view host;
    std::string_view port_text;
    bool bracketed = false;
    if (!text.empty() && text.front() == '[') {
        const std::size_t close = text.find(']');
        if (close == std::string_view::npos) return malformed("no ']'");
        if (close + 1 >= text.size() || text[close + 1] != ':') return malformed("no port");
        host = text.substr(1, close - 1);
        port_text = text.substr(close + 2);
        bracketed = true;
    } else {
        const std::size_t colon = text.rfind(':');
        if (colon == std::string_view::npos) return malformed("no port");
        host = text.substr(0, colon);
        port_text = text.substr(colon + 1);
        if (host.find(':') != std::string_view::npos) return malformed("an IPv6 address needs brackets");
    }
    if (port_text.empty() || port_text.size() > 5) return malformed("bad port");
    std::uint32_t port = 0;
    for (const char c : port_text) {
        if (c < '0' || c > '9') return malformed("bad port");
        port = port * 10 + static_cast<std::uint32_t>(c - '0');
    }
    if (port == 0 || port > 65535) return malformed("port out of 1..65535");
    Peer peer;
    peer.port = static_cast<std::uint16_t>(port);
    if (host.empty()) return malformed("no host");
    if (host.size() > 253) return malformed("a host name is at most 253 bytes");
    const std::string host_string(host);
    unsigned char raw[16] = {};
    if (bracketed) {
        if (inet_pton(AF_INET6, host_string.c_str(), raw) != 1) return malformed("not an IPv6 address");
        peer.host = address_text(AF_INET6, raw);
    } else if (inet_pton(AF_INET, host_string.c_str(), raw) == 1) {
        peer.host = address_text(AF_INET, raw);
    } else if (valid_host_name(host)) {
        peer.host = lowered(host);
    } else {
        return malformed("not an address or host name");
    }
    return peer;
}

std::string peer_text(const Peer& peer) {
    std::string out;
    const bool v6 = peer.host.find(':') != std::string::npos;
    if (v6) out += '[';
    out += peer.host;
    if (v6) out += ']';
    out += ':';
    out += std::to_string(peer.port);
    return out;
}

// --- so (BEP 53) ---

Result<std::uint32_t> parse_index(std::string_view digits, std::string_view what) {
    if (digits.empty() || digits.size() > 9) {
        return make_error(cat(what, " is not a list of file indices and ranges (e.g. 0,2,4-6)"));
    }
    std::uint32_t value = 0;
    for (const char c : digits) {
        if (c < '0' || c > '9') {
            return make_error(cat(what, " is not a list of file indices and ranges (e.g. 0,2,4-6)"));
        }
        value = value * 10 + static_cast<std::uint32_t>(c - '0');
    }
    if (value > kMaxFileIndex) {
        return make_error(cat(what, ": file index ", std::to_string(value), " is over ",
                              std::to_string(kMaxFileIndex)));
    }
    return value;
}

Status parse_select_only(std::string_view text, std::string_view what, std::vector<FileRange>& out) {
    std::size_t begin = 0;
    while (begin <= text.size()) {
        std::size_t end = text.find(',', begin);
        if (end == std::string_view::npos) end = text.size();
        const std::string_view item = text.substr(begin, end - begin);
        if (out.size() >= kMaxSelectRanges) {
            return make_error(cat(what, " holds more than ", std::to_string(kMaxSelectRanges), " items"));
        }
        const std::size_t dash = item.find('-');
        auto first = parse_index(item.substr(0, dash), what);
        if (!first) return first.error();
        FileRange range{first.value(), first.value()};
        if (dash != std::string_view::npos) {
            auto last = parse_index(item.substr(dash + 1), what);
            if (!last) return last.error();
            if (last.value() < range.first) {
                return make_error(cat(what, ": range ", item, " runs backwards"));
            }
            range.last = last.value();
        }
        out.push_back(range);
        begin = end + 1;
    }
    return ok_status();
}

// --- display name ---

void append_utf8(std::string& out, std::uint32_t code_point) {
    if (code_point < 0x80) {
        out.push_back(static_cast<char>(code_point));
    } else if (code_point < 0x800) {
        out.push_back(static_cast<char>(0xC0 | (code_point >> 6)));
        out.push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
    } else if (code_point < 0x10000) {
        out.push_back(static_cast<char>(0xE0 | (code_point >> 12)));
        out.push_back(static_cast<char>(0x80 | ((code_point >> 6) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
    } else {
        out.push_back(static_cast<char>(0xF0 | (code_point >> 18)));
        out.push_back(static_cast<char>(0x80 | ((code_point >> 12) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | ((code_point >> 6) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
    }
}

// The next code point of `text` at `i` (advancing i), or nullopt for an invalid sequence
// (overlong, surrogate, beyond U+10FFFF, truncated), after which i has moved past one byte.
std::optional<std::uint32_t> next_code_point(std::string_view text, std::size_t& i) {
    const auto lead = static_cast<unsigned char>(text[i]);
    if (lead < 0x80) {
        ++i;
        return lead;
    }
    // Sequence length, the lead byte's payload bits, and the least value that needs it.
    struct Form {
        unsigned char mask, pattern;
        std::size_t length;
        std::uint32_t minimum;
    };
    static constexpr Form kForms[] = {{0xE0, 0xC0, 2, 0x80}, {0xF0, 0xE0, 3, 0x800}, {0xF8, 0xF0, 4, 0x10000}};
    const Form* form = nullptr;
    for (const Form& candidate : kForms) {
        if ((lead & candidate.mask) == candidate.pattern) form = &candidate;
    }
    if (form == nullptr) {
        ++i;
        return std::nullopt;
    }
    const std::size_t length = form->length;
    const std::uint32_t minimum = form->minimum;
    std::uint32_t value = lead & static_cast<unsigned char>(~form->mask);
    if (i + length > text.size()) {
        ++i;
        return std::nullopt;
    }
    for (std::size_t k = 1; k < length; ++k) {
        const auto byte = static_cast<unsigned char>(text[i + k]);
        if ((byte & 0xC0) != 0x80) {
            ++i;
            return std::nullopt;
        }
        value = (value << 6) | (byte & 0x3Fu);
    }
    if (value < minimum || value > 0x10FFFF || (value >= 0xD800 && value <= 0xDFFF)) {
        ++i;
        return std::nullopt;
    }
    i += length;
    return value;
}

bool unsafe_to_display(std::uint32_t c) {
    return c < 0x20 || (c >= 0x7F && c <= 0x9F) ||   // C0, DEL, C1 controls
           (c >= 0x202A && c <= 0x202E) ||            // bidirectional embeddings, overrides
           (c >= 0x2066 && c <= 0x2069) ||            // bidirectional isolates
           c == 0x200E || c == 0x200F ||              // direction marks
           c == 0x2028 || c == 0x2029;                // line and paragraph separators
}

std::string display_text(std::string_view raw) {
    constexpr std::uint32_t kReplacement = 0xFFFD;
    std::string out;
    std::size_t i = 0;
    while (i < raw.size()) {
        const auto code_point = next_code_point(raw, i);
        const std::uint32_t shown = code_point && !unsafe_to_display(*code_point) ? *code_point : kReplacement;
        std::string one;
        append_utf8(one, shown);
        if (out.size() + one.size() > kMaxDisplayName) break;
        out += one;
    }
    return out;
}

// --- the parameters ---

// "tr", "tr.1", "tr.22" all name tr.
bool key_is(std::string_view key, std::string_view name) {
    if (key == name) return true;
    if (key.size() <= name.size() + 1 || key.substr(0, name.size()) != name || key[name.size()] != '.') {
        return false;
    }
    const std::string_view digits = key.substr(name.size() + 1);
    return digits.size() <= 4 &&
           std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; });
}

struct Parser {
    MagnetLink link;
    std::size_t dropped_warnings = 0;
    std::optional<Sha1Digest> btih;
    bool saw_btmh = false;
    bool saw_dn = false;
    std::size_t tr_count = 0;
    std::size_t ws_count = 0;
    std::size_t pe_count = 0;
    std::size_t so_count = 0;
    std::size_t trackers_over = 0;
    std::size_t peers_over = 0;
    std::size_t seeds_over = 0;

    void warn(std::string message) {
        if (link.warnings.size() < kMaxWarnings) {
            link.warnings.push_back(std::move(message));
        } else {
            ++dropped_warnings;
        }
    }

    Status exact_topic(std::string_view value) {
        if (starts_with_nocase(value, "urn:btih:")) {
            auto hash = parse_btih(value.substr(9));
            if (!hash) return hash.error();
            if (btih && *btih != hash.value()) {
                return make_error("two different xt=urn:btih info-hashes: which torrent is meant is ambiguous");
            }
            btih = hash.value();
        } else if (starts_with_nocase(value, "urn:btmh:")) {
            saw_btmh = true;  // a v2 (multihash) info-hash: used only to name the refusal
        }
        // Other URNs (urn:sha1:, urn:ed2k:, urn:tree:tiger:, ...) name other networks' hashes.
        return ok_status();
    }

    Status tracker(std::string_view raw) {
        const std::string what = nth("tr", ++tr_count);
        if (raw.empty()) {
            warn(cat(what, " is empty: left out"));
            return ok_status();
        }
        auto url = percent_decode(raw, false, what);
        if (!url) return url.error();
        auto scheme = url_scheme(url.value(), what);
        if (!scheme) return scheme.error();
        if (scheme.value() != "http" && scheme.value() != "https" && scheme.value() != "udp") {
            warn(cat(what, ": ", scheme.value(), ":// trackers are not supported: left out"));
            return ok_status();
        }
        if (std::find(link.trackers.begin(), link.trackers.end(), url.value()) != link.trackers.end()) {
            return ok_status();
        }
        if (link.trackers.size() >= kMaxTrackers) {
            ++trackers_over;
            return ok_status();
        }
        link.trackers.push_back(std::move(url).value());
        return ok_status();
    }

    Status web_seed(std::string_view raw) {
        const std::string what = nth("ws", ++ws_count);
        if (raw.empty()) {
            warn(cat(what, " is empty: left out"));
            return ok_status();
        }
        auto url = percent_decode(raw, false, what);
        if (!url) return url.error();
        auto scheme = url_scheme(url.value(), what);
        if (!scheme) return scheme.error();
        if (scheme.value() != "http" && scheme.value() != "https") {
            warn(cat(what, ": ", scheme.value(), ":// web seeds are not supported: left out"));
            return ok_status();
        }
        if (std::find(link.web_seeds.begin(), link.web_seeds.end(), url.value()) != link.web_seeds.end()) {
            return ok_status();
        }
        if (link.web_seeds.size() >= kMaxWebSeeds) {
            ++seeds_over;
            return ok_status();
        }
        link.web_seeds.push_back(std::move(url).value());
        return ok_status();
    }

    Status peer(std::string_view raw) {
        const std::string what = nth("x.pe", ++pe_count);
        if (raw.empty()) {
            warn(cat(what, " is empty: left out"));
            return ok_status();
        }
        auto text = percent_decode(raw, false, what);
        if (!text) return text.error();
        auto parsed = parse_peer(text.value(), what);
        if (!parsed) return parsed.error();
        if (std::find(link.peers.begin(), link.peers.end(), parsed.value()) != link.peers.end()) {
            return ok_status();
        }
        if (link.peers.size() >= kMaxPeers) {
            ++peers_over;
            return ok_status();
        }
        link.peers.push_back(std::move(parsed).value());
        return ok_status();
    }

    Status parameter(std::string_view key, std::string_view value) {
        if (key_is(key, "xt")) {
            auto decoded = percent_decode(value, false, "xt");
            if (!decoded) return decoded.error();
            return exact_topic(decoded.value());
        }
        if (key == "dn") {
            auto decoded = percent_decode(value, true, "dn");
            if (!decoded) return decoded.error();
            if (!saw_dn) link.display_name = display_text(decoded.value());
            saw_dn = true;
            return ok_status();
        }
        if (key_is(key, "tr")) return tracker(value);
        if (key_is(key, "ws")) return web_seed(value);
        if (key == "x.pe") return peer(value);
        if (key == "so") {
            const std::string what = nth("so", ++so_count);
            auto decoded = percent_decode(value, false, what);
            if (!decoded) return decoded.error();
            return parse_select_only(decoded.value(), what, link.select_only);
        }
        return ok_status();  // xl, as, xs, kt, mt, tr.* of other kinds: not ours
    }

    Result<MagnetLink> finish() {
        if (!btih) {
            if (saw_btmh) {
                return make_error(
                    "a BitTorrent v2-only magnet link (xt=urn:btmh): piecework speaks v1 and needs "
                    "xt=urn:btih");
            }
            return make_error("no xt=urn:btih info-hash in the magnet link");
        }
        link.info_hash = *btih;
        if (trackers_over > 0) {
            warn(cat(std::to_string(trackers_over), " trackers beyond the first ",
                     std::to_string(kMaxTrackers), " left out"));
        }
        if (peers_over > 0) {
            warn(cat(std::to_string(peers_over), " x.pe peers beyond the first ", std::to_string(kMaxPeers),
                     " left out"));
        }
        if (seeds_over > 0) {
            warn(cat(std::to_string(seeds_over), " web seeds beyond the first ",
                     std::to_string(kMaxWebSeeds), " left out"));
        }
        if (dropped_warnings > 0 && !link.warnings.empty()) {
            link.warnings.back() = cat("... and ", std::to_string(dropped_warnings + 1), " more warnings");
        }
        return std::move(link);
    }
};

}  // namespace

std::vector<std::vector<std::string>> MagnetLink::tracker_tiers() const {
    std::vector<std::vector<std::string>> tiers;
    tiers.reserve(trackers.size());
    for (const std::string& url : trackers) tiers.push_back({url});
    return tiers;
}

bool is_magnet(std::string_view text) {
    constexpr std::string_view kScheme = "magnet:";
    if (text.size() < kScheme.size()) return false;
    for (std::size_t i = 0; i < kScheme.size(); ++i) {
        if (std::tolower(static_cast<unsigned char>(text[i])) != kScheme[i]) return false;
    }
    return true;
}

Result<MagnetLink> parse_magnet(std::string_view uri) {
    if (!starts_with_nocase(uri, "magnet:")) return make_error("not a magnet link (it must start with magnet:?)");
    if (uri.size() > kMaxLength) {
        return make_error(cat("magnet link is longer than ", std::to_string(kMaxLength / 1024), " KiB"));
    }
    for (std::size_t i = 0; i < uri.size(); ++i) {
        const auto byte = static_cast<unsigned char>(uri[i]);
        if (byte < 0x20 || byte == 0x7f) {
            return make_error("magnet link holds a control character", i);
        }
    }
    std::string_view query = uri.substr(7);
    if (query.empty() || query.front() != '?') return make_error("not a magnet link (it must start with magnet:?)");
    query.remove_prefix(1);
    if (const std::size_t hash = query.find('#'); hash != std::string_view::npos) query = query.substr(0, hash);

    Parser parser;
    std::size_t parameters = 0;
    std::size_t begin = 0;
    while (begin <= query.size()) {
        std::size_t end = query.find('&', begin);
        if (end == std::string_view::npos) end = query.size();
        const std::string_view pair = query.substr(begin, end - begin);
        begin = end + 1;
        if (pair.empty()) continue;
        if (++parameters > kMaxParameters) {
            return make_error(cat("magnet link has more than ", std::to_string(kMaxParameters), " parameters"));
        }
        const std::size_t equals = pair.find('=');
        const std::string_view key = pair.substr(0, equals);
        const std::string_view value = equals == std::string_view::npos ? std::string_view() : pair.substr(equals + 1);
        auto status = parser.parameter(key, value);
        if (!status) return status.error();
    }
    return parser.finish();
}

std::string percent_encode(std::string_view bytes) {
    static constexpr char kHex[] = "0123456789ABCDEF";
    std::string out;
    out.reserve(bytes.size());
    for (const char c : bytes) {
        const auto byte = static_cast<unsigned char>(c);
        if (unreserved(byte)) {
            out.push_back(c);
        } else {
            out.push_back('%');
            out.push_back(kHex[byte >> 4]);
            out.push_back(kHex[byte & 0x0F]);
        }
    }
    return out;
}

std::string make_magnet(const MagnetLink& link) {
    std::string out("magnet:?xt=urn:btih:");
    out += to_hex(link.info_hash);
    if (!link.display_name.empty()) {
        out += "&dn=";
        out += percent_encode(link.display_name);
    }
    for (const std::string& url : link.trackers) {
        out += "&tr=";
        out += percent_encode(url);
    }
    for (const std::string& url : link.web_seeds) {
        out += "&ws=";
        out += percent_encode(url);
    }
    // Written as they are: a checked host name or IP literal and a port hold nothing that
    // needs escaping, and libtorrent (2.0) does not percent-decode x.pe.
    for (const Peer& peer : link.peers) {
        out += "&x.pe=";
        out += peer_text(peer);
    }
    if (!link.select_only.empty()) {
        out += "&so=";
        for (std::size_t i = 0; i < link.select_only.size(); ++i) {
            if (i > 0) out += ',';
            out += std::to_string(link.select_only[i].first);
            if (link.select_only[i].last != link.select_only[i].first) {
                out += '-';
                out += std::to_string(link.select_only[i].last);
            }
        }
    }
    return out;
}

}  // namespace pw::magnet
