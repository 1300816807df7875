#include "verifier/piece_forwarder.hpp"

#include <utility>

#include <spdlog/spdlog.h>

#include "verifier/batch_judge.hpp"

namespace pw::verifier {

namespace {

template <class Pieces, class Report>
void add_refs(const Pieces& pieces, std::uint32_t torrent, Report& report) {
    for (const v1::PieceData& piece : pieces) {
        v1::PieceRef* ref = report.add_pieces();
        ref->set_piece(piece.piece());
        ref->set_lease_id(piece.lease_id());
        ref->set_torrent(torrent);
    }
}

v1::Envelope failed_report(const v1::PieceData& piece, const v1::PieceBatch& batch) {
    v1::Envelope report;
    auto* failed = report.mutable_piece_failed();
    failed->set_piece(piece.piece());
    failed->set_lease_id(piece.lease_id());
    *failed->mutable_contributors() = piece.contributors();
    failed->set_worker(batch.worker());
    failed->set_torrent(batch.torrent());
    return report;
}

v1::Envelope dropped_report(const std::vector<v1::PieceData>& dropped, std::uint32_t torrent,
                            const std::string& reason) {
    v1::Envelope report;
    add_refs(dropped, torrent, *report.mutable_pieces_dropped());
    report.mutable_pieces_dropped()->set_reason(reason);
    return report;
}

// The worker keeps a slot until told its piece's journey is over: for a piece that does not
// go on to the writer, that is here.
v1::Envelope slots_freed_report(const BatchVerdict& verdict) {
    v1::Envelope report;
    auto* freed = report.mutable_slots_freed();
    freed->set_worker(verdict.good.worker());
    freed->set_arena_id(verdict.good.arena().id());
    for (const auto* pieces : {&verdict.failed, &verdict.dropped}) {
        for (const v1::PieceData& piece : *pieces) freed->add_lease_ids(piece.lease_id());
    }
    return report;
}

std::vector<v1::Envelope> refusal_reports(const BatchVerdict& verdict) {
    std::vector<v1::Envelope> reports;
    for (const v1::PieceData& piece : verdict.failed) {
        reports.push_back(failed_report(piece, verdict.good));
    }
    if (!verdict.dropped.empty()) {
        spdlog::warn("dropped {} pieces of a batch from '{}': {}", verdict.dropped.size(),
                     verdict.good.worker(), verdict.drop_reason);
        reports.push_back(dropped_report(verdict.dropped, verdict.good.torrent(), verdict.drop_reason));
    }
    const bool slots_to_free = !verdict.failed.empty() || !verdict.dropped.empty();
    if (verdict.good.has_arena() && slots_to_free) reports.push_back(slots_freed_report(verdict));
    return reports;
}

}  // namespace

PieceForwarder::PieceForwarder(const Torrents& torrents, zmq::socket_t& to_writer, std::string name)
    : torrents_(torrents), to_writer_(to_writer), name_(std::move(name)) {}

bool PieceForwarder::ready() const {
    if (held_) return false;
    return (to_writer_.get(zmq::sockopt::events) & ZMQ_POLLOUT) != 0;
}

std::size_t PieceForwarder::held_pieces() const {
    return held_ ? static_cast<std::size_t>(held_->envelope.piece_batch().pieces_size()) : 0;
}

std::vector<v1::Envelope> PieceForwarder::take(bus::Incoming&& in) {
    if (!in.envelope.has_piece_batch()) {
        spdlog::warn("dropped a message of type {} from '{}': only piece batches belong here",
                     bus::body_name(in.envelope), in.envelope.sender());
        return {};
    }
    const int count = in.envelope.piece_batch().pieces_size();
    if (count == 0 || static_cast<std::size_t>(count) > bus::kMaxBatchPieces) {
        // No worker of ours sends these; answering each of a flood of pieces would only
        // amplify it.
        spdlog::warn("dropped a batch of {} pieces from '{}' (1 to {} allowed)", count,
                     in.envelope.sender(), bus::kMaxBatchPieces);
        return {};
    }
    const auto torrent = torrents_.find(TorrentId{in.envelope.piece_batch().torrent()});
    BatchVerdict verdict = judge_batch(torrent == torrents_.end() ? nullptr : &torrent->second,
                                       arenas_, hasher_,
                                       std::move(*in.envelope.mutable_piece_batch()),
                                       std::move(in.frames));
    stats_.failed += verdict.failed.size();
    stats_.dropped += verdict.dropped.size();
    std::vector<v1::Envelope> reports = refusal_reports(verdict);
    if (verdict.good.pieces_size() == 0) return reports;

    HeldBatch batch;
    *batch.envelope.mutable_piece_batch() = std::move(verdict.good);
    batch.frames = std::move(verdict.good_frames);
    batch.bytes = verdict.good_bytes;
    if (auto verified = forward(std::move(batch))) reports.push_back(std::move(*verified));
    return reports;
}

std::vector<v1::Envelope> PieceForwarder::retry() {
    if (!held_) return {};
    HeldBatch batch = std::move(*held_);
    held_.reset();
    std::vector<v1::Envelope> reports;
    if (auto verified = forward(std::move(batch))) reports.push_back(std::move(*verified));
    return reports;
}

std::optional<v1::Envelope> PieceForwarder::forward(HeldBatch&& batch) {
    // Frames move on to ZeroMQ as they are: their buffers are never copied.
    if (!bus::send(to_writer_, name_, batch.envelope, batch.frames, nullptr,
                   zmq::send_flags::dontwait)) {
        held_ = std::move(batch);
        return std::nullopt;
    }
    const auto& pieces = batch.envelope.piece_batch().pieces();
    stats_.verified += static_cast<std::uint64_t>(pieces.size());
    stats_.bytes_verified += batch.bytes;
    v1::Envelope report;
    add_refs(pieces, batch.envelope.piece_batch().torrent(), *report.mutable_pieces_verified());
    return report;
}

}  // namespace pw::verifier
