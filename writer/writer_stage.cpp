#include "writer/writer_stage.hpp"

#include <algorithm>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <vector>

#include <spdlog/spdlog.h>

#include "core/bus/piece_arena.hpp"
#include "core/bus/stage.hpp"
#include "core/bus/welcome.hpp"
#include "core/metainfo.hpp"
#include "writer/download_roots.hpp"
#include "writer/open_file_cache.hpp"
#include "writer/read_service.hpp"
#include "writer/reports.hpp"
#include "writer/text.hpp"
#include "writer/torrent_writer.hpp"

namespace pw::writer {

namespace v1 = ::piecework::v1;

namespace {

// Batches read per turn of the loop: up to a few hundred pieces, then the control link gets
// its turn.
constexpr int kBatchesPerTurn = 4;
// How long the loop may sleep with nothing to sync (the heartbeat wakes it sooner).
constexpr std::chrono::milliseconds kIdle{60'000};

namespace fs = std::filesystem;

// The forms a path may be compared in: as given (absolute, normalized) and with its symbolic
// links resolved, when that differs.
std::vector<std::string> forms_of(const std::string& path) {
    std::error_code error;
    std::vector<std::string> forms{fs::absolute(path, error).lexically_normal().string()};
    const std::string resolved = fs::weakly_canonical(path, error).lexically_normal().string();
    if (!error && resolved != forms.front()) forms.push_back(resolved);
    for (std::string& form : forms) {
        while (form.size() > 1 && form.back() == '/') form.pop_back();
    }
    return forms;
}

// The file of `torrent` that would lie in the state folder (the default one, DIR/.piecework,
// is inside the default root): a torrent named ".piecework" must not write, or delete,
// another torrent's resume record. Empty when none does.
std::string file_in_state_dir(const Torrent& torrent, const std::string& folder, const std::string& state_dir) {
    for (const std::string& folder_form : forms_of(folder)) {
        for (const std::string& state_form : forms_of(state_dir)) {
            const std::string prefix = folder_form == "/" ? "/" : folder_form + "/";
            if (state_form.rfind(prefix, 0) != 0) continue;
            const std::string inside = state_form.substr(prefix.size());
            for (std::size_t i = 0; i < torrent.files().size(); ++i) {
                const std::string path = torrent.relative_path(i);
                if (path == inside || path.rfind(inside + "/", 0) == 0) return path;
            }
        }
    }
    return {};
}

std::vector<PieceProblem> every_piece(const v1::PieceBatch& batch, const std::string& why) {
    std::vector<PieceProblem> problems;
    for (const auto& piece : batch.pieces()) {
        problems.push_back(PieceProblem{{PieceIndex{piece.piece()}, piece.lease_id()}, why});
    }
    return problems;
}

class WriterBody final : public bus::StageBody {
public:
    // `reads`: the bound ROUTER of --reads, or null (no reads served).
    WriterBody(bus::Stage& stage, const WriterOptions& options, DownloadRoots roots, zmq::socket_t* reads)
        : stage_(stage), roots_(std::move(roots)) {
        settings_.state_dir = state_dir_of(options);
        settings_.sync_interval = options.sync_interval;
        settings_.state_save_interval = options.state_save_interval;
        settings_.store.direct_io = options.direct_io;
        settings_.store.open_files = std::make_shared<OpenFileCache>(options.max_open_files);
        if (reads != nullptr) {
            ReadOptions read = options.read;
            read.arena = read_arena_wanted(options);
            reads_.emplace(
                read, [this](TorrentId id) { return read_target(id); },
                [reads, name = stage.name()](const std::string& identity, v1::Envelope& envelope,
                                             std::span<zmq::message_t> frames) {
                    return send_read_answer(*reads, name, identity, envelope, frames);
                },
                options.metrics);
            spdlog::info("serving reads of verified pieces on '{}', {} (memory {} MiB, cache {} MiB)",
                         options.reads, read.arena ? "in shared-memory arenas" : "as frames",
                         read.memory_bytes >> 20, read.cache_bytes >> 20);
        }
    }

    // One message from the reads socket.
    void take_read(const bus::Incoming& in) {
        if (reads_) reads_->take(in);
    }

    void on_control(bus::Incoming& message) override {
        const v1::Envelope& envelope = message.envelope;
        if (envelope.has_torrent_added()) {
            added(envelope.torrent_added());
        } else if (envelope.has_torrent_info()) {
            info(message);
        } else if (envelope.has_torrent_removed()) {
            removed(TorrentId{envelope.torrent_removed().torrent()}, envelope.torrent_removed().delete_data());
        } else if (envelope.has_verify_torrent()) {
            verify(TorrentId{envelope.verify_torrent().torrent()});
        } else if (envelope.has_files_wanted()) {
            files_wanted(message);
        } else {
            spdlog::debug("ignored a {} message", bus::body_name(envelope));
        }
    }

    void on_terminate(const std::string& reason) override {
        std::size_t closed = 0;
        for (auto& [id, entry] : torrents_) {
            if (!entry.writer) continue;
            entry.writer->close();
            ++closed;
        }
        spdlog::info("stopping ({}): {} torrent(s) synced, their records saved", reason, closed);
    }

    v1::Heartbeat heartbeat() override {
        std::size_t pending = 0;
        for (const auto& [id, entry] : torrents_) {
            if (entry.writer) pending += entry.writer->pending();
        }
        v1::Heartbeat beat;
        beat.set_queue_depth(static_cast<std::uint32_t>(pending));
        return beat;
    }

    void take_batch(const bus::Incoming& in) {
        if (!in.envelope.has_piece_batch()) {
            spdlog::warn("dropped a message of type {} from '{}': only piece batches belong on this socket",
                         bus::body_name(in.envelope), in.envelope.sender());
            return;
        }
        const v1::PieceBatch& batch = in.envelope.piece_batch();
        const TorrentId id{batch.torrent()};
        const auto found = torrents_.find(id);
        if (found != torrents_.end() && !found->second.refusal.empty()) {
            // Never a byte into a refused folder; the orchestrator hears why for each piece.
            for (const PieceProblem& problem : every_piece(batch, found->second.refusal)) {
                send_write_failed(stage_.link(), id, problem.piece, problem.why);
            }
            send_all_slots_freed(stage_.link(), batch);
            return;
        }
        if (found == torrents_.end() || !found->second.writer || !found->second.writer->open_for_writes()) {
            // Unknown, removed, or its files not checked yet: nobody is to blame.
            send_dropped(stage_.link(), id,
                         every_piece(batch, "torrent " + std::to_string(id.get()) + " not open here"),
                         found == torrents_.end());
            send_all_slots_freed(stage_.link(), batch);
            return;
        }
        found->second.writer->write(batch, in.frames, arenas_);
    }

    // Every turn: a slice of hashing for the checks that run, round-robin over their
    // torrents, then the syncs that are due.
    void work() {
        const auto deadline = bus::Clock::now() + kCheckSlice;
        std::vector<TorrentWriter*> checking;
        for (auto& [id, entry] : torrents_) {
            if (entry.writer && entry.writer->checking()) checking.push_back(entry.writer.get());
        }
        if (!checking.empty()) {
            // Start after the torrent that had the last slice, wrapping round.
            const auto first = std::find_if(checking.begin(), checking.end(),
                                             [this](const TorrentWriter* w) { return w->id() > last_checked_; });
            std::rotate(checking.begin(), first, checking.end());
            for (TorrentWriter* writer : checking) {
                last_checked_ = writer->id();
                writer->check_until(deadline);
                if (bus::Clock::now() >= deadline) break;
            }
        }
        if (reads_) reads_->serve();
        for (auto& [id, entry] : torrents_) {
            if (entry.writer) entry.writer->flush_if_due();
        }
    }

    // No sleep while a check has work; otherwise until the first sync due.
    std::chrono::milliseconds timeout() const {
        auto timeout = kIdle;
        if (reads_) timeout = std::min(timeout, reads_->timeout());
        for (const auto& [id, entry] : torrents_) {
            if (!entry.writer) continue;
            if (entry.writer->checking()) return std::chrono::milliseconds(0);
            if (const auto due = entry.writer->until_sync_due()) timeout = std::min(timeout, *due);
        }
        return timeout;
    }

private:
    struct Entry {
        bus::AddedTorrent added;
        std::optional<DownloadRoots::Placement> placement;
        // Non-empty: the download folder is refused, and with it every piece of the torrent.
        std::string refusal;
        bool answered = false;  // a TorrentInfo was answered (refused torrents)
        std::uint32_t piece_count = 0;  // of a refused torrent, once answered
        bool verify_waiting = false;  // a VerifyTorrent came before the TorrentInfo
        std::string unwanted_files;   // FilesWanted's bitfield (by file index; set: not wanted)
        std::unique_ptr<TorrentWriter> writer;  // once the TorrentInfo came
    };

    static ReadService::Delivery send_read_answer(zmq::socket_t& socket, const std::string& name,
                                                  const std::string& identity, v1::Envelope& envelope,
                                                  std::span<zmq::message_t> frames) {
        try {
            return bus::send(socket, name, envelope, frames, &identity, zmq::send_flags::dontwait)
                       ? ReadService::Delivery::sent
                       : ReadService::Delivery::would_block;
        } catch (const zmq::error_t& error) {
            // ZMQ_ROUTER_MANDATORY: no connection of that identity any more.
            if (error.num() == EHOSTUNREACH) return ReadService::Delivery::gone;
            throw;
        }
    }

    ReadService::Target read_target(TorrentId id) {
        const auto found = torrents_.find(id);
        if (found == torrents_.end()) return {nullptr, cat("torrent ", id.get(), " is not known here")};
        if (!found->second.refusal.empty()) {
            return {nullptr, cat("torrent ", id.get(), " is not served here: its download folder is refused")};
        }
        if (!found->second.writer) return {nullptr, cat("torrent ", id.get(), " is not open here yet")};
        return {found->second.writer.get(), {}};
    }

    void added(const v1::TorrentAdded& message) {
        auto torrent = bus::read_torrent_added(message);
        if (!torrent) {
            spdlog::warn("ignored a torrent: {}", torrent.error().describe());
            return;
        }
        if (const auto known = torrents_.find(torrent->id); known != torrents_.end()) {
            if (known->second.added.info_hash != torrent->info_hash) {
                spdlog::warn("ignored torrent {} added again with another info-hash", torrent->id.get());
            }
            return;  // a repeat, after a repeated Hello
        }
        Entry entry;
        entry.added = std::move(torrent).value();
        if (auto placed = roots_.place(entry.added.download_dir)) {
            entry.placement = std::move(placed).value();
        } else {
            refuse(entry, placed.error().describe());
        }
        torrents_.emplace(entry.added.id, std::move(entry));
    }

    void refuse(Entry& entry, const std::string& why) {
        entry.refusal = why;
        spdlog::error("torrent {} ('{}') refused: {}; none of its pieces will be written",
                      entry.added.id.get(), entry.added.name, why);
    }

    void info(const bus::Incoming& message) {
        const TorrentId id{message.envelope.torrent_info().torrent()};
        const auto found = torrents_.find(id);
        if (found == torrents_.end()) {
            spdlog::warn("ignored the info of torrent {}: it was never added", id.get());
            return;
        }
        Entry& entry = found->second;
        if (entry.writer || entry.answered) {
            spdlog::debug("ignored the info of torrent {}: open here already", id.get());
            return;
        }
        auto torrent = bus::read_torrent_info(entry.added.info_hash, message, PieceHashes::keep);
        if (!torrent) {
            spdlog::warn("torrent {}: {}", id.get(), torrent.error().describe());
            return;
        }
        if (entry.refusal.empty()) {
            if (const std::string file = file_in_state_dir(*torrent, entry.placement->shown, settings_.state_dir);
                !file.empty()) {
                refuse(entry, "its file '" + file + "' would lie in the writer's state folder '" +
                                  settings_.state_dir + "'");
            }
        }
        if (entry.refusal.empty()) {
            auto folder = roots_.open_folder(*entry.placement);
            if (!folder) refuse(entry, folder.error().describe());
            if (folder) {
                if (reads_) reads_->forget(id);  // nothing of an earlier opening is served
                entry.writer = std::make_unique<TorrentWriter>(id, std::move(torrent).value(),
                                                               std::move(folder).value(),
                                                               entry.placement->shown, settings_,
                                                               stage_.link());
                entry.writer->set_unwanted(unwanted_of(entry));
                entry.writer->start();
                if (entry.verify_waiting) entry.writer->verify();
                bus::release_start_up_memory();  // the frame and the parser's copies
                return;
            }
        }
        // Refused: nothing on disk is ours to count. The orchestrator waits for an answer.
        entry.answered = true;
        entry.piece_count = torrent->piece_count();
        send_resume_state(stage_.link(), id, PieceBits(torrent->piece_count()), entry.verify_waiting);
        entry.verify_waiting = false;
    }

    static std::vector<bool> unwanted_of(const Entry& entry) {
        std::vector<bool> unwanted(entry.unwanted_files.size() * 8, false);
        for (std::size_t i = 0; i < unwanted.size(); ++i) {
            unwanted[i] = ((static_cast<unsigned char>(entry.unwanted_files[i / 8]) >> (7 - i % 8)) & 1u) != 0;
        }
        return unwanted;
    }

    void files_wanted(const bus::Incoming& message) {
        const TorrentId id{message.envelope.files_wanted().torrent()};
        const auto found = torrents_.find(id);
        if (found == torrents_.end()) {
            spdlog::warn("ignored the files wanted of torrent {}: it was never added", id.get());
            return;
        }
        Entry& entry = found->second;
        // A bitfield of at most one bit a file; a longer one is cut (a file past the torrent's
        // last is no file).
        constexpr std::size_t kMaxBytes = (1u << 20) / 8;
        entry.unwanted_files.clear();
        if (!message.frames.empty()) {
            const auto& frame = message.frames.front();
            entry.unwanted_files.assign(static_cast<const char*>(frame.data()), std::min(frame.size(), kMaxBytes));
        }
        if (entry.writer) entry.writer->set_unwanted(unwanted_of(entry));
    }

    void removed(TorrentId id, bool delete_data) {
        const auto found = torrents_.find(id);
        if (found == torrents_.end()) {
            spdlog::debug("ignored the removal of torrent {}: not known here", id.get());
            return;
        }
        Entry& entry = found->second;
        if (entry.writer && delete_data) {
            entry.writer->delete_data();
        } else if (entry.writer) {
            entry.writer->close();
        } else if (delete_data) {
            if (const Status removed = remove_record(settings_.state_dir, entry.added.info_hash); !removed.ok()) {
                spdlog::warn("torrent {}: {}", id.get(), removed.error().describe());
            }
        }
        if (reads_) reads_->forget(id);
        spdlog::info("torrent {} ('{}') removed{}", id.get(), entry.added.name,
                     delete_data ? (entry.writer ? ", its files deleted" : ", its record deleted") : "");
        torrents_.erase(found);
    }

    void verify(TorrentId id) {
        const auto found = torrents_.find(id);
        if (found == torrents_.end()) {
            spdlog::warn("ignored a verify of torrent {}: not known here", id.get());
            return;
        }
        Entry& entry = found->second;
        if (entry.writer) {
            entry.writer->verify();
        } else if (entry.answered) {
            // Refused: nothing of it is on disk here.
            spdlog::warn("torrent {}: nothing to verify, its download folder is refused", id.get());
            send_resume_state(stage_.link(), id, PieceBits(entry.piece_count), true);
        } else {
            entry.verify_waiting = true;
        }
    }

    bus::Stage& stage_;
    DownloadRoots roots_;
    TorrentSettings settings_;
    bus::ArenaReader arenas_;  // one for the stage's life: an arena is mapped once
    std::map<TorrentId, Entry> torrents_;
    TorrentId last_checked_{0};
    std::optional<ReadService> reads_;  // with --reads
};

}  // namespace

bool read_arena_wanted(const WriterOptions& options) {
    switch (options.read_arena) {
        case ReadArena::on: return true;
        case ReadArena::off: return false;
        case ReadArena::automatic: break;
    }
    return std::string_view(options.reads).starts_with("ipc://");
}

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
    // The workers' reads: small requests in; answers out without blocking, and an answer to a
    // worker that is gone fails (ROUTER_MANDATORY) rather than vanish, so its slots come back.
    std::optional<zmq::socket_t> reads;
    if (!options.reads.empty()) {
        reads.emplace(context, zmq::socket_type::router);
        bus::configure(*reads, bus::SocketLimits{1 << 20, kReadsSendQueue, 1000, 0});
        reads->set(zmq::sockopt::router_mandatory, 1);
        gatekeeper.secure(*reads, "reads");
        reads->bind(options.reads);
    }

    auto roots = DownloadRoots::open(options.dir, options.allow_dirs);
    if (!roots) throw std::runtime_error(roots.error().describe());
    for (std::size_t i = 0; i < roots->size(); ++i) {
        spdlog::info("{} '{}'", i == 0 ? "download root (the default)" : "download root", roots->path(i));
    }

    bus::Stage stage(context, bus::StageConfig{options.control, options.name, v1::ROLE_WRITER,
                                               options.timing, options.curve, options.metrics,
                                               options.signal_fd});
    if (!stage.handshake()) return 0;
    WriterBody body(stage, options, std::move(roots).value(), reads ? &*reads : nullptr);

    bus::PollLoop loop(stage, body);
    loop.watch(from_verifier, [] { return short{ZMQ_POLLIN}; }, [&](short) {
        for (int i = 0; i < kBatchesPerTurn; ++i) {
            bus::Incoming in;
            const bus::RecvStatus status = bus::receive(from_verifier, false, in);
            if (status == bus::RecvStatus::would_block) break;
            if (status == bus::RecvStatus::ok) body.take_batch(in);
        }
    });
    if (reads) {
        loop.watch(*reads, [] { return short{ZMQ_POLLIN}; }, [&](short) {
            for (int i = 0; i < kReadMessagesPerTurn; ++i) {
                bus::Incoming in;
                const bus::RecvStatus status = bus::receive(*reads, true, in);
                if (status == bus::RecvStatus::would_block) break;
                if (status == bus::RecvStatus::ok) body.take_read(in);
            }
        });
    }
    loop.set_timeout([&body] { return body.timeout(); });
    loop.every_turn([&body] { body.work(); });
    return loop.run();
}

}  // namespace pw::writer
