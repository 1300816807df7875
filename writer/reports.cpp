#include "writer/reports.hpp"

#include <map>

#include <spdlog/spdlog.h>

namespace pw::writer {

void send_slots_freed(bus::ControlLink& link, const v1::PieceBatch& batch,
                      const std::vector<std::uint64_t>& lease_ids) {
    if (lease_ids.empty()) return;
    v1::Envelope envelope;
    auto* freed = envelope.mutable_slots_freed();
    freed->set_worker(batch.worker());
    freed->set_arena_id(batch.arena().id());
    for (const std::uint64_t lease_id : lease_ids) freed->add_lease_ids(lease_id);
    link.queue_report(std::move(envelope));
}

void send_all_slots_freed(bus::ControlLink& link, const v1::PieceBatch& batch) {
    if (!batch.has_arena()) return;
    std::vector<std::uint64_t> leases;
    for (const auto& piece : batch.pieces()) leases.push_back(piece.lease_id());
    send_slots_freed(link, batch, leases);
}

void send_dropped(bus::ControlLink& link, TorrentId torrent, const std::vector<PieceProblem>& dropped,
                  bool quiet) {
    std::map<std::string, std::vector<PieceRef>> by_reason;
    for (const PieceProblem& problem : dropped) by_reason[problem.why].push_back(problem.piece);
    for (const auto& [reason, pieces] : by_reason) {
        if (quiet) {
            spdlog::debug("dropped {} piece(s) of torrent {}: {}", pieces.size(), torrent.get(), reason);
        } else {
            spdlog::warn("dropped {} piece(s) of torrent {}, to be fetched again: {}", pieces.size(),
                         torrent.get(), reason);
        }
        v1::Envelope envelope;
        auto* report = envelope.mutable_pieces_dropped();
        report->set_reason(reason);
        for (const PieceRef& piece : pieces) {
            auto* ref = report->add_pieces();
            ref->set_piece(piece.piece.get());
            ref->set_lease_id(piece.lease_id);
            ref->set_torrent(torrent.get());
        }
        link.queue_report(std::move(envelope));
    }
}

void send_write_failed(bus::ControlLink& link, TorrentId torrent, const PieceRef& piece,
                       const std::string& why) {
    v1::Envelope report;
    auto* failed = report.mutable_write_failed();
    failed->set_piece(piece.piece.get());
    failed->set_lease_id(piece.lease_id);
    failed->set_error(why);
    failed->set_torrent(torrent.get());
    link.send(report);
}

void send_resume_state(bus::ControlLink& link, TorrentId torrent, const PieceBits& done,
                       bool checked_all) {
    v1::Envelope envelope;
    auto* state = envelope.mutable_resume_state();
    state->set_torrent(torrent.get());
    state->set_pieces_done(done.count());
    state->set_checked_all(checked_all);
    std::vector<zmq::message_t> frames;
    frames.emplace_back(done.bytes().data(), done.bytes().size());
    link.send(envelope, frames);
}

}  // namespace pw::writer
