#include "orchestrator/piece_picker.hpp"

#include <algorithm>

#include "core/wire.hpp"

namespace pw::orchestrator {

PiecePicker::PiecePicker(std::uint32_t piece_count, std::uint64_t seed,
                         std::uint32_t pieces_per_extent)
    : piece_count_(piece_count), pieces_per_extent_(std::max<std::uint32_t>(pieces_per_extent, 1)),
      rng_(seed), state_(piece_count, State::in_bucket),
      slot_(piece_count, 0), partial_(piece_count, 0), level_(piece_count, kNormal) {
    for (auto& level : buckets_) level.resize(1);
    auto& bucket = buckets_[kNormal][0];
    bucket.reserve(piece_count);
    for (std::uint32_t piece = 0; piece < piece_count; ++piece) {
        slot_[piece] = piece;
        bucket.push_back(piece);
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
    if (bucketed) remove_from(bucket_of(piece)[partial_[piece]], piece);
    ++partial_[piece];
    if (bucketed) insert_bucket(piece);
}

void PiecePicker::lower(std::uint32_t piece) {
    if (partial_[piece] == 0) return;
    const bool bucketed = state_[piece] == State::in_bucket;
    if (bucketed) remove_from(bucket_of(piece)[partial_[piece]], piece);
    --partial_[piece];
    if (bucketed) insert_bucket(piece);
}

void PiecePicker::insert_bucket(std::uint32_t piece) {
    const std::uint32_t level = partial_[piece];
    auto& buckets = bucket_of(piece);
    if (buckets.size() <= level) buckets.resize(level + 1);
    slot_[piece] = static_cast<std::uint32_t>(buckets[level].size());
    buckets[level].push_back(piece);
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
        remove_from(bucket_of(piece)[partial_[piece]], piece);
    } else if (state_[piece] == State::in_retry) {
        remove_from(retry_, piece);
    } else {
        if (state_[piece] == State::parked) state_[piece] = State::busy;
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

    if (sequential_) {
        pick_sequential(haves, count, chosen);
    } else {
        for (int level = kLevels - 1; level > kNotWanted && chosen.size() < count; --level) {
            pick_rarest(haves, static_cast<std::uint8_t>(level), count, chosen);
        }
        if (!chosen.empty()) haves.extent = extent_of(chosen.back());
    }
    picked.reserve(chosen.size());
    for (const std::uint32_t piece : chosen) picked.emplace_back(piece);
    return picked;
}

void PiecePicker::pick_rarest(PeerHaves& haves, std::uint8_t priority, std::size_t count,
                              std::vector<std::uint32_t>& chosen) {
    auto& buckets = buckets_[priority];
    // Bucket 0 holds pieces no partial peer has: only a seeder can serve them.
    for (std::size_t level = haves.all ? 0 : 1; level < buckets.size() && chosen.size() < count;
         ++level) {
        auto& bucket = buckets[level];
        if (bucket.empty()) continue;
        if (haves.extent) {
            take_run(*haves.extent, priority, static_cast<std::uint32_t>(level), haves, count, chosen);
            if (bucket.empty()) continue;  // that extent held the bucket's last pieces
        }
        if (haves.all) {
            while (!bucket.empty() && chosen.size() < count) {
                take_run(extent_of(bucket[rng_() % bucket.size()]), priority, static_cast<std::uint32_t>(level),
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
                take_run(extent_of(piece), priority, static_cast<std::uint32_t>(level), haves, count, chosen);
            }
        }
    }
}

void PiecePicker::take_in_order(const PeerHaves& haves, std::uint32_t begin, std::uint32_t end,
                                int level, std::size_t count, std::vector<std::uint32_t>& chosen) {
    for (std::uint32_t piece = begin; piece < end && chosen.size() < count; ++piece) {
        if (state_[piece] != State::in_bucket || !has(haves, piece)) continue;
        if (level >= 0 && level_[piece] != level) continue;
        remove_free(piece);
        chosen.push_back(piece);
    }
}

void PiecePicker::pick_sequential(const PeerHaves& haves, std::size_t count,
                                  std::vector<std::uint32_t>& chosen) {
    // Edge pieces (each priority's step above it: kLow + 1, kNormal + 1, kHigh + 1), highest first.
    for (int level = kLevels - 1; level > kNotWanted && chosen.size() < count; level -= 2) {
        take_in_order(haves, 0, piece_count_, level, count, chosen);
    }
    while (cursor_ < piece_count_ && (state_[cursor_] == State::done || level_[cursor_] == kNotWanted)) {
        ++cursor_;
    }
    const auto window_end = static_cast<std::uint32_t>(
        std::min<std::uint64_t>(std::uint64_t{cursor_} + window_, piece_count_));
    take_in_order(haves, cursor_, window_end, -1, count, chosen);
    for (int level = kLevels - 2; level > kNotWanted && chosen.size() < count; level -= 2) {
        take_in_order(haves, cursor_, piece_count_, level, count, chosen);
    }
}

void PiecePicker::set_levels(std::span<const std::uint8_t> levels) {
    for (std::uint32_t piece = 0; piece < piece_count_; ++piece) {
        const std::uint8_t level = piece < levels.size() ? std::min<std::uint8_t>(levels[piece], kLevels - 1) : kNormal;
        set_level(piece, level);
    }
    cursor_ = 0;
}

void PiecePicker::set_level(std::uint32_t piece, std::uint8_t level) {
    if (level_[piece] == level) return;
    switch (state_[piece]) {
        case State::in_bucket:
            remove_from(bucket_of(piece)[partial_[piece]], piece);
            level_[piece] = level;
            if (level == kNotWanted) {
                state_[piece] = State::parked;
                --free_count_;
            } else {
                insert_bucket(piece);
            }
            return;
        case State::in_retry:
            level_[piece] = level;
            if (level == kNotWanted) {
                remove_from(retry_, piece);
                state_[piece] = State::parked;
                --free_count_;
            }
            return;
        case State::parked:
            level_[piece] = level;
            insert_bucket(piece);
            ++free_count_;
            return;
        case State::busy:
        case State::done: level_[piece] = level; return;
    }
}

void PiecePicker::set_sequential(bool on, std::uint32_t window) {
    sequential_ = on;
    window_ = std::max<std::uint32_t>(window, 1);
    cursor_ = 0;
}

void PiecePicker::take_run(std::uint32_t extent, std::uint8_t priority, std::uint32_t level, const PeerHaves& haves,
                           std::size_t count, std::vector<std::uint32_t>& chosen) {
    // From the extent's start: an extent is taken front to back, in one run or in runs that
    // continue each other, rather than leaving a head for later.
    const std::uint64_t extent_start = std::uint64_t{extent} * pieces_per_extent_;
    const std::uint32_t end = static_cast<std::uint32_t>(
        std::min<std::uint64_t>(extent_start + pieces_per_extent_, piece_count_));
    for (auto piece = static_cast<std::uint32_t>(extent_start); piece < end && chosen.size() < count; ++piece) {
        if (state_[piece] != State::in_bucket || partial_[piece] != level || !has(haves, piece)) continue;
        if (level_[piece] != priority) continue;
        remove_free(piece);
        chosen.push_back(piece);
    }
}

bool PiecePicker::take(PieceIndex piece) {
    // A parked piece can be taken too: it may arrive after it stopped being wanted.
    if (!is_free(piece) && !(piece.get() < piece_count_ && state_[piece.get()] == State::parked)) return false;
    remove_free(piece.get());
    return true;
}

void PiecePicker::requeue(PieceIndex piece) {
    const std::uint32_t index = piece.get();
    if (index >= piece_count_ || state_[index] != State::busy) return;
    if (level_[index] == kNotWanted) {
        state_[index] = State::parked;
        return;
    }
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
    cursor_ = std::min(cursor_, index);
    if (level_[index] == kNotWanted) {
        state_[index] = State::parked;
        return;
    }
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
