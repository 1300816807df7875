#pragma once
// The verifier's data path: judges each batch from the workers and hands its good pieces to
// the writer as one batch, unchanged (the same frames, or the same arena slots).
#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/bus/bus.hpp"
#include "core/bus/piece_arena.hpp"
#include "core/metainfo.hpp"
#include "core/units.hpp"

namespace pw::verifier {

namespace v1 = ::piecework::v1;

// The torrents whose pieces the verifier checks, with their piece hashes.
using Torrents = std::unordered_map<TorrentId, Torrent>;

struct ForwarderStats {
    std::uint64_t verified = 0;
    std::uint64_t failed = 0;
    std::uint64_t dropped = 0;
    std::uint64_t bytes_verified = 0;
};

class PieceForwarder {
public:
    // `to_writer` is a PUSH socket; `torrents` and `to_writer` must outlive the forwarder.
    PieceForwarder(const Torrents& torrents, zmq::socket_t& to_writer, std::string name);

    // True when a batch may be taken now: nothing is held back and the writer's queue has
    // room. The loop reads from the workers only then, so a slow writer slows the workers
    // down through the high-water marks instead of making us buffer.
    bool ready() const;
    bool holding() const { return held_.has_value(); }
    std::size_t held_pieces() const;

    // Judges one message from the workers. Returns the reports for the orchestrator, in the
    // order to send them: a PieceFailed per bad piece, one PiecesDropped and one SlotsFreed
    // for the batch when needed, and one PiecesVerified once the good pieces are on their way
    // to the writer (when the writer has no room they are held, and their report comes from
    // retry()). A message that is not a batch is dropped: no report.
    std::vector<v1::Envelope> take(bus::Incoming&& in);
    // Retries a held-back batch; returns its PiecesVerified once it went out.
    std::vector<v1::Envelope> retry();

    const ForwarderStats& stats() const { return stats_; }

private:
    struct HeldBatch {
        v1::Envelope envelope;
        std::vector<zmq::message_t> frames;
        std::uint64_t bytes = 0;
    };

    std::optional<v1::Envelope> forward(HeldBatch&& batch);

    const Torrents& torrents_;
    zmq::socket_t& to_writer_;
    std::string name_;
    // One for the stage's life: an arena is mapped once, not per batch.
    bus::ArenaReader arenas_;
    Sha1Hasher hasher_;
    std::optional<HeldBatch> held_;
    ForwarderStats stats_;
};

}  // namespace pw::verifier
