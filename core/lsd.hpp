#pragma once
// Local Service Discovery (BEP 14): the announce a client multicasts on its LAN so that
// others there find it without a tracker. A pure codec, no I/O; the tracker stage owns the
// socket. The datagram is an HTTP-like request:
//
//   BT-SEARCH * HTTP/1.1\r\n
//   Host: 239.192.152.143:6771\r\n
//   Port: <tcp port>\r\n
//   Infohash: <40 hex>\r\n       (one or more)
//   cookie: <ours>\r\n           (optional: tells our own announces apart)
//   \r\n\r\n
//
// decode() takes what BEP 14 and the clients that speak it send (header names in any case,
// LF or CRLF line ends) and refuses anything else with an Error that says what: not a
// BT-SEARCH, no or a bad port, no or a bad info-hash, over the bounds below.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.hpp"
#include "core/sha1.hpp"

namespace pw::lsd {

inline constexpr std::string_view kGroupV4 = "239.192.152.143";
inline constexpr std::uint16_t kPort = 6771;
inline constexpr std::size_t kMaxDatagram = 1400;
inline constexpr std::size_t kMaxInfoHashes = 16;  // per announce, sent or taken
inline constexpr std::size_t kMaxCookie = 64;

struct Announce {
    std::uint16_t port = 0;  // 1..65535
    std::vector<Sha1Digest> info_hashes;
    std::string cookie;  // printable, no spaces; empty: none
    friend bool operator==(const Announce&, const Announce&) = default;
};

// The datagram for `announce` (at most kMaxInfoHashes hashes are written; the cookie is left
// out when empty or not printable).
std::string encode_announce(const Announce& announce);
Result<Announce> decode_announce(std::string_view datagram);

}  // namespace pw::lsd
