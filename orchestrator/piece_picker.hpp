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
    bool is_done(PieceIndex piece) const;
    std::uint32_t done_count() const { return done_count_; }
    std::uint32_t free_count() const { return free_count_; }

private:
    enum class State : std::uint8_t { in_bucket, in_retry, busy, done };
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
    // Takes the free pieces of `extent` in bucket `level` that the peer has, in order, up to
    // `count` chosen in all.
    void take_run(std::uint32_t extent, std::uint32_t level, const PeerHaves& haves,
                  std::size_t count, std::vector<std::uint32_t>& chosen);
    std::uint32_t extent_of(std::uint32_t piece) const { return piece / pieces_per_extent_; }

    std::uint32_t piece_count_;
    std::uint32_t pieces_per_extent_;
    std::mt19937_64 rng_;
    std::vector<State> state_;
    std::vector<std::uint32_t> slot_;      // position in its bucket or in retry_
    std::vector<std::uint32_t> partial_;   // partial peers having each piece
    std::vector<std::vector<std::uint32_t>> buckets_;
    std::vector<std::uint32_t> retry_;
    std::uint32_t seeders_ = 0;
    std::uint32_t done_count_ = 0;
    std::uint32_t free_count_ = 0;
    std::unordered_map<PeerKey, PeerHaves> peers_;
};

}  // namespace pw::orchestrator
