#pragma once
// One PieceBatch from the verifier into the files: where each piece's bytes are (a frame, or
// a slot of the worker's shared-memory arena), which pieces need no second write, and what
// became of each piece, for the stage to report.
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include <zmq.hpp>

#include "core/bus/bus.hpp"
#include "core/bus/piece_arena.hpp"
#include "core/units.hpp"
#include "writer/piece_store.hpp"

namespace pw::writer {

struct PieceRef {
    PieceIndex piece;
    std::uint64_t lease_id = 0;
    friend bool operator==(const PieceRef&, const PieceRef&) = default;
};

struct PieceProblem {
    PieceRef piece;
    std::string why;
};

struct BatchOutcome {
    // In the file now, or already before: acknowledged after the next sync.
    std::vector<PieceRef> written;
    std::vector<PieceProblem> failed;   // WriteFailed: could not be written
    std::vector<PieceProblem> dropped;  // PiecesDropped: the bytes were gone before they were in the file
    // Every piece of a batch in an arena, whatever became of it: the worker may reuse their
    // slots, since the bytes are in the file or never will be taken from there.
    std::vector<std::uint64_t> freed_leases;
};

// Writes the pieces of `batch` (bytes in `frames`, one per piece, or in the batch's arena).
// Pieces for which `already_written` is true are not written again, only acknowledged: a slot
// of theirs may have been reused already, and the file holds their bytes anyway. A piece
// that appears twice in the batch is written once and both copies share its fate. In an
// arena, a slot is checked again after the write, and a piece whose slot was reused
// meanwhile is dropped: its region holds garbage until the piece, fetched again, is rewritten.
BatchOutcome write_batch(PieceStore& store, bus::ArenaReader& arenas, const bus::v1::PieceBatch& batch,
                         std::span<const zmq::message_t> frames,
                         const std::function<bool(PieceIndex)>& already_written);

bus::ArenaInfo arena_info(const bus::v1::Arena& arena);

}  // namespace pw::writer
