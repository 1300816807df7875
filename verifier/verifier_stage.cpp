#include "verifier/verifier_stage.hpp"

#include <array>
#include <stdexcept>

#include <spdlog/spdlog.h>

#include "core/bus/welcome.hpp"
#include "core/metainfo.hpp"
#include "verifier/piece_forwarder.hpp"

namespace pw::verifier {

namespace {

// Batches handled per loop turn before the control socket gets its turn again: a batch may
// hold up to bus::kMaxBatchPieces pieces to hash.
constexpr int kBatchesPerTurn = 4;

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

    bus::ControlLink link(context, options.control, options.name, v1::ROLE_VERIFIER,
                          options.timing, options.curve);
    link.attach_metrics(options.metrics);
    const Torrent torrent = bus::read_welcome(link.handshake(), PieceHashes::keep).torrent;
    bus::release_start_up_memory();
    spdlog::info("verifying '{}': {} pieces of {} bytes", torrent.name(), torrent.piece_count(),
                 torrent.piece_length());

    PieceForwarder forwarder(torrent, to_writer, options.name);
    // Verdicts travel together (PieceFailed alone goes at once: the orchestrator bans on it).
    auto report = [&link](std::vector<v1::Envelope> envelopes) {
        for (v1::Envelope& envelope : envelopes) link.queue_report(std::move(envelope));
    };

    for (;;) {
        // Read from the workers only while the writer can take a batch; otherwise wait for
        // the writer's queue to drain.
        const bool ready = forwarder.ready();
        std::array<zmq::pollitem_t, 2> items{{
            {link.socket().handle(), 0, ZMQ_POLLIN, 0},
            ready ? zmq::pollitem_t{from_workers.handle(), 0, ZMQ_POLLIN, 0}
                  : zmq::pollitem_t{to_writer.handle(), 0, ZMQ_POLLOUT, 0},
        }};
        zmq::poll(items.data(), items.size(), link.until_next_tick());

        while (auto message = link.poll_message()) {
            if (message->envelope.has_shutdown()) {
                spdlog::info("shutting down ({}): {} pieces verified, {} failed, {} dropped",
                             message->envelope.shutdown().reason(), forwarder.stats().verified,
                             forwarder.stats().failed, forwarder.stats().dropped);
                link.flush_reports();
                return 0;
            }
            spdlog::debug("ignored control message of type {}",
                          static_cast<int>(message->envelope.body_case()));
        }

        if (forwarder.holding()) report(forwarder.retry());
        for (int i = 0; i < kBatchesPerTurn && forwarder.ready(); ++i) {
            bus::Incoming in;
            const bus::RecvStatus status = bus::receive(from_workers, false, in);
            if (status == bus::RecvStatus::would_block) break;
            if (status == bus::RecvStatus::dropped) continue;
            report(forwarder.take(std::move(in)));
        }

        v1::Heartbeat beat;
        beat.set_queue_depth(static_cast<std::uint32_t>(forwarder.held_pieces()));
        if (!link.tick(beat)) {
            spdlog::error("the orchestrator has been silent too long; giving up");
            return 1;
        }
    }
}

}  // namespace pw::verifier
