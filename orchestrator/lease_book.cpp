#include "orchestrator/lease_book.hpp"

#include <algorithm>

namespace pw::orchestrator {

namespace {

// A lease id is (grant number << kSlotBits) | slot: found again without a lookup, unique
// (grant numbers never repeat), and ordered by age. 2^28 slots is far beyond any real
// number of leases outstanding; 2^36 grants is months at full speed with 16 KiB pieces.
constexpr unsigned kSlotBits = 28;
constexpr std::uint64_t kSlotMask = (std::uint64_t{1} << kSlotBits) - 1;

}  // namespace

NameId NameTable::id_of(const std::string& name) {
    const auto [it, added] = ids_.try_emplace(name, static_cast<NameId>(names_.size()));
    if (added) names_.push_back(name);
    return it->second;
}

std::optional<NameId> NameTable::find(const std::string& name) const {
    const auto it = ids_.find(name);
    if (it == ids_.end()) return std::nullopt;
    return it->second;
}

LeaseBook::LeaseBook(std::uint32_t piece_count, GrantCounter* grants)
    : shared_grants_(grants), head_of_piece_(piece_count, 0) {}

std::uint64_t LeaseBook::grant(PieceIndex piece, NameId worker, NameId peer, bool endgame,
                               Clock::time_point expiry) {
    std::uint32_t slot = 0;
    if (free_slots_.empty()) {
        slot = static_cast<std::uint32_t>(slots_.size());
        slots_.emplace_back();
    } else {
        slot = free_slots_.back();
        free_slots_.pop_back();
    }
    const std::uint64_t id = (++grants().grants << kSlotBits) | slot;
    const std::uint32_t index = piece.get();
    if (index >= head_of_piece_.size()) head_of_piece_.resize(std::size_t{index} + 1, 0);
    slots_[slot] = Slot{Lease{id, piece, worker, peer, expiry, endgame, false},
                        head_of_piece_[index], true};
    head_of_piece_[index] = slot + 1;
    ++live_;
    return id;
}

LeaseBook::Slot* LeaseBook::find(std::uint64_t id) {
    const std::uint64_t slot = id & kSlotMask;
    if (slot >= slots_.size()) return nullptr;
    Slot& found = slots_[slot];
    return found.live && found.lease.id == id ? &found : nullptr;
}

const LeaseBook::Slot* LeaseBook::find(std::uint64_t id) const {
    return const_cast<LeaseBook*>(this)->find(id);
}

void LeaseBook::unlink(const Lease& lease) {
    const std::uint32_t index = lease.piece.get();
    const auto link = static_cast<std::uint32_t>(lease.id & kSlotMask) + 1;
    const std::uint32_t next = slots_[link - 1].next_in_piece;
    if (head_of_piece_[index] == link) {
        head_of_piece_[index] = next;
        return;
    }
    // A piece has a lease or two (more only in a long endgame): the walk is short.
    for (std::uint32_t at = head_of_piece_[index]; at != 0;) {
        Slot& slot = slots_[at - 1];
        if (slot.next_in_piece == link) {
            slot.next_in_piece = next;
            return;
        }
        at = slot.next_in_piece;
    }
}

std::optional<Lease> LeaseBook::take(std::uint64_t id) {
    Slot* slot = find(id);
    if (slot == nullptr) return std::nullopt;
    const Lease lease = slot->lease;
    unlink(lease);
    slot->live = false;
    free_slots_.push_back(static_cast<std::uint32_t>(id & kSlotMask));
    --live_;
    return lease;
}

std::vector<Lease> LeaseBook::take_piece(PieceIndex piece) {
    std::vector<Lease> taken;
    if (piece.get() >= head_of_piece_.size()) return taken;
    while (head_of_piece_[piece.get()] != 0) {
        taken.push_back(*take(slots_[head_of_piece_[piece.get()] - 1].lease.id));
    }
    std::sort(taken.begin(), taken.end(),
              [](const Lease& a, const Lease& b) { return a.id < b.id; });
    return taken;
}
template <class Pred>
std::vector<Lease> LeaseBook::take_where(Pred pred) {
    std::vector<std::uint64_t> ids;
    for (const Slot& slot : slots_) {
        if (slot.live && pred(slot.lease)) ids.push_back(slot.lease.id);
    }
    std::sort(ids.begin(), ids.end());
    std::vector<Lease> taken;
    taken.reserve(ids.size());
    for (const std::uint64_t id : ids) taken.push_back(*take(id));
    return taken;
}

std::vector<Lease> LeaseBook::take_worker(const std::string& worker) {
    const auto id = workers_.find(worker);
    if (!id) return {};
    return take_where([&](const Lease& l) { return l.worker == *id; });
}

std::vector<Lease> LeaseBook::take_peer(const std::string& peer) {
    const auto id = peers_.find(peer);
    if (!id) return {};
    return take_where([&](const Lease& l) { return l.peer == *id; });
}

std::vector<Lease> LeaseBook::take_expired(Clock::time_point now) {
    return take_where([&](const Lease& l) { return l.expiry <= now; });
}

bool LeaseBook::mark_delivered(std::uint64_t id) {
    Slot* slot = find(id);
    if (slot == nullptr) return false;
    slot->lease.delivered = true;
    return true;
}

std::vector<Lease> LeaseBook::take_delivered() {
    return take_where([](const Lease& l) { return l.delivered; });
}

std::size_t LeaseBook::count(PieceIndex piece) const {
    if (piece.get() >= head_of_piece_.size()) return 0;
    std::size_t leases = 0;
    for (std::uint32_t at = head_of_piece_[piece.get()]; at != 0; at = slots_[at - 1].next_in_piece) {
        ++leases;
    }
    return leases;
}

bool LeaseBook::holds(PieceIndex piece, NameId peer) const {
    if (piece.get() >= head_of_piece_.size()) return false;
    for (std::uint32_t at = head_of_piece_[piece.get()]; at != 0;) {
        const Slot& slot = slots_[at - 1];
        if (slot.lease.peer == peer) return true;
        at = slot.next_in_piece;
    }
    return false;
}

std::uint64_t LeaseBook::newest(PieceIndex piece) const {
    if (piece.get() >= head_of_piece_.size() || head_of_piece_[piece.get()] == 0) return 0;
    return slots_[head_of_piece_[piece.get()] - 1].lease.id;
}

std::vector<PieceIndex> LeaseBook::in_flight() const {
    std::vector<PieceIndex> pieces;
    // Each piece once: through its newest lease.
    for (std::uint32_t slot = 0; slot < slots_.size(); ++slot) {
        const Lease& lease = slots_[slot].lease;
        if (slots_[slot].live && head_of_piece_[lease.piece.get()] == slot + 1) {
            pieces.push_back(lease.piece);
        }
    }
    return pieces;
}

}  // namespace pw::orchestrator
