#include "peer_worker/torrent_context.hpp"

#include <algorithm>

namespace pw::peer_worker {

void TorrentContext::learn_info(const Torrent& torrent) {
    geometry = PieceGeometry(torrent.total_size(), torrent.piece_length());
    parser_limits.max_message = std::max(kBlockSize + 9, geometry->bitfield_bytes() + 1);
    parser_limits.geometry = geometry;
    parser_limits.check_requests = false;
    ours = LocalPieces(geometry->piece_count());
    is_private = torrent.is_private();
    fetch.reset();
    name = torrent.name();
}

}  // namespace pw::peer_worker
