#include "orchestrator/scheduler.hpp"

#include <algorithm>

namespace pw::orchestrator {

Scheduler::Scheduler(std::uint32_t piece_count, SchedulerOptions options, GrantCounter* grants)
    : options_(options), picker_(piece_count, options.seed, options.pieces_per_extent),
      leases_(piece_count, grants),
      held_(piece_count, false) {}

std::vector<Grant> Scheduler::request(const std::string& worker, const PeerKey& peer,
                                      std::size_t count, Clock::time_point now) {
    std::vector<Grant> grants;
    const auto expiry = now + options_.lease_timeout;
    const std::vector<PieceIndex> picked = picker_.pick(peer, count);
    const NameId worker_id = leases_.workers().id_of(worker);
    const NameId peer_id = leases_.peers().id_of(peer);
    grants.reserve(picked.size());
    for (const PieceIndex piece : picked) {
        grants.push_back(Grant{piece, leases_.grant(piece, worker_id, peer_id, false, expiry), false});
    }
    if (grants.size() == count || options_.max_leases_per_piece < 2) return grants;

    // Endgame: pieces in flight elsewhere, least-covered first, and among those the most
    // recently leased first. A peer works through its leases in order, so the newest piece is
    // the one its holder has fetched least of, often none: it waits behind the holder's other
    // pieces, where a duplicate from an idle peer starts it now. Random picks, near the end of
    // sixteen 2 MiB/s seeders, paired two peers on the same two pieces in the same order
    // while half the peers had nothing to fetch.
    struct Candidate {
        PieceIndex piece;
        std::size_t leases;
        std::uint64_t newest;
    };
    std::vector<Candidate> candidates;
    for (const PieceIndex piece : leases_.in_flight()) {
        const std::size_t leases = leases_.count(piece);
        if (picker_.peer_has(peer, piece) && !leases_.holds(piece, peer_id) &&
            leases < options_.max_leases_per_piece) {
            candidates.push_back(Candidate{piece, leases, leases_.newest(piece)});
        }
    }
    std::sort(candidates.begin(), candidates.end(), [](const Candidate& a, const Candidate& b) {
        return a.leases != b.leases ? a.leases < b.leases : a.newest > b.newest;
    });
    for (const Candidate& candidate : candidates) {
        if (grants.size() == count) break;
        grants.push_back(
            Grant{candidate.piece, leases_.grant(candidate.piece, worker_id, peer_id, true, expiry), true});
    }
    return grants;
}

void Scheduler::requeue_if_orphaned(PieceIndex piece) {
    if (leases_.count(piece) != 0 || picker_.is_done(piece) || awaits_write(piece.get()) ||
        held_[piece.get()]) {
        return;
    }
    picker_.requeue(piece);
}

void Scheduler::release(std::uint64_t lease_id) {
    if (const auto lease = leases_.take(lease_id)) requeue_if_orphaned(lease->piece);
}

std::vector<Cancel> Scheduler::cancel_all(PieceIndex piece) {
    std::vector<Cancel> cancels;
    for (const Lease& lease : leases_.take_piece(piece)) {
        cancels.push_back(Cancel{leases_.workers().name(lease.worker), piece});
    }
    // One cancel per worker, however many of its peers held the piece.
    std::sort(cancels.begin(), cancels.end(),
              [](const Cancel& a, const Cancel& b) { return a.worker < b.worker; });
    cancels.erase(std::unique(cancels.begin(), cancels.end()), cancels.end());
    return cancels;
}

std::vector<Cancel> Scheduler::verified(PieceIndex piece, std::uint64_t lease_id) {
    if (piece.get() >= picker_.piece_count() || picker_.is_done(piece)) return {};
    leases_.take(lease_id);
    // A free piece can be verified when its lease had expired: it is no longer free.
    picker_.take(piece);
    awaiting_write_[piece.get()] = lease_id;
    return cancel_all(piece);
}

std::vector<Cancel> Scheduler::written(PieceIndex piece) {
    if (piece.get() >= picker_.piece_count()) return {};
    awaiting_write_.erase(piece.get());
    held_[piece.get()] = false;
    picker_.mark_done(piece);
    return cancel_all(piece);
}

void Scheduler::missing(PieceIndex piece) {
    if (piece.get() >= picker_.piece_count() || !picker_.is_done(piece)) return;
    picker_.mark_missing(piece);
}

void Scheduler::failed(PieceIndex piece, std::uint64_t lease_id) {
    leases_.take(lease_id);
    if (piece.get() < picker_.piece_count()) requeue_if_orphaned(piece);
}

void Scheduler::dropped(PieceIndex piece, std::uint64_t lease_id) {
    if (const auto lease = leases_.take(lease_id)) requeue_if_orphaned(lease->piece);
    if (piece.get() >= picker_.piece_count()) return;
    const auto awaited = awaiting_write_.find(piece.get());
    if (awaited == awaiting_write_.end() || awaited->second != lease_id) return;
    awaiting_write_.erase(awaited);
    requeue_if_orphaned(piece);
}

void Scheduler::write_failed(PieceIndex piece) {
    if (piece.get() >= picker_.piece_count() || picker_.is_done(piece)) return;
    awaiting_write_.erase(piece.get());
    picker_.take(piece);
    held_[piece.get()] = true;
}

void Scheduler::requeue_held(PieceIndex piece) {
    if (piece.get() >= picker_.piece_count() || !held_[piece.get()]) return;
    held_[piece.get()] = false;
    requeue_if_orphaned(piece);
}

void Scheduler::peer_gone(const PeerKey& peer) {
    picker_.remove_peer(peer);
    for (const Lease& lease : leases_.take_peer(peer)) requeue_if_orphaned(lease.piece);
}

void Scheduler::worker_gone(const std::string& worker) {
    for (const Lease& lease : leases_.take_worker(worker)) requeue_if_orphaned(lease.piece);
}

void Scheduler::writer_lost() {
    std::vector<std::uint32_t> pending;
    pending.reserve(awaiting_write_.size());
    for (const auto& [piece, lease] : awaiting_write_) pending.push_back(piece);
    // In piece order, as before: the map's order would make the requeue order arbitrary.
    std::sort(pending.begin(), pending.end());
    awaiting_write_.clear();
    for (const std::uint32_t piece : pending) requeue_if_orphaned(PieceIndex{piece});
}

void Scheduler::delivered(std::uint64_t lease_id) { leases_.mark_delivered(lease_id); }

void Scheduler::verifier_lost() {
    for (const Lease& lease : leases_.take_delivered()) requeue_if_orphaned(lease.piece);
    writer_lost();
}

std::vector<Cancel> Scheduler::expire(Clock::time_point now) {
    std::vector<Cancel> cancels;
    for (const Lease& lease : leases_.take_expired(now)) {
        cancels.push_back(Cancel{leases_.workers().name(lease.worker), lease.piece});
        requeue_if_orphaned(lease.piece);
    }
    return cancels;
}

}  // namespace pw::orchestrator
