#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <map>
#include <set>
#include <thread>

#include <unistd.h>

#include <gtest/gtest.h>

#include "core/bus/bus.hpp"
#include "core/metainfo.hpp"
#include "orchestrator/choker.hpp"
#include "orchestrator/lease_book.hpp"
#include "orchestrator/peer_argument.hpp"
#include "orchestrator/peer_directory.hpp"
#include "orchestrator/piece_picker.hpp"
#include "orchestrator/progress.hpp"
#include "orchestrator/scheduler.hpp"
#include "orchestrator/service.hpp"

namespace pw::orchestrator {
namespace {

using namespace std::chrono_literals;

std::vector<std::uint8_t> bitfield_of(std::uint32_t piece_count, std::initializer_list<std::uint32_t> pieces) {
    std::vector<std::uint8_t> bits((piece_count + 7) / 8, 0);
    for (const auto piece : pieces) bits[piece / 8] |= static_cast<std::uint8_t>(0x80u >> (piece % 8));
    return bits;
}

std::set<std::uint32_t> indices(const std::vector<PieceIndex>& pieces) {
    std::set<std::uint32_t> out;
    for (const auto piece : pieces) out.insert(piece.get());
    return out;
}

// --- LeaseBook ---

TEST(LeaseBook, AReusedSlotNeverRevivesAnOldId) {
    LeaseBook book(4);
    const auto now = Clock::now();
    const NameId worker = book.workers().id_of("w1");
    const NameId peer = book.peers().id_of("p:1");
    const auto first = book.grant(PieceIndex{1}, worker, peer, false, now);
    ASSERT_TRUE(book.take(first));
    const auto second = book.grant(PieceIndex{2}, worker, peer, false, now);  // same slot
    EXPECT_GT(second, first);  // ids grow: sorting by id is oldest first
    EXPECT_FALSE(book.take(first));
    EXPECT_FALSE(book.mark_delivered(first));
    EXPECT_EQ(book.size(), 1u);
    EXPECT_EQ(book.count(PieceIndex{1}), 0u);
    EXPECT_EQ(book.count(PieceIndex{2}), 1u);
    EXPECT_FALSE(book.take(0));
    EXPECT_FALSE(book.take(~std::uint64_t{0}));
}

TEST(LeaseBook, APiecesLeasesAreFoundTakenAndCountedTogether) {
    LeaseBook book(8);
    const auto now = Clock::now();
    const NameId w1 = book.workers().id_of("w1");
    const NameId w2 = book.workers().id_of("w2");
    const NameId p1 = book.peers().id_of("p:1");
    const NameId p2 = book.peers().id_of("p:2");
    const NameId p3 = book.peers().id_of("p:3");
    const auto a = book.grant(PieceIndex{5}, w1, p1, false, now);
    const auto b = book.grant(PieceIndex{5}, w2, p2, true, now);
    const auto c = book.grant(PieceIndex{5}, w1, p3, true, now);
    const auto other = book.grant(PieceIndex{6}, w1, p1, false, now);
    EXPECT_EQ(book.count(PieceIndex{5}), 3u);
    EXPECT_TRUE(book.holds(PieceIndex{5}, p2));
    ASSERT_TRUE(book.take(b));  // from the middle of the piece's list
    EXPECT_FALSE(book.holds(PieceIndex{5}, p2));
    EXPECT_TRUE(book.holds(PieceIndex{5}, p3));
    const auto in_flight = book.in_flight();
    EXPECT_EQ(std::set<PieceIndex>(in_flight.begin(), in_flight.end()),
              (std::set<PieceIndex>{PieceIndex{5}, PieceIndex{6}}));
    EXPECT_EQ(in_flight.size(), 2u);
    const auto taken = book.take_piece(PieceIndex{5});
    ASSERT_EQ(taken.size(), 2u);
    EXPECT_EQ(taken[0].id, a);  // oldest first
    EXPECT_EQ(taken[1].id, c);
    EXPECT_EQ(book.count(PieceIndex{5}), 0u);
    EXPECT_EQ(book.size(), 1u);
    EXPECT_TRUE(book.take_worker("nobody").empty());
    EXPECT_TRUE(book.take_peer("nowhere:1").empty());
    ASSERT_EQ(book.take_peer("p:1").size(), 1u);
    EXPECT_FALSE(book.take(other));
}

TEST(LeaseBook, ExpiredAndDeliveredLeasesComeBackOldestFirst) {
    LeaseBook book;  // grows with the pieces it sees
    const auto now = Clock::now();
    const NameId worker = book.workers().id_of("w1");
    const NameId peer = book.peers().id_of("p:1");
    std::vector<std::uint64_t> ids;
    for (std::uint32_t piece = 0; piece < 6; ++piece) {
        ids.push_back(book.grant(PieceIndex{piece * 1000}, worker, peer, false, now + std::chrono::seconds(piece)));
    }
    book.take(ids[1]);
    ids.push_back(book.grant(PieceIndex{7}, worker, peer, false, now));  // reuses ids[1]'s slot
    EXPECT_TRUE(book.mark_delivered(ids[4]));
    EXPECT_TRUE(book.mark_delivered(ids[6]));
    const auto delivered = book.take_delivered();
    ASSERT_EQ(delivered.size(), 2u);
    EXPECT_EQ(delivered[0].id, ids[4]);
    EXPECT_EQ(delivered[1].id, ids[6]);
    const auto expired = book.take_expired(now + std::chrono::seconds(2));
    ASSERT_EQ(expired.size(), 2u);
    EXPECT_EQ(expired[0].id, ids[0]);
    EXPECT_EQ(expired[1].id, ids[2]);
    EXPECT_EQ(book.size(), 2u);  // pieces 3000 and 5000
}

// --- PiecePicker ---

TEST(PiecePicker, PicksOnlyPiecesThePeerHas) {
    PiecePicker picker(20, 1);
    ASSERT_TRUE(picker.set_bitfield("a:1", bitfield_of(20, {3, 7, 11})));
    EXPECT_EQ(indices(picker.pick("a:1", 10)), (std::set<std::uint32_t>{3, 7, 11}));
    EXPECT_TRUE(picker.pick("a:1", 10).empty());
    EXPECT_TRUE(picker.pick("unknown:1", 10).empty());
}

// Runs of consecutive pieces in a pick: one write each at the writer.
std::size_t runs_in(const std::vector<PieceIndex>& picked) {
    std::size_t runs = 0;
    for (std::size_t i = 0; i < picked.size(); ++i) {
        if (i == 0 || picked[i].get() != picked[i - 1].get() + 1) ++runs;
    }
    return runs;
}

TEST(PiecePicker, APickTakesTheRestOfItsExtent) {
    PiecePicker picker(1024, 7, 64);
    picker.set_have_all("seed:1");
    std::set<std::uint32_t> seen;
    for (int round = 0; round < 16; ++round) {
        const auto picked = picker.pick("seed:1", 64);
        ASSERT_EQ(picked.size(), 64u);
        // A run stops only at an extent's end: 64 pieces span at most a few extents.
        EXPECT_LE(runs_in(picked), 8u);
        for (const PieceIndex piece : picked) EXPECT_TRUE(seen.insert(piece.get()).second);
    }
    EXPECT_EQ(seen.size(), 1024u);  // every piece once
    EXPECT_TRUE(picker.pick("seed:1", 1).empty());
}

TEST(PiecePicker, APeerAskingAFewAtATimeGoesOnInItsExtent) {
    PiecePicker picker(1024, 11, 64);
    picker.set_have_all("seed:1");
    std::vector<PieceIndex> all;
    for (int round = 0; round < 16; ++round) {
        const auto picked = picker.pick("seed:1", 4);
        all.insert(all.end(), picked.begin(), picked.end());
    }
    ASSERT_EQ(all.size(), 64u);
    EXPECT_EQ(runs_in(all), 1u);  // one whole extent, front to back
    EXPECT_EQ(all.front().get() % 64, 0u);
}

// The run in the peer's last extent may take a bucket's last pieces: the pick must go on to
// the next bucket (this once divided by the emptied bucket's size).
TEST(PiecePicker, AnExtentRunThatEmptiesItsBucketEndsThatBucket) {
    PiecePicker picker(8, 5, 8);
    ASSERT_TRUE(picker.set_bitfield("a:1", std::vector<std::uint8_t>{0xff}));
    EXPECT_EQ(picker.pick("a:1", 4).size(), 4u);
    EXPECT_EQ(picker.pick("a:1", 8).size(), 4u);
    EXPECT_TRUE(picker.pick("a:1", 8).empty());
}

TEST(PiecePicker, ExtentRunsKeepToWhatThePeerHasAndToTheRarest) {
    PiecePicker picker(128, 3, 64);
    const std::vector<std::uint8_t> even_pieces(16, 0xaa);  // wire order: high bit first
    ASSERT_TRUE(picker.set_bitfield("a:1", even_pieces));
    ASSERT_TRUE(picker.set_bitfield("b:1", bitfield_of(128, {10, 12})));  // less rare now
    const auto picked = picker.pick("a:1", 62);
    ASSERT_EQ(picked.size(), 62u);
    for (const PieceIndex piece : picked) {
        EXPECT_EQ(piece.get() % 2, 0u);
        EXPECT_NE(piece.get(), 10u);
        EXPECT_NE(piece.get(), 12u);
    }
}

TEST(PiecePicker, RarestFirst) {
    PiecePicker picker(10, 2);
    ASSERT_TRUE(picker.set_bitfield("a:1", bitfield_of(10, {1, 2, 3})));
    ASSERT_TRUE(picker.set_bitfield("b:1", bitfield_of(10, {2, 3})));
    ASSERT_TRUE(picker.set_bitfield("c:1", bitfield_of(10, {3})));
    EXPECT_EQ(picker.availability(PieceIndex{3}), 3u);
    const auto picked = picker.pick("a:1", 3);
    ASSERT_EQ(picked.size(), 3u);
    EXPECT_EQ(picked[0].get(), 1u);
    EXPECT_EQ(picked[1].get(), 2u);
    EXPECT_EQ(picked[2].get(), 3u);
}

TEST(PiecePicker, SeederPrefersPiecesOnlySeedersHave) {
    PiecePicker picker(6, 3);
    picker.set_have_all("seed:1");
    ASSERT_TRUE(picker.set_bitfield("p:1", bitfield_of(6, {0, 1, 2, 3})));
    EXPECT_EQ(indices(picker.pick("seed:1", 2)), (std::set<std::uint32_t>{4, 5}));
    EXPECT_EQ(picker.availability(PieceIndex{0}), 2u);
}

TEST(PiecePicker, TiesAreBrokenAtRandom) {
    std::set<std::uint32_t> firsts;
    for (std::uint64_t seed = 0; seed < 20; ++seed) {
        PiecePicker picker(1000, seed);
        picker.set_have_all("seed:1");
        firsts.insert(picker.pick("seed:1", 1).at(0).get());
    }
    EXPECT_GT(firsts.size(), 10u);
    std::set<std::uint32_t> partial_firsts;
    for (std::uint64_t seed = 0; seed < 20; ++seed) {
        PiecePicker picker(64, seed);
        std::vector<std::uint8_t> half(8, 0xff);
        half[0] = 0;
        ASSERT_TRUE(picker.set_bitfield("p:1", half));
        partial_firsts.insert(picker.pick("p:1", 1).at(0).get());
    }
    EXPECT_GT(partial_firsts.size(), 5u);
}

TEST(PiecePicker, RequeuedPiecesGoFirst) {
    PiecePicker picker(100, 4);
    picker.set_have_all("seed:1");
    const auto first = picker.pick("seed:1", 5);
    picker.requeue(first[2]);
    const auto again = picker.pick("seed:1", 1);
    ASSERT_EQ(again.size(), 1u);
    EXPECT_EQ(again[0], first[2]);
}

TEST(PiecePicker, RejectsBadBitfieldsAndHaves) {
    PiecePicker picker(10, 5);
    EXPECT_FALSE(picker.set_bitfield("a:1", std::vector<std::uint8_t>{0xff}));        // too short
    EXPECT_FALSE(picker.set_bitfield("a:1", std::vector<std::uint8_t>{0xff, 0xff}));  // spare bits
    EXPECT_FALSE(picker.knows_peer("a:1"));
    EXPECT_FALSE(picker.add_have("a:1", PieceIndex{10}));
    EXPECT_TRUE(picker.add_have("a:1", PieceIndex{9}));
    EXPECT_EQ(picker.availability(PieceIndex{9}), 1u);
}

TEST(PiecePicker, FullBitfieldCountsAsSeederAndPeerGoneLowersAvailability) {
    PiecePicker picker(9, 6);
    ASSERT_TRUE(picker.set_bitfield("a:1", std::vector<std::uint8_t>{0xff, 0x80}));
    EXPECT_TRUE(picker.is_seeder("a:1"));
    ASSERT_TRUE(picker.set_bitfield("b:1", bitfield_of(9, {4})));
    EXPECT_EQ(picker.availability(PieceIndex{4}), 2u);
    picker.remove_peer("b:1");
    picker.remove_peer("a:1");
    EXPECT_EQ(picker.availability(PieceIndex{4}), 0u);
    EXPECT_TRUE(picker.pick("a:1", 1).empty());
}

TEST(PiecePicker, ManyPiecesSeederPicksEveryPieceOnce) {
    const std::uint32_t count = 262'144;
    PiecePicker picker(count, 7);
    picker.set_have_all("seed:1");
    std::vector<bool> seen(count, false);
    std::uint32_t total = 0;
    while (true) {
        const auto batch = picker.pick("seed:1", 64);
        if (batch.empty()) break;
        for (const auto piece : batch) {
            ASSERT_FALSE(seen[piece.get()]);
            seen[piece.get()] = true;
            ++total;
        }
    }
    EXPECT_EQ(total, count);
    EXPECT_EQ(picker.free_count(), 0u);
}

// --- Scheduler ---

struct SchedulerTest : ::testing::Test {
    Clock::time_point now = Clock::now();
    Scheduler scheduler{4, SchedulerOptions{60s, 2, 11}};
    // Seeders a:1 (w1, all four pieces) and b:1 (w2, an endgame duplicate of one of them).
    std::pair<std::vector<Grant>, std::vector<Grant>> endgame_pair() {
        scheduler.pieces().set_have_all("a:1");
        scheduler.pieces().set_have_all("b:1");
        auto a = scheduler.request("w1", "a:1", 4, now);
        auto b = scheduler.request("w2", "b:1", 1, now);
        return {std::move(a), std::move(b)};
    }
};

TEST_F(SchedulerTest, EndgameDuplicatesThenCancelsTheOthers) {
    scheduler.pieces().set_have_all("a:1");
    scheduler.pieces().set_have_all("b:1");
    const auto first = scheduler.request("w1", "a:1", 4, now);
    ASSERT_EQ(first.size(), 4u);
    for (const auto& grant : first) EXPECT_FALSE(grant.endgame);
    const auto dupes = scheduler.request("w2", "b:1", 8, now);
    ASSERT_EQ(dupes.size(), 4u);  // one duplicate per piece: at most 2 leases each
    for (const auto& grant : dupes) EXPECT_TRUE(grant.endgame);
    EXPECT_TRUE(scheduler.request("w2", "b:1", 8, now).empty());
    EXPECT_TRUE(scheduler.request("w1", "a:1", 8, now).empty());  // no lease twice to one peer

    const auto piece = first[0].piece;
    const auto cancels = scheduler.verified(piece, first[0].lease_id);
    EXPECT_EQ(cancels, (std::vector<Cancel>{Cancel{"w2", piece}}));
    EXPECT_TRUE(scheduler.written(piece).empty());
    EXPECT_TRUE(scheduler.pieces().is_done(piece));
}

TEST_F(SchedulerTest, EndgameDuplicatesTheNewestLeaseFirst) {
    for (const char* peer : {"a:1", "b:1", "c:1"}) scheduler.pieces().set_have_all(peer);
    const auto older = scheduler.request("w1", "a:1", 2, now);
    const auto newer = scheduler.request("w1", "c:1", 2, now);
    ASSERT_EQ(older.size() + newer.size(), 4u);
    // c:1 fetches its pieces in order: the last one granted has waited longest to start.
    auto dupes = scheduler.request("w2", "b:1", 1, now);
    ASSERT_EQ(dupes.size(), 1u);
    EXPECT_EQ(dupes[0].piece, newer[1].piece);
    dupes = scheduler.request("w2", "b:1", 3, now);
    ASSERT_EQ(dupes.size(), 3u);
    EXPECT_EQ(dupes[0].piece, newer[0].piece);
    EXPECT_EQ(dupes[1].piece, older[1].piece);
    EXPECT_EQ(dupes[2].piece, older[0].piece);
}

TEST(Scheduler, AThirdLeaseOnlyOnceEveryPieceInFlightHasTwo) {
    const auto now = Clock::now();
    Scheduler scheduler{2, SchedulerOptions{60s, 3, 5}};
    for (const char* peer : {"a:1", "b:1", "c:1", "d:1", "e:1"}) scheduler.pieces().set_have_all(peer);
    const auto first = scheduler.request("w1", "a:1", 2, now);
    ASSERT_EQ(first.size(), 2u);
    const PieceIndex older = first[0].piece;
    const PieceIndex newer = first[1].piece;
    auto dupes = scheduler.request("w1", "b:1", 1, now);
    ASSERT_EQ(dupes.size(), 1u);
    EXPECT_EQ(dupes[0].piece, newer);
    // The newer piece has two leases now: the older one, with one, comes first after all.
    dupes = scheduler.request("w1", "c:1", 1, now);
    ASSERT_EQ(dupes.size(), 1u);
    EXPECT_EQ(dupes[0].piece, older);
    // Both have two: a third of each, and no more.
    EXPECT_EQ(scheduler.request("w1", "d:1", 2, now).size(), 2u);
    EXPECT_TRUE(scheduler.request("w1", "e:1", 2, now).empty());
    EXPECT_EQ(scheduler.leases_outstanding(), 6u);
}

TEST_F(SchedulerTest, ReleasedAndExpiredLeasesGoBack) {
    scheduler.pieces().set_have_all("a:1");
    const auto grants = scheduler.request("w1", "a:1", 2, now);
    ASSERT_EQ(grants.size(), 2u);
    scheduler.release(grants[0].lease_id);
    EXPECT_TRUE(scheduler.pieces().is_free(grants[0].piece));
    scheduler.release(grants[0].lease_id);  // twice: harmless
    EXPECT_TRUE(scheduler.expire(now + 30s).empty());
    const auto cancels = scheduler.expire(now + 61s);
    EXPECT_EQ(cancels, (std::vector<Cancel>{Cancel{"w1", grants[1].piece}}));
    EXPECT_TRUE(scheduler.pieces().is_free(grants[1].piece));
}

TEST_F(SchedulerTest, FailedPieceIsRequeuedUnlessAnotherLeaseCoversIt) {
    const auto [a, b] = endgame_pair();
    ASSERT_EQ(b.size(), 1u);
    scheduler.failed(b[0].piece, b[0].lease_id);
    EXPECT_FALSE(scheduler.pieces().is_free(b[0].piece));  // w1 still fetches it
    for (const auto& grant : a) {
        if (grant.piece == b[0].piece) scheduler.failed(grant.piece, grant.lease_id);
    }
    EXPECT_TRUE(scheduler.pieces().is_free(b[0].piece));
    const auto again = scheduler.request("w2", "b:1", 1, now);
    ASSERT_EQ(again.size(), 1u);
    EXPECT_EQ(again[0].piece, b[0].piece);
    EXPECT_FALSE(again[0].endgame);
}

TEST_F(SchedulerTest, WorkerAndWriterLossReturnPieces) {
    scheduler.pieces().set_have_all("a:1");
    const auto grants = scheduler.request("w1", "a:1", 2, now);
    scheduler.verified(grants[0].piece, grants[0].lease_id);
    scheduler.worker_gone("w1");
    EXPECT_TRUE(scheduler.pieces().is_free(grants[1].piece));
    EXPECT_FALSE(scheduler.pieces().is_free(grants[0].piece));  // with the writer
    scheduler.writer_lost();
    EXPECT_TRUE(scheduler.pieces().is_free(grants[0].piece));
}

// Issue 4: a dead verifier loses what workers delivered to it; leases still being fetched
// stay with their workers.
TEST_F(SchedulerTest, VerifierLossRequeuesDeliveredPiecesOnly) {
    scheduler.pieces().set_have_all("a:1");
    const auto grants = scheduler.request("w1", "a:1", 3, now);
    ASSERT_EQ(grants.size(), 3u);
    scheduler.delivered(grants[0].lease_id);
    scheduler.delivered(grants[1].lease_id);
    scheduler.verified(grants[1].piece, grants[1].lease_id);  // on its way to the writer
    scheduler.verifier_lost();
    EXPECT_TRUE(scheduler.pieces().is_free(grants[0].piece));
    EXPECT_TRUE(scheduler.pieces().is_free(grants[1].piece));
    EXPECT_FALSE(scheduler.pieces().is_free(grants[2].piece));
    EXPECT_EQ(scheduler.leases().size(), 1u);
    // The delivered piece still arrives from the old queue: accepted, and done once written.
    scheduler.verified(grants[0].piece, grants[0].lease_id);
    scheduler.written(grants[0].piece);
    EXPECT_TRUE(scheduler.pieces().is_done(grants[0].piece));
}

TEST_F(SchedulerTest, DroppedPieceOfAKnownLeaseGoesBack) {
    scheduler.pieces().set_have_all("a:1");
    const auto grants = scheduler.request("w1", "a:1", 2, now);
    ASSERT_EQ(grants.size(), 2u);
    scheduler.delivered(grants[0].lease_id);
    scheduler.dropped(grants[0].piece, grants[0].lease_id);
    EXPECT_TRUE(scheduler.pieces().is_free(grants[0].piece));
    EXPECT_FALSE(scheduler.pieces().is_free(grants[1].piece));
    EXPECT_EQ(scheduler.leases().size(), 1u);
    scheduler.dropped(grants[0].piece, grants[0].lease_id);  // twice: harmless
    EXPECT_EQ(scheduler.leases().size(), 1u);
    const auto again = scheduler.request("w1", "a:1", 1, now);
    ASSERT_EQ(again.size(), 1u);
    EXPECT_EQ(again[0].piece, grants[0].piece);
    EXPECT_FALSE(again[0].endgame);
}

TEST_F(SchedulerTest, DroppedPieceOfALeaseStillCoveredElsewhereWaitsForTheOther) {
    const auto [a, b] = endgame_pair();
    ASSERT_EQ(b.size(), 1u);
    scheduler.dropped(b[0].piece, b[0].lease_id);
    EXPECT_FALSE(scheduler.pieces().is_free(b[0].piece));  // w1 still fetches it
    EXPECT_EQ(scheduler.leases().size(), 4u);
}

TEST_F(SchedulerTest, DroppedOnTheWayToTheWriterGoesBackWhenThisLeaseVerifiedIt) {
    scheduler.pieces().set_have_all("a:1");
    const auto grants = scheduler.request("w1", "a:1", 1, now);
    ASSERT_EQ(grants.size(), 1u);
    scheduler.verified(grants[0].piece, grants[0].lease_id);
    EXPECT_FALSE(scheduler.pieces().is_free(grants[0].piece));
    scheduler.dropped(grants[0].piece, grants[0].lease_id);
    EXPECT_TRUE(scheduler.pieces().is_free(grants[0].piece));
    // Fetched again, verified under the new lease and written: done.
    const auto again = scheduler.request("w1", "a:1", 1, now);
    ASSERT_EQ(again.size(), 1u);
    EXPECT_EQ(again[0].piece, grants[0].piece);
    scheduler.verified(again[0].piece, again[0].lease_id);
    scheduler.written(again[0].piece);
    EXPECT_TRUE(scheduler.pieces().is_done(again[0].piece));
}

TEST_F(SchedulerTest, DroppedCopyOfAnotherLeaseLeavesTheVerifiedPieceAlone) {
    const auto [a, b] = endgame_pair();
    ASSERT_EQ(b.size(), 1u);
    const PieceIndex piece = b[0].piece;
    const auto winner = std::find_if(a.begin(), a.end(), [&](const Grant& g) { return g.piece == piece; });
    ASSERT_NE(winner, a.end());
    EXPECT_EQ(scheduler.verified(piece, winner->lease_id), (std::vector<Cancel>{Cancel{"w2", piece}}));
    scheduler.dropped(piece, b[0].lease_id);  // the cancelled duplicate's bytes were lost
    EXPECT_FALSE(scheduler.pieces().is_free(piece));
    EXPECT_FALSE(scheduler.pieces().is_done(piece));
    EXPECT_EQ(scheduler.leases().size(), 3u);
    scheduler.written(piece);
    EXPECT_TRUE(scheduler.pieces().is_done(piece));
}

// Both copies of an endgame piece passed: the writer waits for the later one, so only its
// drop sends the piece back.
TEST_F(SchedulerTest, DroppedEarlierCopyWaitsForTheLaterVerifiedOne) {
    scheduler.pieces().set_have_all("a:1");
    scheduler.pieces().set_have_all("b:1");
    const auto a = scheduler.request("w1", "a:1", 4, now);
    const auto b = scheduler.request("w2", "b:1", 1, now);
    ASSERT_EQ(b.size(), 1u);
    const PieceIndex piece = b[0].piece;
    const auto first = std::find_if(a.begin(), a.end(), [&](const Grant& g) { return g.piece == piece; });
    ASSERT_NE(first, a.end());
    scheduler.verified(piece, first->lease_id);
    scheduler.verified(piece, b[0].lease_id);
    scheduler.dropped(piece, first->lease_id);
    EXPECT_FALSE(scheduler.pieces().is_free(piece));
    scheduler.dropped(piece, b[0].lease_id);
    EXPECT_TRUE(scheduler.pieces().is_free(piece));
}

// Every piece of the 262,144-piece torrent leased at once, then reported piece by piece: each
// report must cost O(1), or this would take hours (pieces x leases) rather than a moment.
TEST(SchedulerScale, EveryPieceLeasedThenReportedOneByOne) {
    const std::uint32_t count = 262'144;
    Scheduler scheduler(count, SchedulerOptions{60s, 2, 12});
    const auto now = Clock::now();
    scheduler.pieces().set_have_all("seed:1");
    std::vector<Grant> grants;
    grants.reserve(count);
    while (true) {
        const auto batch = scheduler.request("w1", "seed:1", 64, now);
        if (batch.empty()) break;
        grants.insert(grants.end(), batch.begin(), batch.end());
    }
    ASSERT_EQ(grants.size(), count);
    for (const Grant& grant : grants) scheduler.delivered(grant.lease_id);
    std::vector<PieceIndex> dropped;
    for (const Grant& grant : grants) {
        if (grant.piece.get() % 7 == 0) {
            scheduler.dropped(grant.piece, grant.lease_id);
            dropped.push_back(grant.piece);
        } else {
            scheduler.verified(grant.piece, grant.lease_id);
            scheduler.written(grant.piece);
        }
    }
    EXPECT_EQ(scheduler.pieces().free_count(), dropped.size());
    EXPECT_EQ(scheduler.leases().size(), 0u);
    const auto again = scheduler.request("w1", "seed:1", 64, now);
    ASSERT_EQ(again.size(), 64u);
    for (const Grant& grant : again) EXPECT_EQ(grant.piece.get() % 7, 0u);
}

TEST_F(SchedulerTest, WriteFailureHoldsThePieceUntilRetried) {
    scheduler.pieces().set_have_all("a:1");
    const auto grants = scheduler.request("w1", "a:1", 1, now);
    scheduler.verified(grants[0].piece, grants[0].lease_id);
    scheduler.write_failed(grants[0].piece);
    EXPECT_FALSE(scheduler.pieces().is_free(grants[0].piece));
    scheduler.requeue_held(grants[0].piece);
    EXPECT_TRUE(scheduler.pieces().is_free(grants[0].piece));
}

TEST_F(SchedulerTest, CompleteOnlyWhenEveryPieceIsWritten) {
    for (std::uint32_t piece = 0; piece < 4; ++piece) {
        EXPECT_FALSE(scheduler.complete());
        scheduler.verified(PieceIndex{piece}, 0);
        EXPECT_FALSE(scheduler.complete());
        scheduler.written(PieceIndex{piece});
    }
    EXPECT_TRUE(scheduler.complete());
}

// --- PeerDirectory ---

TEST(PeerDirectory, HandsPeersToTheWorkerWithFewest) {
    PeerDirectory directory;
    const auto now = PeerDirectory::Clock::now();
    WorkerLoad load;
    directory.offer({"10.0.0.1", 1});
    EXPECT_TRUE(directory.assign(now, load, 100).empty());  // held until a worker exists
    load["w1"] = 0;
    auto first = directory.assign(now, load, 100);
    ASSERT_EQ(first.size(), 1u);
    EXPECT_EQ(first[0].worker, "w1");
    load["w2"] = 0;
    for (int i = 2; i <= 4; ++i) directory.offer({"10.0.0." + std::to_string(i), 1});
    directory.offer({"10.0.0.1", 1});  // duplicate
    directory.assign(now, load, 100);
    EXPECT_EQ(directory.peers_of("w1"), 2u);
    EXPECT_EQ(directory.peers_of("w2"), 2u);
    EXPECT_EQ(load["w1"], 2u);
    EXPECT_EQ(directory.known_peers(), 4u);
    EXPECT_EQ(directory.assigned(), 4u);
}

// Load is counted over every torrent, and the session's room caps what goes out.
TEST(PeerDirectory, OtherTorrentsLoadAndTheRoomLeftAreRespected) {
    PeerDirectory directory;
    const auto now = PeerDirectory::Clock::now();
    WorkerLoad load{{"w1", 5}, {"w2", 0}};  // w1 busy with another torrent's peers
    for (int i = 1; i <= 4; ++i) directory.offer({"10.0.0." + std::to_string(i), 1});
    const auto out = directory.assign(now, load, 3);
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(out[0].worker, "w2");
    EXPECT_EQ(out[0].peers.size(), 3u);
    EXPECT_EQ(directory.waiting(), 1u);
    directory.release_all();
    EXPECT_EQ(directory.assigned(), 0u);
    EXPECT_EQ(directory.waiting(), 4u);
}

TEST(PeerDirectory, DeadWorkersPeersMoveToTheOthers) {
    PeerDirectory directory;
    const auto now = PeerDirectory::Clock::now();
    WorkerLoad load{{"w1", 0}, {"w2", 0}};
    for (int i = 1; i <= 4; ++i) directory.offer({"10.0.0." + std::to_string(i), 1});
    directory.assign(now, load, 100);
    const auto lost = directory.remove_worker("w1");
    EXPECT_EQ(lost.size(), 2u);
    load.erase("w1");
    const auto moved = directory.assign(now, load, 100);
    ASSERT_EQ(moved.size(), 1u);
    EXPECT_EQ(moved[0].worker, "w2");
    EXPECT_EQ(moved[0].peers.size(), 2u);
    EXPECT_EQ(directory.peers_of("w2"), 4u);
}

TEST(PeerDirectory, DroppedPeersRetryWithBackoffThenGiveUp) {
    PeerDirectory directory(PeerDirectoryOptions{10s, 2, nullptr});
    auto now = PeerDirectory::Clock::now();
    WorkerLoad load{{"w1", 0}};
    directory.offer({"10.0.0.1", 1});
    directory.assign(now, load, 100);
    directory.disconnected("10.0.0.1:1", now);
    EXPECT_TRUE(directory.assign(now + 5s, load, 100).empty());
    EXPECT_EQ(directory.assign(now + 11s, load, 100).size(), 1u);
    directory.disconnected("10.0.0.1:1", now + 11s);
    EXPECT_TRUE(directory.assign(now + 25s, load, 100).empty());
    EXPECT_EQ(directory.assign(now + 32s, load, 100).size(), 1u);
    directory.disconnected("10.0.0.1:1", now + 32s);
    EXPECT_TRUE(directory.assign(now + 1h, load, 100).empty());
}

// A peer that went with every piece is a seed: while we seed it is not dialled again (two
// seeds have nothing to trade, and a daemon seeding hundreds of torrents would otherwise dial
// every seed of each again and again); once we download again, it is.
TEST(PeerDirectory, SeedsAreNotDialledWhileWeSeed) {
    PeerDirectory directory(PeerDirectoryOptions{10s, 4, nullptr});
    auto now = PeerDirectory::Clock::now();
    WorkerLoad load{{"w1", 0}};
    directory.offer({"10.0.0.1", 1});
    directory.offer({"10.0.0.2", 2});
    ASSERT_EQ(directory.assign(now, load, 100, true).at(0).peers.size(), 2u);
    directory.disconnected("10.0.0.1:1", now, true);
    directory.disconnected("10.0.0.2:2", now, false);
    const auto seeding = directory.assign(now + 11s, load, 100, true);
    ASSERT_EQ(seeding.size(), 1u);
    ASSERT_EQ(seeding[0].peers.size(), 1u);
    EXPECT_EQ(seeding[0].peers[0].ip, "10.0.0.2");
    const auto downloading = directory.assign(now + 11s, load, 100, false);
    ASSERT_EQ(downloading.size(), 1u);
    EXPECT_EQ(downloading[0].peers[0].ip, "10.0.0.1");
}

// A sole contributor is banned at once, as a peer (address and port): its neighbours on the
// address stay; contributors of a shared failure are banned after two strikes (more in
// tests/unit/ban_test.cpp).
TEST(PeerDirectory, SoleContributorBannedAtOnceAsAPeerOthersAfterTwoStrikes) {
    PeerJudge judge;
    PeerDirectoryOptions options;
    options.judge = &judge;
    PeerDirectory directory(options);
    const auto now = PeerDirectory::Clock::now();
    const auto bans = judge.piece_failed({{"10.0.0.9", 5, ""}}, now);
    ASSERT_EQ(bans.size(), 1u);
    EXPECT_EQ(bans[0].ip, "10.0.0.9");
    EXPECT_EQ(bans[0].port, 5);
    directory.ban(bans[0]);
    directory.offer({"10.0.0.9", 5});
    EXPECT_EQ(directory.known_peers(), 0u);
    directory.offer({"10.0.0.9", 7});
    EXPECT_EQ(directory.known_peers(), 1u);
    EXPECT_TRUE(judge.piece_failed({{"10.0.0.1", 1, ""}, {"10.0.0.2", 1, ""}}, now).empty());
    const auto second = judge.piece_failed({{"10.0.0.1", 1, ""}, {"10.0.0.3", 1, ""}}, now);
    ASSERT_EQ(second.size(), 1u);
    EXPECT_EQ(second[0].ip, "10.0.0.1");
    EXPECT_EQ(ip_of_key("[::1]:6881"), "::1");
    EXPECT_EQ(port_of_key("[::1]:6881"), 6881);
    EXPECT_EQ(port_of_key("10.0.0.1:80"), 80);
    EXPECT_EQ(port_of_key("10.0.0.1"), 0);
}

// --- Choker ---

ChokePeer interested(const std::string& worker, std::uint32_t down = 0, std::uint32_t up = 0) {
    ChokePeer peer;
    peer.worker = worker;
    peer.interested = true;
    peer.download_rate = down;
    peer.upload_rate = up;
    return peer;
}

std::set<std::string> unchoked_of(const Choker& choker, std::initializer_list<std::string> peers) {
    std::set<std::string> out;
    for (const auto& peer : peers) {
        if (choker.is_unchoked(peer)) out.insert(peer);
    }
    return out;
}

TEST(Choker, AnInterestedPeerIsUnchokedAtOnceWhileASlotIsFree) {
    Choker choker(2, 1);
    const auto now = Choker::Clock::now();
    EXPECT_EQ(choker.update("a:1", interested("w1"), now), (std::vector<ChokeChange>{{"w1", "a:1", true}}));
    EXPECT_EQ(choker.update("b:1", interested("w2"), now).size(), 1u);
    EXPECT_TRUE(choker.update("c:1", interested("w1"), now).empty());  // the slots are taken
    ChokePeer bored = interested("w1");
    bored.interested = false;
    EXPECT_TRUE(choker.update("d:1", bored, now).empty());  // not interested: nothing to give
    EXPECT_EQ(choker.unchoked(), 2u);
}

// While downloading: those who give us the most; a snubbing peer gets no regular slot.
TEST(Choker, DownloadingIsTitForTatAndSnubbersLoseTheirSlot) {
    Choker choker(2, 7);
    auto now = Choker::Clock::now();
    choker.update("slow:1", interested("w1", 10), now);
    choker.update("fast:1", interested("w1", 5000), now);
    choker.update("mid:1", interested("w2", 900), now);
    ChokePeer snub = interested("w2", 100000);
    snub.snubbed = true;
    choker.update("snub:1", snub, now);
    choker.tick(now, false, true);
    const auto unchoked = unchoked_of(choker, {"slow:1", "fast:1", "mid:1", "snub:1"});
    EXPECT_TRUE(unchoked.contains("fast:1"));
    EXPECT_TRUE(unchoked.contains("mid:1"));
    // Two regular slots and one optimistic among the rest, which may be the snubber.
    EXPECT_EQ(unchoked.size(), 3u);
}

// While seeding: the fastest takers, but one that held a slot for 30 s while others wait
// yields it, so everyone gets a turn.
TEST(Choker, SeedingRotatesSoEveryoneGetsATurn) {
    Choker choker(1, 3);
    auto now = Choker::Clock::now();
    choker.update("a:1", interested("w1", 0, 9000), now);
    choker.update("b:1", interested("w1", 0, 0), now);
    choker.update("c:1", interested("w1", 0, 0), now);
    std::map<std::string, int> turns;
    for (int round = 0; round < 30; ++round) {
        choker.tick(now, true, true);
        for (const auto* peer : {"a:1", "b:1", "c:1"}) turns[peer] += choker.is_unchoked(peer) ? 1 : 0;
        now += Choker::kRound;
    }
    for (const auto* peer : {"a:1", "b:1", "c:1"}) EXPECT_GE(turns[peer], 3) << peer;
}

TEST(Choker, TheOptimisticSlotMovesOnAndPeersOfALostWorkerGo) {
    Choker choker(0, 11);  // no regular slots: only the optimistic one
    auto now = Choker::Clock::now();
    for (int i = 0; i < 5; ++i) choker.update("p" + std::to_string(i) + ":1", interested(i < 3 ? "w1" : "w2"), now);
    std::set<std::string> chosen;
    for (int round = 0; round < 40; ++round) {
        choker.tick(now, false, true);
        EXPECT_EQ(choker.unchoked(), 1u);
        for (int i = 0; i < 5; ++i) {
            if (choker.is_unchoked("p" + std::to_string(i) + ":1")) chosen.insert("p" + std::to_string(i));
        }
        now += Choker::kOptimisticTurn;
    }
    EXPECT_GE(chosen.size(), 3u);
    choker.remove_worker("w1");
    EXPECT_EQ(choker.size(), 2u);
}

// --- progress, peer arguments ---

TEST(Progress, FormatsALine) {
    EXPECT_EQ(format_progress({431ull << 20, 1ull << 30, 85.3 * (1 << 20), 12}),
              "   42.1%  431.0 MiB/1.0 GiB  85.3 MiB/s  ETA 0:07  peers 12");
    EXPECT_EQ(format_progress({0, 1000, 0, 0}), "    0.0%  0 B/1000 B  0 B/s  ETA --:--  peers 0");
    EXPECT_EQ(format_duration(std::chrono::seconds(3723)), "1:02:03");
}

TEST(Progress, RateIsAMovingAverage) {
    RateMeter meter(std::chrono::seconds(5));
    const auto start = RateMeter::Clock::now();
    meter.sample(start, 0);
    meter.sample(start + 1s, 100);
    meter.sample(start + 2s, 200);
    EXPECT_DOUBLE_EQ(meter.rate(), 100.0);
    meter.sample(start + 10s, 200);
    meter.sample(start + 11s, 200);
    EXPECT_DOUBLE_EQ(meter.rate(), 0.0);
}

TEST(PeerArgument, ParsesHostAndPort) {
    auto v4 = parse_host_port("127.0.0.1:6881");
    ASSERT_TRUE(v4);
    EXPECT_EQ(v4->host, "127.0.0.1");
    EXPECT_EQ(v4->port, 6881u);
    auto v6 = parse_host_port("[::1]:80");
    ASSERT_TRUE(v6);
    EXPECT_EQ(v6->host, "::1");
    EXPECT_FALSE(parse_host_port("nohost"));
    EXPECT_FALSE(parse_host_port("h:0"));
    EXPECT_FALSE(parse_host_port("h:65536"));
    EXPECT_FALSE(parse_host_port("::1:80"));
    auto resolved = resolve_peer("127.0.0.1:9");
    ASSERT_TRUE(resolved);
    EXPECT_EQ(resolved->ip, "127.0.0.1");
}

}  // namespace
}  // namespace pw::orchestrator

// --- the service over inproc, with fake stages: the loop around the Session ---

namespace pw::orchestrator {
namespace {

namespace v1 = ::piecework::v1;

std::string two_piece_torrent() {
    const std::string pieces(40, 'x');
    return "d4:infod6:lengthi32768e4:name5:a.bin12:piece lengthi16384e6:pieces40:" + pieces + "ee";
}

struct FakeStage {
    FakeStage(zmq::context_t& context, const std::string& endpoint, const std::string& identity)
        : socket(context, zmq::socket_type::dealer), name(identity) {
        bus::configure(socket);
        socket.set(zmq::sockopt::routing_id, identity);
        socket.connect(endpoint);
    }
    void send(v1::Envelope& envelope, std::span<zmq::message_t> frames = {}) {
        bus::send(socket, name, envelope, frames);
    }
    // The next message of the given kind, skipping heartbeats and others.
    std::optional<bus::Incoming> expect(v1::Envelope::BodyCase kind,
                                        std::chrono::milliseconds wait = 10s) {
        const auto deadline = std::chrono::steady_clock::now() + wait;
        while (std::chrono::steady_clock::now() < deadline) {
            zmq::pollitem_t item{socket.handle(), 0, ZMQ_POLLIN, 0};
            zmq::poll(&item, 1, std::chrono::milliseconds(100));
            bus::Incoming in;
            while (bus::receive(socket, false, in) == bus::RecvStatus::ok) {
                if (in.envelope.body_case() == kind) return in;
            }
        }
        return std::nullopt;
    }
    zmq::socket_t socket;
    std::string name;
};

// A service on its own thread, stopped and joined however the test ends.
struct ServiceThread {
    ServiceThread(zmq::context_t& context, ServiceConfig config, std::ostream& out)
        : service(context, std::move(config), out, out),
          loop([this] { code = service.run([this] { return stop.load(); }); }) {}
    ~ServiceThread() {
        stop = true;
        if (loop.joinable()) loop.join();
    }
    OrchestratorService service;
    std::atomic<bool> stop{false};
    int code = -1;
    std::thread loop;
};

ServiceConfig download_config(const std::string& endpoint) {
    ServiceConfig config;
    config.control = endpoint;
    config.torrents.push_back(TorrentFile{"/nowhere/a.torrent", two_piece_torrent()});
    config.peers = {PeerAddress{"127.0.0.1", 9000}};
    config.download_dir = "/downloads";
    config.exit_when_done = true;
    config.session.heartbeat = 50ms;
    config.quiet = true;
    return config;
}

// `piecework download`: the command line's torrent is downloaded, then every stage is told to
// shut down and the run ends with 0.
TEST(OrchestratorService, DrivesFakeStagesToCompletionAndExits) {
    zmq::context_t context;
    std::ostringstream out;
    ServiceThread thread(context, download_config("inproc://orchestrator-complete"), out);
    FakeStage worker(context, "inproc://orchestrator-complete", "peer_worker-1");
    FakeStage writer(context, "inproc://orchestrator-complete", "writer");
    v1::Envelope hello;
    hello.mutable_hello()->set_role(v1::ROLE_PEER_WORKER);
    hello.mutable_hello()->set_pid(1);
    worker.send(hello);
    ASSERT_TRUE(worker.expect(v1::Envelope::kWelcome));
    const auto info = worker.expect(v1::Envelope::kTorrentInfo);
    ASSERT_TRUE(info);
    const std::uint32_t torrent = info->envelope.torrent_info().torrent();
    hello.mutable_hello()->set_role(v1::ROLE_WRITER);
    writer.send(hello);
    ASSERT_TRUE(writer.expect(v1::Envelope::kTorrentInfo));

    v1::Envelope resume;
    resume.mutable_resume_state()->set_torrent(torrent);
    std::vector<zmq::message_t> frames;
    frames.emplace_back(std::string(1, '\0'));
    writer.send(resume, frames);
    const auto added = worker.expect(v1::Envelope::kAddPeers);
    ASSERT_TRUE(added);
    EXPECT_EQ(added->envelope.add_peers().peers(0).port(), 9000u);

    v1::Envelope has;
    has.mutable_peer_has()->set_torrent(torrent);
    has.mutable_peer_has()->set_peer("127.0.0.1:9000");
    has.mutable_peer_has()->set_have_all(true);
    worker.send(has);
    v1::Envelope request;
    request.mutable_work_request()->set_torrent(torrent);
    request.mutable_work_request()->set_peer("127.0.0.1:9000");
    request.mutable_work_request()->set_count(4);
    worker.send(request);
    const auto leases = worker.expect(v1::Envelope::kLeases);
    ASSERT_TRUE(leases);
    ASSERT_EQ(leases->envelope.leases().leases_size(), 2);
    v1::Envelope written;
    for (const auto& lease : leases->envelope.leases().leases()) {
        auto* ref = written.mutable_pieces_written()->add_pieces();
        ref->set_torrent(torrent);
        ref->set_piece(lease.piece());
        ref->set_lease_id(lease.lease_id());
    }
    writer.send(written);
    const auto shutdown = worker.expect(v1::Envelope::kShutdown);
    ASSERT_TRUE(shutdown);
    EXPECT_EQ(shutdown->envelope.shutdown().reason(), "complete");
    thread.loop.join();
    EXPECT_EQ(thread.code, 0);
}

// Interrupted, a download ends with 130 and tells every stage to shut down; a daemon ends with 0.
TEST(OrchestratorService, AnInterruptEndsTheRunAndTellsTheStages) {
    for (const bool download : {true, false}) {
        zmq::context_t context;
        std::ostringstream out;
        const std::string endpoint = std::string("inproc://orchestrator-interrupt-") + (download ? "d" : "s");
        ServiceConfig config = download_config(endpoint);
        config.exit_when_done = download;
        config.session.heartbeat = 1s;  // the fake writer never beats
        ServiceThread thread(context, std::move(config), out);
        FakeStage writer(context, endpoint, "writer");
        v1::Envelope hello;
        hello.mutable_hello()->set_role(v1::ROLE_WRITER);
        hello.mutable_hello()->set_pid(1);
        writer.send(hello);
        ASSERT_TRUE(writer.expect(v1::Envelope::kWelcome));
        thread.stop = true;
        const auto shutdown = writer.expect(v1::Envelope::kShutdown);
        ASSERT_TRUE(shutdown);
        EXPECT_EQ(shutdown->envelope.shutdown().reason(), "interrupted");
        thread.loop.join();
        EXPECT_EQ(thread.code, download ? 130 : 0);
    }
}

}  // namespace
}  // namespace pw::orchestrator
