#include "peer_worker/piece_memory.hpp"

#include <stdexcept>
#include <string>

namespace pw::peer_worker {

PieceMemory::PieceMemory(std::uint64_t max_bytes) : max_bytes_(max_bytes) {}

PieceMemory::PieceMemory(std::unique_ptr<bus::PieceArena> arena, std::chrono::milliseconds slow_fill)
    : arena_(std::move(arena)), slow_fill_(slow_fill) {
    if (!arena_) throw std::invalid_argument("PieceMemory: no arena");
    max_bytes_ = std::uint64_t{arena_->info().slot_size} * arena_->info().slot_count;
}

std::optional<PieceDestination> PieceMemory::reserve(std::uint64_t lease_id, std::uint32_t size) {
    if (lease_id == 0 || size == 0 || undelivered_.count(lease_id) != 0 ||
        delivered_slots_.count(lease_id) != 0) {
        return std::nullopt;
    }
    if (arena_) {
        if (size > arena_->info().slot_size || room(size) == 0) return std::nullopt;
        undelivered_[lease_id] = Held{std::nullopt, size, {}};
        return PieceDestination::bound_on_first_use(*this, lease_id, size);
    }
    if (buffer_bytes_ + size > max_bytes_) return std::nullopt;
    buffer_bytes_ += size;
    undelivered_[lease_id] = Held{std::nullopt, size, {}};
    return PieceDestination::owned(size);
}

std::span<std::uint8_t> PieceMemory::bind(std::uint64_t lease_id, bool& empty) {
    const auto found = undelivered_.find(lease_id);
    if (!arena_ || found == undelivered_.end()) {
        throw std::logic_error("PieceMemory::bind: lease " + std::to_string(lease_id) + " holds no room");
    }
    Held& held = found->second;
    if (!held.slot) {
        held.slot = arena_->acquire(lease_id, pieces_are_fast() ? bus::PieceArena::Prefer::resident
                                                               : bus::PieceArena::Prefer::empty);
        if (!held.slot) throw std::logic_error("PieceMemory::bind: more leases than slots");
        held.bound_at = std::chrono::steady_clock::now();
    }
    empty = !arena_->resident(*held.slot);
    return arena_->bytes(*held.slot).first(held.size);
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
    if (found->second.slot) {
        // Ended early: an empty slot's few written pages are not worth a whole resident slot.
        const std::uint32_t slot = *found->second.slot;
        arena_->release(slot, arena_->resident(slot) ? bus::PieceArena::Pages::keep
                                                     : bus::PieceArena::Pages::give_back);
    } else if (!arena_) {
        buffer_bytes_ -= found->second.size;
    }
    undelivered_.erase(found);
}

void PieceMemory::delivered(std::uint64_t lease_id) {
    const auto found = undelivered_.find(lease_id);
    if (found == undelivered_.end()) return;
    // A slot stays taken: the verifier and the writer read it in place. A buffer is
    // ZeroMQ's now, bounded by the socket's high-water mark instead.
    if (found->second.slot) {
        const double fill = std::chrono::duration<double>(std::chrono::steady_clock::now() -
                                                          found->second.bound_at).count();
        typical_fill_seconds_ =
            typical_fill_seconds_ < 0 ? fill : 0.875 * typical_fill_seconds_ + 0.125 * fill;
        const bool keep = fill <= std::chrono::duration<double>(slow_fill_).count() &&
                          pieces_are_fast();
        delivered_slots_[lease_id] = Delivered{
            *found->second.slot, keep ? bus::PieceArena::Pages::keep : bus::PieceArena::Pages::give_back};
    }
    else if (!arena_) buffer_bytes_ -= found->second.size;
    undelivered_.erase(found);
}

bool PieceMemory::pieces_are_fast() const {
    return typical_fill_seconds_ >= 0 &&
           typical_fill_seconds_ <= std::chrono::duration<double>(slow_fill_).count();
}

std::size_t PieceMemory::free_delivered(const bus::v1::SlotsFreed& freed) {
    if (!arena_) return 0;
    if (freed.all_delivered()) {
        const std::size_t count = delivered_slots_.size();
        for (const auto& [lease_id, held] : delivered_slots_) arena_->release(held.slot, held.pages);
        delivered_slots_.clear();
        return count;
    }
    if (freed.arena_id() != arena_->info().id) return 0;
    std::size_t count = 0;
    for (const auto lease_id : freed.lease_ids()) {
        const auto found = delivered_slots_.find(lease_id);
        if (found == delivered_slots_.end()) continue;
        arena_->release(found->second.slot, found->second.pages);
        delivered_slots_.erase(found);
        ++count;
    }
    return count;
}

std::uint64_t PieceMemory::room(std::uint32_t piece_length) const {
    if (arena_) return arena_->info().slot_count - taken_slots();
    if (piece_length == 0 || buffer_bytes_ >= max_bytes_) return 0;
    return (max_bytes_ - buffer_bytes_) / piece_length;
}

std::uint64_t PieceMemory::held_bytes() const {
    if (!arena_) return buffer_bytes_;
    const auto& info = arena_->info();
    return std::uint64_t{taken_slots()} * info.slot_size;
}

}  // namespace pw::peer_worker
