#pragma once
// The verifier's data path: judges each piece and hands good ones to the writer unchanged.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/bus/bus.hpp"
#include "core/metainfo.hpp"

namespace pw::verifier {

namespace v1 = ::piecework::v1;

struct ForwarderStats {
    std::uint64_t verified = 0;
    std::uint64_t failed = 0;
    std::uint64_t bytes_verified = 0;
};

class PieceForwarder {
public:
    // `to_writer` is a PUSH socket; `torrent` and `to_writer` must outlive the forwarder.
    PieceForwarder(const Torrent& torrent, zmq::socket_t& to_writer, std::string name);

    // True when a piece may be taken now: nothing is held back and the writer's queue has
    // room. The loop reads from the workers only then, so a slow writer slows the workers
    // down through the high-water marks instead of making us buffer.
    bool ready() const;
    bool holding() const { return held_.has_value(); }

    // Judges one message from the workers. Returns the report for the orchestrator
    // (PieceVerified once the piece is on its way to the writer, PieceFailed for a bad
    // piece), or nothing when the message is dropped or held back until the writer has room.
    std::optional<v1::Envelope> take(bus::Incoming&& in);
    // Retries a held-back piece; returns its PieceVerified once it went out.
    std::optional<v1::Envelope> retry();

    const ForwarderStats& stats() const { return stats_; }

private:
    struct HeldPiece {
        v1::Envelope envelope;
        std::vector<zmq::message_t> frames;
    };

    std::optional<v1::Envelope> forward(HeldPiece&& piece);

    const Torrent& torrent_;
    zmq::socket_t& to_writer_;
    std::string name_;
    std::optional<HeldPiece> held_;
    ForwarderStats stats_;
};

}  // namespace pw::verifier
