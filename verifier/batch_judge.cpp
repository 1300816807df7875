#include "verifier/batch_judge.hpp"

#include <span>
#include <utility>

#include <spdlog/spdlog.h>

#include "verifier/piece_check.hpp"

namespace pw::verifier {

namespace {

std::span<const std::uint8_t> frame_bytes(const zmq::message_t& frame) {
    return {static_cast<const std::uint8_t*>(frame.data()), frame.size()};
}

void fail(BatchVerdict& verdict, v1::PieceData&& piece, const std::string& worker,
          const std::string& why) {
    spdlog::warn("piece {} failed (from '{}', lease {}): {}", piece.piece(), worker,
                 piece.lease_id(), why);
    verdict.failed.push_back(std::move(piece));
}

// A malformed batch is its sender's doing, so each of its pieces counts against its peers.
void fail_all(BatchVerdict& verdict, v1::PieceBatch& batch, const std::string& why) {
    spdlog::warn("all {} pieces of a batch from '{}' failed: {}", batch.pieces_size(),
                 batch.worker(), why);
    for (v1::PieceData& piece : *batch.mutable_pieces()) verdict.failed.push_back(std::move(piece));
}

void pass(BatchVerdict& verdict, v1::PieceData&& piece, std::size_t size) {
    verdict.good_bytes += size;
    *verdict.good.add_pieces() = std::move(piece);
}

void judge_frames(const Torrent& torrent, Sha1Hasher& hasher, v1::PieceBatch& batch,
                  std::vector<zmq::message_t>& frames, BatchVerdict& verdict) {
    if (frames.size() != static_cast<std::size_t>(batch.pieces_size())) {
        fail_all(verdict, batch,
                 "the batch has " + std::to_string(frames.size()) + " data frames for " +
                     std::to_string(batch.pieces_size()) + " pieces");
        return;
    }
    for (int i = 0; i < batch.pieces_size(); ++i) {
        v1::PieceData& piece = *batch.mutable_pieces(i);
        zmq::message_t& frame = frames[static_cast<std::size_t>(i)];
        const Status check = check_piece(torrent, piece.piece(), frame_bytes(frame), hasher);
        if (!check.ok()) {
            fail(verdict, std::move(piece), batch.worker(), check.error().describe());
            continue;
        }
        pass(verdict, std::move(piece), frame.size());
        verdict.good_frames.push_back(std::move(frame));  // ZeroMQ's buffer, not a copy
    }
}

void drop(BatchVerdict& verdict, v1::PieceData&& piece, std::string why) {
    if (verdict.dropped.empty()) verdict.drop_reason = std::move(why);
    verdict.dropped.push_back(std::move(piece));
}

void judge_in_arena(const Torrent& torrent, bus::ArenaReader& arenas, Sha1Hasher& hasher,
                    v1::PieceBatch& batch, BatchVerdict& verdict) {
    const bus::ArenaInfo arena = arena_info(batch.arena());
    for (v1::PieceData& piece : *batch.mutable_pieces()) {
        const auto bytes = arenas.view(arena, piece.slot(), piece.size(), piece.lease_id());
        if (!bytes) {
            drop(verdict, std::move(piece), bytes.error().describe());
            continue;
        }
        const Status check = check_piece(torrent, piece.piece(), *bytes, hasher);
        // Bytes that changed under us judge nobody: neither a pass nor a failure counts.
        if (!arenas.still_holds(arena, piece.slot(), piece.lease_id())) {
            std::string why =
                "slot " + std::to_string(piece.slot()) + " was reused while being checked";
            drop(verdict, std::move(piece), std::move(why));
            continue;
        }
        if (!check.ok()) {
            fail(verdict, std::move(piece), batch.worker(), check.error().describe());
            continue;
        }
        pass(verdict, std::move(piece), bytes->size());
    }
}

}  // namespace

bus::ArenaInfo arena_info(const v1::Arena& arena) {
    return bus::ArenaInfo{arena.path(), arena.id(), arena.slot_size(), arena.slot_count()};
}

BatchVerdict judge_batch(const Torrent* torrent, bus::ArenaReader& arenas, Sha1Hasher& hasher,
                         v1::PieceBatch&& batch, std::vector<zmq::message_t>&& frames) {
    BatchVerdict verdict;
    verdict.good.set_worker(batch.worker());
    verdict.good.set_torrent(batch.torrent());
    if (batch.has_arena()) *verdict.good.mutable_arena() = batch.arena();
    if (torrent == nullptr) {
        const std::string why = "torrent " + std::to_string(batch.torrent()) + " is not known here";
        for (v1::PieceData& piece : *batch.mutable_pieces()) drop(verdict, std::move(piece), why);
        return verdict;
    }
    if (!batch.has_arena()) {
        judge_frames(*torrent, hasher, batch, frames, verdict);
        return verdict;
    }
    if (!frames.empty()) {
        fail_all(verdict, batch,
                 "the batch names an arena and carries " + std::to_string(frames.size()) +
                     " data frames too");
        return verdict;
    }
    judge_in_arena(*torrent, arenas, hasher, batch, verdict);
    return verdict;
}

}  // namespace pw::verifier
