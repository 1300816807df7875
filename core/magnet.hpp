#pragma once
// Magnet links (the magnet URI format of BEP 9, trackers as BEP 12 tiers, x.pe peers, ws web
// seeds, BEP 53 select-only): a pure parser and an encoder. No I/O, no name resolution.
//
// piecework speaks BitTorrent v1 only: a magnet is usable when it carries a v1 info-hash
// (xt=urn:btih:, 40 hex or 32 base32 characters). A v2-only magnet (xt=urn:btmh: alone) is
// refused with a message saying so; a hybrid one (btih and btmh) is read by its btih.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/result.hpp"
#include "core/sha1.hpp"

namespace pw::magnet {

// Bounds on what a magnet may hold. A link over a bound in size or parameter count is
// refused; extra trackers, peers and web seeds beyond their caps are left out with a warning
// (tracker lists of a hundred URLs are common, and the first ones are the best ones).
inline constexpr std::size_t kMaxLength = 64 * 1024;       // the whole URI
inline constexpr std::size_t kMaxParameters = 1024;        // key=value pairs
inline constexpr std::size_t kMaxTrackers = 100;
inline constexpr std::size_t kMaxPeers = 100;
inline constexpr std::size_t kMaxWebSeeds = 32;
inline constexpr std::size_t kMaxUrl = 2048;               // one tracker or web seed URL
inline constexpr std::size_t kMaxDisplayName = 1024;       // bytes, after sanitizing
inline constexpr std::size_t kMaxSelectRanges = 1024;      // BEP 53 items
inline constexpr std::uint32_t kMaxFileIndex = 999'999;    // below MetainfoLimits::max_files
inline constexpr std::size_t kMaxWarnings = 16;

// An x.pe peer: a literal IPv4 or IPv6 address (canonical text, IPv6 without brackets) or a
// host name (letters, digits, '-' and '.', lower-cased), and a port 1..65535.
struct Peer {
    std::string host;
    std::uint16_t port = 0;
    friend bool operator==(const Peer&, const Peer&) = default;
};

// BEP 53: an inclusive range of file indices, first <= last.
struct FileRange {
    std::uint32_t first = 0;
    std::uint32_t last = 0;
    friend bool operator==(const FileRange&, const FileRange&) = default;
};

struct MagnetLink {
    Sha1Digest info_hash{};
    // dn, percent-decoded ('+' is a space), for display only, never a file name: invalid UTF-8,
    // control characters and bidirectional overrides each become U+FFFD, and it is cut to
    // kMaxDisplayName bytes on a character boundary. Empty when the link has none.
    std::string display_name;
    // Every usable tr (http, https, udp), in the link's order, without repeats. BEP 12: each
    // is a tier of its own (see tracker_tiers()).
    std::vector<std::string> trackers;
    std::vector<Peer> peers;                 // x.pe, without repeats
    std::vector<std::string> web_seeds;      // ws (http, https), without repeats
    std::vector<FileRange> select_only;      // so (BEP 53), in the link's order
    // What was left out and why (unsupported tracker schemes, caps), at most kMaxWarnings.
    std::vector<std::string> warnings;

    // trackers as BEP 12 tiers: one tier per tracker, in order.
    std::vector<std::vector<std::string>> tracker_tiers() const;

    friend bool operator==(const MagnetLink&, const MagnetLink&) = default;
};

// Whether `text` is a magnet link rather than a .torrent file's bytes or a path: it starts
// with "magnet:" in any case (parse_magnet says whether it is a good one).
bool is_magnet(std::string_view text);

// Parses a magnet URI ("magnet:?" in any case, then key=value pairs joined by '&'; a '#'
// fragment is ignored). Strict percent-decoding: '%' must start two hex digits, and no value
// may decode to NUL; raw control characters are refused. Known keys: xt (also xt.1, xt.2, ...),
// dn, tr (also tr.1, ...), x.pe, ws, so; the others (xl, as, xs, kt, ...) are ignored.
// Errors name the problem: "not a magnet link", "no xt=urn:btih info-hash", "info-hash is not
// 40 hex or 32 base32 characters", a v2-only link, two different btih, a malformed tracker URL,
// x.pe or so, and the bounds above.
Result<MagnetLink> parse_magnet(std::string_view uri);

// The link of `link`: xt with the info-hash in lower-case hex, then dn, each tr, ws, x.pe and
// so, dn, tr and ws percent-encoded (all but RFC 3986's unreserved characters), x.pe and so as
// they are (libtorrent does not decode x.pe; neither needs escaping), so
// parse_magnet(make_magnet(link)) gives `link` back (its warnings aside) for any parsed link
// whose link stays within kMaxLength (escaping can make a link up to three times longer).
std::string make_magnet(const MagnetLink& link);

// Percent-encodes every byte but RFC 3986's unreserved ones (A-Z a-z 0-9 - . _ ~).
std::string percent_encode(std::string_view bytes);

}  // namespace pw::magnet
