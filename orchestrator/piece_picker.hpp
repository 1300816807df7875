#pragma once
// Which pieces are free, busy or done, which peers have them, and which free piece to fetch
// next from a given peer.
//
// Choice of data structure: a free piece sits in exactly one container, found again in O(1)
// through its slot index:
//  - the retry list: pieces that were leased once and came back (released, expired, failed).
//    They go first: a peer that reconnects often still holds their blocks, and finishing
//    pieces beats starting new ones. The list is short in practice.
//  - otherwise a bucket keyed by how many *partial* peers have the piece. Seeders (have_all)
//    are only counted, never added per piece: they raise every piece's availability equally,
//    so they do not change the rarest-first order, and a seeder joining costs O(1), not
//    O(pieces).
// A pick for a seeder takes uniformly random members of the lowest non-empty bucket (random
// tie-breaks), O(1) per piece plus the number of empty buckets skipped (at most the number of
// peers). A pick for a partial peer walks buckets from the rarest up, from a random start in
// each, skipping pieces the peer lacks: linear in the free pieces only when the peer has few
// of them.
//
// Extent affinity: a pick that lands on a piece takes the free pieces of its extent
// (`pieces_per_extent` pieces, 4 MiB by the orchestrator's choice) that are just as rare and
// that the peer has, in order. Extents are still chosen at random, so peers spread
// over the torrent as before, but the pieces of one extent arrive together and reach the
// disk as one write instead of one per piece (libtorrent's piece_extent_affinity does the
// same). With 16 KiB pieces that is 256 pieces per pwritev instead of one.
//
// Priorities (the user's choice of files): every piece has a level, 0 for a piece no wanted
// file touches (parked: never picked, not counted free), then low, normal and high, each with
// an "edge" step above it for the first and last piece of a wanted file (media players read
// a file's index there). Each level has buckets of its own: a pick empties the higher levels
// before it looks at a lower one, rarest first within a level. Pieces that were leased once
// (the retry list) still go first whatever their level: they are the ones half fetched.
//
// Sequential order: edge pieces first, then the free pieces of the readahead window (the
// `window` pieces from the first wanted piece not done yet, in order, whatever their level:
// a player reading the file from its start is fed first), then the rest by level and in
// order. Endgame (the scheduler's duplicates of pieces in flight) finishes the last pieces
// from whichever peers have them. A sequential pick scans the pieces: linear in the torrent.
#include <array>
#include <cstdint>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/units.hpp"

namespace pw::orchestrator {

using PeerKey = std::string;

class PiecePicker {
public:
    PiecePicker(std::uint32_t piece_count, std::uint64_t seed, std::uint32_t pieces_per_extent = 1);

    std::uint32_t piece_count() const { return piece_count_; }

    // --- what peers have ---
    // False (and nothing recorded) when the bitfield's length or spare bits are wrong.
    bool set_bitfield(const PeerKey& peer, std::span<const std::uint8_t> bits);
    void set_have_all(const PeerKey& peer);
    // False when the index is out of range.
    bool add_have(const PeerKey& peer, PieceIndex piece);
    void remove_peer(const PeerKey& peer);
    bool knows_peer(const PeerKey& peer) const { return peers_.contains(peer); }
    bool peer_has(const PeerKey& peer, PieceIndex piece) const;
    bool is_seeder(const PeerKey& peer) const;
    std::uint32_t availability(PieceIndex piece) const;

    // --- piece states ---
    // Up to `count` free pieces `peer` has, best first; they become busy.
    std::vector<PieceIndex> pick(const PeerKey& peer, std::size_t count);
    // Takes a specific free piece (busy afterwards). False when it is not free.
    bool take(PieceIndex piece);
    // A busy piece goes back to the free pieces, ahead of pieces never tried.
    void requeue(PieceIndex piece);
    void mark_done(PieceIndex piece);
    // A done piece is not on disk after all (a verify found it wrong): free again.
    void mark_missing(PieceIndex piece);
    bool is_free(PieceIndex piece) const;

    // --- what to fetch first ---
    static constexpr std::uint8_t kNotWanted = 0;
    static constexpr std::uint8_t kLow = 1;
    static constexpr std::uint8_t kNormal = 3;
    static constexpr std::uint8_t kHigh = 5;
    static constexpr std::uint8_t kLevels = 7;  // kHigh + 1 (its edge step) + 1
    // One level per piece (0: not wanted, up to kLevels - 1); a missing tail means kNormal.
    // Takes effect for the next pick; busy and done pieces keep their state.
    void set_levels(std::span<const std::uint8_t> levels);
    std::uint8_t level(PieceIndex piece) const { return level_.at(piece.get()); }
    // `window`: the readahead in pieces (at least 1).
    void set_sequential(bool on, std::uint32_t window);
    bool sequential() const { return sequential_; }
    bool is_done(PieceIndex piece) const;
    std::uint32_t done_count() const { return done_count_; }
    std::uint32_t free_count() const { return free_count_; }

private:
    enum class State : std::uint8_t { in_bucket, in_retry, busy, done, parked };
    struct PeerHaves {
        bool all = false;
        std::vector<bool> bits;
        // The extent of this peer's last pick: its next pick goes on there while the extent
        // has pieces as rare as any other, so a peer asking a few pieces at a time still
        // fetches runs.
        std::optional<std::uint32_t> extent;
    };

    void remove_free(std::uint32_t piece);
    void insert_bucket(std::uint32_t piece);
    void remove_from(std::vector<std::uint32_t>& list, std::uint32_t piece);
    void raise(std::uint32_t piece);
    void lower(std::uint32_t piece);
    bool has(const PeerHaves& haves, std::uint32_t piece) const;
    // Takes the free pieces of `extent` in bucket `level` of `priority` that the peer has, in order, up to
    // `count` chosen in all.
    void take_run(std::uint32_t extent, std::uint8_t priority, std::uint32_t level, const PeerHaves& haves,
                  std::size_t count, std::vector<std::uint32_t>& chosen);
    std::uint32_t extent_of(std::uint32_t piece) const { return piece / pieces_per_extent_; }
    void set_level(std::uint32_t piece, std::uint8_t level);
    void pick_rarest(PeerHaves& haves, std::uint8_t level, std::size_t count,
                     std::vector<std::uint32_t>& chosen);
    void pick_sequential(const PeerHaves& haves, std::size_t count, std::vector<std::uint32_t>& chosen);
    void take_in_order(const PeerHaves& haves, std::uint32_t begin, std::uint32_t end, int level,
                       std::size_t count, std::vector<std::uint32_t>& chosen);
    std::vector<std::vector<std::uint32_t>>& bucket_of(std::uint32_t piece) { return buckets_[level_[piece]]; }

    std::uint32_t piece_count_;
    std::uint32_t pieces_per_extent_;
    std::mt19937_64 rng_;
    std::vector<State> state_;
    std::vector<std::uint32_t> slot_;      // position in its bucket or in retry_
    std::vector<std::uint32_t> partial_;   // partial peers having each piece
    std::vector<std::uint8_t> level_;
    // By level, then by the number of partial peers having the piece.
    std::array<std::vector<std::vector<std::uint32_t>>, kLevels> buckets_;
    bool sequential_ = false;
    std::uint32_t window_ = 1;
    std::uint32_t cursor_ = 0;  // no wanted piece below it is free or parked-undone
    std::vector<std::uint32_t> retry_;
    std::uint32_t seeders_ = 0;
    std::uint32_t done_count_ = 0;
    std::uint32_t free_count_ = 0;
    std::unordered_map<PeerKey, PeerHaves> peers_;
};

}  // namespace pw::orchestrator
