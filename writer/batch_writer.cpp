#include "writer/batch_writer.hpp"

#include <optional>
#include <unordered_map>
#include <utility>

namespace pw::writer {

namespace {

enum class Fate { written, failed, dropped };

struct PieceToWrite {
    PieceRef ref;
    std::uint32_t slot = 0;
    std::span<const std::uint8_t> bytes;
    Fate fate = Fate::written;
    std::string why;
};

std::optional<std::string> frames_problem(const bus::v1::PieceBatch& batch, std::size_t frame_count) {
    const auto pieces = static_cast<std::size_t>(batch.pieces_size());
    if (batch.has_arena() && frame_count != 0) {
        return "a batch whose pieces are in an arena carries " + std::to_string(frame_count) +
               " data frames";
    }
    if (!batch.has_arena() && frame_count != pieces) {
        return "a batch of " + std::to_string(pieces) + " pieces carries " +
               std::to_string(frame_count) + " data frames";
    }
    return std::nullopt;
}

std::span<const std::uint8_t> bytes_of(const zmq::message_t& frame) {
    return {static_cast<const std::uint8_t*>(frame.data()), frame.size()};
}

void write_to_store(PieceStore& store, std::vector<PieceToWrite>& pieces) {
    std::vector<PieceBytes> requests;
    std::vector<PieceToWrite*> requested;
    for (PieceToWrite& piece : pieces) {
        if (piece.fate != Fate::written) continue;
        requests.push_back(PieceBytes{piece.ref.piece, piece.bytes});
        requested.push_back(&piece);
    }
    const std::vector<Status> results = store.write_pieces(requests);
    for (std::size_t i = 0; i < results.size(); ++i) {
        if (results[i].ok()) continue;
        requested[i]->fate = Fate::failed;
        requested[i]->why = results[i].error().describe();
    }
}

void record(BatchOutcome& outcome, const PieceRef& ref, Fate fate, const std::string& why) {
    switch (fate) {
        case Fate::written:
            outcome.written.push_back(ref);
            break;
        case Fate::failed:
            outcome.failed.push_back(PieceProblem{ref, why});
            break;
        case Fate::dropped:
            outcome.dropped.push_back(PieceProblem{ref, why});
            break;
    }
}

}  // namespace

bus::ArenaInfo arena_info(const bus::v1::Arena& arena) {
    return bus::ArenaInfo{arena.path(), arena.id(), arena.slot_size(), arena.slot_count()};
}

BatchOutcome write_batch(PieceStore& store, bus::ArenaReader& arenas, const bus::v1::PieceBatch& batch,
                         std::span<const zmq::message_t> frames,
                         const std::function<bool(PieceIndex)>& already_written) {
    BatchOutcome outcome;
    const bool in_arena = batch.has_arena();
    if (in_arena) {
        for (const auto& data : batch.pieces()) outcome.freed_leases.push_back(data.lease_id());
    }
    if (const auto problem = frames_problem(batch, frames.size())) {
        for (const auto& data : batch.pieces()) {
            outcome.failed.push_back(PieceProblem{{PieceIndex{data.piece()}, data.lease_id()}, *problem});
        }
        return outcome;
    }
    const bus::ArenaInfo arena = in_arena ? arena_info(batch.arena()) : bus::ArenaInfo{};

    std::vector<PieceToWrite> pieces;
    std::unordered_map<std::uint32_t, std::size_t> first_copy;  // piece -> its place in `pieces`
    std::vector<std::pair<PieceRef, std::size_t>> second_copies;
    for (int i = 0; i < batch.pieces_size(); ++i) {
        const auto& data = batch.pieces(i);
        const PieceRef ref{PieceIndex{data.piece()}, data.lease_id()};
        if (already_written(ref.piece)) {
            outcome.written.push_back(ref);
            continue;
        }
        if (const auto first = first_copy.find(data.piece()); first != first_copy.end()) {
            second_copies.emplace_back(ref, first->second);
            continue;
        }
        first_copy.emplace(data.piece(), pieces.size());
        PieceToWrite piece{ref, data.slot(), {}, Fate::written, {}};
        if (!in_arena) {
            piece.bytes = bytes_of(frames[static_cast<std::size_t>(i)]);
        } else if (auto view = arenas.view(arena, data.slot(), data.size(), data.lease_id())) {
            piece.bytes = *view;
        } else {
            piece.fate = Fate::dropped;
            piece.why = view.error().describe();
        }
        pieces.push_back(std::move(piece));
    }

    write_to_store(store, pieces);
    if (in_arena) {
        for (PieceToWrite& piece : pieces) {
            if (piece.fate != Fate::written) continue;
            if (arenas.still_holds(arena, piece.slot, piece.ref.lease_id)) continue;
            piece.fate = Fate::dropped;
            piece.why = "its arena slot was reused while the piece was being written";
        }
    }

    for (const PieceToWrite& piece : pieces) record(outcome, piece.ref, piece.fate, piece.why);
    for (const auto& [ref, first] : second_copies) {
        record(outcome, ref, pieces[first].fate, pieces[first].why);
    }
    return outcome;
}

}  // namespace pw::writer
