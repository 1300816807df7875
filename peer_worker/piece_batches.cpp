#include "peer_worker/piece_batches.hpp"

#include <utility>

#include <asio/post.hpp>

namespace pw::peer_worker {

namespace {

// Hands the piece's buffer to ZeroMQ, which frees it once sent: no copy.
zmq::message_t piece_frame(PieceBuffer&& buffer) {
    auto* owned = new PieceBuffer(std::move(buffer));
    return zmq::message_t(
        owned->data(), owned->size(),
        [](void*, void* hint) { delete static_cast<PieceBuffer*>(hint); }, owned);
}

}  // namespace

PieceBatches::PieceBatches(asio::io_context& io, std::string worker, Send send)
    : io_(io), worker_(std::move(worker)), send_(std::move(send)) {}

void PieceBatches::add(CompletedPiece&& piece, const std::string& contributor,
                       std::optional<std::uint32_t> slot) {
    if (filling_.piece_count() == 0 && !flush_posted_) {
        // Whatever else finishes in this turn of the loop joins the batch first.
        flush_posted_ = true;
        asio::post(io_, [this] {
            flush_posted_ = false;
            flush();
        });
    }
    auto* batch = filling_.envelope.mutable_piece_batch();
    if (batch->pieces_size() == 0) {
        batch->set_worker(worker_);
        if (arena_ != nullptr) {
            auto* arena = batch->mutable_arena();
            arena->set_path(arena_->path);
            arena->set_id(arena_->id);
            arena->set_slot_size(arena_->slot_size);
            arena->set_slot_count(arena_->slot_count);
        }
    }
    auto* data = batch->add_pieces();
    data->set_piece(piece.piece.get());
    data->set_lease_id(piece.lease_id);
    data->add_contributors(contributor);
    data->set_worker(worker_);
    data->set_size(piece.size);
    if (arena_ != nullptr && slot) {
        data->set_slot(*slot);
    } else {
        filling_.frame_bytes += piece.size;
        filling_.frames.push_back(piece_frame(std::move(piece.data)));
    }
    if (full()) flush();
}

bool PieceBatches::full() const {
    if (filling_.piece_count() >= bus::kMaxBatchPieces) return true;
    return arena_ == nullptr && filling_.frame_bytes >= bus::kMaxBatchFrameBytes;
}

void PieceBatches::seal() {
    if (filling_.piece_count() == 0) return;
    waiting_.push_back(std::move(filling_));
    filling_ = OutgoingBatch{};
}

void PieceBatches::flush() {
    seal();
    while (!waiting_.empty()) {
        if (!send_(waiting_.front())) return;
        waiting_.pop_front();
    }
}

}  // namespace pw::peer_worker
