#pragma once
// Who is fetching which piece: one lease per (piece, peer), several per piece in endgame.
// Expiry is a fixed time from the grant, never renewed: a worker hands back leases it cannot
// finish (LeaseReleased) and a dead worker loses all of its leases, so expiry is only the
// backstop for a lease lost in between; it is generous enough for a large piece from a slow
// peer. A piece that arrives after its lease expired is still accepted (done is by piece).
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/units.hpp"

namespace pw::orchestrator {

using Clock = std::chrono::steady_clock;

struct Lease {
    std::uint64_t id = 0;
    PieceIndex piece;
    std::string worker;
    std::string peer;
    Clock::time_point expiry;
    bool endgame = false;
    bool delivered = false;  // its piece went to the verifier (PiecesDelivered)
};

class LeaseBook {
public:
    std::uint64_t grant(PieceIndex piece, const std::string& worker, const std::string& peer,
                        bool endgame, Clock::time_point expiry);
    // Removes and returns a lease; nullopt for unknown (or already settled) ids.
    std::optional<Lease> take(std::uint64_t id);
    std::vector<Lease> take_piece(PieceIndex piece);
    std::vector<Lease> take_worker(const std::string& worker);
    std::vector<Lease> take_peer(const std::string& peer);
    // Linear in the leases outstanding, which are bounded by peers x their request queues.
    std::vector<Lease> take_expired(Clock::time_point now);
    // Marks a lease whose piece reached the verifier; false for unknown ids.
    bool mark_delivered(std::uint64_t id);
    std::vector<Lease> take_delivered();

    std::size_t count(PieceIndex piece) const;
    bool holds(PieceIndex piece, const std::string& peer) const;
    // Pieces with at least one lease.
    std::vector<PieceIndex> in_flight() const;
    std::size_t size() const { return leases_.size(); }

private:
    void forget(const Lease& lease);

    std::uint64_t next_id_ = 1;
    std::unordered_map<std::uint64_t, Lease> leases_;
    std::unordered_map<std::uint32_t, std::vector<std::uint64_t>> by_piece_;
};

}  // namespace pw::orchestrator
