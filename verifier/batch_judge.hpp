#pragma once
// The verifier's judgement of one batch from a worker: which pieces go on to the writer,
// which failed (the sender is to blame) and which were dropped (their arena bytes were gone:
// nobody is to blame). No sockets; the bytes are read in place, never copied.
#include <cstdint>
#include <string>
#include <vector>

#include <zmq.hpp>

#include "core/bus/bus.hpp"
#include "core/bus/piece_arena.hpp"
#include "core/metainfo.hpp"
#include "core/sha1.hpp"

namespace pw::verifier {

namespace v1 = ::piecework::v1;

struct BatchVerdict {
    v1::PieceBatch good;                      // worker, torrent, arena and the pieces that passed
    std::vector<zmq::message_t> good_frames;  // frame mode: the good pieces' bytes, in order
    std::uint64_t good_bytes = 0;
    std::vector<v1::PieceData> failed;   // bad hash, wrong size, unknown piece, malformed batch
    std::vector<v1::PieceData> dropped;  // arena mode: the slot did not hold the piece throughout
    std::string drop_reason;             // the first drop's error
};

// Consumes `batch` and `frames` (the raw frames after its envelope). With an arena the bytes
// are read through `arenas` and no frame may follow; without, frame i is piece i's bytes.
// `torrent` is the batch's torrent; null when it is not known here (removed, or not yet told
// about): its pieces are dropped, nobody is to blame.
BatchVerdict judge_batch(const Torrent* torrent, bus::ArenaReader& arenas, Sha1Hasher& hasher,
                         v1::PieceBatch&& batch, std::vector<zmq::message_t>&& frames);

bus::ArenaInfo arena_info(const v1::Arena& arena);

}  // namespace pw::verifier
