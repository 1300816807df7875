#include "writer/torrent_writer.hpp"

#include <algorithm>
#include <utility>

#include <spdlog/spdlog.h>

#include "core/bus/welcome.hpp"
#include "writer/reports.hpp"
#include "writer/text.hpp"

namespace pw::writer {

TorrentWriter::TorrentWriter(TorrentId id, Torrent torrent, UniqueFd folder, std::string folder_path,
                             const TorrentSettings& settings, bus::ControlLink& link)
    : id_(id), torrent_(std::move(torrent)), hashes_(torrent_),
      folder_path_(std::move(folder_path)), settings_(settings), link_(link),
      store_(torrent_, std::move(folder), folder_path_, settings_.store),
      book_(torrent_, store_.root_fd(), settings_.state_dir),
      pending_pieces_(torrent_.piece_count(), false) {
    torrent_.forget_piece_hashes();
    store_.set_parts_path(settings_.state_dir + "/" + to_hex(torrent_.info_hash()) + ".parts");
}

void TorrentWriter::set_unwanted(const std::vector<bool>& unwanted) {
    std::vector<bool> file_unwanted(torrent_.files().size(), false);
    std::size_t count = 0;
    for (std::size_t i = 0; i < file_unwanted.size() && i < unwanted.size(); ++i) {
        file_unwanted[i] = unwanted[i] && !torrent_.files()[i].pad;
        count += file_unwanted[i] ? 1 : 0;
    }
    const Status set = store_.set_unwanted(file_unwanted, [this](PieceIndex piece) {
        return book_.done().test(piece) || pending_pieces_[piece.get()];
    });
    if (!set.ok()) spdlog::error("torrent {}: {}", id_.get(), set.error().describe());
    spdlog::info("torrent {}: {} of {} files not wanted{}", id_.get(), count, torrent_.files().size(),
                 count > 0 ? cat(" (their bytes of shared pieces in '", store_.parts_path(), "')") : std::string());
}

void TorrentWriter::start() {
    if (const Status made = store_.create_empty_files(); !made.ok()) {
        spdlog::error("torrent {}: {}", id_.get(), made.error().describe());
    }
    spdlog::info("writing '{}' (torrent {}: {} bytes, {} files) below '{}'{}", torrent_.name(),
                 id_.get(), torrent_.total_size(), torrent_.files().size(), folder_path_,
                 store_.direct_io() ? ", aligned pieces past the page cache" : "");
    const ResumeBook::Start loaded = book_.load();
    if (loaded.trusted) {
        started_ = true;
        spdlog::info("torrent {}: resume record '{}' holds: {} of {} pieces on disk", id_.get(),
                     book_.path(), book_.done().count(), torrent_.piece_count());
        send_resume_state(link_, id_, book_.done(), false);
        if (std::exchange(verify_queued_, false)) begin_check(true);
        return;
    }
    check_reason_ = loaded.reason;
    if (const Status trimmed = trim_oversized_files(store_.root_fd(), torrent_); !trimmed.ok()) {
        check_reason_ += "; " + trimmed.error().describe();
    }
    begin_check(false);
}

void TorrentWriter::begin_check(bool verify) {
    check_.emplace(torrent_, hashes_, store_.root_fd());
    check_->checker().use_parts(store_.parts_fd(), store_.parts_files());
    check_is_verify_ = verify;
    check_began_ = bus::Clock::now();
    acked_since_check_.emplace(torrent_.piece_count());
    if (verify) check_reason_ = "asked to verify";
    spdlog::info("torrent {}: checking the {} pieces on disk ({})", id_.get(), torrent_.piece_count(),
                 check_reason_);
}

void TorrentWriter::check_until(bus::Clock::time_point deadline) {
    if (!check_) return;
    if (check_->run_until(deadline)) finish_check();
}

void TorrentWriter::finish_check() {
    PieceBits done = check_->verified();
    done.merge(*acked_since_check_);
    const bool verify = check_is_verify_;
    check_.reset();
    acked_since_check_.reset();
    book_.replace(std::move(done));
    recount_pending();
    started_ = true;
    const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(bus::Clock::now() - check_began_);
    spdlog::info("torrent {}: checked the files ({}) in {} ms: {} of {} pieces on disk", id_.get(),
                 check_reason_, took.count(), book_.done().count(), torrent_.piece_count());
    send_resume_state(link_, id_, book_.done(), verify);
    save_record();
    bus::release_start_up_memory();  // the check's piece buffer
    if (std::exchange(verify_queued_, false)) begin_check(true);
}

void TorrentWriter::verify() {
    if (check_ || !started_) {
        verify_queued_ = true;
        return;
    }
    begin_check(true);
}

bool TorrentWriter::already_written(PieceIndex piece) const {
    if (piece.get() < pending_pieces_.size() && pending_pieces_[piece.get()]) return true;
    // While a verify runs the book's word is what is being checked: a piece is written again
    // unless it was acknowledged since the verify began.
    if (check_ && check_is_verify_) return acked_since_check_->test(piece);
    return book_.done().test(piece);
}

void TorrentWriter::write(const bus::v1::PieceBatch& batch, std::span<const zmq::message_t> frames,
                          bus::ArenaReader& arenas) {
    const BatchOutcome outcome = write_batch(store_, arenas, batch, frames,
                                             [this](PieceIndex piece) { return already_written(piece); });
    send_slots_freed(link_, batch, outcome.freed_leases);
    send_dropped(link_, id_, outcome.dropped);
    for (const PieceProblem& failed : outcome.failed) {
        spdlog::error("torrent {}: piece {} not written: {}", id_.get(), failed.piece.piece.get(), failed.why);
        send_write_failed(link_, id_, failed.piece, failed.why);
    }
    for (const PieceRef& written : outcome.written) {
        // In the order pieces reach the disk (how a test sees what --sequential did). Another
        // copy of a piece on disk or in this batch already (the endgame's) is only acknowledged.
        spdlog::debug("torrent {}: piece {} {}", id_.get(), written.piece.get(),
                      already_written(written.piece) ? "on disk already (another copy)" : "written");
        add_pending(written);
    }
}

std::string TorrentWriter::unreadable(PieceIndex piece) const {
    if (!started_) return cat("torrent ", id_.get(), " is still being checked");
    if (piece.get() >= torrent_.piece_count()) {
        return cat("piece ", piece.get(), " is out of range: torrent ", id_.get(), " has ",
                   torrent_.piece_count(), " pieces");
    }
    if (!book_.done().test(piece)) return cat("piece ", piece.get(), " is not on disk yet");
    return {};
}

std::string TorrentWriter::read_verified(PieceIndex piece, std::span<std::uint8_t> out, Sha1Hasher& hasher) {
    if (std::string why = unreadable(piece); !why.empty()) return why;
    const ReadResult read = store_.read_piece(piece, out);
    std::string changed;
    if (read.status == ReadStatus::failed) {
        spdlog::warn("torrent {}: piece {} could not be read for a peer: {}", id_.get(), piece.get(), read.why);
        return cat("piece ", piece.get(), " could not be read");
    }
    if (read.status == ReadStatus::missing) {
        changed = read.why;
    } else if (piece.get() >= hashes_.size() || hasher.digest(out.data(), out.size()) != hashes_[piece]) {
        changed = "its bytes no longer match the torrent's hash";
    }
    if (changed.empty()) return {};
    // Never sent. The record stops calling it done: no read serves it again, the next save
    // and start say so, and it is written again when it comes. Only a verify tells the
    // orchestrator (it leases nothing it counts as done).
    book_.mark_not_done(piece);
    recount_pending();
    spdlog::error("torrent {}: piece {} changed on disk ({}); it is no longer served and no longer "
                  "counted as on disk here; verify the torrent to fetch it again",
                  id_.get(), piece.get(), changed);
    return cat("piece ", piece.get(), " changed on disk");
}

void TorrentWriter::add_pending(const PieceRef& piece) {
    pending_.push_back(piece);
    mark_pending(piece.piece, true);
}

void TorrentWriter::mark_pending(PieceIndex piece, bool pending) {
    if (piece.get() >= pending_pieces_.size() || pending_pieces_[piece.get()] == pending) return;
    pending_pieces_[piece.get()] = pending;
    if (!book_.done().test(piece)) pending ? ++pending_not_done_ : --pending_not_done_;
}

void TorrentWriter::recount_pending() {
    pending_not_done_ = 0;
    for (std::uint32_t i = 0; i < pending_pieces_.size(); ++i) {
        if (pending_pieces_[i] && !book_.done().test(PieceIndex{i})) ++pending_not_done_;
    }
}

std::optional<std::chrono::milliseconds> TorrentWriter::until_sync_due() const {
    if (pending_.empty()) return std::nullopt;
    if (!last_sync_ || book_.done().count() + pending_not_done_ >= torrent_.piece_count()) {
        return std::chrono::milliseconds(0);
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        *last_sync_ + settings_.sync_interval - bus::Clock::now());
    return std::max(left, std::chrono::milliseconds(0));
}

void TorrentWriter::flush_if_due() {
    if (const auto due = until_sync_due(); due && due->count() == 0) flush();
}

void TorrentWriter::flush() {
    last_sync_ = bus::Clock::now();
    if (pending_.empty()) return;
    const Status synced = store_.sync();
    if (!synced.ok()) spdlog::error("torrent {}: {}", id_.get(), synced.error().describe());
    const bool verifying = check_ && check_is_verify_;
    v1::Envelope written;
    auto* acknowledged = written.mutable_pieces_written();
    for (const PieceRef& piece : pending_) {
        mark_pending(piece.piece, false);
        // A second copy of a piece durable before this sync stays durable whatever it did
        // (unless that is what a running verify is checking).
        if (synced.ok() || (!verifying && book_.done().test(piece.piece))) {
            book_.mark_done(piece.piece);
            if (acked_since_check_) acked_since_check_->set(piece.piece);
            auto* ref = acknowledged->add_pieces();
            ref->set_piece(piece.piece.get());
            ref->set_lease_id(piece.lease_id);
            ref->set_torrent(id_.get());
        } else {
            spdlog::error("torrent {}: piece {} not durable: {}", id_.get(), piece.piece.get(),
                          synced.error().describe());
            send_write_failed(link_, id_, piece, synced.error().describe());
        }
    }
    if (acknowledged->pieces_size() > 0) link_.send(written);
    pending_.clear();
    if (synced.ok() && started_ && bus::Clock::now() >= next_save_) save_record();
}

void TorrentWriter::save_record() {
    next_save_ = bus::Clock::now() + settings_.state_save_interval;
    if (const Status saved = book_.save(); !saved.ok()) {
        spdlog::warn("torrent {}: resume record not saved: {}", id_.get(), saved.error().describe());
    }
}

void TorrentWriter::close() {
    const bool first_check_unfinished = !started_;
    check_.reset();
    acked_since_check_.reset();
    verify_queued_ = false;
    flush();
    if (!first_check_unfinished) save_record();
    store_.close_files();
}

void TorrentWriter::delete_data() {
    check_.reset();
    acked_since_check_.reset();
    verify_queued_ = false;
    for (const PieceRef& piece : pending_) mark_pending(piece.piece, false);
    pending_.clear();
    if (const Status deleted = store_.delete_files(); !deleted.ok()) {
        spdlog::error("torrent {}: not every file was deleted: {}", id_.get(), deleted.error().describe());
    }
    if (const Status removed = book_.remove(); !removed.ok()) {
        spdlog::warn("torrent {}: {}", id_.get(), removed.error().describe());
    }
}

}  // namespace pw::writer
