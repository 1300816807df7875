#include "core/bus/piece_arena.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <random>
#include <stdexcept>

namespace pw::bus {

namespace {

constexpr std::uint64_t kMagic = 0x32414e4552415750ull;  // "PWARENA2"
constexpr std::size_t kPage = 4096;

struct Header {
    std::uint64_t magic;
    std::uint64_t id;
    std::uint32_t slot_size;
    std::uint32_t slot_count;
};

#ifndef MADV_POPULATE_READ  // Linux 5.14; older C headers lack the names
#define MADV_POPULATE_READ 22
#define MADV_POPULATE_WRITE 23
#endif

// A slot's pages enter a process's page tables once, with one call, instead of one page fault
// per 4 KiB the first time the slot is used (256 per 1 MiB slot, in the worker, the verifier
// and the writer each): page faults are dear on a VM, 80 to 100 ms per run in the worker
// alone. Only slots in use are populated, so the resident arena stays what the pieces need.
// Kernels without MADV_POPULATE_* refuse it, and the pages fault in as before.
void populate_slot(const std::byte* start, std::size_t length, int advice) {
    (void)::madvise(const_cast<std::byte*>(start), length, advice);
}

std::size_t round_up(std::size_t n) { return (n + kPage - 1) / kPage * kPage; }
std::size_t tags_offset() { return kPage; }
std::size_t generations_offset(std::uint32_t slot_count) {
    return tags_offset() + std::size_t{slot_count} * sizeof(std::uint64_t);
}
std::size_t slots_offset(std::uint32_t slot_count) {
    return kPage + round_up(std::size_t{slot_count} * 2 * sizeof(std::uint64_t));
}
std::size_t slot_stride(std::uint32_t slot_size) { return round_up(slot_size); }

// Tags are read and written with the compiler's atomics on the shared mapping (a reader's is
// read-only, so std::atomic_ref, which needs a mutable object, does not fit).
std::uint64_t load_tag(const std::byte* base, std::uint32_t slot) {
    const auto* tags = reinterpret_cast<const std::uint64_t*>(base + tags_offset());
    return __atomic_load_n(&tags[slot], __ATOMIC_ACQUIRE);
}

std::uint64_t load_generation(const std::byte* base, std::uint32_t slot_count, std::uint32_t slot) {
    const auto* generations =
        reinterpret_cast<const std::uint64_t*>(base + generations_offset(slot_count));
    return __atomic_load_n(&generations[slot], __ATOMIC_ACQUIRE);
}

// Only paths a worker hands out: another process's memfd.
bool is_arena_path(const std::string& path) {
    constexpr std::string_view kProc = "/proc/";
    if (path.compare(0, kProc.size(), kProc) != 0) return false;
    std::size_t at = kProc.size();
    auto digits = [&] {
        const std::size_t start = at;
        while (at < path.size() && path[at] >= '0' && path[at] <= '9') ++at;
        return at > start && at - start <= 10;
    };
    if (!digits()) return false;
    constexpr std::string_view kFd = "/fd/";
    if (path.compare(at, kFd.size(), kFd) != 0) return false;
    at += kFd.size();
    return digits() && at == path.size();
}

std::string errno_text(int error) { return std::strerror(error); }

}  // namespace

void fault_in_for_write(std::span<std::uint8_t> range) {
    if (range.empty()) return;
    const auto start = reinterpret_cast<std::uintptr_t>(range.data()) / kPage * kPage;
    const auto end = reinterpret_cast<std::uintptr_t>(range.data() + range.size());
    populate_slot(reinterpret_cast<const std::byte*>(start), end - start, MADV_POPULATE_WRITE);
}

std::size_t arena_file_size(std::uint32_t slot_size, std::uint32_t slot_count) {
    return slots_offset(slot_count) + slot_stride(slot_size) * slot_count;
}

// --- PieceArena ---

PieceArena::PieceArena(std::uint32_t slot_size, std::uint32_t slot_count) {
    if (slot_size == 0 || slot_count == 0) throw std::runtime_error("piece arena: no slots");
    info_.slot_size = slot_size;
    info_.slot_count = slot_count;
    std::random_device random;
    do {
        info_.id = (std::uint64_t{random()} << 32) ^ random();
    } while (info_.id == 0);
    fd_ = ::memfd_create("piecework-arena", MFD_CLOEXEC);
    if (fd_ < 0) throw std::runtime_error("piece arena: memfd_create: " + errno_text(errno));
    mapped_ = arena_file_size(slot_size, slot_count);
    if (::ftruncate(fd_, static_cast<off_t>(mapped_)) != 0) {
        const int error = errno;
        ::close(fd_);
        throw std::runtime_error("piece arena: ftruncate: " + errno_text(error));
    }
    void* base = ::mmap(nullptr, mapped_, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, 0);
    if (base == MAP_FAILED) {
        const int error = errno;
        ::close(fd_);
        throw std::runtime_error("piece arena: mmap: " + errno_text(error));
    }
    base_ = static_cast<std::byte*>(base);
    Header header{kMagic, info_.id, slot_size, slot_count};
    std::memcpy(base_, &header, sizeof header);
    info_.path = "/proc/" + std::to_string(::getpid()) + "/fd/" + std::to_string(fd_);
    in_use_.assign(slot_count, false);
    resident_.assign(slot_count, false);
    free_resident_.reserve(slot_count);
    free_empty_.reserve(slot_count);
    for (std::uint32_t slot = slot_count; slot > 0; --slot) free_empty_.push_back(slot - 1);
}

PieceArena::~PieceArena() {
    if (base_ != nullptr) ::munmap(base_, mapped_);
    if (fd_ >= 0) ::close(fd_);
}

std::byte* PieceArena::slot_start(std::uint32_t slot) const {
    return base_ + slots_offset(info_.slot_count) + slot_stride(info_.slot_size) * slot;
}

std::optional<std::uint32_t> PieceArena::acquire(std::uint64_t lease_id, Prefer prefer) {
    if (lease_id == 0) return std::nullopt;
    auto& first = prefer == Prefer::resident ? free_resident_ : free_empty_;
    auto& second = prefer == Prefer::resident ? free_empty_ : free_resident_;
    auto& from = first.empty() ? second : first;
    if (from.empty()) return std::nullopt;
    const std::uint32_t slot = from.back();
    from.pop_back();
    in_use_[slot] = true;
    auto* tags = reinterpret_cast<std::uint64_t*>(base_ + tags_offset());
    __atomic_store_n(&tags[slot], lease_id, __ATOMIC_RELAXED);
    // The new tag is visible before any byte of the new piece: a reader that saw some of
    // those bytes sees the new tag on its second look (the seqlock pattern).
    std::atomic_thread_fence(std::memory_order_release);
    return slot;
}

void PieceArena::release(std::uint32_t slot, Pages pages) {
    if (slot >= in_use_.size() || !in_use_[slot]) return;
    in_use_[slot] = false;
    auto* tags = reinterpret_cast<std::uint64_t*>(base_ + tags_offset());
    __atomic_store_n(&tags[slot], std::uint64_t{0}, __ATOMIC_RELEASE);
    // Punching the hole frees the pages in every process that maps the slot; where the
    // kernel refuses, the slot keeps them.
    if (pages == Pages::give_back && punch(slot)) {
        free_empty_.push_back(slot);
        return;
    }
    // Written in full by its piece, or partly by a piece that ended early: either way what
    // is resident stays so, and one call makes sure all of it is.
    if (!resident_[slot]) {
        populate_slot(slot_start(slot), slot_stride(info_.slot_size), MADV_POPULATE_WRITE);
        resident_[slot] = true;
    }
    free_resident_.push_back(slot);
}

bool PieceArena::punch(std::uint32_t slot) {
    if (::fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                    static_cast<off_t>(slot_start(slot) - base_),
                    static_cast<off_t>(slot_stride(info_.slot_size))) != 0) {
        return false;
    }
    auto* generations =
        reinterpret_cast<std::uint64_t*>(base_ + generations_offset(info_.slot_count));
    __atomic_fetch_add(&generations[slot], 1, __ATOMIC_RELEASE);
    resident_[slot] = false;
    return true;
}

std::uint32_t PieceArena::give_back_free(std::uint32_t count) {
    // The bottom of the stack was freed longest ago: the next piece would take it last.
    std::uint32_t given = 0;
    while (given < count && given < free_resident_.size() && punch(free_resident_[given])) {
        free_empty_.push_back(free_resident_[given]);
        ++given;
    }
    free_resident_.erase(free_resident_.begin(), free_resident_.begin() + given);
    return given;
}

std::span<std::uint8_t> PieceArena::bytes(std::uint32_t slot) {
    if (slot >= info_.slot_count) return {};
    auto* start = reinterpret_cast<std::uint8_t*>(base_ + slots_offset(info_.slot_count) +
                                                  slot_stride(info_.slot_size) * slot);
    return {start, info_.slot_size};
}

std::uint64_t PieceArena::tag(std::uint32_t slot) const {
    if (slot >= info_.slot_count) return 0;
    return load_tag(base_, slot);
}

// --- ArenaReader ---

ArenaReader::~ArenaReader() {
    for (const Mapping& mapping : maps_) {
        ::munmap(const_cast<std::byte*>(mapping.base), mapping.length);
    }
}

Result<ArenaReader::Mapping*> ArenaReader::find_or_map(const ArenaInfo& arena) {
    for (auto it = maps_.begin(); it != maps_.end(); ++it) {
        if (it->id == arena.id && it->path == arena.path) {
            if (it != maps_.begin()) maps_.splice(maps_.begin(), maps_, it);
            return &maps_.front();
        }
    }
    if (!is_arena_path(arena.path)) {
        return make_error("arena path '" + arena.path + "' is not a worker's /proc/PID/fd/FD");
    }
    if (arena.slot_size == 0 || arena.slot_count == 0) return make_error("arena has no slots");
    const int fd = ::open(arena.path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return make_error("cannot open arena " + arena.path + ": " + errno_text(errno));
    struct stat info {};
    const std::size_t expected = arena_file_size(arena.slot_size, arena.slot_count);
    if (::fstat(fd, &info) != 0 || static_cast<std::size_t>(info.st_size) != expected) {
        ::close(fd);
        return make_error("arena " + arena.path + " has the wrong size");
    }
    void* base = ::mmap(nullptr, expected, PROT_READ, MAP_SHARED, fd, 0);
    const int map_error = errno;
    ::close(fd);
    if (base == MAP_FAILED) return make_error("cannot map arena " + arena.path + ": " + errno_text(map_error));
    Header header{};
    std::memcpy(&header, base, sizeof header);
    if (header.magic != kMagic || header.id != arena.id || header.slot_size != arena.slot_size ||
        header.slot_count != arena.slot_count) {
        ::munmap(base, expected);
        return make_error("arena " + arena.path + " is not the one named (another process's file?)");
    }
    if (maps_.size() >= max_arenas_) {
        ::munmap(const_cast<std::byte*>(maps_.back().base), maps_.back().length);
        maps_.pop_back();
    }
    maps_.push_front(Mapping{arena.path, arena.id, arena.slot_size, arena.slot_count,
                             static_cast<const std::byte*>(base), expected,
                             std::vector<std::uint64_t>(arena.slot_count, ~std::uint64_t{0})});
    return &maps_.front();
}

Result<std::span<const std::uint8_t>> ArenaReader::view(const ArenaInfo& arena, std::uint32_t slot,
                                                        std::uint32_t size,
                                                        std::uint64_t lease_id) {
    auto mapped = find_or_map(arena);
    if (!mapped) return mapped.error();
    Mapping& mapping = *mapped.value();
    if (slot >= mapping.slot_count) {
        return make_error("slot " + std::to_string(slot) + " is beyond the arena's " +
                          std::to_string(mapping.slot_count));
    }
    if (size > mapping.slot_size) {
        return make_error("piece of " + std::to_string(size) + " bytes does not fit a slot of " +
                          std::to_string(mapping.slot_size));
    }
    if (lease_id == 0 || load_tag(mapping.base, slot) != lease_id) {
        return make_error("slot " + std::to_string(slot) + " no longer holds lease " +
                          std::to_string(lease_id));
    }
    const std::byte* slot_start =
        mapping.base + slots_offset(mapping.slot_count) + slot_stride(mapping.slot_size) * slot;
    // Once per slot, and again each time its pages went back to the kernel (which took them
    // out of our page tables too).
    const std::uint64_t generation = load_generation(mapping.base, mapping.slot_count, slot);
    if (mapping.populated_at[slot] != generation) {
        populate_slot(slot_start, slot_stride(mapping.slot_size), MADV_POPULATE_READ);
        mapping.populated_at[slot] = generation;
    }
    return std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(slot_start), size);
}

bool ArenaReader::still_holds(const ArenaInfo& arena, std::uint32_t slot, std::uint64_t lease_id) {
    // Orders the reads of the piece's bytes before this second look at the tag.
    std::atomic_thread_fence(std::memory_order_acquire);
    for (const Mapping& mapping : maps_) {
        if (mapping.id == arena.id && mapping.path == arena.path) {
            return slot < mapping.slot_count && load_tag(mapping.base, slot) == lease_id;
        }
    }
    return false;
}

}  // namespace pw::bus
