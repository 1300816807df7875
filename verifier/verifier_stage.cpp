#include "verifier/verifier_stage.hpp"

#include <map>
#include <stdexcept>

#include <spdlog/spdlog.h>

#include "core/bus/stage.hpp"
#include "core/bus/welcome.hpp"
#include "core/metainfo.hpp"
#include "verifier/piece_forwarder.hpp"

namespace pw::verifier {

namespace {

// Batches handled per loop turn before the control socket gets its turn again: a batch may
// hold up to bus::kMaxBatchPieces pieces to hash.
constexpr int kBatchesPerTurn = 4;

class VerifierBody final : public bus::StageBody {
public:
    VerifierBody(bus::Stage& stage, zmq::socket_t& to_writer)
        : stage_(stage), forwarder_(torrents_, to_writer, stage.name()) {}

    PieceForwarder& forwarder() { return forwarder_; }

    // Verdicts travel together (PieceFailed alone goes at once: the orchestrator bans on it).
    void report(std::vector<v1::Envelope> envelopes) {
        for (v1::Envelope& envelope : envelopes) stage_.link().queue_report(std::move(envelope));
    }

    void on_control(bus::Incoming& message) override {
        const v1::Envelope& envelope = message.envelope;
        if (envelope.has_torrent_added()) {
            auto added = bus::read_torrent_added(envelope.torrent_added());
            if (!added) {
                spdlog::warn("ignored a torrent: {}", added.error().describe());
                return;
            }
            announced_[added->id] = added->info_hash;
        } else if (envelope.has_torrent_info()) {
            const TorrentId id{envelope.torrent_info().torrent()};
            const auto announced = announced_.find(id);
            if (announced == announced_.end()) {
                spdlog::warn("ignored the info of torrent {}: it was never added", id.get());
                return;
            }
            auto torrent = bus::read_torrent_info(announced->second, message, PieceHashes::keep);
            if (!torrent) {
                spdlog::warn("torrent {}: {}", id.get(), torrent.error().describe());
                return;
            }
            spdlog::info("verifying '{}' (torrent {}): {} pieces of {} bytes", torrent->name(),
                         id.get(), torrent->piece_count(), torrent->piece_length());
            torrents_.insert_or_assign(id, std::move(torrent).value());
            bus::release_start_up_memory();  // the frame and the parser's copies
        } else if (envelope.has_torrent_removed()) {
            const TorrentId id{envelope.torrent_removed().torrent()};
            announced_.erase(id);
            if (torrents_.erase(id) > 0) spdlog::info("torrent {} removed", id.get());
        } else {
            spdlog::debug("ignored a {} message", bus::body_name(envelope));
        }
    }

    void on_terminate(const std::string& reason) override {
        const ForwarderStats& stats = forwarder_.stats();
        spdlog::info("stopping ({}): {} pieces verified, {} failed, {} dropped", reason,
                     stats.verified, stats.failed, stats.dropped);
    }

    v1::Heartbeat heartbeat() override {
        v1::Heartbeat beat;
        beat.set_queue_depth(static_cast<std::uint32_t>(forwarder_.held_pieces()));
        return beat;
    }

private:
    bus::Stage& stage_;
    std::map<TorrentId, Sha1Digest> announced_;  // known by info-hash, info or not
    Torrents torrents_;                          // with their info: checked here
    PieceForwarder forwarder_;
};

}  // namespace

int run_verifier(zmq::context_t& context, const VerifierOptions& options) {
    const bus::SocketLimits data_limits{bus::kMaxMessageBytes, kDataQueueDepth, kDataQueueDepth, 0};
    bus::Gatekeeper gatekeeper(context, options.curve);  // outlives the socket it guards
    zmq::socket_t from_workers(context, zmq::socket_type::pull);
    bus::configure(from_workers, data_limits);
    gatekeeper.secure(from_workers, "pieces");
    from_workers.bind(options.pieces);
    zmq::socket_t to_writer(context, zmq::socket_type::push);
    bus::configure(to_writer, data_limits);
    bus::secure_client(to_writer, options.curve, bus::kVerifiedServer);
    to_writer.connect(options.verified);

    bus::Stage stage(context, bus::StageConfig{options.control, options.name, v1::ROLE_VERIFIER,
                                               options.timing, options.curve, options.metrics,
                                               options.signal_fd});
    if (!stage.handshake()) return 0;
    VerifierBody body(stage, to_writer);
    PieceForwarder& forwarder = body.forwarder();

    bus::PollLoop loop(stage, body);
    // Read from the workers only while the writer can take a batch; otherwise wait for the
    // writer's queue to drain.
    loop.watch(from_workers, [&] { return forwarder.ready() ? short{ZMQ_POLLIN} : short{0}; },
               [&](short) {
                   for (int i = 0; i < kBatchesPerTurn && forwarder.ready(); ++i) {
                       bus::Incoming in;
                       const bus::RecvStatus status = bus::receive(from_workers, false, in);
                       if (status == bus::RecvStatus::would_block) break;
                       if (status == bus::RecvStatus::dropped) continue;
                       body.report(forwarder.take(std::move(in)));
                   }
               });
    loop.watch(to_writer, [&] { return forwarder.holding() ? short{ZMQ_POLLOUT} : short{0}; },
               [&](short) { body.report(forwarder.retry()); });
    return loop.run();
}

}  // namespace pw::verifier
