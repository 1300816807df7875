#include "peer_worker/piece_memory.hpp"

#include <algorithm>
#include <limits>
#include <stdexcept>
#include <string>

#include <spdlog/spdlog.h>

namespace pw::peer_worker {

PieceMemory::PieceMemory(std::uint64_t budget_bytes, Kind kind,
                         std::chrono::milliseconds trim_window, std::uint64_t ceiling_bytes)
    : budget_(budget_bytes),
      floor_(budget_bytes),
      ceiling_(std::max(budget_bytes, ceiling_bytes)),
      kind_(kind),
      trim_window_(trim_window) {}

void PieceMemory::set_budget(std::uint64_t bytes) { budget_ = std::clamp(bytes, floor_, ceiling_); }

PieceMemory::~PieceMemory() = default;

std::uint64_t PieceMemory::cap_for(std::uint32_t piece_length) const {
    // An arena has at least two slots, so pieces larger than half the budget still go two at
    // a time rather than never.
    if (kind_ == Kind::buffers) return budget_;
    return std::max(budget_, 2 * std::uint64_t{piece_length});
}

std::uint64_t PieceMemory::resident_cap() const {
    return std::max(budget_, 2 * std::uint64_t{longest_arena_length_});
}

PieceMemory::Pool& PieceMemory::pool_for(std::uint32_t piece_length) {
    // Leases come in runs of one torrent's pieces: most find the pool of the one before.
    if (last_pool_ != nullptr && last_pool_->length == piece_length) return *last_pool_;
    auto& pool = pools_[piece_length];
    if (pool) {
        last_pool_ = pool.get();
        return *pool;
    }
    pool = std::make_unique<Pool>();
    pool->length = piece_length;
    if (kind_ == Kind::arenas) {
        // Sized to the ceiling: slots without pages cost nothing until written.
        const std::uint64_t slots = std::clamp<std::uint64_t>(
            std::max(ceiling_, 2 * std::uint64_t{piece_length}) / piece_length, 2,
            std::numeric_limits<std::uint32_t>::max());
        try {
            pool->arena = std::make_unique<bus::PieceArena>(piece_length,
                                                            static_cast<std::uint32_t>(slots));
            longest_arena_length_ = std::max(longest_arena_length_, piece_length);
            spdlog::info("piece arena {}: {} slots of {} bytes", pool->arena->info().path, slots,
                         piece_length);
        } catch (const std::exception& error) {
            spdlog::warn("no shared-memory arena for pieces of {} bytes ({}); they travel as frames",
                         piece_length, error.what());
        }
    }
    last_pool_ = pool.get();
    return *pool;
}

const bus::ArenaInfo* PieceMemory::arena(std::uint32_t piece_length) const {
    const auto found = pools_.find(piece_length);
    if (found == pools_.end() || !found->second->arena) return nullptr;
    return &found->second->arena->info();
}

bus::PieceArena* PieceMemory::arena_slots(std::uint32_t piece_length) {
    const auto found = pools_.find(piece_length);
    return found == pools_.end() ? nullptr : found->second->arena.get();
}

std::optional<PieceDestination> PieceMemory::reserve(std::uint64_t lease_id,
                                                     std::uint32_t piece_length,
                                                     std::uint32_t size) {
    if (lease_id == 0 || size == 0 || size > piece_length || undelivered_.count(lease_id) != 0 ||
        delivered_slots_.count(lease_id) != 0) {
        return std::nullopt;
    }
    // A slot is counted whole (a short last piece takes a whole one); a buffer, its size.
    const std::uint64_t charge = kind_ == Kind::arenas ? piece_length : size;
    if (counted_bytes_ + charge > cap_for(piece_length)) return std::nullopt;
    Pool& pool = pool_for(piece_length);
    const std::uint32_t counted = pool.arena ? piece_length : size;
    counted_bytes_ += counted;
    undelivered_[lease_id] = Held{pool.arena ? &pool : nullptr, std::nullopt, size, counted};
    if (!pool.arena) return PieceDestination::owned(size);
    pool.retired = false;
    return PieceDestination::bound_on_first_use(*this, lease_id, size);
}

std::span<std::uint8_t> PieceMemory::bind(std::uint64_t lease_id, bool& empty) {
    const auto found = undelivered_.find(lease_id);
    if (found == undelivered_.end() || found->second.pool == nullptr) {
        throw std::logic_error("PieceMemory::bind: lease " + std::to_string(lease_id) + " holds no room");
    }
    Held& held = found->second;
    Pool& pool = *held.pool;
    bus::PieceArena& arena = *pool.arena;
    if (!held.slot) {
        held.slot = arena.acquire(lease_id, bus::PieceArena::Prefer::resident);
        if (!held.slot) throw std::logic_error("PieceMemory::bind: more leases than slots");
        // A slot with its pages was counted already (free and resident); one without takes
        // fresh pages as its bytes come, counted whole from now.
        if (!arena.resident(*held.slot)) {
            resident_bytes_ += arena.info().slot_size;
            enforce_resident_cap(pool);
        }
    }
    empty = !arena.resident(*held.slot);
    return arena.bytes(*held.slot).first(held.size);
}

void PieceMemory::enforce_resident_cap(const Pool& binding) {
    const std::uint64_t cap = resident_cap();
    if (resident_bytes_ <= cap) return;
    // Slots in use never exceed the cap (they are counted against the budget), so the free
    // slots that kept their pages can always make up the difference.
    for (const bool retired : {true, false}) {
        for (auto& [length, pool] : pools_) {
            if (resident_bytes_ <= cap) return;
            if (pool.get() == &binding || pool->retired != retired || !pool->arena) continue;
            give_back(*pool, resident_bytes_ - cap);
        }
    }
    if (resident_bytes_ > cap) {
        for (auto& [length, pool] : pools_) {
            if (pool.get() == &binding) give_back(*pool, resident_bytes_ - cap);
        }
    }
}

void PieceMemory::give_back(Pool& pool, std::uint64_t excess) {
    const std::uint32_t slot_size = pool.arena->info().slot_size;
    const std::uint64_t wanted = (excess + slot_size - 1) / slot_size;
    const std::uint32_t given = pool.arena->give_back_free(
        static_cast<std::uint32_t>(std::min<std::uint64_t>(wanted, pool.arena->free_resident_slots())));
    resident_bytes_ -= std::uint64_t{given} * slot_size;
}

void PieceMemory::release_slot(Pool& pool, std::uint32_t slot, bus::PieceArena::Pages pages) {
    bus::PieceArena& arena = *pool.arena;
    arena.release(slot, pool.retired ? bus::PieceArena::Pages::give_back : pages);
    // Kept: from in use to free and resident, the same bytes. Given back: gone.
    if (!arena.resident(slot)) resident_bytes_ -= arena.info().slot_size;
}

std::optional<std::uint32_t> PieceMemory::slot_of(std::uint64_t lease_id) const {
    if (const auto found = undelivered_.find(lease_id); found != undelivered_.end()) {
        return found->second.slot;
    }
    if (const auto found = delivered_slots_.find(lease_id); found != delivered_slots_.end()) {
        return found->second.slot;
    }
    return std::nullopt;
}

void PieceMemory::release(std::uint64_t lease_id) {
    const auto found = undelivered_.find(lease_id);
    if (found == undelivered_.end()) return;
    const Held& held = found->second;
    if (held.slot) {
        // Ended early: an empty slot's few written pages are not worth a whole resident slot.
        const std::uint32_t slot = *held.slot;
        release_slot(*held.pool, slot,
                     held.pool->arena->resident(slot) ? bus::PieceArena::Pages::keep
                                                      : bus::PieceArena::Pages::give_back);
    }
    counted_bytes_ -= held.charge;
    undelivered_.erase(found);
}

void PieceMemory::delivered(std::uint64_t lease_id) {
    const auto found = undelivered_.find(lease_id);
    if (found == undelivered_.end()) return;
    Held& held = found->second;
    // A slot stays taken: the verifier and the writer read it in place. A buffer is
    // ZeroMQ's now, bounded by the socket's high-water mark instead.
    if (held.slot) {
        delivered_slots_[lease_id] = Delivered{held.pool, *held.slot};
    } else {
        counted_bytes_ -= held.charge;
    }
    undelivered_.erase(found);
}

std::size_t PieceMemory::free_delivered(const bus::v1::SlotsFreed& freed) {
    if (freed.all_delivered()) {
        const std::size_t count = delivered_slots_.size();
        for (const auto& [lease_id, held] : delivered_slots_) {
            release_slot(*held.pool, held.slot, bus::PieceArena::Pages::keep);
            counted_bytes_ -= held.pool->length;
        }
        delivered_slots_.clear();
        return count;
    }
    std::size_t count = 0;
    for (const auto lease_id : freed.lease_ids()) {
        const auto found = delivered_slots_.find(lease_id);
        // Lease ids are unique across torrents and arenas; one in another arena than the
        // message names is not this message's to free.
        if (found == delivered_slots_.end() ||
            found->second.pool->arena->info().id != freed.arena_id()) {
            continue;
        }
        release_slot(*found->second.pool, found->second.slot, bus::PieceArena::Pages::keep);
        counted_bytes_ -= found->second.pool->length;
        delivered_slots_.erase(found);
        ++count;
    }
    return count;
}

void PieceMemory::retire(std::uint32_t piece_length) {
    const auto found = pools_.find(piece_length);
    if (found == pools_.end() || !found->second->arena) return;
    Pool& pool = *found->second;
    pool.retired = true;
    const std::uint32_t slot_size = pool.arena->info().slot_size;
    const std::uint32_t given = pool.arena->give_back_free(pool.arena->free_resident_slots());
    resident_bytes_ -= std::uint64_t{given} * slot_size;
}

void PieceMemory::trim(std::chrono::steady_clock::time_point now) {
    if (window_start_ == std::chrono::steady_clock::time_point{}) window_start_ = now;
    const bool window_over = now - window_start_ >= trim_window_;
    for (auto& [length, pool] : pools_) {
        if (!pool->arena) continue;
        pool->spare_in_window = std::min(pool->spare_in_window, pool->arena->free_resident_slots());
        if (!window_over) continue;
        give_back(*pool, std::uint64_t{pool->spare_in_window} * pool->arena->info().slot_size);
        pool->spare_in_window = pool->arena->free_resident_slots();
    }
    if (window_over) window_start_ = now;
}

std::uint64_t PieceMemory::room(std::uint32_t piece_length) const {
    const std::uint64_t cap = cap_for(piece_length);
    if (piece_length == 0 || counted_bytes_ >= cap) return 0;
    return (cap - counted_bytes_) / piece_length;
}

}  // namespace pw::peer_worker
