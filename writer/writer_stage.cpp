#include "writer/writer_stage.hpp"

#include <algorithm>
#include <array>
#include <map>
#include <optional>
#include <stdexcept>
#include <vector>

#include <spdlog/spdlog.h>

#include "core/bus/welcome.hpp"
#include "core/bus/piece_arena.hpp"
#include "core/metainfo.hpp"
#include "writer/batch_writer.hpp"
#include "writer/piece_store.hpp"
#include "writer/resume_state.hpp"

namespace pw::writer {

namespace v1 = ::piecework::v1;

namespace {

// Batches read per turn of the loop: up to a few hundred pieces, then the control link gets
// its turn.
constexpr int kBatchesPerTurn = 4;
// Long enough for the last acknowledgements to leave before the process ends.
constexpr int kExitLingerMs = 2000;

// Pieces written but not yet durable, acknowledged together after the next sync.
class AckBatch {
public:
    AckBatch(PieceStore& store, bus::ControlLink& link, ResumeBook& book,
             std::chrono::milliseconds save_interval, std::uint32_t piece_count)
        : store_(store), link_(link), book_(book), save_interval_(save_interval),
          pending_pieces_(piece_count, false) {}

    void add(const PieceRef& piece) {
        pending_.push_back(piece);
        mark_pending(piece.piece, true);
    }
    // Written and awaiting the next sync.
    bool holds(PieceIndex piece) const {
        return piece.get() < pending_pieces_.size() && pending_pieces_[piece.get()];
    }
    std::size_t size() const { return pending_.size(); }
    // How long until the pending pieces may be synced: syncs are at least `interval` apart,
    // and the first one (or the first after a quiet spell) is due at once. So is the one that
    // completes the torrent: nothing more will come, and the download ends with its ack.
    std::chrono::milliseconds until_due(std::chrono::milliseconds interval) const {
        if (!last_sync_ || book_.done().count() + pending_not_done_ >= pending_pieces_.size()) {
            return std::chrono::milliseconds(0);
        }
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            *last_sync_ + interval - bus::Clock::now());
        return std::max(left, std::chrono::milliseconds(0));
    }

    // Syncs the touched files, then acknowledges every pending piece in one PiecesWritten (or
    // reports each as failed when the sync failed: their bytes may be lost).
    void flush() {
        last_sync_ = bus::Clock::now();
        if (pending_.empty()) return;
        const Status synced = store_.sync();
        if (!synced.ok()) spdlog::error("{}", synced.error().describe());
        v1::Envelope written;
        auto* acknowledged = written.mutable_pieces_written();
        for (const PieceRef& piece : pending_) {
            mark_pending(piece.piece, false);
            // A second copy of a piece durable before this sync stays durable whatever it did.
            if (synced.ok() || book_.done().test(piece.piece)) {
                book_.mark_done(piece.piece);
                auto* ref = acknowledged->add_pieces();
                ref->set_piece(piece.piece.get());
                ref->set_lease_id(piece.lease_id);
            } else {
                report_write_failed(PieceProblem{piece, synced.error().describe()});
            }
        }
        if (acknowledged->pieces_size() > 0) link_.send(written);
        pending_.clear();
        if (synced.ok() && bus::Clock::now() >= next_save_) save_record();
    }

    // The resume record: after syncs (throttled) and at the end.
    void save_record() {
        next_save_ = bus::Clock::now() + save_interval_;
        if (const Status saved = book_.save(); !saved.ok()) {
            spdlog::warn("resume record not saved: {}", saved.error().describe());
        }
    }

    void report_write_failed(const PieceProblem& failed) {
        spdlog::error("piece {} not written: {}", failed.piece.piece.get(), failed.why);
        v1::Envelope report;
        report.mutable_write_failed()->set_piece(failed.piece.piece.get());
        report.mutable_write_failed()->set_lease_id(failed.piece.lease_id);
        report.mutable_write_failed()->set_error(failed.why);
        link_.send(report);
    }

private:
    void mark_pending(PieceIndex piece, bool pending) {
        if (piece.get() >= pending_pieces_.size() || pending_pieces_[piece.get()] == pending) return;
        pending_pieces_[piece.get()] = pending;
        if (!book_.done().test(piece)) pending ? ++pending_not_done_ : --pending_not_done_;
    }

    PieceStore& store_;
    bus::ControlLink& link_;
    ResumeBook& book_;
    std::chrono::milliseconds save_interval_;
    bus::Clock::time_point next_save_{};
    std::vector<PieceRef> pending_;
    std::vector<bool> pending_pieces_;  // by piece: in pending_
    std::size_t pending_not_done_ = 0;  // pieces in pending_ the book does not hold yet
    std::optional<bus::Clock::time_point> last_sync_;
};

// The worker gets its slots back now (within the report linger), not after the sync: the
// bytes are in the file (or will never be taken from the slot), and a worker short of slots
// stops fetching.
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

// One PiecesDropped per distinct reason (nearly always one).
void send_dropped(bus::ControlLink& link, const std::vector<PieceProblem>& dropped) {
    std::map<std::string, std::vector<PieceRef>> by_reason;
    for (const PieceProblem& problem : dropped) by_reason[problem.why].push_back(problem.piece);
    for (const auto& [reason, pieces] : by_reason) {
        spdlog::warn("dropped {} piece(s), to be fetched again: {}", pieces.size(), reason);
        v1::Envelope envelope;
        auto* report = envelope.mutable_pieces_dropped();
        report->set_reason(reason);
        for (const PieceRef& piece : pieces) {
            auto* ref = report->add_pieces();
            ref->set_piece(piece.piece.get());
            ref->set_lease_id(piece.lease_id);
        }
        link.queue_report(std::move(envelope));
    }
}

void handle_batch(PieceStore& store, bus::ArenaReader& arenas, const ResumeBook& book,
                  AckBatch& acks, bus::ControlLink& link, const bus::Incoming& in) {
    if (!in.envelope.has_piece_batch()) {
        spdlog::warn("dropped a message of type {} from '{}': only piece batches belong on this socket",
                     bus::body_name(in.envelope), in.envelope.sender());
        return;
    }
    const v1::PieceBatch& batch = in.envelope.piece_batch();
    const BatchOutcome outcome = write_batch(store, arenas, batch, in.frames, [&](PieceIndex piece) {
        return book.done().test(piece) || acks.holds(piece);
    });
    send_slots_freed(link, batch, outcome.freed_leases);
    send_dropped(link, outcome.dropped);
    for (const PieceProblem& failed : outcome.failed) acks.report_write_failed(failed);
    for (const PieceRef& written : outcome.written) acks.add(written);
}

// Sends the pieces already on disk; always, even none: the orchestrator leases nothing
// before it has heard this.
void send_resume_state(bus::ControlLink& link, const PieceBits& done) {
    v1::Envelope envelope;
    envelope.mutable_resume_state()->set_pieces_done(done.count());
    std::vector<zmq::message_t> frames;
    frames.emplace_back(done.bytes().data(), done.bytes().size());
    link.send(envelope, frames);
}

}  // namespace

std::string state_dir_of(const WriterOptions& options) {
    return options.state_dir.empty() ? options.dir + "/.piecework" : options.state_dir;
}

int run_writer(zmq::context_t& context, const WriterOptions& options) {
    bus::Gatekeeper gatekeeper(context, options.curve);  // outlives the socket it guards
    zmq::socket_t from_verifier(context, zmq::socket_type::pull);
    bus::configure(from_verifier, bus::SocketLimits{bus::kMaxMessageBytes, kVerifiedQueueDepth,
                                                    kVerifiedQueueDepth, 0});
    gatekeeper.secure(from_verifier, "verified");
    from_verifier.bind(options.verified);

    bus::ControlLink link(context, options.control, options.name, v1::ROLE_WRITER, options.timing,
                          options.curve);
    link.attach_metrics(options.metrics);
    // Kept for the check of the files already on disk, forgotten after it.
    Torrent torrent = bus::read_welcome(link.handshake(), PieceHashes::keep).torrent;
    auto opened = PieceStore::open(torrent, options.dir, StoreOptions{.direct_io = options.direct_io});
    if (!opened) throw std::runtime_error(opened.error().describe());
    PieceStore store = std::move(opened.value());
    if (const Status made = store.create_empty_files(); !made.ok()) {
        spdlog::error("{}", made.error().describe());
    }
    spdlog::info("writing '{}' ({} bytes, {} files) below '{}'{}", torrent.name(),
                 torrent.total_size(), torrent.files().size(), options.dir,
                 options.direct_io ? ", aligned pieces past the page cache" : "");

    ResumeBook book(torrent, store.root_fd(), state_dir_of(options));
    // Checking the files may take a while: keep the control link alive meanwhile, and stop
    // when told to.
    bool shutdown_during_check = false;
    const auto started = book.start([&] {
        while (auto message = link.poll_message()) {
            if (message->envelope.has_shutdown()) shutdown_during_check = true;
        }
        if (shutdown_during_check) return false;
        if (!link.tick(v1::Heartbeat{})) throw std::runtime_error("the orchestrator fell silent");
        return true;
    });
    if (!started) {
        spdlog::info("shut down while checking the files already on disk");
        link.socket().set(zmq::sockopt::linger, kExitLingerMs);
        return 0;
    }
    if (started->trusted) {
        spdlog::info("resume record '{}' holds: {} of {} pieces on disk", book.path(),
                     book.done().count(), torrent.piece_count());
    } else {
        spdlog::info("checked the files ({}): {} of {} pieces on disk", started->reason,
                     book.done().count(), torrent.piece_count());
    }
    send_resume_state(link, book.done());
    torrent.forget_piece_hashes();
    bus::release_start_up_memory();  // the Welcome's .torrent, the hashes, the check's buffer

    AckBatch batch(store, link, book, options.state_save_interval, torrent.piece_count());
    bus::ArenaReader arenas;
    auto finish = [&](int code) {
        batch.flush();
        batch.save_record();
        link.socket().set(zmq::sockopt::linger, kExitLingerMs);
        return code;
    };

    for (;;) {
        auto timeout = link.until_next_tick();
        if (batch.size() > 0) timeout = std::min(timeout, batch.until_due(options.sync_interval));
        std::array<zmq::pollitem_t, 2> items{{
            {link.socket().handle(), 0, ZMQ_POLLIN, 0},
            {from_verifier.handle(), 0, ZMQ_POLLIN, 0},
        }};
        zmq::poll(items.data(), items.size(), timeout);

        while (auto message = link.poll_message()) {
            if (message->envelope.has_shutdown()) {
                spdlog::info("shutting down: {}", message->envelope.shutdown().reason());
                return finish(0);
            }
            spdlog::debug("ignored control message of type {}",
                          static_cast<int>(message->envelope.body_case()));
        }

        for (int i = 0; i < kBatchesPerTurn; ++i) {
            bus::Incoming in;
            const bus::RecvStatus status = bus::receive(from_verifier, false, in);
            if (status == bus::RecvStatus::would_block) break;
            if (status == bus::RecvStatus::ok) handle_batch(store, arenas, book, batch, link, in);
        }

        if (batch.size() > 0 && batch.until_due(options.sync_interval).count() == 0) {
            batch.flush();
        }

        v1::Heartbeat beat;
        beat.set_queue_depth(static_cast<std::uint32_t>(batch.size()));
        if (!link.tick(beat)) {
            spdlog::error("the orchestrator has been silent too long; giving up");
            return finish(1);
        }
    }
}

}  // namespace pw::writer
