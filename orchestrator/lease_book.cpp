#include "orchestrator/lease_book.hpp"

#include <algorithm>

namespace pw::orchestrator {

std::uint64_t LeaseBook::grant(PieceIndex piece, const std::string& worker,
                               const std::string& peer, bool endgame, Clock::time_point expiry) {
    const std::uint64_t id = next_id_++;
    leases_.emplace(id, Lease{id, piece, worker, peer, expiry, endgame});
    by_piece_[piece.get()].push_back(id);
    return id;
}

void LeaseBook::forget(const Lease& lease) {
    const auto it = by_piece_.find(lease.piece.get());
    if (it == by_piece_.end()) return;
    std::erase(it->second, lease.id);
    if (it->second.empty()) by_piece_.erase(it);
}

std::optional<Lease> LeaseBook::take(std::uint64_t id) {
    const auto it = leases_.find(id);
    if (it == leases_.end()) return std::nullopt;
    Lease lease = std::move(it->second);
    leases_.erase(it);
    forget(lease);
    return lease;
}

std::vector<Lease> LeaseBook::take_piece(PieceIndex piece) {
    std::vector<Lease> taken;
    const auto it = by_piece_.find(piece.get());
    if (it == by_piece_.end()) return taken;
    const std::vector<std::uint64_t> ids = it->second;
    for (const std::uint64_t id : ids) {
        if (auto lease = take(id)) taken.push_back(std::move(*lease));
    }
    return taken;
}

namespace {

template <class Pred>
std::vector<std::uint64_t> ids_where(const std::unordered_map<std::uint64_t, Lease>& leases,
                                     Pred pred) {
    std::vector<std::uint64_t> ids;
    for (const auto& [id, lease] : leases) {
        if (pred(lease)) ids.push_back(id);
    }
    std::sort(ids.begin(), ids.end());  // oldest first, for a stable requeue order
    return ids;
}

}  // namespace

std::vector<Lease> LeaseBook::take_worker(const std::string& worker) {
    std::vector<Lease> taken;
    for (const auto id : ids_where(leases_, [&](const Lease& l) { return l.worker == worker; })) {
        taken.push_back(*take(id));
    }
    return taken;
}

std::vector<Lease> LeaseBook::take_peer(const std::string& peer) {
    std::vector<Lease> taken;
    for (const auto id : ids_where(leases_, [&](const Lease& l) { return l.peer == peer; })) {
        taken.push_back(*take(id));
    }
    return taken;
}

std::vector<Lease> LeaseBook::take_expired(Clock::time_point now) {
    std::vector<Lease> taken;
    for (const auto id : ids_where(leases_, [&](const Lease& l) { return l.expiry <= now; })) {
        taken.push_back(*take(id));
    }
    return taken;
}

bool LeaseBook::mark_delivered(std::uint64_t id) {
    const auto it = leases_.find(id);
    if (it == leases_.end()) return false;
    it->second.delivered = true;
    return true;
}

std::vector<Lease> LeaseBook::take_delivered() {
    std::vector<Lease> taken;
    for (const auto id : ids_where(leases_, [](const Lease& l) { return l.delivered; })) {
        taken.push_back(*take(id));
    }
    return taken;
}

std::size_t LeaseBook::count(PieceIndex piece) const {
    const auto it = by_piece_.find(piece.get());
    return it == by_piece_.end() ? 0 : it->second.size();
}

bool LeaseBook::holds(PieceIndex piece, const std::string& peer) const {
    const auto it = by_piece_.find(piece.get());
    if (it == by_piece_.end()) return false;
    return std::any_of(it->second.begin(), it->second.end(),
                       [&](std::uint64_t id) { return leases_.at(id).peer == peer; });
}

std::vector<PieceIndex> LeaseBook::in_flight() const {
    std::vector<PieceIndex> pieces;
    pieces.reserve(by_piece_.size());
    for (const auto& entry : by_piece_) pieces.emplace_back(entry.first);
    return pieces;
}

}  // namespace pw::orchestrator
