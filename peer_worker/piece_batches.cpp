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

PieceBatches::PieceBatches(asio::io_context& io, std::string worker, Send send,
                           std::chrono::milliseconds linger)
    : io_(io), worker_(std::move(worker)), send_(std::move(send)), linger_(linger),
      linger_timer_(io) {}

void PieceBatches::schedule_flush() {
    if (flush_scheduled_) return;
    flush_scheduled_ = true;
    auto fire = [this] {
        flush_scheduled_ = false;
        flush();
    };
    if (linger_.count() == 0) {
        asio::post(io_, fire);
        return;
    }
    linger_timer_.expires_after(linger_);
    linger_timer_.async_wait([fire](const asio::error_code& error) {
        if (!error) fire();
    });
}

void PieceBatches::add(CompletedPiece&& piece, const std::string& contributor,
                       std::optional<std::uint32_t> slot) {
    // Whatever else finishes meanwhile joins the batch first.
    if (filling_.piece_count() == 0) schedule_flush();
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
    filling_ = std::move(spare_);  // moved-from messages are empty: a fresh batch without a spare
}

void PieceBatches::recycle(OutgoingBatch& sent) {
    // Clear() keeps the cleared PieceData objects for the next add_pieces().
    sent.envelope.mutable_piece_batch()->mutable_pieces()->Clear();
    sent.frames.clear();
    sent.frame_bytes = 0;
    spare_ = std::move(sent);
}

void PieceBatches::flush() {
    seal();
    while (!waiting_.empty()) {
        if (!send_(waiting_.front())) return;
        recycle(waiting_.front());
        waiting_.pop_front();
    }
}

}  // namespace pw::peer_worker
