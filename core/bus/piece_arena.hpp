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
// word per slot, padded to 4 KiB), then the slots.
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

    // How a slot's memory is had. A warm slot is resident in full from the start (one
    // madvise, no page faults): right for a piece that fills in milliseconds. A cold slot
    // takes pages only as bytes are written into it, and gives them back to the kernel when
    // released: right for a piece a slow peer fills over a second, which as a warm slot
    // would hold its whole size all that time (sixteen 2 MiB/s peers: sixteen slots resident
    // in full, on average half of it written).
    enum class Fill { warm, cold };

    // A free slot, tagged with `lease_id` (non-zero); nullopt when all are in use. The most
    // recently freed slot comes first: a warm one is resident already, so resident memory
    // follows the pieces in flight rather than the arena's size. A cold acquire prefers a slot
    // holding no pages.
    std::optional<std::uint32_t> acquire(std::uint64_t lease_id, Fill fill = Fill::warm);
    // Clears the slot's tag and makes it available again; a cold slot's pages go back to the
    // kernel. Unknown or free slots are ignored.
    void release(std::uint32_t slot);
    std::span<std::uint8_t> bytes(std::uint32_t slot);
    // Acquired cold (and so without its pages yet).
    bool cold(std::uint32_t slot) const { return slot < cold_.size() && cold_[slot]; }
    std::uint64_t tag(std::uint32_t slot) const;
    std::uint32_t free_slots() const {
        return static_cast<std::uint32_t>(free_warm_.size() + free_empty_.size());
    }

private:
    ArenaInfo info_;
    int fd_ = -1;
    std::byte* base_ = nullptr;
    std::size_t mapped_ = 0;
    std::byte* slot_start(std::uint32_t slot) const;

    std::vector<std::uint32_t> free_warm_;   // stacks: resident slots, and slots without pages
    std::vector<std::uint32_t> free_empty_;
    std::vector<bool> in_use_;
    std::vector<bool> cold_;       // acquired cold: its pages go back on release
    std::vector<bool> populated_;  // its pages are in our page tables (see populate_slot)
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
        std::vector<bool> populated;  // slots whose pages are in our page tables
    };
    Result<Mapping*> find_or_map(const ArenaInfo& arena);

    std::size_t max_arenas_;
    std::list<Mapping> maps_;  // most recently used first
};

// Brings the pages of `range` (in a cold slot) into our page tables for writing with one call
// rather than a page fault per 4 KiB; kernels without MADV_POPULATE_WRITE fault as before.
void fault_in_for_write(std::span<std::uint8_t> range);

// Bytes of an arena file with these dimensions (header, tags and slots).
std::size_t arena_file_size(std::uint32_t slot_size, std::uint32_t slot_count);

}  // namespace pw::bus
