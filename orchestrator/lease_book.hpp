#pragma once
// Who is fetching which piece: one lease per (piece, peer), several per piece in endgame.
// Expiry is a fixed time from the grant, never renewed: a worker hands back leases it cannot
// finish (LeaseReleased) and a dead worker loses all of its leases, so expiry is only the
// backstop for a lease lost in between; it is generous enough for a large piece from a slow
// peer. A piece that arrives after its lease expired is still accepted (done is by piece).
//
// Small pieces mean tens of thousands of leases a second, so a lease costs no allocation:
// leases live in reused slots named by their id, the leases of a piece form a list through
// their slots, and workers and peers are named by small numbers instead of strings.
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/units.hpp"

namespace pw::orchestrator {

using Clock = std::chrono::steady_clock;

// A worker's or a peer's name, interned by the LeaseBook.
using NameId = std::uint32_t;

struct Lease {
    std::uint64_t id = 0;
    PieceIndex piece;
    NameId worker = 0;
    NameId peer = 0;
    Clock::time_point expiry;
    bool endgame = false;
    bool delivered = false;  // its piece went to the verifier (PiecesDelivered)
};

// Interns names: each distinct name gets a number for good. Names are workers and peers
// (ip:port), a few thousand in a long session at most, so they are never forgotten.
class NameTable {
public:
    NameId id_of(const std::string& name);
    std::optional<NameId> find(const std::string& name) const;
    const std::string& name(NameId id) const { return names_.at(id); }

private:
    std::vector<std::string> names_;
    std::unordered_map<std::string, NameId> ids_;
};

// Numbers grants across every LeaseBook that shares it: one per session, so that lease ids
// are unique across torrents (a worker's arena slots are tagged with them, whatever the
// torrent), and a lease of a torrent stopped and started again is never taken for a new one.
struct GrantCounter {
    std::uint64_t grants = 0;
};

class LeaseBook {
public:
    // With `grants` null the book numbers its own grants (a book on its own, as in tests).
    explicit LeaseBook(std::uint32_t piece_count = 0, GrantCounter* grants = nullptr);

    NameTable& workers() { return workers_; }
    const NameTable& workers() const { return workers_; }
    NameTable& peers() { return peers_; }
    const NameTable& peers() const { return peers_; }

    // Ids grow with every grant: sorting leases by id sorts them oldest first.
    std::uint64_t grant(PieceIndex piece, NameId worker, NameId peer, bool endgame,
                        Clock::time_point expiry);
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

    // Walks the piece's leases: one or two (a few more only in a long endgame).
    std::size_t count(PieceIndex piece) const;
    bool holds(PieceIndex piece, NameId peer) const;
    // The id of the piece's newest lease; 0 without one.
    std::uint64_t newest(PieceIndex piece) const;
    // Pieces with at least one lease.
    std::vector<PieceIndex> in_flight() const;
    std::size_t size() const { return live_; }

private:
    // Slot links are slot number + 1, so 0 means none: half the size of a lease id, and a
    // torrent of 262,144 pieces keeps one 4-byte head per piece and nothing else.
    struct Slot {
        Lease lease;
        std::uint32_t next_in_piece = 0;  // the piece's next lease's slot + 1; 0: none
        bool live = false;
    };

    Slot* find(std::uint64_t id);
    const Slot* find(std::uint64_t id) const;
    void unlink(const Lease& lease);
    // Live leases matching `pred`, oldest first (the requeue order stays stable).
    template <class Pred>
    std::vector<Lease> take_where(Pred pred);

    NameTable workers_;
    NameTable peers_;
    // Read through grants(): a book may be moved, and must not point into its old self.
    GrantCounter own_grants_;
    GrantCounter* shared_grants_ = nullptr;
    GrantCounter& grants() { return shared_grants_ != nullptr ? *shared_grants_ : own_grants_; }
    std::size_t live_ = 0;
    std::vector<Slot> slots_;
    std::vector<std::uint32_t> free_slots_;
    std::vector<std::uint32_t> head_of_piece_;  // by piece: its newest lease's slot + 1; 0: none
};

}  // namespace pw::orchestrator
