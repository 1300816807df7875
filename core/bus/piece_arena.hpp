#pragma once
// Whole pieces in shared memory, for stages on one machine.
//
// Over ipc:// every hop of a piece (worker -> verifier -> writer) would copy it through the
// kernel twice. Instead a worker assembles each piece straight into a slot of its arena, a
// memfd it maps read-write, and the batches it sends name the slot; the verifier hashes the
// bytes in place and the writer pwrite()s them from there, each through a read-only mapping.
// Across machines (tcp://) pieces still travel as frames.
//
// Every slot carries a tag: the lease whose piece it holds (0: free). The worker sets the tag
// before writing a piece's first byte and frees the slot only when told that the piece's
// journey is over (SlotsFreed). A reader uses a slot only while the tag still names the lease
// of the message it is handling, and checks it again after using the bytes: if the slot was
// reused meanwhile (only after a crash elsewhere made the orchestrator free it early), the
// piece is dropped and fetched again, never judged or written from someone else's bytes.
//
// Layout of the file: a 4 KiB header (magic, id, slot size and count), the tags (one 64-bit
// word per slot) and the generations (one per slot, counting the times its pages went back
// to the kernel, which takes them out of every reader's page tables too), padded to 4 KiB,
// then the slots.
#include <cstddef>
#include <cstdint>
#include <list>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "core/result.hpp"

namespace pw::bus {

struct ArenaInfo {
    std::string path;  // another process of the same user opens this (/proc/PID/fd/FD)
    std::uint64_t id = 0;
    std::uint32_t slot_size = 0;
    std::uint32_t slot_count = 0;
};

// The worker's side: creates, maps and hands out the slots.
class PieceArena {
public:
    // Throws std::runtime_error when the memfd cannot be made or mapped (a start-up failure).
    PieceArena(std::uint32_t slot_size, std::uint32_t slot_count);
    ~PieceArena();
    PieceArena(const PieceArena&) = delete;
    PieceArena& operator=(const PieceArena&) = delete;

    const ArenaInfo& info() const { return info_; }

    // Which free slot a piece would rather have. A resident one (the one freed last first)
    // costs no page faults. One without pages takes them as bytes are written
    // (fault_in_for_write), so it holds only what has come.
    enum class Prefer { resident, empty };

    // A free slot, tagged with `lease_id` (non-zero), of the kind preferred if there is one;
    // nullopt when all are in use.
    std::optional<std::uint32_t> acquire(std::uint64_t lease_id, Prefer prefer = Prefer::resident);
    // Whether a slot's pages go back to the kernel when it is released. Kept, the next piece
    // reuses them without a fault; given back, they cost nothing while the slot is free.
    enum class Pages { keep, give_back };
    // Clears the slot's tag and makes it available again. Unknown or free slots are ignored.
    void release(std::uint32_t slot, Pages pages = Pages::keep);
    std::span<std::uint8_t> bytes(std::uint32_t slot);
    // The slot's pages are all resident (it was acquired from the resident ones).
    bool resident(std::uint32_t slot) const { return slot < resident_.size() && resident_[slot]; }
    std::uint64_t tag(std::uint32_t slot) const;
    std::uint32_t free_slots() const {
        return static_cast<std::uint32_t>(free_resident_.size() + free_empty_.size());
    }
    // Free slots that kept their pages.
    std::uint32_t free_resident_slots() const {
        return static_cast<std::uint32_t>(free_resident_.size());
    }
    // Gives the pages of up to `count` free resident slots back to the kernel, those freed
    // longest ago first; returns how many went back. For an owner that shares one memory
    // budget among several arenas: pages kept here for reuse may be wanted by another.
    std::uint32_t give_back_free(std::uint32_t count);

private:
    ArenaInfo info_;
    int fd_ = -1;
    std::byte* base_ = nullptr;
    std::size_t mapped_ = 0;
    std::byte* slot_start(std::uint32_t slot) const;
    // Punches the slot's pages out of the file (every process's mapping); false where the
    // kernel refuses.
    bool punch(std::uint32_t slot);

    std::vector<std::uint32_t> free_resident_;  // stacks: slots with their pages, and without
    std::vector<std::uint32_t> free_empty_;
    std::vector<bool> in_use_;
    std::vector<bool> resident_;  // every page of it is in (and in our page tables)
};

// The readers' side (verifier, writer): maps arenas read-only on first use and keeps the
// most recently used few. A worker that died leaves its arena readable through the mapping
// until it is evicted, so its last pieces can still be finished.
class ArenaReader {
public:
    explicit ArenaReader(std::size_t max_arenas = 16) : max_arenas_(max_arenas) {}
    ~ArenaReader();
    ArenaReader(const ArenaReader&) = delete;
    ArenaReader& operator=(const ArenaReader&) = delete;

    // The `size` bytes of `slot`, if the arena maps, its header matches `arena`, the slot
    // exists, `size` fits in it, and its tag names `lease_id`. The error says which failed.
    Result<std::span<const std::uint8_t>> view(const ArenaInfo& arena, std::uint32_t slot,
                                               std::uint32_t size, std::uint64_t lease_id);
    // After using the bytes from view(): true when the slot still held `lease_id` all along,
    // so what was read is what the worker delivered.
    bool still_holds(const ArenaInfo& arena, std::uint32_t slot, std::uint64_t lease_id);

    std::size_t mapped_count() const { return maps_.size(); }

private:
    struct Mapping {
        std::string path;
        std::uint64_t id = 0;
        std::uint32_t slot_size = 0;
        std::uint32_t slot_count = 0;
        const std::byte* base = nullptr;
        std::size_t length = 0;
        // Per slot, the generation its pages were last brought into our page tables at.
        std::vector<std::uint64_t> populated_at;
    };
    Result<Mapping*> find_or_map(const ArenaInfo& arena);

    std::size_t max_arenas_;
    std::list<Mapping> maps_;  // most recently used first
};

// Brings the pages of `range` (in a slot without pages) into our page tables for writing
// with one call rather than a page fault per 4 KiB; kernels without MADV_POPULATE_WRITE fault
// as before.
void fault_in_for_write(std::span<std::uint8_t> range);

// Bytes of an arena file with these dimensions (header, tags, generations and slots).
std::size_t arena_file_size(std::uint32_t slot_size, std::uint32_t slot_count);

}  // namespace pw::bus
