#pragma once
// One torrent as a worker serves it. It exists from TorrentAdded (known by its info-hash) and
// takes peers from then on: until TorrentInfo gives its geometry they only fetch the info
// dictionary (BEP 9, MetadataFetch); TorrentRemoved drops it with its peers. Its peers are keyed by "ip:port" within it: the same address serving two torrents
// is two connections, one in each context. The worker's global limits (peers, piece memory,
// the batches' backpressure) live in the worker, not here.
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>

#include "core/geometry.hpp"
#include "core/metainfo.hpp"
#include "core/units.hpp"
#include "core/wire.hpp"
#include "peer_worker/local_pieces.hpp"
#include "peer_worker/metadata_fetch.hpp"
#include "peer_worker/peer_connection.hpp"
#include "peer_worker/piece_batches.hpp"
#include "peer_worker/rate_limit.hpp"

namespace pw::peer_worker {

struct TorrentContext {
    TorrentContext(TorrentId torrent, const Sha1Digest& hash, std::string display_name)
        : id(torrent), info_hash(hash), name(std::move(display_name)) {}
    TorrentContext(const TorrentContext&) = delete;
    TorrentContext& operator=(const TorrentContext&) = delete;

    // What the info dictionary tells a worker: the pieces' geometry and how large a peer's
    // messages may be (requests are left to the sessions, which answer bad ones with
    // reject_request where they can).
    void learn_info(const Torrent& torrent);
    bool has_info() const { return geometry.has_value(); }
    std::uint32_t piece_length() const { return geometry ? geometry->piece_length() : 0; }

    const TorrentId id;
    const Sha1Digest info_hash;
    std::string name;
    std::optional<PieceGeometry> geometry;  // with the info
    wire::ParserLimits parser_limits;
    // The info dictionary's bytes, served to peers that ask (BEP 9); empty before the info.
    std::string metadata;
    bool is_private = false;  // BEP 27: no peer exchange
    // Before the info: the dictionary being fetched from the peers, and whether the
    // orchestrator was handed it (it answers with TorrentInfo).
    std::optional<MetadataFetch> fetch;
    bool metadata_reported = false;

    // Bound to this context by the worker; every connection of the torrent holds a reference,
    // used only while the connection is open (the context closes them all before it goes).
    PeerConnection::Callbacks callbacks;
    std::unordered_map<std::string, std::shared_ptr<PeerConnection>> peers;  // by "ip:port"
    // Where its finished pieces gather: one arena per piece length, so one lane per torrent.
    PieceBatches::Lane* lane = nullptr;
    std::uint64_t bytes_downloaded = 0;  // since the worker started
    std::uint64_t bytes_uploaded = 0;    // payload, since the worker started
    // The pieces we may announce and serve (PiecesAvailable); sized with the info.
    LocalPieces ours;
    // The torrent's own share of the rate limits (RateBudget.torrents; unlimited when absent).
    TokenBucket upload_limit;
    TokenBucket download_limit;
    // Peers whose sessions took in blocks from another peer's read (endgame sharing): their
    // cancels and new requests go out once that read is handled.
    std::vector<std::string> absorbed_by;
    // TorrentRemoved: the orchestrator forgot the torrent, so its peers close unreported.
    bool leaving = false;
};

}  // namespace pw::peer_worker
