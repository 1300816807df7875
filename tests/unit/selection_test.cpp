// Choosing files, priorities and sequential order: the picker's levels, the torrent's wanted
// bytes and "done", --select-file's list, the saved choice, and the writer's parts file.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <vector>

#include <fcntl.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "core/metainfo.hpp"
#include "orchestrator/piece_picker.hpp"
#include "orchestrator/session_store.hpp"
#include "orchestrator/torrent_state.hpp"
#include "tests/unit/test_torrents.hpp"

namespace pw::orchestrator {
namespace {

using Clock = std::chrono::steady_clock;

std::vector<std::uint32_t> order_of(PiecePicker& picker, const PeerKey& peer, std::size_t each) {
    std::vector<std::uint32_t> order;
    for (;;) {
        const auto picked = picker.pick(peer, each);
        if (picked.empty()) return order;
        for (const PieceIndex piece : picked) order.push_back(piece.get());
    }
}

TEST(PiecePickerLevels, HigherLevelsFirstAndUnwantedNever) {
    PiecePicker picker(12, 1);
    picker.set_have_all("seed:1");
    // 0-3 low, 4-7 not wanted, 8-11 high.
    std::vector<std::uint8_t> levels(12, PiecePicker::kLow);
    for (int i = 4; i < 8; ++i) levels[i] = PiecePicker::kNotWanted;
    for (int i = 8; i < 12; ++i) levels[i] = PiecePicker::kHigh;
    picker.set_levels(levels);
    EXPECT_EQ(picker.free_count(), 8u);
    const auto order = order_of(picker, "seed:1", 1);
    ASSERT_EQ(order.size(), 8u);
    for (int i = 0; i < 4; ++i) EXPECT_GE(order[i], 8u) << i;
    for (int i = 4; i < 8; ++i) EXPECT_LT(order[i], 4u) << i;
    EXPECT_EQ(picker.free_count(), 0u);
}

TEST(PiecePickerLevels, RarestFirstWithinALevel) {
    PiecePicker picker(6, 2);
    ASSERT_TRUE(picker.set_bitfield("a:1", std::vector<std::uint8_t>{0xfc}));  // has all six
    ASSERT_TRUE(picker.set_bitfield("b:1", std::vector<std::uint8_t>{0xa8}));  // 0, 2, 4
    picker.set_levels(std::vector<std::uint8_t>(6, PiecePicker::kNormal));
    const auto order = order_of(picker, "a:1", 1);
    ASSERT_EQ(order.size(), 6u);
    const std::set<std::uint32_t> first(order.begin(), order.begin() + 3);
    EXPECT_EQ(first, (std::set<std::uint32_t>{1, 3, 5}));  // the rarer ones
}

TEST(PiecePickerLevels, UnwantingAndWantingAgainTakeEffectAtOnce) {
    PiecePicker picker(8, 3);
    picker.set_have_all("seed:1");
    std::vector<std::uint8_t> levels(8, PiecePicker::kNotWanted);
    levels[2] = PiecePicker::kNormal;
    picker.set_levels(levels);
    const auto first = picker.pick("seed:1", 8);
    ASSERT_EQ(first.size(), 1u);
    EXPECT_EQ(first[0].get(), 2u);
    // Unwanted while busy: it comes back parked, not free.
    picker.set_levels(std::vector<std::uint8_t>(8, PiecePicker::kNotWanted));
    picker.requeue(first[0]);
    EXPECT_FALSE(picker.is_free(first[0]));
    EXPECT_TRUE(picker.pick("seed:1", 8).empty());
    // It may still arrive: done all the same.
    picker.mark_done(first[0]);
    EXPECT_TRUE(picker.is_done(first[0]));
    levels.assign(8, PiecePicker::kNormal);
    picker.set_levels(levels);
    EXPECT_EQ(picker.free_count(), 7u);
    EXPECT_EQ(picker.pick("seed:1", 8).size(), 7u);
}

TEST(PiecePickerLevels, SequentialGoesInOrderAfterTheEdges) {
    PiecePicker picker(40, 4, 8);
    picker.set_have_all("seed:1");
    std::vector<std::uint8_t> levels(40, PiecePicker::kNormal);
    levels[0] = levels[39] = PiecePicker::kNormal + 1;  // a file's first and last piece
    picker.set_levels(levels);
    picker.set_sequential(true, 4);
    const auto order = order_of(picker, "seed:1", 3);
    ASSERT_EQ(order.size(), 40u);
    EXPECT_EQ(order[0], 0u);
    EXPECT_EQ(order[1], 39u);
    for (std::uint32_t i = 2; i < 40; ++i) EXPECT_EQ(order[i], i - 1) << i;
}

TEST(PiecePickerLevels, SequentialWindowComesBeforeHigherLevelsFurtherOn) {
    PiecePicker picker(20, 5);
    picker.set_have_all("seed:1");
    std::vector<std::uint8_t> levels(20, PiecePicker::kLow);
    for (int i = 10; i < 20; ++i) levels[i] = PiecePicker::kHigh;
    picker.set_levels(levels);
    picker.set_sequential(true, 3);
    const auto order = order_of(picker, "seed:1", 1);
    ASSERT_EQ(order.size(), 20u);
    // The first pick's window is 0-2, taken in order; the window then follows the front.
    EXPECT_EQ(order[0], 0u);
    EXPECT_EQ(order[1], 1u);
    EXPECT_EQ(order[2], 2u);
}

TEST(PiecePickerLevels, SequentialSkipsWhatThePeerLacks) {
    PiecePicker picker(16, 6);
    ASSERT_TRUE(picker.set_bitfield("p:1", std::vector<std::uint8_t>{0x0f, 0xff}));  // 4-15
    picker.set_sequential(true, 4);
    const auto picked = picker.pick("p:1", 4);
    ASSERT_EQ(picked.size(), 4u);
    EXPECT_EQ(picked[0].get(), 4u);
    EXPECT_EQ(picked[3].get(), 7u);
}

// --- --select-file ---

TEST(FileSelection, ParsesNumbersAndRangesFromOne) {
    auto unwanted = parse_file_selection("1,3-5", 6);
    ASSERT_TRUE(unwanted.ok());
    EXPECT_EQ(*unwanted, (std::vector<bool>{false, true, false, false, false, true}));
    EXPECT_FALSE(parse_file_selection("0", 3).ok());
    EXPECT_FALSE(parse_file_selection("4", 3).ok());
    EXPECT_FALSE(parse_file_selection("3-1", 3).ok());
    EXPECT_FALSE(parse_file_selection("1,,2", 3).ok());
    EXPECT_FALSE(parse_file_selection("a", 3).ok());
    EXPECT_FALSE(parse_file_selection("", 3).ok());
    EXPECT_FALSE(parse_file_selection("99999999999999999999", 3).ok());
}

// --- the torrent's wanted bytes ---

// Three files over 16 KiB pieces: a (40000 bytes: pieces 0-2), b (10000: pieces 2-3), c (30000:
// pieces 3-4): piece 2 straddles a and b, piece 3 straddles b and c.
test::TestTorrent three_files() {
    return test::make_torrent("three", 16384, {{{"a"}, 40000}, {{"b"}, 10000}, {{"c"}, 30000}});
}

TorrentState make_state(const test::TestTorrent& t, TorrentSettings settings = {}) {
    TorrentState state(TorrentId{1}, t.torrent.info_hash(), "three", {}, std::move(settings), {});
    state.set_info(t.torrent);
    return state;
}

std::vector<std::uint8_t> all_bits(std::uint32_t pieces, std::initializer_list<std::uint32_t> set) {
    std::vector<std::uint8_t> bits((pieces + 7) / 8, 0);
    for (const auto piece : set) bits[piece / 8] |= static_cast<std::uint8_t>(0x80 >> (piece % 8));
    return bits;
}

TEST(TorrentSelection, WantedBytesCountWholePiecesOfWantedFiles) {
    const auto t = three_files();
    TorrentSettings settings;
    settings.file_unwanted = {false, true, true};  // a only
    TorrentState state = make_state(t, settings);
    EXPECT_EQ(state.listed_file_count(), 3u);
    EXPECT_TRUE(state.piece_wanted(PieceIndex{2}));   // straddles a and b
    EXPECT_FALSE(state.piece_wanted(PieceIndex{3}));
    EXPECT_EQ(state.size_when_done(), 3u * 16384);
    EXPECT_EQ(state.left(), 3u * 16384);
    EXPECT_EQ(state.unwanted_files_bits(), std::string(1, static_cast<char>(0x60)));
}

TEST(TorrentSelection, DoneWhenTheWantedPiecesAreAndMoreWantedDownloadsAgain) {
    const auto t = three_files();
    TorrentSettings settings;
    settings.file_unwanted = {false, true, true};
    TorrentState state = make_state(t, settings);
    const auto now = Clock::now();
    ASSERT_TRUE(state.start(now));
    std::vector<Cancel> cancels;
    const auto bits = all_bits(5, {0, 1});
    ASSERT_TRUE(state.on_resume_state(bits, false, now, cancels).has_value());
    EXPECT_EQ(state.phase(), TorrentPhase::downloading);
    state.on_peer_has("seed:1", true, {}, false, {});
    const auto grants = state.request("w", "seed:1", 10, now);
    ASSERT_EQ(grants.size(), 1u);  // piece 2 only: 3 and 4 are not wanted
    EXPECT_EQ(grants[0].piece.get(), 2u);
    state.on_written(PieceIndex{2}, cancels, now);
    EXPECT_TRUE(state.complete());
    EXPECT_FALSE(state.has_all());
    EXPECT_EQ(state.phase(), TorrentPhase::seeding);
    EXPECT_TRUE(state.take_completed());
    EXPECT_EQ(state.left(), 0u);

    // c wanted too, and high: downloading again, pieces 3 and 4.
    ASSERT_TRUE(state.choose_files({2}, true, 1, now));
    EXPECT_EQ(state.phase(), TorrentPhase::downloading);
    EXPECT_EQ(state.left(), 2u * 16384 - (5u * 16384 - 80000));
    const auto more = state.request("w", "seed:1", 10, now);
    std::set<std::uint32_t> pieces;
    for (const auto& grant : more) pieces.insert(grant.piece.get());
    EXPECT_EQ(pieces, (std::set<std::uint32_t>{3, 4}));
    EXPECT_FALSE(state.choose_files({3}, true, std::nullopt, now));  // no file 3
    EXPECT_EQ(state.file_priority(2), 1);
}

TEST(TorrentSelection, FirstAndLastPieceOfAFileFirst) {
    const auto t = test::make_torrent("one", 16384, {{{"f"}, 16384 * 10}});
    TorrentState state(TorrentId{1}, t.torrent.info_hash(), "one", {}, {}, {});
    state.set_info(t.torrent);
    const auto now = Clock::now();
    ASSERT_TRUE(state.start(now));
    std::vector<Cancel> cancels;
    ASSERT_TRUE(state.on_resume_state(all_bits(10, {}), false, now, cancels).has_value());
    state.on_peer_has("seed:1", true, {}, false, {});
    const auto grants = state.request("w", "seed:1", 2, now);
    ASSERT_EQ(grants.size(), 2u);
    EXPECT_EQ((std::set<std::uint32_t>{grants[0].piece.get(), grants[1].piece.get()}),
              (std::set<std::uint32_t>{0, 9}));
}

TEST(TorrentSelection, TheChoiceIsSavedAndReadBack) {
    TorrentSettings settings;
    settings.download_dir = "/tmp/x";
    settings.file_unwanted = {false, true, false};
    settings.file_priority = {1, 0, -1};
    settings.sequential = true;
    auto decoded = decode_torrent_state(encode_torrent_state(TorrentId{3}, "n", settings));
    ASSERT_TRUE(decoded.ok()) << decoded.error().describe();
    EXPECT_EQ(decoded->settings.file_unwanted, settings.file_unwanted);
    EXPECT_EQ(decoded->settings.file_priority, settings.file_priority);
    EXPECT_TRUE(decoded->settings.sequential);
}

}  // namespace
}  // namespace pw::orchestrator
