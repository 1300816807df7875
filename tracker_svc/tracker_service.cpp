#include "tracker_svc/tracker_service.hpp"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <stdexcept>
#include <string_view>
#include <utility>
#include <vector>

#include <spdlog/spdlog.h>

#include "core/bus/stage.hpp"
#include "core/bus/welcome.hpp"
#include "core/tracker_codec.hpp"
#include "tracker_svc/announce_queue.hpp"
#include "tracker_svc/http_announcer.hpp"
#include "tracker_svc/torrent_announcer.hpp"
#include "tracker_svc/local_discovery.hpp"
#include "tracker_svc/udp_announcer.hpp"

namespace pw::tracker {

namespace {

namespace v1 = bus::v1;
using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

bool starts_with_ci(std::string_view text, std::string_view prefix) {
    if (text.size() < prefix.size()) return false;
    for (std::size_t i = 0; i < prefix.size(); ++i) {
        if (std::tolower(static_cast<unsigned char>(text[i])) != prefix[i]) return false;
    }
    return true;
}

milliseconds until(Clock::time_point when, Clock::time_point now) {
    return std::max(milliseconds(0), std::chrono::ceil<milliseconds>(when - now));
}

class TrackerBody final : public bus::StageBody {
public:
    TrackerBody(bus::Stage& stage, const ServiceOptions& options, const bus::WelcomeInfo& welcome)
        : stage_(stage),
          options_(options),
          welcome_(welcome),
          rng_(std::random_device{}()),
          queue_(options.max_in_flight),
          http_(static_cast<long>(options.max_in_flight)) {
        if (!options.lsd) return;
        auto socket = LsdSocket::open(options.lsd_interface);
        if (!socket) {
            spdlog::warn("local service discovery is off: {}", socket.error().describe());
            return;
        }
        lsd_socket_.emplace(std::move(socket).value());
        // Our own announces come back (multicast loop): the cookie tells them apart.
        lsd_.emplace(to_hex(std::to_string(rng_())).substr(0, 12));
        spdlog::info("local service discovery on {}:{}{}", lsd::kGroupV4, lsd::kPort,
                     options.lsd_interface.empty() ? std::string{} : " via " + options.lsd_interface);
    }

    void on_control(bus::Incoming& message) override {
        const v1::Envelope& envelope = message.envelope;
        const auto now = Clock::now();
        if (envelope.has_torrent_added()) {
            on_added(envelope.torrent_added());
        } else if (envelope.has_tracker_stats()) {
            on_stats(envelope.tracker_stats(), now);
        } else if (envelope.has_torrent_removed()) {
            on_removed(TorrentId{envelope.torrent_removed().torrent()}, now);
        } else if (envelope.has_torrent_info()) {
            // Announcing needs the info-hash only, which TorrentAdded carries.
        } else {
            spdlog::debug("ignored a {} message", bus::body_name(envelope));
        }
    }

    // The skeleton ends the loop once this returns, so the stopped announces run here, in a
    // small loop of their own over the same transfers, bounded by stop_timeout altogether.
    void on_terminate(const std::string& reason) override {
        const auto now = Clock::now();
        const auto deadline = now + options_.stop_timeout;
        for (auto& [id, entry] : torrents_) {
            if (entry.announcer.stopping()) {
                entry.stop_deadline = std::min(entry.stop_deadline.value_or(deadline), deadline);
                continue;
            }
            cancel_transfer(entry);
            queue_.forget(id);
            if (entry.announcer.stop(now)) entry.stop_deadline = deadline;
        }
        sweep();
        if (torrents_.empty()) {
            spdlog::info("stopping ({}): no tracker to say stopped to", reason);
            return;
        }
        spdlog::info("stopping ({}): saying stopped to the trackers of {} torrent(s)", reason,
                     torrents_.size());
        std::vector<zmq::pollitem_t> items;
        for (;;) {
            const auto turn = Clock::now();
            drive(turn);  // gives up on each torrent at its deadline, so this ends
            if (torrents_.empty()) break;
            items.clear();
            add_poll_items(items);
            try {
                zmq::poll(items, poll_timeout(turn));
            } catch (const zmq::error_t& error) {
                if (error.num() != EINTR) throw;
            }
        }
    }

    v1::Heartbeat heartbeat() override {
        v1::Heartbeat beat;
        beat.set_queue_depth(static_cast<std::uint32_t>(queue_.waiting_count()));
        return beat;
    }

    // --- the loop's side ---

    void add_poll_items(std::vector<zmq::pollitem_t>& items) const {
        http_.add_poll_items(items);
        if (lsd_socket_) items.push_back(zmq::pollitem_t{nullptr, lsd_socket_->fd(), ZMQ_POLLIN, 0});
        for (const auto& [id, entry] : torrents_) {
            if (entry.transfer && entry.transfer->udp) entry.transfer->udp->add_poll_items(items);
        }
    }

    milliseconds poll_timeout(Clock::time_point now) const {
        milliseconds timeout = http_.poll_timeout();
        if (lsd_) {
            if (const auto due = lsd_->next_due()) timeout = std::min(timeout, until(*due, now));
        }
        for (const auto& [id, entry] : torrents_) {
            if (entry.transfer && entry.transfer->udp) {
                timeout = std::min(timeout, entry.transfer->udp->poll_timeout(now));
            }
            // A torrent waiting for a slot wakes when a transfer ends, not by the clock.
            if (!queue_.waiting(id) && !queue_.in_flight(id)) {
                if (const auto due = entry.announcer.next_due()) timeout = std::min(timeout, until(*due, now));
            }
            if (entry.stop_deadline) timeout = std::min(timeout, until(*entry.stop_deadline, now));
        }
        return std::max(timeout, milliseconds(1));
    }

    // Every turn: the outcomes of the transfers, the stopped announces out of time, then the
    // torrents due join the queue and the queue starts what the cap allows.
    void drive(Clock::time_point now) {
        discover(now);
        for (auto& [transfer, reply] : http_.drive()) {
            const auto owner = http_owner_.find(transfer);
            if (owner == http_owner_.end()) continue;
            const TorrentId id = owner->second;
            Entry& entry = torrents_.at(id);
            conclude(id, entry, http_outcome(entry.announcer, std::move(reply), now), now);
        }
        for (auto& [id, entry] : torrents_) {
            if (!entry.transfer || !entry.transfer->udp) continue;
            if (auto answer = entry.transfer->udp->drive(now)) {
                conclude(id, entry,
                         answer->ok() ? entry.announcer.on_answer(**answer, now)
                                      : entry.announcer.on_failure(answer->error().describe(), now),
                         now);
            }
        }
        for (auto& [id, entry] : torrents_) {
            if (entry.stop_deadline && now >= *entry.stop_deadline && !entry.announcer.finished()) {
                spdlog::warn("torrent {}: gave up on the stopped announce to {} (no answer in {} ms)",
                             id.get(), entry.announcer.last_answered(), options_.stop_timeout.count());
                entry.gave_up = true;
            }
        }
        sweep();
        for (auto& [id, entry] : torrents_) {
            if (queue_.waiting(id) || queue_.in_flight(id)) continue;
            if (entry.announcer.wants_attempt(now)) queue_.push(id, entry.announcer.stopping());
        }
        while (const auto id = queue_.start_next()) start(*id, now);
    }

private:
    struct Transfer {
        HttpAnnouncer::TransferId id = 0;
        std::unique_ptr<UdpAnnouncer> udp;  // null: an HTTP transfer in http_
    };

    struct Entry {
        explicit Entry(TorrentAnnouncer a) : announcer(std::move(a)) {}
        TorrentAnnouncer announcer;
        std::optional<Transfer> transfer;                // the announce in flight
        std::optional<Clock::time_point> stop_deadline;  // once removed (or the stage ends)
        bool gave_up = false;                            // the stopped announce ran out of time
    };

    // LSD: announces due go out, and what the LAN says comes in (a bounded number a turn).
    void discover(Clock::time_point now) {
        if (!lsd_ || !lsd_socket_) return;
        for (const auto& datagram : lsd_->due(now)) {
            if (auto sent = lsd_socket_->send(datagram); !sent.ok()) {
                spdlog::debug("{}", sent.error().describe());
            }
        }
        std::map<TorrentId, std::vector<PeerAddress>> found;
        for (int read = 0; read < 64; ++read) {
            auto datagram = lsd_socket_->receive();
            if (!datagram) break;
            auto peers = lsd_->on_datagram(datagram->first, datagram->second, now);
            if (!peers) {
                spdlog::debug("ignored an LSD datagram from {}: {}", datagram->second, peers.error().describe());
                continue;
            }
            for (auto& peer : *peers) found[peer.torrent].push_back(std::move(peer.peer));
        }
        for (auto& [id, peers] : found) {
            spdlog::info("torrent {}: {} peer(s) found on the local network", id.get(), peers.size());
            Outcome outcome;
            outcome.peers = std::move(peers);
            outcome.peers_tracker = "lsd";
            report(id, outcome);
        }
    }

    void on_added(const v1::TorrentAdded& message) {
        auto added = bus::read_torrent_added(message);
        if (!added) {
            spdlog::warn("ignored a torrent: {}", added.error().describe());
            return;
        }
        const TorrentId id = added->id;
        if (lsd_) {
            // BEP 27: a private torrent's peers come from its tracker only.
            if (added->private_torrent) {
                lsd_->remove(id);
            } else {
                lsd_->add(id, added->info_hash, Clock::now());
            }
        }
        if (const auto known = torrents_.find(id); known != torrents_.end()) {
            if (!known->second.announcer.stopping()) return;  // a repeat, after another Welcome
            // Added again while still saying stopped: it starts over, the goodbye is moot.
            cancel_transfer(known->second);
            queue_.forget(id);
            torrents_.erase(known);
        }
        AnnounceRequest identity;
        identity.info_hash = added->info_hash;
        identity.peer_id = welcome_.peer_id;
        identity.port = welcome_.listen_port;
        // BEP 7's key lets a tracker recognise us across address changes; one per torrent and
        // session.
        identity.key = static_cast<std::uint32_t>(rng_());
        TorrentAnnouncer::Config config;
        config.min_interval = options_.min_interval;
        const auto& entry =
            torrents_.try_emplace(id, TorrentAnnouncer(id, identity, std::move(added->trackers), rng_, config))
                .first->second;
        if (entry.announcer.tiers().empty()) {
            spdlog::log(lsd_ ? spdlog::level::info : spdlog::level::warn,
                        "torrent {} ('{}') lists no trackers: {}", id.get(), added->name,
                        lsd_ ? "announced on the local network only" : "nothing to announce to");
        } else {
            spdlog::info("torrent {} ('{}', {}): {} tier(s), announcing once its stats come",
                         id.get(), added->name, to_hex(added->info_hash),
                         entry.announcer.tiers().tiers().size());
        }
    }

    void on_stats(const v1::TrackerStats& stats, Clock::time_point now) {
        const auto port = static_cast<std::uint16_t>(std::min<std::uint32_t>(stats.port(), 65535));
        if (lsd_) lsd_->set_port(TorrentId{stats.torrent()}, port);
        const auto known = torrents_.find(TorrentId{stats.torrent()});
        if (known == torrents_.end()) {
            spdlog::debug("ignored the stats of torrent {}: not known here", stats.torrent());
            return;
        }
        known->second.announcer.on_stats(stats.uploaded(), stats.downloaded(), stats.left(),
                                         static_cast<std::uint16_t>(std::min<std::uint32_t>(stats.port(), 65535)),
                                         stats.event() == v1::TrackerStats::COMPLETED, now,
                                         stats.announce_now());
        if (stats.announce_now()) {
            spdlog::info("torrent {}: the orchestrator ran out of peers: announcing early", stats.torrent());
        }
    }

    void on_removed(TorrentId id, Clock::time_point now) {
        if (lsd_) lsd_->remove(id);
        const auto known = torrents_.find(id);
        if (known == torrents_.end() || known->second.announcer.stopping()) return;
        Entry& entry = known->second;
        cancel_transfer(entry);
        queue_.forget(id);
        if (!entry.announcer.stop(now)) {
            spdlog::info("torrent {} removed (no tracker to say stopped to)", id.get());
            torrents_.erase(known);
            return;
        }
        spdlog::info("torrent {} removed: saying stopped to {}", id.get(),
                     entry.announcer.last_answered());
        entry.stop_deadline = now + options_.stop_timeout;
    }

    // Drops the torrents with nothing more to announce.
    void sweep() {
        for (auto it = torrents_.begin(); it != torrents_.end();) {
            if (it->second.announcer.finished() || it->second.gave_up) {
                cancel_transfer(it->second);
                queue_.forget(it->first);
                it = torrents_.erase(it);
            } else {
                ++it;
            }
        }
    }

    void cancel_transfer(Entry& entry) {
        if (!entry.transfer) return;
        if (!entry.transfer->udp) {
            http_.cancel(entry.transfer->id);
            http_owner_.erase(entry.transfer->id);
        }
        entry.transfer.reset();
    }

    // The queue gave `id` a slot: its next announce goes out, or fails at once (a URL we
    // cannot use), in which case the round goes on with the next tracker in the queue's turn.
    void start(TorrentId id, Clock::time_point now) {
        const auto known = torrents_.find(id);
        if (known == torrents_.end() || !known->second.announcer.wants_attempt(now)) {
            queue_.finish(id);
            return;
        }
        Entry& entry = known->second;
        const Attempt attempt = entry.announcer.begin_attempt();
        if (auto error = launch(id, entry, attempt, now)) {
            conclude(id, entry, entry.announcer.on_failure(std::move(*error), now), now);
        }
    }

    std::optional<std::string> launch(TorrentId id, Entry& entry, const Attempt& attempt,
                                      Clock::time_point now) {
        auto timeout = milliseconds(options_.announce_timeout);
        if (entry.stop_deadline) timeout = std::min(timeout, until(*entry.stop_deadline, now));
        timeout = std::max(timeout, milliseconds(1));
        const auto transfer = next_transfer_++;
        try {
            if (starts_with_ci(attempt.url, "http://") || starts_with_ci(attempt.url, "https://")) {
                http_.start(transfer, build_announce_url(attempt.url, attempt.request), timeout);
                http_owner_[transfer] = id;
                entry.transfer = Transfer{transfer, nullptr};
            } else if (starts_with_ci(attempt.url, "udp://")) {
                auto address = parse_udp_url(attempt.url);
                if (!address.ok()) return address.error().describe();
                auto udp = std::make_unique<UdpAnnouncer>(rng_, udp_connections_);
                udp->start(*address, attempt.request, now, timeout);
                entry.transfer = Transfer{transfer, std::move(udp)};
            } else {
                return std::string("unsupported tracker URL scheme (only http, https and udp)");
            }
        } catch (const std::runtime_error& error) {  // out of handles, descriptors, threads
            return std::string(error.what());
        }
        return std::nullopt;
    }

    Outcome http_outcome(TorrentAnnouncer& announcer, Result<HttpReply> reply, Clock::time_point now) {
        if (!reply.ok()) return announcer.on_failure(reply.error().describe(), now);
        auto parsed = parse_http_response(reply->body);
        if (reply->status != 200) {
            // Some trackers send their failure reason with an error status: prefer it.
            if (parsed.ok() && parsed->failure_reason) {
                return announcer.on_failure("tracker says: " + *parsed->failure_reason, now);
            }
            return announcer.on_failure("HTTP status " + std::to_string(reply->status), now);
        }
        if (!parsed.ok()) return announcer.on_failure("malformed response: " + parsed.error().describe(), now);
        return announcer.on_answer(*parsed, now);
    }

    // An announce of `id` ended with `outcome`: its slot is free, the orchestrator hears of
    // it, and a round that goes on with the next tracker queues again (at the back: a torrent
    // with many dead trackers takes its turn like the others).
    void conclude(TorrentId id, Entry& entry, const Outcome& outcome, Clock::time_point now) {
        if (entry.transfer && !entry.transfer->udp) http_owner_.erase(entry.transfer->id);
        entry.transfer.reset();
        queue_.finish(id);
        report(id, outcome);
        if (entry.announcer.wants_attempt(now)) queue_.push(id, entry.announcer.stopping());
    }

    void report(TorrentId id, const Outcome& outcome) {
        if (!outcome.peers.empty()) {
            v1::Envelope envelope;
            auto* found = envelope.mutable_peers_found();
            found->set_torrent(id.get());
            found->set_tracker(outcome.peers_tracker);
            for (const auto& peer : outcome.peers) {
                auto* out = found->add_peers();
                out->set_ip(peer.ip);
                out->set_port(peer.port);
            }
            stage_.link().send(envelope);
        }
        if (outcome.status) {
            v1::Envelope envelope;
            auto* status = envelope.mutable_tracker_status();
            status->set_torrent(id.get());
            status->set_tracker(outcome.status->tracker);
            status->set_ok(outcome.status->ok);
            status->set_message(outcome.status->message);
            status->set_next_announce_s(static_cast<std::uint32_t>(outcome.status->next_announce.count()));
            status->set_peers(outcome.status->peers);
            stage_.link().send(envelope);
        }
    }

    bus::Stage& stage_;
    const ServiceOptions& options_;
    bus::WelcomeInfo welcome_;
    std::mt19937 rng_;
    std::map<TorrentId, Entry> torrents_;
    AnnounceQueue queue_;
    HttpAnnouncer http_;
    std::map<HttpAnnouncer::TransferId, TorrentId> http_owner_;
    UdpConnections udp_connections_;
    HttpAnnouncer::TransferId next_transfer_ = 1;
    std::optional<LocalDiscovery> lsd_;
    std::optional<LsdSocket> lsd_socket_;
};

}  // namespace

int run_tracker(zmq::context_t& context, const ServiceOptions& options) {
    bus::Stage stage(context, bus::StageConfig{options.control, options.name, v1::ROLE_TRACKER,
                                               options.timing, options.curve, options.metrics,
                                               options.signal_fd});
    const auto welcome = stage.handshake();
    if (!welcome) return 0;
    TrackerBody body(stage, options, *welcome);
    spdlog::info("announcing for the session, up to {} announces at once", options.max_in_flight);
    bus::PollLoop loop(stage, body);
    loop.watch_dynamic([&body](std::vector<zmq::pollitem_t>& items) { body.add_poll_items(items); });
    loop.set_timeout([&body] { return body.poll_timeout(Clock::now()); });
    loop.every_turn([&body] { body.drive(Clock::now()); });
    return loop.run();
}

}  // namespace pw::tracker
