#include "verifier/piece_check.hpp"

#include <string>

#include "core/sha1.hpp"

namespace pw::verifier {

Status check_piece(const Torrent& torrent, std::uint32_t piece,
                   std::span<const std::uint8_t> bytes, Sha1Hasher& hasher) {
    if (piece >= torrent.piece_count()) {
        return make_error("piece " + std::to_string(piece) + " does not exist (the torrent has " +
                          std::to_string(torrent.piece_count()) + ")");
    }
    const PieceIndex index{piece};
    const std::uint32_t expected = torrent.piece_size(index);
    if (bytes.size() != expected) {
        return make_error("piece " + std::to_string(piece) + " has " +
                          std::to_string(bytes.size()) + " bytes, expected " +
                          std::to_string(expected));
    }
    const Sha1Digest digest = hasher.digest(bytes.data(), bytes.size());
    if (digest != torrent.piece_hash(index)) {
        return make_error("piece " + std::to_string(piece) + " hash mismatch: got " +
                          to_hex(digest) + ", expected " + to_hex(torrent.piece_hash(index)));
    }
    return ok_status();
}

}  // namespace pw::verifier
