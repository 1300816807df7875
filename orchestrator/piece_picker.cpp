#include "orchestrator/piece_picker.hpp"

#include <algorithm>

#include "core/wire.hpp"

namespace pw::orchestrator {

PiecePicker::PiecePicker(std::uint32_t piece_count, std::uint64_t seed,
                         std::uint32_t pieces_per_extent)
    : piece_count_(piece_count), pieces_per_extent_(std::max<std::uint32_t>(pieces_per_extent, 1)),
      rng_(seed), state_(piece_count, State::in_bucket),
      slot_(piece_count, 0), partial_(piece_count, 0), buckets_(1) {
    buckets_[0].reserve(piece_count);
    for (std::uint32_t piece = 0; piece < piece_count; ++piece) {
        slot_[piece] = piece;
        buckets_[0].push_back(piece);
    }
    free_count_ = piece_count;
}

bool PiecePicker::has(const PeerHaves& haves, std::uint32_t piece) const {
    return haves.all || (piece < haves.bits.size() && haves.bits[piece]);
}

bool PiecePicker::peer_has(const PeerKey& peer, PieceIndex piece) const {
    const auto it = peers_.find(peer);
    return it != peers_.end() && piece.get() < piece_count_ && has(it->second, piece.get());
}

bool PiecePicker::is_seeder(const PeerKey& peer) const {
    const auto it = peers_.find(peer);
    return it != peers_.end() && it->second.all;
}

std::uint32_t PiecePicker::availability(PieceIndex piece) const {
    return seeders_ + partial_.at(piece.get());
}

bool PiecePicker::set_bitfield(const PeerKey& peer, std::span<const std::uint8_t> bits) {
    if (!wire::valid_bitfield(bits, piece_count_)) return false;
    remove_peer(peer);
    std::vector<bool> haves(piece_count_, false);
    std::uint32_t count = 0;
    for (std::uint32_t piece = 0; piece < piece_count_; ++piece) {
        if ((bits[piece / 8] >> (7 - piece % 8)) & 1u) {
            haves[piece] = true;
            ++count;
        }
    }
    if (count == piece_count_) {
        set_have_all(peer);
        return true;
    }
    for (std::uint32_t piece = 0; piece < piece_count_; ++piece) {
        if (haves[piece]) raise(piece);
    }
    peers_[peer] = PeerHaves{false, std::move(haves), std::nullopt};
    return true;
}

void PiecePicker::set_have_all(const PeerKey& peer) {
    auto it = peers_.find(peer);
    if (it != peers_.end() && it->second.all) return;
    remove_peer(peer);
    peers_[peer] = PeerHaves{true, {}, std::nullopt};
    ++seeders_;
}

bool PiecePicker::add_have(const PeerKey& peer, PieceIndex piece) {
    const std::uint32_t index = piece.get();
    if (index >= piece_count_) return false;
    auto& haves = peers_[peer];
    if (haves.all) return true;
    if (haves.bits.empty()) haves.bits.assign(piece_count_, false);
    if (haves.bits[index]) return true;
    haves.bits[index] = true;
    raise(index);
    return true;
}

void PiecePicker::remove_peer(const PeerKey& peer) {
    const auto it = peers_.find(peer);
    if (it == peers_.end()) return;
    if (it->second.all) {
        --seeders_;
    } else {
        for (std::uint32_t piece = 0; piece < it->second.bits.size(); ++piece) {
            if (it->second.bits[piece]) lower(piece);
        }
    }
    peers_.erase(it);
}

void PiecePicker::raise(std::uint32_t piece) {
    const bool bucketed = state_[piece] == State::in_bucket;
    if (bucketed) remove_from(buckets_[partial_[piece]], piece);
    ++partial_[piece];
    if (bucketed) insert_bucket(piece);
}

void PiecePicker::lower(std::uint32_t piece) {
    if (partial_[piece] == 0) return;
    const bool bucketed = state_[piece] == State::in_bucket;
    if (bucketed) remove_from(buckets_[partial_[piece]], piece);
    --partial_[piece];
    if (bucketed) insert_bucket(piece);
}

void PiecePicker::insert_bucket(std::uint32_t piece) {
    const std::uint32_t level = partial_[piece];
    if (buckets_.size() <= level) buckets_.resize(level + 1);
    slot_[piece] = static_cast<std::uint32_t>(buckets_[level].size());
    buckets_[level].push_back(piece);
    state_[piece] = State::in_bucket;
}

void PiecePicker::remove_from(std::vector<std::uint32_t>& list, std::uint32_t piece) {
    const std::uint32_t at = slot_[piece];
    const std::uint32_t last = list.back();
    list[at] = last;
    slot_[last] = at;
    list.pop_back();
}

void PiecePicker::remove_free(std::uint32_t piece) {
    if (state_[piece] == State::in_bucket) {
        remove_from(buckets_[partial_[piece]], piece);
    } else if (state_[piece] == State::in_retry) {
        remove_from(retry_, piece);
    } else {
        return;
    }
    --free_count_;
    state_[piece] = State::busy;
}

std::vector<PieceIndex> PiecePicker::pick(const PeerKey& peer, std::size_t count) {
    std::vector<PieceIndex> picked;
    const auto it = peers_.find(peer);
    if (it == peers_.end() || count == 0) return picked;
    PeerHaves& haves = it->second;

    std::vector<std::uint32_t> chosen;
    for (const std::uint32_t piece : retry_) {
        if (chosen.size() == count) break;
        if (has(haves, piece)) chosen.push_back(piece);
    }
    for (const std::uint32_t piece : chosen) remove_free(piece);

    // Bucket 0 holds pieces no partial peer has: only a seeder can serve them.
    for (std::size_t level = haves.all ? 0 : 1; level < buckets_.size() && chosen.size() < count;
         ++level) {
        auto& bucket = buckets_[level];
        if (bucket.empty()) continue;
        if (haves.extent) {
            take_run(*haves.extent, static_cast<std::uint32_t>(level), haves, count, chosen);
            if (bucket.empty()) continue;  // that extent held the bucket's last pieces
        }
        if (haves.all) {
            while (!bucket.empty() && chosen.size() < count) {
                take_run(extent_of(bucket[rng_() % bucket.size()]), static_cast<std::uint32_t>(level),
                         haves, count, chosen);
            }
            continue;
        }
        // One pass over the bucket from a random start. A run's swap-removes move pieces
        // around behind the walk, so it may see a piece twice or miss one: neither matters
        // for a choice that is random anyway, and the pass stays linear.
        const std::size_t size = bucket.size();
        const std::size_t start = rng_() % size;
        for (std::size_t step = 0; step < size && !bucket.empty() && chosen.size() < count; ++step) {
            const std::uint32_t piece = bucket[(start + step) % bucket.size()];
            if (has(haves, piece)) {
                take_run(extent_of(piece), static_cast<std::uint32_t>(level), haves, count, chosen);
            }
        }
    }
    if (!chosen.empty()) haves.extent = extent_of(chosen.back());
    picked.reserve(chosen.size());
    for (const std::uint32_t piece : chosen) picked.emplace_back(piece);
    return picked;
}

void PiecePicker::take_run(std::uint32_t extent, std::uint32_t level, const PeerHaves& haves,
                           std::size_t count, std::vector<std::uint32_t>& chosen) {
    // From the extent's start: an extent is taken front to back, in one run or in runs that
    // continue each other, rather than leaving a head for later.
    const std::uint64_t extent_start = std::uint64_t{extent} * pieces_per_extent_;
    const std::uint32_t end = static_cast<std::uint32_t>(
        std::min<std::uint64_t>(extent_start + pieces_per_extent_, piece_count_));
    for (auto piece = static_cast<std::uint32_t>(extent_start); piece < end && chosen.size() < count; ++piece) {
        if (state_[piece] != State::in_bucket || partial_[piece] != level || !has(haves, piece)) continue;
        remove_free(piece);
        chosen.push_back(piece);
    }
}

bool PiecePicker::take(PieceIndex piece) {
    if (!is_free(piece)) return false;
    remove_free(piece.get());
    return true;
}

void PiecePicker::requeue(PieceIndex piece) {
    const std::uint32_t index = piece.get();
    if (index >= piece_count_ || state_[index] != State::busy) return;
    slot_[index] = static_cast<std::uint32_t>(retry_.size());
    retry_.push_back(index);
    state_[index] = State::in_retry;
    ++free_count_;
}

void PiecePicker::mark_done(PieceIndex piece) {
    const std::uint32_t index = piece.get();
    if (index >= piece_count_ || state_[index] == State::done) return;
    remove_free(index);
    state_[index] = State::done;
    ++done_count_;
}

void PiecePicker::mark_missing(PieceIndex piece) {
    const std::uint32_t index = piece.get();
    if (index >= piece_count_ || state_[index] != State::done) return;
    --done_count_;
    insert_bucket(index);
    ++free_count_;
}

bool PiecePicker::is_free(PieceIndex piece) const {
    const std::uint32_t index = piece.get();
    return index < piece_count_ &&
           (state_[index] == State::in_bucket || state_[index] == State::in_retry);
}

bool PiecePicker::is_done(PieceIndex piece) const {
    return piece.get() < piece_count_ && state_[piece.get()] == State::done;
}

}  // namespace pw::orchestrator
