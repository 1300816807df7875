#pragma once
// The verifier's judgement of one piece, as a pure function: no sockets, no state (the hasher
// only saves OpenSSL's set-up per piece).
#include <cstdint>
#include <span>

#include "core/metainfo.hpp"
#include "core/result.hpp"
#include "core/sha1.hpp"

namespace pw::verifier {

// Accepts the piece only when its index exists, its size is exactly the piece's size and its
// SHA-1 matches the torrent's hash. The error says which check failed, for the log.
Status check_piece(const Torrent& torrent, std::uint32_t piece,
                   std::span<const std::uint8_t> bytes, Sha1Hasher& hasher);

}  // namespace pw::verifier
