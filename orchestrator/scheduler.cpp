#include "orchestrator/scheduler.hpp"

#include <algorithm>
#include <set>

namespace pw::orchestrator {

Scheduler::Scheduler(std::uint32_t piece_count, SchedulerOptions options)
    : options_(options), picker_(piece_count, options.seed, options.pieces_per_extent), rng_(options.seed ^ 0x9e3779b97f4a7c15ull) {}

std::vector<Grant> Scheduler::request(const std::string& worker, const PeerKey& peer,
                                      std::size_t count, Clock::time_point now) {
    std::vector<Grant> grants;
    const auto expiry = now + options_.lease_timeout;
    for (const PieceIndex piece : picker_.pick(peer, count)) {
        grants.push_back(Grant{piece, leases_.grant(piece, worker, peer, false, expiry), false});
    }
    if (grants.size() == count || options_.max_leases_per_piece < 2) return grants;

    // Endgame: pieces in flight elsewhere, least-covered first, random among equals.
    std::vector<PieceIndex> candidates;
    for (const PieceIndex piece : leases_.in_flight()) {
        if (picker_.peer_has(peer, piece) && !leases_.holds(piece, peer) &&
            leases_.count(piece) < options_.max_leases_per_piece) {
            candidates.push_back(piece);
        }
    }
    std::shuffle(candidates.begin(), candidates.end(), rng_);
    std::stable_sort(candidates.begin(), candidates.end(), [&](PieceIndex a, PieceIndex b) {
        return leases_.count(a) < leases_.count(b);
    });
    for (const PieceIndex piece : candidates) {
        if (grants.size() == count) break;
        grants.push_back(Grant{piece, leases_.grant(piece, worker, peer, true, expiry), true});
    }
    return grants;
}

void Scheduler::requeue_if_orphaned(PieceIndex piece) {
    if (leases_.count(piece) != 0 || picker_.is_done(piece) || verified_.contains(piece.get()) ||
        held_.contains(piece.get())) {
        return;
    }
    picker_.requeue(piece);
}

void Scheduler::release(std::uint64_t lease_id) {
    if (const auto lease = leases_.take(lease_id)) requeue_if_orphaned(lease->piece);
}

std::vector<Cancel> Scheduler::cancel_all(PieceIndex piece) {
    std::set<std::string> workers;
    for (const Lease& lease : leases_.take_piece(piece)) workers.insert(lease.worker);
    std::vector<Cancel> cancels;
    for (const auto& worker : workers) cancels.push_back(Cancel{worker, piece});
    return cancels;
}

std::vector<Cancel> Scheduler::verified(PieceIndex piece, std::uint64_t lease_id) {
    if (piece.get() >= picker_.piece_count() || picker_.is_done(piece)) return {};
    leases_.take(lease_id);
    // A free piece can be verified when its lease had expired: it is no longer free.
    picker_.take(piece);
    verified_.insert_or_assign(piece.get(), lease_id);
    return cancel_all(piece);
}

std::vector<Cancel> Scheduler::written(PieceIndex piece) {
    if (piece.get() >= picker_.piece_count()) return {};
    verified_.erase(piece.get());
    held_.erase(piece.get());
    picker_.mark_done(piece);
    return cancel_all(piece);
}

void Scheduler::failed(PieceIndex piece, std::uint64_t lease_id) {
    leases_.take(lease_id);
    if (piece.get() < picker_.piece_count()) requeue_if_orphaned(piece);
}

void Scheduler::dropped(PieceIndex piece, std::uint64_t lease_id) {
    if (const auto lease = leases_.take(lease_id)) requeue_if_orphaned(lease->piece);
    if (piece.get() >= picker_.piece_count()) return;
    const auto waiting = verified_.find(piece.get());
    if (waiting == verified_.end() || waiting->second != lease_id) return;
    verified_.erase(waiting);
    requeue_if_orphaned(piece);
}

void Scheduler::write_failed(PieceIndex piece) {
    if (piece.get() >= picker_.piece_count() || picker_.is_done(piece)) return;
    verified_.erase(piece.get());
    picker_.take(piece);
    held_.insert(piece.get());
}

void Scheduler::requeue_held(PieceIndex piece) {
    if (held_.erase(piece.get()) != 0) requeue_if_orphaned(piece);
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
    pending.reserve(verified_.size());
    for (const auto& entry : verified_) pending.push_back(entry.first);
    verified_.clear();
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
        cancels.push_back(Cancel{lease.worker, lease.piece});
        requeue_if_orphaned(lease.piece);
    }
    return cancels;
}

}  // namespace pw::orchestrator
