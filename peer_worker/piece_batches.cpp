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

// Emptied batches kept for reuse: one per lane that filled lately is plenty.
constexpr std::size_t kMaxSpares = 8;

}  // namespace

PieceBatches::PieceBatches(asio::io_context& io, std::string worker, Send send,
                           std::chrono::milliseconds linger)
    : io_(io), worker_(std::move(worker)), send_(std::move(send)), linger_(linger) {}

PieceBatches::~PieceBatches() = default;

PieceBatches::Key PieceBatches::key_of(const Lane& lane) {
    return Key{lane.torrent_, lane.arena_ != nullptr ? lane.arena_->id : 0};
}

PieceBatches::Lane& PieceBatches::lane(TorrentId torrent, const bus::ArenaInfo* arena) {
    const Key key{torrent, arena != nullptr ? arena->id : 0};
    auto& lane = lanes_[key];
    if (!lane) lane.reset(new Lane(io_, torrent, arena, next_serial_++));
    return *lane;
}

void PieceBatches::schedule_flush(Lane& lane) {
    if (lane.flush_scheduled_) return;
    lane.flush_scheduled_ = true;
    // Looked up again when it fires: the lane may have been dropped meanwhile.
    auto fire = [this, key = key_of(lane), serial = lane.serial_] {
        const auto found = lanes_.find(key);
        if (found == lanes_.end() || found->second->serial_ != serial) return;
        found->second->flush_scheduled_ = false;
        seal(*found->second);
        send_waiting();
    };
    if (linger_.count() == 0) {
        asio::post(io_, fire);
        return;
    }
    lane.linger_timer_.expires_after(linger_);
    lane.linger_timer_.async_wait([fire](const asio::error_code& error) {
        if (!error) fire();
    });
}

void PieceBatches::add(Lane& lane, CompletedPiece&& piece, const std::string& contributor,
                       std::optional<std::uint32_t> slot) {
    // Whatever else finishes meanwhile joins the batch first.
    if (lane.filling_.piece_count() == 0) schedule_flush(lane);
    auto* batch = lane.filling_.envelope.mutable_piece_batch();
    if (batch->pieces_size() == 0) {
        batch->set_worker(worker_);
        batch->set_torrent(lane.torrent_.get());
        if (lane.arena_ != nullptr) {
            auto* arena = batch->mutable_arena();
            arena->set_path(lane.arena_->path);
            arena->set_id(lane.arena_->id);
            arena->set_slot_size(lane.arena_->slot_size);
            arena->set_slot_count(lane.arena_->slot_count);
        } else {
            batch->clear_arena();
        }
    }
    auto* data = batch->add_pieces();
    data->set_piece(piece.piece.get());
    data->set_lease_id(piece.lease_id);
    data->add_contributors(contributor);
    for (const auto& helper : piece.helpers) {
        if (helper != contributor) data->add_contributors(helper);
    }
    data->set_size(piece.size);
    if (lane.arena_ != nullptr && slot) {
        data->set_slot(*slot);
    } else {
        lane.filling_.frame_bytes += piece.size;
        lane.filling_.frames.push_back(piece_frame(std::move(piece.data)));
    }
    if (full(lane)) {
        seal(lane);
        send_waiting();
    }
}

bool PieceBatches::full(const Lane& lane) const {
    if (lane.filling_.piece_count() >= bus::kMaxBatchPieces) return true;
    return lane.arena_ == nullptr && lane.filling_.frame_bytes >= bus::kMaxBatchFrameBytes;
}

void PieceBatches::seal(Lane& lane) {
    if (lane.filling_.piece_count() == 0) return;
    waiting_.push_back(std::move(lane.filling_));
    lane.filling_ = take_spare();
}

OutgoingBatch PieceBatches::take_spare() {
    if (spares_.empty()) return OutgoingBatch{};
    OutgoingBatch spare = std::move(spares_.back());
    spares_.pop_back();
    return spare;
}

void PieceBatches::recycle(OutgoingBatch& sent) {
    if (spares_.size() >= kMaxSpares) return;
    // Clear() keeps the cleared PieceData objects for the next add_pieces().
    sent.envelope.mutable_piece_batch()->mutable_pieces()->Clear();
    sent.frames.clear();
    sent.frame_bytes = 0;
    spares_.push_back(std::move(sent));
}

void PieceBatches::send_waiting() {
    while (!waiting_.empty()) {
        if (!send_(waiting_.front())) return;
        recycle(waiting_.front());
        waiting_.pop_front();
    }
}

void PieceBatches::flush() {
    for (auto& [key, lane] : lanes_) seal(*lane);
    send_waiting();
}

void PieceBatches::drop_torrent(TorrentId torrent,
                                const std::function<void(std::uint64_t)>& dropped) {
    const auto drop_pieces = [&](OutgoingBatch& batch) {
        for (const auto& piece : batch.envelope.piece_batch().pieces()) dropped(piece.lease_id());
    };
    for (auto it = lanes_.begin(); it != lanes_.end();) {
        if (it->first.torrent != torrent) {
            ++it;
            continue;
        }
        drop_pieces(it->second->filling_);
        it = lanes_.erase(it);  // cancels its timer; a handler already due finds no lane
    }
    for (auto it = waiting_.begin(); it != waiting_.end();) {
        if (TorrentId{it->envelope.piece_batch().torrent()} != torrent) {
            ++it;
            continue;
        }
        drop_pieces(*it);
        it = waiting_.erase(it);
    }
}

std::size_t PieceBatches::pieces_filling() const {
    std::size_t count = 0;
    for (const auto& [key, lane] : lanes_) count += lane->pieces_filling();
    return count;
}

}  // namespace pw::peer_worker
