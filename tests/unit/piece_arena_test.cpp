#include "core/bus/piece_arena.hpp"

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <set>

#include <gtest/gtest.h>

namespace pw::bus {
namespace {

TEST(PieceArena, HandsOutEverySlotOnceAndReusesTheLastFreed) {
    PieceArena arena(16384, 3);
    std::set<std::uint32_t> slots;
    for (std::uint64_t lease = 1; lease <= 3; ++lease) {
        const auto slot = arena.acquire(lease);
        ASSERT_TRUE(slot.has_value());
        EXPECT_EQ(arena.tag(*slot), lease);
        EXPECT_EQ(arena.bytes(*slot).size(), 16384u);
        slots.insert(*slot);
    }
    EXPECT_EQ(slots.size(), 3u);
    EXPECT_FALSE(arena.acquire(4).has_value());
    arena.release(1);
    EXPECT_EQ(arena.tag(1), 0u);
    arena.release(1);  // twice: ignored
    arena.release(99);  // unknown: ignored
    EXPECT_EQ(arena.free_slots(), 1u);
    EXPECT_EQ(arena.acquire(5), std::optional<std::uint32_t>(1));
}

// Bytes of the arena's file the kernel holds pages for.
std::uint64_t resident_bytes(const PieceArena& arena) {
    struct stat info {};
    if (::stat(arena.info().path.c_str(), &info) != 0) return ~std::uint64_t{0};
    return static_cast<std::uint64_t>(info.st_blocks) * 512;
}

TEST(PieceArena, AnEmptySlotHoldsOnlyThePagesWrittenAndCanGiveThemBack) {
    constexpr std::uint32_t kSlot = 1 << 20;
    PieceArena arena(kSlot, 2);
    const auto slot = arena.acquire(1).value();
    EXPECT_FALSE(arena.resident(slot));
    const std::uint64_t empty = resident_bytes(arena);  // the header and the tags only
    EXPECT_EQ(empty, 8192u);
    auto first = arena.bytes(slot).first(65536);
    fault_in_for_write(first);
    std::memset(first.data(), 0x5a, first.size());
    EXPECT_EQ(resident_bytes(arena), empty + 65536);
    arena.release(slot, PieceArena::Pages::give_back);
    EXPECT_EQ(resident_bytes(arena), empty);

    // Kept, a slot is resident in full, and the next piece gets it before any empty one.
    const auto kept = arena.acquire(2).value();
    arena.release(kept, PieceArena::Pages::keep);
    EXPECT_EQ(resident_bytes(arena), empty + kSlot);
    EXPECT_EQ(arena.acquire(3), std::optional<std::uint32_t>(kept));
    EXPECT_TRUE(arena.resident(kept));
    const auto other = arena.acquire(4).value();
    EXPECT_FALSE(arena.resident(other));
    EXPECT_EQ(resident_bytes(arena), empty + kSlot);

    // A slow piece would rather have a slot without pages, and takes a resident one only
    // when no other is free.
    arena.release(kept, PieceArena::Pages::keep);
    arena.release(other, PieceArena::Pages::give_back);
    EXPECT_EQ(arena.acquire(5, PieceArena::Prefer::empty), std::optional<std::uint32_t>(other));
    EXPECT_EQ(arena.acquire(6, PieceArena::Prefer::empty), std::optional<std::uint32_t>(kept));
}

TEST(PieceArena, AReaderSeesASlotsNewBytesAfterItsPagesWentBack) {
    constexpr std::uint32_t kSlot = 1 << 20;
    PieceArena arena(kSlot, 1);
    ArenaReader reader;
    for (std::uint8_t round = 1; round <= 3; ++round) {
        const auto slot = arena.acquire(round).value();
        auto bytes = arena.bytes(slot);
        fault_in_for_write(bytes);
        std::memset(bytes.data(), round, bytes.size());
        auto view = reader.view(arena.info(), slot, kSlot, round);
        ASSERT_TRUE(view) << view.error().describe();
        EXPECT_TRUE(std::all_of(view->begin(), view->end(), [&](std::uint8_t b) { return b == round; }));
        arena.release(slot, PieceArena::Pages::give_back);
    }
}

TEST(PieceArena, AReaderSeesTheBytesWhileTheTagHolds) {
    PieceArena arena(20000, 2);  // not a page multiple: slots are padded
    const auto slot = arena.acquire(42).value();
    auto bytes = arena.bytes(slot);
    std::fill(bytes.begin(), bytes.end(), 0xab);

    ArenaReader reader;
    auto view = reader.view(arena.info(), slot, 20000, 42);
    ASSERT_TRUE(view) << view.error().describe();
    EXPECT_TRUE(std::all_of(view->begin(), view->end(), [](std::uint8_t b) { return b == 0xab; }));
    EXPECT_TRUE(reader.still_holds(arena.info(), slot, 42));

    arena.release(slot);
    EXPECT_FALSE(reader.still_holds(arena.info(), slot, 42));
    arena.acquire(43);
    EXPECT_FALSE(reader.view(arena.info(), slot, 20000, 42));
    EXPECT_TRUE(reader.view(arena.info(), slot, 20000, 43));
    EXPECT_EQ(reader.mapped_count(), 1u);
}

TEST(PieceArena, RefusesWhatIsNotTheNamedArena) {
    PieceArena arena(16384, 2);
    const auto slot = arena.acquire(7).value();
    ArenaReader reader;
    ArenaInfo wrong_id = arena.info();
    wrong_id.id ^= 1;
    EXPECT_FALSE(reader.view(wrong_id, slot, 16384, 7));
    ArenaInfo wrong_shape = arena.info();
    wrong_shape.slot_count = 3;
    EXPECT_FALSE(reader.view(wrong_shape, slot, 16384, 7));
    for (const char* path : {"/etc/passwd", "/proc/self/fd/0", "/proc/1/fd/../../etc/passwd", ""}) {
        ArenaInfo elsewhere = arena.info();
        elsewhere.path = path;
        EXPECT_FALSE(reader.view(elsewhere, slot, 16384, 7)) << path;
    }
    EXPECT_FALSE(reader.view(arena.info(), 2, 16384, 7));      // no such slot
    EXPECT_FALSE(reader.view(arena.info(), slot, 16385, 7));   // larger than a slot
    EXPECT_FALSE(reader.view(arena.info(), slot, 16384, 0));   // never a free slot
    EXPECT_EQ(reader.mapped_count(), 1u);  // only the real one, by the last three calls
}

TEST(PieceArena, AnotherProcessReadsIt) {
    PieceArena arena(16384, 1);
    const auto slot = arena.acquire(9).value();
    std::memcpy(arena.bytes(slot).data(), "piecework", 9);
    const pid_t child = fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
        ArenaReader reader;
        auto view = reader.view(arena.info(), slot, 9, 9);
        _exit(view && std::memcmp(view->data(), "piecework", 9) == 0 ? 0 : 1);
    }
    int status = 0;
    ASSERT_EQ(waitpid(child, &status, 0), child);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

TEST(PieceArena, TheReaderKeepsAFewArenasMapped) {
    ArenaReader reader(2);
    PieceArena a(16384, 1), b(16384, 1), c(16384, 1);
    for (PieceArena* arena : {&a, &b, &c}) {
        const auto slot = arena->acquire(1).value();
        EXPECT_TRUE(reader.view(arena->info(), slot, 1, 1));
    }
    EXPECT_EQ(reader.mapped_count(), 2u);
}

}  // namespace
}  // namespace pw::bus
