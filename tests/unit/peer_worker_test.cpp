// The peer worker's parts without peers or sockets: the session state machine (downloading
// and uploading, the fast extension), piece assembly, where pieces live (arena slots or
// buffers), batching, pipeline sizing, the upload cache and the rate limits.
#include <sys/stat.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "core/extension.hpp"
#include "core/wire.hpp"
#include "peer_worker/local_pieces.hpp"
#include "peer_worker/peer_session.hpp"
#include "peer_worker/rate_limit.hpp"
#include "peer_worker/upload_cache.hpp"
#include "peer_worker/piece_assembly.hpp"
#include "peer_worker/piece_batches.hpp"
#include "peer_worker/piece_memory.hpp"
#include "peer_worker/pipeline.hpp"

namespace pw::peer_worker {
namespace {

using namespace std::chrono_literals;

Sha1Digest digest_of(std::uint8_t fill) {
    Sha1Digest d{};
    d.fill(fill);
    return d;
}

wire::PeerId id_of(std::uint8_t fill) {
    wire::PeerId id{};
    id.fill(fill);
    return id;
}

// The bytes a connection would write: the control bytes with each queued block's data
// gathered in after its header. Both queues are emptied (the blocks count as sent).
std::vector<std::uint8_t> take_wire_bytes(PeerSession& session) {
    std::vector<std::uint8_t> stream;
    const auto& control = session.outgoing();
    std::size_t from = 0;
    std::uint64_t bytes = 0;
    for (const OutBlock& block : session.out_blocks()) {
        stream.insert(stream.end(), control.begin() + static_cast<std::ptrdiff_t>(from),
                      control.begin() + static_cast<std::ptrdiff_t>(block.at));
        stream.insert(stream.end(), block.data.begin(), block.data.end());
        bytes += block.data.size();
        from = block.at;
    }
    stream.insert(stream.end(), control.begin() + static_cast<std::ptrdiff_t>(from), control.end());
    session.blocks_done(static_cast<std::uint32_t>(session.out_blocks().size()), bytes, true);
    session.out_blocks().clear();
    session.outgoing().clear();
    return stream;
}

// Decodes everything a session queued for the peer. Bitfield and piece views stay valid
// until the next call.
std::vector<wire::Message> sent_messages(PeerSession& session) {
    wire::ParserLimits limits;
    limits.fast = true;  // BEP 6 messages are ours to send when the peer set the bit
    limits.extended = true;
    static std::unique_ptr<wire::StreamParser> kept;
    kept = std::make_unique<wire::StreamParser>(limits);
    wire::StreamParser& parser = *kept;
    parser.append(take_wire_bytes(session));
    std::vector<wire::Message> out;
    for (;;) {
        auto next = parser.next();
        EXPECT_TRUE(next.ok());
        if (!next.ok() || !*next) break;
        out.push_back(**next);
    }
    return out;
}

template <class T>
std::vector<T> only(const std::vector<wire::Message>& messages) {
    std::vector<T> out;
    for (const auto& m : messages) {
        if (const auto* t = std::get_if<T>(&m)) out.push_back(*t);
    }
    return out;
}

class SessionTest : public ::testing::Test {
protected:
    // 10 pieces of 64 KiB (4 blocks), the last one 40 000 bytes (3 blocks, last one short).
    static constexpr std::uint64_t kTotal = 9ull * 65536 + 40000;
    PieceGeometry geometry{kTotal, 65536};
    Clock::time_point t0 = Clock::now();
    PeerSession session{geometry, digest_of(0xAB), id_of(1), t0};

    void handshake() {
        wire::Handshake theirs;
        theirs.info_hash = digest_of(0xAB);
        theirs.peer_id = id_of(2);
        ASSERT_TRUE(session.on_handshake(theirs, t0).ok());
        session.outgoing().clear();
    }

    Status deliver(const wire::Message& m, Clock::time_point at) { return session.on_message(m, at); }

    // Leases `piece` with a buffer of its own, as in frame mode.
    bool lease(PieceIndex piece, std::uint64_t lease_id) {
        const std::uint32_t size = geometry.contains(piece) ? geometry.piece_size(piece) : kBlockSize;
        return session.add_lease(piece, lease_id, PieceDestination::owned(size));
    }

    std::vector<std::uint8_t> block_bytes(std::uint32_t length, std::uint8_t fill) {
        return std::vector<std::uint8_t>(length, fill);
    }
};

TEST_F(SessionTest, HandshakeSendsOursWithTheFastAndExtensionBits) {
    session.send_handshake(t0);
    ASSERT_EQ(session.outgoing().size(), wire::kHandshakeSize);
    std::array<std::uint8_t, wire::kHandshakeSize> bytes{};
    std::copy(session.outgoing().begin(), session.outgoing().end(), bytes.begin());
    auto decoded = wire::decode_handshake(bytes);
    ASSERT_TRUE(decoded.ok());
    EXPECT_EQ(decoded->info_hash, digest_of(0xAB));
    EXPECT_EQ(decoded->peer_id, id_of(1));
    // BEP 6 and BEP 10.
    EXPECT_EQ(decoded->reserved, (std::array<std::uint8_t, 8>{0, 0, 0, 0, 0, 0x10, 0, 0x04}));
}

TEST_F(SessionTest, HandshakeRejectsOtherTorrentAndOurselves) {
    wire::Handshake other;
    other.info_hash = digest_of(0xCD);
    other.peer_id = id_of(2);
    auto wrong_torrent = session.on_handshake(other, t0);
    ASSERT_FALSE(wrong_torrent.ok());
    EXPECT_NE(wrong_torrent.error().message.find("another torrent"), std::string::npos);

    wire::Handshake self;
    self.info_hash = digest_of(0xAB);
    self.peer_id = id_of(1);
    auto ourselves = session.on_handshake(self, t0);
    ASSERT_FALSE(ourselves.ok());
    EXPECT_NE(ourselves.error().message.find("ourselves"), std::string::npos);
    EXPECT_FALSE(session.handshake_done());
}

TEST_F(SessionTest, BitfieldReportedOnceThenHavesAndInterestSent) {
    handshake();
    std::vector<std::uint8_t> bits{0b1010'0000, 0b0000'0000};
    ASSERT_TRUE(deliver(wire::Bitfield{bits}, t0).ok());
    EXPECT_TRUE(session.am_interested());
    EXPECT_EQ(only<wire::Interested>(sent_messages(session)).size(), 1u);
    EXPECT_TRUE(session.peer_has(PieceIndex{0}));
    EXPECT_FALSE(session.peer_has(PieceIndex{1}));
    EXPECT_EQ(session.pieces_peer_has(), 2u);

    ASSERT_TRUE(deliver(wire::Have{PieceIndex{9}}, t0).ok());
    ASSERT_TRUE(deliver(wire::Have{PieceIndex{9}}, t0).ok());  // repeated: counted once

    auto first = session.take_has_report(false);
    ASSERT_TRUE(first.has_value());
    ASSERT_TRUE(first->bitfield.has_value());
    EXPECT_FALSE(first->have_all);
    EXPECT_EQ(*first->bitfield, (std::vector<std::uint8_t>{0b1010'0000, 0b0100'0000}));
    EXPECT_FALSE(session.take_has_report(true).has_value());  // the bitfield held the have

    ASSERT_TRUE(deliver(wire::Have{PieceIndex{3}}, t0).ok());
    EXPECT_FALSE(session.take_has_report(false).has_value());  // haves wait for the batch
    auto later = session.take_has_report(true);
    ASSERT_TRUE(later.has_value());
    EXPECT_FALSE(later->bitfield.has_value());
    EXPECT_EQ(later->haves, (std::vector<std::uint32_t>{3}));
    EXPECT_TRUE(sent_messages(session).empty());  // interest is expressed once
}

TEST_F(SessionTest, FullBitfieldIsReportedAsHaveAll) {
    handshake();
    std::vector<std::uint8_t> bits{0xFF, 0b1100'0000};
    ASSERT_TRUE(deliver(wire::Bitfield{bits}, t0).ok());
    auto report = session.take_has_report(true);
    ASSERT_TRUE(report.has_value());
    EXPECT_TRUE(report->have_all);
    EXPECT_FALSE(report->bitfield.has_value());
}

TEST_F(SessionTest, HostileAvailabilityIsAnError) {
    handshake();
    EXPECT_FALSE(deliver(wire::Have{PieceIndex{10}}, t0).ok());
    std::vector<std::uint8_t> spare_bits{0x00, 0b0010'0000};
    PeerSession fresh{geometry, digest_of(0xAB), id_of(1), t0};
    EXPECT_FALSE(fresh.on_message(wire::Bitfield{spare_bits}, t0).ok());
    std::vector<std::uint8_t> too_long{0x00, 0x00, 0x00};
    EXPECT_FALSE(fresh.on_message(wire::Bitfield{too_long}, t0).ok());
}

// A bitfield after a have is out of order, but real clients send one: it adds to what the
// haves said, and the next report carries both.
TEST_F(SessionTest, ALateBitfieldAddsToTheHaves) {
    handshake();
    ASSERT_TRUE(deliver(wire::Have{PieceIndex{1}}, t0).ok());
    std::vector<std::uint8_t> bits{0x80, 0x00};
    ASSERT_TRUE(deliver(wire::Bitfield{bits}, t0).ok());
    EXPECT_TRUE(session.peer_has(PieceIndex{0}));
    EXPECT_TRUE(session.peer_has(PieceIndex{1}));
    std::vector<std::uint8_t> too_long{0x00, 0x00, 0x00};
    EXPECT_FALSE(deliver(wire::Bitfield{too_long}, t0).ok());  // still checked
}

TEST_F(SessionTest, AsksForWorkOnlyWhenUnchokedAndSomethingIsAvailable) {
    handshake();
    EXPECT_EQ(session.pieces_wanted(t0), 0u);  // has nothing, and choking
    ASSERT_TRUE(deliver(wire::Have{PieceIndex{0}}, t0).ok());
    EXPECT_EQ(session.pieces_wanted(t0), 0u);  // still choking
    EXPECT_FALSE(session.take_unchoked());
    ASSERT_TRUE(deliver(wire::Unchoke{}, t0).ok());
    // The worker's piece budget hears of the unchoke once, before the peer asks for work.
    EXPECT_TRUE(session.take_unchoked());
    EXPECT_FALSE(session.take_unchoked());
    ASSERT_TRUE(deliver(wire::Unchoke{}, t0).ok());
    EXPECT_FALSE(session.take_unchoked());  // already unchoked: nothing changed
    const auto wanted = session.pieces_wanted(t0);
    // The initial depth plus a pipeline queued, in pieces of 4 blocks, but never less than a
    // request's floor: small pieces are asked for in bigger handfuls.
    constexpr std::uint32_t kDepth = PipelineSizer::kInitialDepth;
    static_assert(2 * kDepth <= PeerSession::kMinRequestBlocks);
    EXPECT_EQ(wanted, PeerSession::kMinRequestBlocks / 4);
    session.note_work_requested(t0);
    EXPECT_EQ(session.pieces_wanted(t0 + 100ms), 0u);  // waiting for the answer
    session.note_work_answer(false, t0 + 100ms);
    EXPECT_EQ(session.pieces_wanted(t0 + 200ms), 0u);  // empty answer: back off
    EXPECT_GT(session.pieces_wanted(t0 + 700ms), 0u);
    ASSERT_TRUE(deliver(wire::Have{PieceIndex{1}}, t0 + 300ms).ok());
    EXPECT_GT(session.pieces_wanted(t0 + 300ms), 0u);  // a have cuts the back-off short
}

// A WorkRequest costs a round trip through the orchestrator whatever it asks for: one-block
// pieces are asked for a megabyte at a time, while a 1 MiB piece is still asked for alone.
TEST(SessionWorkTest, AsksForAtLeastAMegabyteOfPiecesAtATime) {
    const auto wanted_with_pieces_of = [](std::uint32_t piece_length) {
        const Clock::time_point t0 = Clock::now();
        const PieceGeometry geometry{std::uint64_t{piece_length} * 1000, piece_length};
        PeerSession session{geometry, digest_of(0xAB), id_of(1), t0};
        wire::Handshake theirs;
        theirs.info_hash = digest_of(0xAB);
        theirs.peer_id = id_of(2);
        EXPECT_TRUE(session.on_handshake(theirs, t0).ok());
        EXPECT_TRUE(session.on_message(wire::Have{PieceIndex{0}}, t0).ok());
        EXPECT_TRUE(session.on_message(wire::Unchoke{}, t0).ok());
        return session.pieces_wanted(t0);
    };
    EXPECT_EQ(wanted_with_pieces_of(kBlockSize), PeerSession::kMinRequestBlocks);
    EXPECT_EQ(wanted_with_pieces_of(1u << 20), 1u);
}

TEST_F(SessionTest, RequestsFollowLeasesUpToThePipelineAndBlocksAssemble) {
    handshake();
    ASSERT_TRUE(deliver(wire::Have{PieceIndex{9}}, t0).ok());
    ASSERT_TRUE(deliver(wire::Unchoke{}, t0).ok());
    sent_messages(session);
    ASSERT_TRUE(lease(PieceIndex{9}, 77));
    EXPECT_FALSE(lease(PieceIndex{9}, 78));  // already leased here
    EXPECT_FALSE(lease(PieceIndex{10}, 79));  // out of range
    EXPECT_EQ(session.leased_bytes(), 40000u);

    session.fill_requests(t0, true);
    const auto requests = only<wire::Request>(sent_messages(session));
    ASSERT_EQ(requests.size(), 3u);
    EXPECT_EQ(requests[2].offset.get(), 2u * kBlockSize);
    EXPECT_EQ(requests[2].length.get(), 40000u - 2 * kBlockSize);  // short last block
    EXPECT_EQ(session.requests_outstanding(), 3u);

    for (const auto& r : requests) {
        auto data = block_bytes(r.length.get(), static_cast<std::uint8_t>(r.offset.get() / kBlockSize + 1));
        ASSERT_TRUE(deliver(wire::Piece{r.index, r.offset, data}, t0 + 10ms).ok());
    }
    ASSERT_EQ(session.completed().size(), 1u);
    const auto& done = session.completed().front();
    EXPECT_EQ(done.piece, PieceIndex{9});
    EXPECT_EQ(done.lease_id, 77u);
    ASSERT_EQ(done.data.size(), 40000u);
    EXPECT_EQ(done.data.front(), 1);
    EXPECT_EQ(done.data[kBlockSize], 2);
    EXPECT_EQ(done.data.back(), 3);
    EXPECT_EQ(session.take_downloaded(), 40000u);
    EXPECT_EQ(session.lease_count(), 0u);
    EXPECT_EQ(session.requests_outstanding(), 0u);
}

TEST_F(SessionTest, ThePipelineIsToppedUpOnceAQuarterOfItIsFree) {
    handshake();
    ASSERT_TRUE(deliver(wire::Unchoke{}, t0).ok());
    for (std::uint32_t piece = 0; piece < 10; ++piece) ASSERT_TRUE(lease(PieceIndex{piece}, piece + 1));
    session.fill_requests(t0, true);
    constexpr std::uint32_t kDepth = PipelineSizer::kInitialDepth;
    const auto requests = only<wire::Request>(sent_messages(session));
    ASSERT_EQ(requests.size(), kDepth);
    // One block in: a single request would cost a write of its own, so none goes yet.
    auto deliver_block = [&](const wire::Request& r) {
        const auto data = block_bytes(r.length.get(), 1);
        return deliver(wire::Piece{r.index, r.offset, data}, t0 + 10ms);
    };
    ASSERT_TRUE(deliver_block(requests[0]).ok());
    session.fill_requests(t0 + 10ms, true);
    EXPECT_TRUE(only<wire::Request>(sent_messages(session)).empty());
    // A quarter of the pipeline free: the rest of the leased blocks (39 in all) go out.
    for (std::uint32_t i = 1; i < kDepth / 4; ++i) ASSERT_TRUE(deliver_block(requests[i]).ok());
    session.fill_requests(t0 + 10ms, true);
    EXPECT_EQ(only<wire::Request>(sent_messages(session)).size(), 39u - kDepth);
}

TEST_F(SessionTest, LeasesDroppedAheadOfTheRequestsLeaveTheRestToBeRequested) {
    handshake();
    ASSERT_TRUE(deliver(wire::Have{PieceIndex{0}}, t0).ok());
    ASSERT_TRUE(deliver(wire::Unchoke{}, t0).ok());
    sent_messages(session);
    for (std::uint32_t piece = 0; piece < 10; ++piece) ASSERT_TRUE(lease(PieceIndex{piece}, piece + 1));
    session.fill_requests(t0, true);
    const auto first = only<wire::Request>(sent_messages(session));
    ASSERT_EQ(first.size(), 32u);  // pieces 0 to 7
    // Piece 2, already asked for, is won elsewhere; pieces 0 and 1 arrive.
    ASSERT_TRUE(session.cancel_piece(PieceIndex{2}, t0).has_value());
    sent_messages(session);
    ASSERT_TRUE(lease(PieceIndex{2}, 99));  // leasable again, and dropped again unasked
    ASSERT_TRUE(session.cancel_piece(PieceIndex{2}, t0).has_value());
    sent_messages(session);
    for (const auto& r : first) {
        if (r.index.get() > 1) continue;
        const auto data = block_bytes(r.length.get(), 1);
        ASSERT_TRUE(deliver(wire::Piece{r.index, r.offset, data}, t0 + 10ms).ok());
    }
    EXPECT_EQ(session.completed().size(), 2u);
    session.fill_requests(t0 + 10ms, true);
    const auto second = only<wire::Request>(sent_messages(session));
    ASSERT_EQ(second.size(), 7u);  // all of pieces 8 and 9, nothing twice
    for (const auto& r : second) EXPECT_GE(r.index.get(), 8u);
    EXPECT_EQ(session.lease_count(), 7u);
    // Nothing is left to request, so a full pipeline's worth and more is wanted.
    EXPECT_GT(session.pieces_wanted(t0 + 10ms), 0u);
}

TEST_F(SessionTest, PiecesAssembleInArenaSlotsOfTheirExactSize) {
    handshake();
    ASSERT_TRUE(deliver(wire::Have{PieceIndex{9}}, t0).ok());
    ASSERT_TRUE(deliver(wire::Unchoke{}, t0).ok());
    sent_messages(session);
    // A destination bigger or smaller than the short last piece is refused.
    EXPECT_FALSE(session.add_lease(PieceIndex{9}, 7, PieceDestination::owned(65536)));
    EXPECT_FALSE(session.add_lease(PieceIndex{9}, 7, PieceDestination::owned(100)));
    PieceMemory memory(65536, PieceMemory::Kind::arenas);
    auto destination = memory.reserve(7, 65536, 40000);
    ASSERT_TRUE(destination);
    bus::PieceArena& slots = *memory.arena_slots(65536);
    ASSERT_TRUE(session.add_lease(PieceIndex{9}, 7, std::move(*destination)));
    session.fill_requests(t0, true);
    for (const auto& r : only<wire::Request>(sent_messages(session))) {
        auto data = block_bytes(r.length.get(), 0x5A);
        ASSERT_TRUE(deliver(wire::Piece{r.index, r.offset, data}, t0).ok());
    }
    ASSERT_EQ(session.completed().size(), 1u);
    const auto& done = session.completed().front();
    EXPECT_EQ(done.size, 40000u);
    EXPECT_TRUE(done.data.empty());  // the bytes are in the slot already
    const auto slot = memory.slot_of(7);
    ASSERT_TRUE(slot.has_value());
    const std::span<std::uint8_t> bytes = slots.bytes(*slot);
    EXPECT_EQ(std::count(bytes.begin(), bytes.begin() + 40000, 0x5A), 40000);
    EXPECT_EQ(std::count(bytes.begin() + 40000, bytes.end(), 0), 65536 - 40000);
}

TEST_F(SessionTest, NoRequestsWhileChokedOrUnderBackpressure) {
    handshake();
    ASSERT_TRUE(lease(PieceIndex{0}, 1));
    session.fill_requests(t0, true);
    EXPECT_TRUE(session.outgoing().empty());  // choked
    ASSERT_TRUE(deliver(wire::Unchoke{}, t0).ok());
    session.fill_requests(t0, false);
    EXPECT_TRUE(session.outgoing().empty());  // verifier backpressure
}

TEST_F(SessionTest, ChokeVoidsRequestsWhichAreAskedAgainAfterUnchoke) {
    handshake();
    ASSERT_TRUE(deliver(wire::Unchoke{}, t0).ok());
    ASSERT_TRUE(lease(PieceIndex{0}, 1));
    session.fill_requests(t0, true);
    EXPECT_EQ(only<wire::Request>(sent_messages(session)).size(), 4u);
    ASSERT_TRUE(deliver(wire::Choke{}, t0 + 1s).ok());
    EXPECT_EQ(session.requests_outstanding(), 0u);
    EXPECT_FALSE(session.stalled(t0 + 60s));  // nothing outstanding while choked
    EXPECT_FALSE(session.choked_too_long(t0 + 20s));
    EXPECT_TRUE(session.choked_too_long(t0 + 32s));
    ASSERT_TRUE(deliver(wire::Unchoke{}, t0 + 2s).ok());
    session.fill_requests(t0 + 2s, true);
    EXPECT_EQ(only<wire::Request>(sent_messages(session)).size(), 4u);
    EXPECT_FALSE(session.choked_too_long(t0 + 60s));
}

TEST_F(SessionTest, UnrequestedBlocksAreRejectedAndRepeatOffendersDropped) {
    handshake();
    ASSERT_TRUE(deliver(wire::Unchoke{}, t0).ok());
    auto data = block_bytes(kBlockSize, 7);
    // Not leased at all: rejected, nothing assembled.
    for (std::uint32_t i = 0; i < 8; ++i) {
        ASSERT_TRUE(deliver(wire::Piece{PieceIndex{1}, BlockOffset{0}, data}, t0).ok());
    }
    EXPECT_EQ(session.unrequested_blocks_received(), 8u);
    EXPECT_EQ(session.take_downloaded(), 0u);
    auto dropped = deliver(wire::Piece{PieceIndex{1}, BlockOffset{0}, data}, t0);
    ASSERT_FALSE(dropped.ok());
    EXPECT_NE(dropped.error().message.find("did not request"), std::string::npos);
}

TEST_F(SessionTest, DuplicateAndUnaskedBlocksOfALeasedPieceAreRejected) {
    handshake();
    ASSERT_TRUE(deliver(wire::Unchoke{}, t0).ok());
    ASSERT_TRUE(lease(PieceIndex{0}, 1));
    PeerSession& s = session;
    // Only one block in flight, so the others are unasked.
    s.fill_requests(t0, true);
    auto requests = only<wire::Request>(sent_messages(s));
    ASSERT_FALSE(requests.empty());
    auto data = block_bytes(kBlockSize, 7);
    ASSERT_TRUE(deliver(wire::Piece{PieceIndex{0}, BlockOffset{0}, data}, t0).ok());
    EXPECT_EQ(s.unrequested_blocks_received(), 0u);
    ASSERT_TRUE(deliver(wire::Piece{PieceIndex{0}, BlockOffset{0}, data}, t0).ok());
    EXPECT_EQ(s.unrequested_blocks_received(), 1u);  // duplicate
    auto short_data = block_bytes(100, 7);
    ASSERT_TRUE(deliver(wire::Piece{PieceIndex{0}, BlockOffset{kBlockSize}, short_data}, t0).ok());
    EXPECT_EQ(s.unrequested_blocks_received(), 2u);  // wrong size for the block
    EXPECT_EQ(s.take_downloaded(), kBlockSize);
}

TEST_F(SessionTest, CancelPieceSendsCancelsAndForgivesLateBlocks) {
    handshake();
    ASSERT_TRUE(deliver(wire::Unchoke{}, t0).ok());
    ASSERT_TRUE(lease(PieceIndex{2}, 5));
    session.fill_requests(t0, true);
    sent_messages(session);
    const auto lease = session.cancel_piece(PieceIndex{2}, t0);
    ASSERT_TRUE(lease.has_value());
    EXPECT_EQ(*lease, 5u);
    EXPECT_EQ(only<wire::Cancel>(sent_messages(session)).size(), 4u);
    EXPECT_EQ(session.requests_outstanding(), 0u);
    EXPECT_EQ(session.leased_bytes(), 0u);
    // Blocks already on the wire when we cancelled do not count against the peer.
    auto data = block_bytes(kBlockSize, 1);
    for (std::uint32_t i = 0; i < 12; ++i) {
        ASSERT_TRUE(deliver(wire::Piece{PieceIndex{2}, BlockOffset{0}, data}, t0).ok());
    }
    EXPECT_FALSE(session.cancel_piece(PieceIndex{2}, t0).has_value());
}

// Endgame inside one worker: two sessions hold leases of piece 2 (4 blocks). The second asks
// from the end; each block one receives is copied into the other's copy, a request for it
// cancelled, and the piece completes once, in the session whose peer sent the last block.
TEST_F(SessionTest, TwoPeersOfAWorkerShareAPieceFromBothEnds) {
    handshake();
    PeerSession other{geometry, digest_of(0xAB), id_of(1), t0};
    wire::Handshake theirs;
    theirs.info_hash = digest_of(0xAB);
    theirs.peer_id = id_of(3);
    ASSERT_TRUE(other.on_handshake(theirs, t0).ok());
    for (PeerSession* s : {&session, &other}) {
        ASSERT_TRUE(s->on_message(wire::Unchoke{}, t0).ok());
        s->outgoing().clear();
    }
    ASSERT_TRUE(session.add_lease(PieceIndex{2}, 5, PieceDestination::owned(65536)));
    ASSERT_TRUE(other.add_lease(PieceIndex{2}, 6, PieceDestination::owned(65536)));
    // Each forwards what it accepts to the other, as the worker does.
    session.set_block_share([&](PieceIndex p, BlockOffset o, std::span<const std::uint8_t> d) {
        EXPECT_FALSE(other.absorb_block(p, o, d, "a", t0).has_value());
    });
    std::optional<std::uint64_t> other_finished;
    other.set_block_share([&](PieceIndex p, BlockOffset o, std::span<const std::uint8_t> d) {
        other_finished = session.absorb_block(p, o, d, "b", t0);
    });
    EXPECT_FALSE(other.share_lease(PieceIndex{3}, PieceAssembly::Order::from_end));  // not held
    ASSERT_TRUE(session.share_lease(PieceIndex{2}));
    ASSERT_TRUE(other.share_lease(PieceIndex{2}, PieceAssembly::Order::from_end));

    // The first session asks for one block (a shallow pipeline is enough to show it).
    auto first = block_bytes(kBlockSize, 1);
    session.fill_requests(t0, true);
    const auto ours = only<wire::Request>(sent_messages(session));
    ASSERT_EQ(ours.size(), 4u);
    EXPECT_EQ(ours.front().offset.get(), 0u);
    other.fill_requests(t0, true);
    const auto theirs_asked = only<wire::Request>(sent_messages(other));
    ASSERT_EQ(theirs_asked.size(), 4u);
    EXPECT_EQ(theirs_asked.front().offset.get(), 3u * kBlockSize);  // from the end
    EXPECT_EQ(theirs_asked.back().offset.get(), 0u);

    // Block 0 reaches the first session: the other cancels its request for it.
    ASSERT_TRUE(deliver(wire::Piece{PieceIndex{2}, BlockOffset{0}, first}, t0).ok());
    auto cancels = only<wire::Cancel>(sent_messages(other));
    ASSERT_EQ(cancels.size(), 1u);
    EXPECT_EQ(cancels[0].offset.get(), 0u);
    EXPECT_EQ(other.requests_outstanding(), 3u);
    // Blocks 3, 2 and 1 reach the other: the first session cancels those, and its copy is
    // complete with the last of them, so the other's copy is dropped and its lease handed back.
    for (std::uint32_t block : {3u, 2u, 1u}) {
        auto data = block_bytes(kBlockSize, static_cast<std::uint8_t>(block + 1));
        ASSERT_TRUE(other.on_message(wire::Piece{PieceIndex{2}, BlockOffset{block * kBlockSize}, data}, t0).ok());
    }
    EXPECT_EQ(only<wire::Cancel>(sent_messages(session)).size(), 3u);
    EXPECT_EQ(session.requests_outstanding(), 0u);
    ASSERT_EQ(session.completed().size(), 0u);  // the other's peer sent the last block
    ASSERT_EQ(other.completed().size(), 1u);
    const auto& done = other.completed().front();
    EXPECT_EQ(done.lease_id, 6u);
    ASSERT_EQ(done.data.size(), 65536u);
    for (std::uint32_t block = 0; block < 4; ++block) EXPECT_EQ(done.data[block * kBlockSize], block + 1);
    EXPECT_EQ(done.helpers, std::vector<std::string>{"a"});
    ASSERT_TRUE(other_finished.has_value());
    EXPECT_EQ(*other_finished, 5u);
    EXPECT_EQ(session.lease_count(), 0u);
    EXPECT_EQ(other.lease_count(), 0u);
    // Only blocks that came over the wire count as downloaded from each peer.
    EXPECT_EQ(session.take_downloaded(), kBlockSize);
    EXPECT_EQ(other.take_downloaded(), 3u * kBlockSize);
    // The cancelled blocks may still come: they are forgiven.
    ASSERT_TRUE(deliver(wire::Piece{PieceIndex{2}, BlockOffset{kBlockSize}, first}, t0).ok());
}

TEST_F(SessionTest, StallAndKeepAlive) {
    handshake();
    ASSERT_TRUE(deliver(wire::Unchoke{}, t0).ok());
    ASSERT_TRUE(lease(PieceIndex{0}, 1));
    session.fill_requests(t0, true);
    sent_messages(session);
    EXPECT_FALSE(session.stalled(t0 + 10s));
    EXPECT_TRUE(session.stalled(t0 + 26s));
    EXPECT_EQ(session.release_leases(), (std::vector<std::uint64_t>{1}));
    EXPECT_FALSE(session.stalled(t0 + 26s));

    session.on_tick(t0 + 30s);
    EXPECT_TRUE(sent_messages(session).empty());
    session.on_tick(t0 + 91s);
    EXPECT_EQ(only<wire::KeepAlive>(sent_messages(session)).size(), 1u);
}

TEST_F(SessionTest, APeerWithoutTheFastExtensionAskingForWhatWeNeverHadIsDropped) {
    handshake();
    ASSERT_TRUE(deliver(wire::Interested{}, t0).ok());
    EXPECT_TRUE(session.peer_interested());
    auto dropped = deliver(wire::Request{PieceIndex{0}, BlockOffset{0}, BlockLength{kBlockSize}}, t0);
    ASSERT_FALSE(dropped.ok());
    EXPECT_NE(dropped.error().message.find("which we do not have"), std::string::npos);
    EXPECT_TRUE(session.outgoing().empty());
}

// --- uploading ---

// 10 pieces of 64 KiB (the last 40 000 bytes); `ours` is what the orchestrator says we have.
class UploadTest : public ::testing::Test {
protected:
    static constexpr std::uint64_t kTotal = 9ull * 65536 + 40000;
    PieceGeometry geometry{kTotal, 65536};
    LocalPieces ours{10};
    Clock::time_point t0 = Clock::now();
    std::unique_ptr<PeerSession> session;

    void connect(bool fast, std::vector<std::uint32_t> offered = {}, SessionLimits limits = {}) {
        session = std::make_unique<PeerSession>(geometry, digest_of(0xAB), id_of(1), t0, limits, &ours);
        if (!offered.empty()) session->offer_allowed_fast(std::move(offered));
        wire::Handshake theirs;
        theirs.info_hash = digest_of(0xAB);
        theirs.peer_id = id_of(2);
        if (fast) theirs.set_fast();
        ASSERT_TRUE(session->on_handshake(theirs, t0).ok());
    }
    std::vector<wire::Message> sent() { return sent_messages(*session); }
    Status deliver(const wire::Message& m) { return session->on_message(m, t0); }
    static wire::Request block(std::uint32_t piece, std::uint32_t offset = 0,
                               std::uint32_t length = kBlockSize) {
        return wire::Request{PieceIndex{piece}, BlockOffset{offset}, BlockLength{length}};
    }
    void own(std::initializer_list<std::uint32_t> pieces) {
        for (const auto piece : pieces) ours.add(PieceIndex{piece});
    }
};

TEST_F(UploadTest, TheFirstMessageSaysWhatWeHave) {
    connect(true);  // nothing yet
    auto first = sent();
    ASSERT_EQ(first.size(), 1u);
    EXPECT_TRUE(std::holds_alternative<wire::HaveNone>(first[0]));

    connect(false);  // BEP 3 lets a bitfield of nothing be left out
    EXPECT_TRUE(sent().empty());

    own({0, 9});
    connect(true);
    auto some = only<wire::Bitfield>(sent());
    ASSERT_EQ(some.size(), 1u);
    EXPECT_EQ(std::vector<std::uint8_t>(some[0].bits.begin(), some[0].bits.end()),
              (std::vector<std::uint8_t>{0x80, 0x40}));

    ours.set_all();
    connect(true);
    auto all = sent();
    ASSERT_EQ(all.size(), 1u);
    EXPECT_TRUE(std::holds_alternative<wire::HaveAll>(all[0]));
    connect(false);
    auto all_as_bits = only<wire::Bitfield>(sent());
    ASSERT_EQ(all_as_bits.size(), 1u);
    EXPECT_EQ(std::vector<std::uint8_t>(all_as_bits[0].bits.begin(), all_as_bits[0].bits.end()),
              (std::vector<std::uint8_t>{0xFF, 0xC0}));
}

TEST_F(UploadTest, EveryNewPieceIsAHaveButForPeersThatHaveIt) {
    connect(false);
    ASSERT_TRUE(deliver(wire::Have{PieceIndex{3}}).ok());
    sent();
    own({2, 3});
    session->on_local_piece(PieceIndex{2}, t0);
    session->on_local_piece(PieceIndex{3}, t0);  // it has it: no have
    session->on_local_piece(PieceIndex{2}, t0);  // told once
    auto haves = only<wire::Have>(sent());
    ASSERT_EQ(haves.size(), 1u);
    EXPECT_EQ(haves[0].index, PieceIndex{2});
}

TEST_F(UploadTest, HavesHeldBackWhileTheQueueIsFullGoLaterOnce) {
    SessionLimits limits;
    limits.have_backlog = 20;  // two haves and a bit
    connect(false, {}, limits);
    for (std::uint32_t piece = 0; piece < 10; ++piece) {
        ours.add(PieceIndex{piece});
        session->on_local_piece(PieceIndex{piece}, t0);
    }
    auto first = only<wire::Have>(sent());
    EXPECT_EQ(first.size(), 3u);
    std::set<std::uint32_t> told;
    for (const auto& have : first) told.insert(have.index.get());
    for (int tick = 0; tick < 10 && told.size() < 10; ++tick) {
        session->on_tick(t0 + std::chrono::milliseconds(100 * (tick + 1)));
        for (const auto& have : only<wire::Have>(sent())) {
            EXPECT_TRUE(told.insert(have.index.get()).second) << "piece " << have.index.get() << " twice";
        }
    }
    EXPECT_EQ(told.size(), 10u);
}

// A piece that arrives while held-back haves are being sent, below where that scan has got to,
// is told too (a leecher that is never told of a piece never asks for it).
TEST_F(UploadTest, APieceHeldBackBehindTheScanIsStillTold) {
    SessionLimits limits;
    limits.have_backlog = 20;
    connect(false, {}, limits);
    std::set<std::uint32_t> told;
    const auto take = [&] {
        for (const auto& have : only<wire::Have>(sent())) {
            EXPECT_TRUE(told.insert(have.index.get()).second) << "piece " << have.index.get() << " twice";
        }
    };
    for (const std::uint32_t piece : {0u, 1u, 3u, 4u, 5u, 6u, 8u}) {
        ours.add(PieceIndex{piece});
        session->on_local_piece(PieceIndex{piece}, t0);
    }
    take();  // 0, 1, 3; the rest held back
    session->on_tick(t0 + 100ms);
    take();  // 4, 5, 6: the scan stops past them
    ours.add(PieceIndex{2});
    session->on_local_piece(PieceIndex{2}, t0 + 150ms);
    for (int tick = 2; tick < 10; ++tick) {
        session->on_tick(t0 + std::chrono::milliseconds(100 * tick));
        take();
    }
    EXPECT_EQ(told, (std::set<std::uint32_t>{0, 1, 2, 3, 4, 5, 6, 8}));
}

TEST_F(UploadTest, InterestIsTruthfulBothWays) {
    connect(true);
    sent();
    std::vector<std::uint8_t> bits{0b1100'0000, 0};
    ASSERT_TRUE(deliver(wire::Bitfield{bits}).ok());
    EXPECT_EQ(only<wire::Interested>(sent()).size(), 1u);
    own({0});
    session->on_local_piece(PieceIndex{0}, t0);
    EXPECT_TRUE(session->am_interested());  // it still has piece 1
    own({1});
    session->on_local_piece(PieceIndex{1}, t0);
    EXPECT_FALSE(session->am_interested());
    EXPECT_EQ(only<wire::NotInterested>(sent()).size(), 1u);
    EXPECT_EQ(session->pieces_wanted(t0), 0u);  // nothing to ask the orchestrator for
    ASSERT_TRUE(deliver(wire::Have{PieceIndex{5}}).ok());
    EXPECT_TRUE(session->am_interested());
    EXPECT_EQ(only<wire::Interested>(sent()).size(), 1u);

    // Its interest in us, and whether it changed since the choker last heard.
    EXPECT_FALSE(session->take_interest_changed());
    ASSERT_TRUE(deliver(wire::Interested{}).ok());
    EXPECT_TRUE(session->peer_interested());
    EXPECT_TRUE(session->take_interest_changed());
    ASSERT_TRUE(deliver(wire::Interested{}).ok());
    EXPECT_FALSE(session->take_interest_changed());
    ASSERT_TRUE(deliver(wire::NotInterested{}).ok());
    EXPECT_TRUE(session->take_interest_changed());
    EXPECT_FALSE(session->figures(t0).interested);
}

TEST_F(UploadTest, ItStartsChokedAndTheChokerDecides) {
    own({0, 1});
    connect(true);
    sent();
    EXPECT_TRUE(session->am_choking());
    session->set_choking(false, t0);
    EXPECT_EQ(only<wire::Unchoke>(sent()).size(), 1u);
    session->set_choking(false, t0);
    EXPECT_TRUE(sent().empty());
    ASSERT_TRUE(deliver(block(0)).ok());
    ASSERT_TRUE(deliver(block(1, kBlockSize)).ok());
    EXPECT_EQ(session->requests_queued(), 2u);
    // Choked: its requests go, each rejected (BEP 6).
    session->set_choking(true, t0);
    const auto messages = sent();
    ASSERT_EQ(messages.size(), 3u);
    EXPECT_TRUE(std::holds_alternative<wire::Choke>(messages[0]));
    const auto rejects = only<wire::RejectRequest>(messages);
    ASSERT_EQ(rejects.size(), 2u);
    EXPECT_EQ(rejects[1].index, PieceIndex{1});
    EXPECT_EQ(rejects[1].offset, BlockOffset{kBlockSize});
    EXPECT_EQ(session->requests_queued(), 0u);
    EXPECT_TRUE(session->figures(t0).choked);

    // Without the extension they go without a word.
    connect(false);
    session->set_choking(false, t0);
    ASSERT_TRUE(deliver(block(0)).ok());
    sent();
    session->set_choking(true, t0);
    EXPECT_EQ(sent().size(), 1u);  // the choke
    EXPECT_EQ(session->requests_queued(), 0u);
}

TEST_F(UploadTest, OnlyPiecesWeHaveAreServedAndOnlyToUnchokedPeers) {
    own({0, 1, 2});
    connect(true);
    session->set_choking(false, t0);
    sent();
    ASSERT_TRUE(deliver(block(1, kBlockSize)).ok());
    ASSERT_TRUE(deliver(block(9, 0, 40000 - 2 * kBlockSize)).ok());  // not ours: rejected
    ASSERT_EQ(session->requests_queued(), 1u);
    EXPECT_EQ(session->next_request().index, PieceIndex{1});
    EXPECT_EQ(session->next_request().offset, BlockOffset{kBlockSize});
    const auto rejects = only<wire::RejectRequest>(sent());
    ASSERT_EQ(rejects.size(), 1u);
    EXPECT_EQ(rejects[0].index, PieceIndex{9});

    // The block answering it goes between the control bytes, from where its data lies.
    const std::vector<std::uint8_t> piece(65536, 0x5A);
    const auto request = session->next_request();
    session->queue_block(request, std::span(piece).subspan(request.offset.get(), request.length.get()),
                         nullptr, t0);
    session->pop_request();
    session->set_choking(true, t0);  // after the block: the block still leaves first
    EXPECT_EQ(session->blocks_queued(), 1u);
    EXPECT_EQ(session->block_bytes_queued(), kBlockSize);
    const auto messages = sent();
    ASSERT_EQ(messages.size(), 2u);
    const auto* data = std::get_if<wire::Piece>(&messages[0]);
    ASSERT_NE(data, nullptr);
    EXPECT_EQ(data->index, PieceIndex{1});
    EXPECT_EQ(data->offset, BlockOffset{kBlockSize});
    EXPECT_EQ(data->data.size(), kBlockSize);
    EXPECT_TRUE(std::holds_alternative<wire::Choke>(messages[1]));
    EXPECT_EQ(session->uploaded(), kBlockSize);
    EXPECT_EQ(session->blocks_queued(), 0u);
    EXPECT_EQ(session->block_bytes_queued(), 0u);
}

TEST_F(UploadTest, BadRequestsAreRejectedUnderTheFastExtension) {
    own({0, 9});
    connect(true);
    session->set_choking(false, t0);
    sent();
    const std::vector<wire::Request> bad{
        block(0, 65536 - 100),               // runs past the piece
        block(9, kBlockSize * 2, kBlockSize),  // past the short last piece
        block(0, 0, 32768),                  // longer than 16 KiB
        block(0, 0, 0),                      // empty
        block(10),                           // no such piece
        block(4),                            // not ours
    };
    for (const auto& request : bad) ASSERT_TRUE(deliver(request).ok());
    EXPECT_EQ(session->requests_queued(), 0u);
    // Each answered with a reject naming it as asked (our own parser would refuse rejects of
    // blocks that cannot be, so the bytes are read here by hand).
    const auto bytes = take_wire_bytes(*session);
    ASSERT_EQ(bytes.size(), bad.size() * 17);
    for (std::size_t i = 0; i < bad.size(); ++i) {
        EXPECT_EQ(bytes[i * 17 + 3], 13);
        EXPECT_EQ(bytes[i * 17 + 4], 0x10);
        EXPECT_EQ(bytes[i * 17 + 8], static_cast<std::uint8_t>(bad[i].index.get()));
    }
    EXPECT_EQ(session->rejects_sent(), bad.size());
}

TEST_F(UploadTest, BadRequestsDropAPeerWithoutIt) {
    own({0, 9});
    for (const auto& [request, reason] : std::vector<std::pair<wire::Request, std::string>>{
             {block(0, 65536 - 100), "invalid block"},
             {block(0, 0, 32768), "invalid block"},
             {block(10), "invalid block"},
             {block(4), "which we do not have"}}) {
        connect(false);
        session->set_choking(false, t0);
        auto dropped = deliver(request);
        ASSERT_FALSE(dropped.ok());
        EXPECT_NE(dropped.error().message.find(reason), std::string::npos) << dropped.error().message;
    }
}

TEST_F(UploadTest, RequestsWhileChokedAreRejectedOrIgnored) {
    own({0});
    connect(true);
    sent();
    ASSERT_TRUE(deliver(block(0)).ok());
    EXPECT_EQ(session->requests_queued(), 0u);
    EXPECT_EQ(only<wire::RejectRequest>(sent()).size(), 1u);

    connect(false);
    sent();
    ASSERT_TRUE(deliver(block(0)).ok());  // BEP 3: a request racing our choke is no offence
    EXPECT_EQ(session->requests_queued(), 0u);
    EXPECT_TRUE(sent().empty());
}

TEST_F(UploadTest, OurAllowedFastSetIsOfferedAndHonoured) {
    own({2});
    connect(true, {2, 5});
    auto first = sent();
    auto offered = only<wire::AllowedFast>(first);
    ASSERT_EQ(offered.size(), 1u);  // only what we have
    EXPECT_EQ(offered[0].index, PieceIndex{2});
    own({5});
    session->on_local_piece(PieceIndex{5}, t0);
    auto later = sent();
    ASSERT_EQ(only<wire::AllowedFast>(later).size(), 1u);
    EXPECT_EQ(only<wire::AllowedFast>(later)[0].index, PieceIndex{5});
    EXPECT_EQ(only<wire::Have>(later).size(), 1u);

    // Choked, it may still have those two.
    ASSERT_TRUE(deliver(block(2)).ok());
    ASSERT_TRUE(deliver(block(5)).ok());
    own({3});
    session->on_local_piece(PieceIndex{3}, t0);
    ASSERT_TRUE(deliver(block(3)).ok());
    EXPECT_EQ(session->requests_queued(), 2u);
    EXPECT_EQ(only<wire::RejectRequest>(sent()).size(), 1u);
    // A choke keeps them too.
    session->set_choking(false, t0);
    ASSERT_TRUE(deliver(block(3)).ok());
    session->set_choking(true, t0);
    EXPECT_EQ(session->requests_queued(), 2u);
    const auto rejects = only<wire::RejectRequest>(sent());
    ASSERT_EQ(rejects.size(), 1u);
    EXPECT_EQ(rejects[0].index, PieceIndex{3});

    // No set for a peer without the extension.
    connect(false, {2, 5});
    EXPECT_TRUE(only<wire::AllowedFast>(sent()).empty());
}

TEST_F(UploadTest, AFloodOfRequestsDropsThePeer) {
    ours.set_all();
    connect(true);
    session->set_choking(false, t0);
    for (std::uint32_t i = 0; i < 500; ++i) {
        ASSERT_TRUE(deliver(block(i % 9, (i / 9 % 4) * kBlockSize)).ok()) << i;
    }
    EXPECT_EQ(session->requests_queued(), 500u);
    auto dropped = deliver(block(0));
    ASSERT_FALSE(dropped.ok());
    EXPECT_NE(dropped.error().message.find("more than 500"), std::string::npos) << dropped.error().message;
    // Served ones make room again.
    session->pop_request();
    EXPECT_TRUE(deliver(block(0)).ok());
}

TEST_F(UploadTest, CancelTakesAQueuedRequestBack) {
    ours.set_all();
    connect(true);
    session->set_choking(false, t0);
    sent();
    ASSERT_TRUE(deliver(block(0)).ok());
    ASSERT_TRUE(deliver(block(1)).ok());
    ASSERT_TRUE(deliver(block(2)).ok());
    ASSERT_TRUE(deliver(wire::Cancel{PieceIndex{1}, BlockOffset{0}, BlockLength{kBlockSize}}).ok());
    ASSERT_TRUE(deliver(wire::Cancel{PieceIndex{7}, BlockOffset{0}, BlockLength{kBlockSize}}).ok());  // not queued
    ASSERT_EQ(session->requests_queued(), 2u);
    EXPECT_EQ(session->next_request().index, PieceIndex{0});
    session->pop_request();
    EXPECT_EQ(session->next_request().index, PieceIndex{2});
    // BEP 6: a cancelled request is answered, with a reject.
    const auto rejects = only<wire::RejectRequest>(sent());
    ASSERT_EQ(rejects.size(), 1u);
    EXPECT_EQ(rejects[0].index, PieceIndex{1});
}

TEST_F(UploadTest, ReadFailuresAndLostPiecesRefuseTheirRequests) {
    own({0, 1});
    connect(true);
    session->set_choking(false, t0);
    sent();
    ASSERT_TRUE(deliver(block(0)).ok());
    ASSERT_TRUE(deliver(block(1)).ok());
    ASSERT_TRUE(deliver(block(0, kBlockSize)).ok());
    session->refuse_requests_for(PieceIndex{0}, t0);
    EXPECT_EQ(session->requests_queued(), 1u);
    EXPECT_EQ(only<wire::RejectRequest>(sent()).size(), 2u);
    session->refuse_request(t0);
    EXPECT_EQ(session->requests_queued(), 0u);
    EXPECT_EQ(only<wire::RejectRequest>(sent()).size(), 1u);

    // Without the extension a piece announced and lost since is no offence: ignored.
    connect(false);
    session->set_choking(false, t0);
    ours.set_none();
    session->on_local_reset(t0);
    ASSERT_TRUE(deliver(block(0)).ok());
    EXPECT_EQ(session->requests_queued(), 0u);
}

TEST_F(UploadTest, SnubbedWhenItUnchokedUsAndSentNothingForAMinute) {
    SessionLimits limits;
    limits.stall_timeout = std::chrono::hours(1);  // the worker would drop it sooner
    connect(true, {}, limits);
    ASSERT_TRUE(deliver(wire::HaveAll{}).ok());
    ASSERT_TRUE(deliver(wire::Unchoke{}).ok());
    ASSERT_TRUE(session->add_lease(PieceIndex{0}, 1, PieceDestination::owned(65536)));
    session->fill_requests(t0, true);
    EXPECT_FALSE(session->snubbed(t0 + 59s));
    EXPECT_TRUE(session->snubbed(t0 + 61s));
    EXPECT_TRUE(session->figures(t0 + 61s).snubbed);
    EXPECT_TRUE(session->figures(t0).seed);
    ASSERT_TRUE(session->on_message(wire::Choke{}, t0 + 62s).ok());
    EXPECT_FALSE(session->snubbed(t0 + 62s));
}

TEST_F(UploadTest, HaveAllAndHaveNoneFromThePeer) {
    connect(true);
    ASSERT_TRUE(deliver(wire::HaveAll{}).ok());
    EXPECT_TRUE(session->peer_is_seed());
    EXPECT_TRUE(session->am_interested());
    auto report = session->take_has_report(true);
    ASSERT_TRUE(report.has_value());
    EXPECT_TRUE(report->have_all);
    EXPECT_FALSE(deliver(wire::HaveNone{}).ok());  // a second availability message

    connect(true);
    ASSERT_TRUE(deliver(wire::HaveNone{}).ok());
    EXPECT_FALSE(session->am_interested());
    ASSERT_TRUE(deliver(wire::Have{PieceIndex{4}}).ok());
    EXPECT_TRUE(session->am_interested());
    std::vector<std::uint8_t> bits{0xFF, 0xC0};
    ASSERT_TRUE(deliver(wire::Bitfield{bits}).ok());  // late, but it adds to what we knew
    EXPECT_TRUE(session->peer_is_seed());
}

TEST_F(UploadTest, BothSeedsOnlyOnceWeAndThePeerHaveEverything) {
    connect(true);
    ASSERT_TRUE(deliver(wire::HaveAll{}).ok());
    EXPECT_FALSE(session->both_seeds());  // we have nothing yet
    for (std::uint32_t piece = 0; piece < 9; ++piece) {
        ours.add(PieceIndex{piece});
        session->on_local_piece(PieceIndex{piece}, t0);
    }
    EXPECT_FALSE(session->both_seeds());
    ours.add(PieceIndex{9});
    session->on_local_piece(PieceIndex{9}, t0);
    EXPECT_TRUE(session->both_seeds());

    connect(true);  // we are a seed; the peer lacks piece 2 until its have
    std::vector<std::uint8_t> bits{0xDF, 0xC0};
    ASSERT_TRUE(deliver(wire::Bitfield{bits}).ok());
    EXPECT_FALSE(session->both_seeds());
    ASSERT_TRUE(deliver(wire::Have{PieceIndex{2}}).ok());
    EXPECT_TRUE(session->both_seeds());
}

// Downloading from a fast peer: what it allows us while choked, and its rejects.
TEST_F(UploadTest, TheirAllowedFastPiecesAndTheirRejects) {
    connect(true);
    ASSERT_TRUE(deliver(wire::HaveAll{}).ok());
    ASSERT_TRUE(deliver(wire::AllowedFast{PieceIndex{0}}).ok());
    ASSERT_TRUE(deliver(wire::SuggestPiece{PieceIndex{3}}).ok());  // taken, and ignored
    ASSERT_TRUE(deliver(wire::Unchoke{}).ok());
    ASSERT_TRUE(session->add_lease(PieceIndex{0}, 10, PieceDestination::owned(65536)));
    ASSERT_TRUE(session->add_lease(PieceIndex{1}, 11, PieceDestination::owned(65536)));
    session->fill_requests(t0, true);
    sent();
    EXPECT_EQ(session->requests_outstanding(), 8u);
    // Choked: piece 1's requests are void, piece 0's stand.
    ASSERT_TRUE(deliver(wire::Choke{}).ok());
    EXPECT_EQ(session->requests_outstanding(), 4u);
    session->fill_requests(t0, true);
    EXPECT_TRUE(only<wire::Request>(sent()).empty());  // nothing of piece 1 while choked
    // It rejects one of piece 0 after all: not asked again while choked.
    ASSERT_TRUE(deliver(wire::RejectRequest{PieceIndex{0}, BlockOffset{0}, BlockLength{kBlockSize}}).ok());
    EXPECT_EQ(session->requests_outstanding(), 3u);
    EXPECT_TRUE(session->allowed_by_peer().empty());
    // A reject for something not outstanding changes nothing.
    ASSERT_TRUE(deliver(wire::RejectRequest{PieceIndex{1}, BlockOffset{0}, BlockLength{kBlockSize}}).ok());
    EXPECT_EQ(session->requests_outstanding(), 3u);
    // Unchoked, piece 1 is asked for again; a reject now gives its lease back.
    ASSERT_TRUE(deliver(wire::Unchoke{}).ok());
    session->fill_requests(t0, true);
    const auto requests = only<wire::Request>(sent());
    EXPECT_EQ(requests.size(), 5u);  // piece 0's first block and piece 1's four
    ASSERT_TRUE(deliver(wire::RejectRequest{PieceIndex{1}, BlockOffset{kBlockSize}, BlockLength{kBlockSize}}).ok());
    EXPECT_EQ(session->rejected_leases(), (std::vector<std::uint64_t>{11}));
    EXPECT_EQ(only<wire::Cancel>(sent()).size(), 3u);  // its other requests
    EXPECT_EQ(session->lease_count(), 1u);
    EXPECT_EQ(session->requests_outstanding(), 4u);
}

TEST(RequestQueueTest, ARingThatKeepsOrderWhenItemsLeaveFromTheMiddle) {
    RequestQueue queue(4);
    const auto request = [](std::uint32_t piece) {
        return wire::Request{PieceIndex{piece}, BlockOffset{0}, BlockLength{1}};
    };
    for (std::uint32_t i = 0; i < 4; ++i) EXPECT_TRUE(queue.push(request(i)));
    EXPECT_FALSE(queue.push(request(9)));
    queue.pop();
    queue.pop();
    EXPECT_TRUE(queue.push(request(4)));
    EXPECT_TRUE(queue.push(request(5)));  // wrapped around
    std::vector<std::uint32_t> removed;
    queue.remove_if([](const wire::Request& r) { return r.index.get() % 2 == 1; },
                    [&](const wire::Request& r) { removed.push_back(r.index.get()); });
    EXPECT_EQ(removed, (std::vector<std::uint32_t>{3, 5}));
    ASSERT_EQ(queue.size(), 2u);
    EXPECT_EQ(queue.at(0).index, PieceIndex{2});
    EXPECT_EQ(queue.at(1).index, PieceIndex{4});
}

// --- the upload cache ---

zmq::message_t frame_of(std::size_t size, std::uint8_t fill) {
    zmq::message_t frame(size);
    std::memset(frame.data(), fill, size);
    return frame;
}

TEST(UploadCacheTest, LeastRecentlyUsedGoFirstButNeverWhilePinned) {
    UploadCacheLimits limits;
    limits.bytes = 3 * 1000;
    UploadCache cache(limits);
    const auto t0 = Clock::now();
    const TorrentId torrent{1};
    CacheEntry* a = cache.add_frame(torrent, PieceIndex{0}, frame_of(1000, 1), t0);
    CacheEntry* b = cache.add_frame(torrent, PieceIndex{1}, frame_of(1000, 2), t0);
    cache.add_frame(torrent, PieceIndex{2}, frame_of(1000, 3), t0);
    EXPECT_EQ(a->bytes.size(), 1000u);
    EXPECT_EQ(a->bytes[999], 1);
    cache.pin(a);
    ASSERT_EQ(cache.find(torrent, PieceIndex{1}, t0), b);  // used: now the most recent
    // Room for one more: piece 0 is the oldest but pinned, so piece 2 goes.
    EXPECT_TRUE(cache.make_room(1000, 0));
    EXPECT_EQ(cache.find(torrent, PieceIndex{2}, t0), nullptr);
    EXPECT_NE(cache.find(torrent, PieceIndex{0}, t0), nullptr);
    // Nothing unpinned left to free beyond what fits.
    cache.pin(b);
    EXPECT_FALSE(cache.make_room(2000, 0));
    EXPECT_FALSE(cache.make_room(1000, 1000));
    EXPECT_EQ(cache.bytes(), 2000u);
    EXPECT_EQ(cache.pinned_bytes(), 2000u);
    // Dropped while pinned: never found again, freed with its last pin.
    cache.drop(a);
    EXPECT_EQ(cache.find(torrent, PieceIndex{0}, t0), nullptr);
    EXPECT_EQ(cache.bytes(), 2000u);
    cache.unpin(a, t0);
    EXPECT_EQ(cache.bytes(), 1000u);
    cache.drop_torrent(torrent);
    EXPECT_EQ(cache.bytes(), 1000u);  // b is pinned still
    cache.unpin(b, t0);
    EXPECT_EQ(cache.bytes(), 0u);
    EXPECT_EQ(cache.entries(), 0u);
}

TEST(UploadCacheTest, ArenaSlotsGoBackSoonAfterTheirLastBlock) {
    UploadCacheLimits limits;
    limits.max_arena_entries = 2;
    limits.arena_linger = 5s;
    UploadCache cache(limits);
    const auto t0 = Clock::now();
    const std::vector<std::uint8_t> bytes(4096, 7);
    const bus::ArenaInfo arena{"/proc/1/fd/3", 42, 4096, 8};
    CacheEntry* a = cache.add_arena(TorrentId{1}, PieceIndex{0}, bytes, arena, 0, 100, t0);
    cache.add_arena(TorrentId{1}, PieceIndex{1}, bytes, arena, 1, 101, t0 + 1s);
    cache.pin(a);
    cache.expire(t0 + 5500ms);
    EXPECT_TRUE(cache.released().empty());  // piece 0 is pinned, piece 1 young
    cache.unpin(a, t0 + 6s);
    cache.expire(t0 + 6500ms);
    EXPECT_EQ(cache.released(), (std::vector<std::uint64_t>{101}));
    cache.released().clear();
    // Over the cap, the least recently used unpinned go at once: as the answer comes, not at
    // the next tick (a burst of answers must not hold more slots than the writer grants).
    cache.add_arena(TorrentId{1}, PieceIndex{2}, bytes, arena, 2, 102, t0 + 7s);
    cache.add_arena(TorrentId{1}, PieceIndex{3}, bytes, arena, 3, 103, t0 + 7s);
    EXPECT_EQ(cache.released(), (std::vector<std::uint64_t>{100}));
    cache.expire(t0 + 7s);
    EXPECT_EQ(cache.released(), (std::vector<std::uint64_t>{100}));
    EXPECT_EQ(cache.entries(), 2u);
}

// --- rates ---

TEST(TokenBucketTest, HoldsARateWithinAPercentOverThirtySeconds) {
    const auto t0 = Clock::now();
    TokenBucket bucket;
    constexpr std::uint64_t kRate = 512 * 1024;
    bucket.set_rate(kRate, t0);
    std::uint64_t sent = 0;
    // Blocks go whenever the bucket has tokens, checked every 10 ms.
    for (auto now = t0; now < t0 + 30s; now += 10ms) {
        while (bucket.available(now)) {
            bucket.take(kBlockSize + 13);
            sent += kBlockSize + 13;
        }
    }
    const double expected = 30.0 * kRate;
    EXPECT_LE(static_cast<double>(sent), expected * 1.01 + static_cast<double>(bucket.burst()));
    EXPECT_GE(static_cast<double>(sent), expected * 0.99);
}

TEST(TokenBucketTest, UnlimitedNeverStopsAndANewRateKeepsItsDebt) {
    const auto t0 = Clock::now();
    TokenBucket bucket;
    EXPECT_FALSE(bucket.limited());
    bucket.take(1u << 30);
    EXPECT_TRUE(bucket.available(t0));
    bucket.set_rate(100 * 1024, t0);
    EXPECT_TRUE(bucket.available(t0));  // starts with a burst
    bucket.take(static_cast<std::uint64_t>(bucket.burst()) + 50 * 1024);
    EXPECT_FALSE(bucket.available(t0));
    bucket.set_rate(200 * 1024, t0);  // the next period's share: the debt stays
    EXPECT_FALSE(bucket.available(t0 + 100ms));
    EXPECT_TRUE(bucket.available(t0 + 300ms));
    bucket.set_rate(0, t0 + 300ms);
    EXPECT_TRUE(bucket.available(t0 + 300ms));
}

TEST(RateMeterTest, BytesPerSecondOverTheLastFewSeconds) {
    const auto t0 = Clock::now();
    RateMeter meter(t0);
    std::uint64_t total = 0;
    for (int second = 0; second <= 10; ++second) {
        meter.sample(total, t0 + std::chrono::seconds(second));
        total += 100'000;
    }
    EXPECT_EQ(meter.rate(), 100'000u);
    for (int second = 11; second <= 20; ++second) meter.sample(total, t0 + std::chrono::seconds(second));
    EXPECT_EQ(meter.rate(), 0u);  // idle for longer than the window
}

TEST(LocalPiecesTest, WhatWeHaveInTheWiresLayout) {
    LocalPieces ours(10);
    EXPECT_TRUE(ours.none());
    EXPECT_TRUE(ours.add(PieceIndex{0}));
    EXPECT_FALSE(ours.add(PieceIndex{0}));
    EXPECT_FALSE(ours.add(PieceIndex{10}));
    EXPECT_TRUE(ours.add(PieceIndex{9}));
    EXPECT_EQ(std::vector<std::uint8_t>(ours.bitfield().begin(), ours.bitfield().end()),
              (std::vector<std::uint8_t>{0x80, 0x40}));
    ours.set_all();
    EXPECT_TRUE(ours.all());
    EXPECT_EQ(std::vector<std::uint8_t>(ours.bitfield().begin(), ours.bitfield().end()),
              (std::vector<std::uint8_t>{0xFF, 0xC0}));
    EXPECT_FALSE(ours.set_bitfield(std::vector<std::uint8_t>{0xFF, 0xE0}));  // spare bit set
    EXPECT_TRUE(ours.all());
    EXPECT_TRUE(ours.set_bitfield(std::vector<std::uint8_t>{0x01, 0x80}));
    EXPECT_EQ(ours.count(), 2u);
    EXPECT_TRUE(ours.has(PieceIndex{7}));
    EXPECT_TRUE(ours.has(PieceIndex{8}));
    ours.set_none();
    EXPECT_EQ(ours.count(), 0u);
}

TEST(PieceAssembly, ShortLastBlockDuplicatesAndCompletion) {
    const auto now = Clock::now();
    PieceAssembly piece(PieceIndex{3}, 9, PieceDestination::owned(2 * kBlockSize + 10));
    EXPECT_EQ(piece.block_count(), 3u);
    EXPECT_EQ(piece.blocks_unrequested(), 3u);
    std::vector<BlockRequest> asked;
    while (auto r = piece.request_next(now)) asked.push_back(*r);
    ASSERT_EQ(asked.size(), 3u);
    EXPECT_EQ(asked[2].length.get(), 10u);
    EXPECT_EQ(piece.blocks_requested(), 3u);

    Clock::duration latency{};
    std::vector<std::uint8_t> last(10, 0xEE);
    EXPECT_EQ(piece.add_block(BlockOffset{2 * kBlockSize}, last, now + 5ms, latency),
              PieceAssembly::BlockResult::accepted);
    EXPECT_EQ(latency, 5ms);
    EXPECT_EQ(piece.add_block(BlockOffset{2 * kBlockSize}, last, now, latency),
              PieceAssembly::BlockResult::duplicate);
    std::vector<std::uint8_t> full(kBlockSize, 0x11);
    EXPECT_EQ(piece.add_block(BlockOffset{2 * kBlockSize}, full, now, latency),
              PieceAssembly::BlockResult::wrong_shape);
    EXPECT_EQ(piece.add_block(BlockOffset{5}, full, now, latency),
              PieceAssembly::BlockResult::wrong_shape);
    EXPECT_EQ(piece.add_block(BlockOffset{0}, full, now, latency),
              PieceAssembly::BlockResult::accepted);
    EXPECT_FALSE(piece.complete());
    EXPECT_EQ(piece.add_block(BlockOffset{kBlockSize}, full, now, latency),
              PieceAssembly::BlockResult::accepted);
    EXPECT_TRUE(piece.complete());
    const auto bytes = piece.take_buffer();
    ASSERT_EQ(bytes.size(), 2 * kBlockSize + 10);
    EXPECT_EQ(bytes[0], 0x11);
    EXPECT_EQ(bytes.back(), 0xEE);
}

TEST(PieceAssembly, VoidedRequestsAreAskedAgainAndUnaskedBlocksRefused) {
    const auto now = Clock::now();
    PieceAssembly piece(PieceIndex{0}, 1, PieceDestination::owned(3 * kBlockSize));
    ASSERT_TRUE(piece.request_next(now).has_value());
    ASSERT_TRUE(piece.request_next(now).has_value());
    Clock::duration latency{};
    std::vector<std::uint8_t> full(kBlockSize, 1);
    EXPECT_EQ(piece.add_block(BlockOffset{2 * kBlockSize}, full, now, latency),
              PieceAssembly::BlockResult::not_requested);
    EXPECT_EQ(piece.void_requests(), 2u);
    EXPECT_EQ(piece.blocks_unrequested(), 3u);
    EXPECT_EQ(piece.add_block(BlockOffset{0}, full, now, latency),
              PieceAssembly::BlockResult::not_requested);
    const auto again = piece.request_next(now);
    ASSERT_TRUE(again.has_value());
    EXPECT_EQ(again->offset.get(), 0u);
    // Asked twice: its bytes may answer the first request, so its latency is unknown (a
    // choked and unchoked peer's early blocks once made a 200 ms round trip look like 7 ms).
    EXPECT_EQ(piece.add_block(BlockOffset{0}, full, now + 7ms, latency), PieceAssembly::BlockResult::accepted);
    EXPECT_EQ(latency, Clock::duration::max());
    ASSERT_TRUE(piece.request_next(now).has_value());
    ASSERT_TRUE(piece.request_next(now).has_value());
    EXPECT_EQ(piece.add_block(BlockOffset{2 * kBlockSize}, full, now + 200ms, latency),
              PieceAssembly::BlockResult::accepted);
    EXPECT_EQ(latency, 200ms);

    PipelineSizer sizer(now);
    sizer.on_block(kBlockSize, Clock::duration::max(), now + 7ms);
    EXPECT_EQ(sizer.min_latency(), Clock::duration::max());
    sizer.on_block(kBlockSize, 200ms, now + 200ms);
    EXPECT_EQ(sizer.min_latency(), 200ms);
}

// A third holder of a piece in one worker: the other two ask from either end, so it asks from
// the middle of what none of them has yet, outward.
TEST(PieceAssembly, AskedFromTheMiddleOfWhatIsMissing) {
    const auto now = Clock::now();
    PieceAssembly piece(PieceIndex{1}, 4, PieceDestination::owned(8 * kBlockSize));
    piece.ask_in(PieceAssembly::Order::from_middle);
    std::vector<std::uint8_t> data(kBlockSize, 7);
    // Blocks 0 and 7 came to the others: 1-6 are missing, their middle is between 3 and 4.
    ASSERT_EQ(piece.absorb(BlockOffset{0}, data, "x"), PieceAssembly::Absorbed::was_needed);
    ASSERT_EQ(piece.absorb(BlockOffset{7 * kBlockSize}, data, "y"), PieceAssembly::Absorbed::was_needed);
    std::vector<std::uint32_t> asked;
    for (int i = 0; i < 3; ++i) asked.push_back(piece.request_next(now)->offset.get() / kBlockSize);
    EXPECT_EQ(asked, (std::vector<std::uint32_t>{4, 3, 5}));
    // Block 1 comes too: what is missing is 2-6 now, its middle 4 (asked for already).
    ASSERT_EQ(piece.absorb(BlockOffset{kBlockSize}, data, "x"), PieceAssembly::Absorbed::was_needed);
    asked.clear();
    while (const auto next = piece.request_next(now)) asked.push_back(next->offset.get() / kBlockSize);
    EXPECT_EQ(asked, (std::vector<std::uint32_t>{2, 6}));
    EXPECT_EQ(piece.blocks_unrequested(), 0u);
}

TEST(PieceAssembly, AskedFromTheEndAndAbsorbingAnotherPeersBlocks) {
    const auto now = Clock::now();
    PieceAssembly piece(PieceIndex{1}, 4, PieceDestination::owned(4 * kBlockSize));
    piece.ask_in(PieceAssembly::Order::from_end);
    const auto first = piece.request_next(now);
    ASSERT_TRUE(first.has_value());
    EXPECT_EQ(first->offset.get(), 3u * kBlockSize);
    std::vector<std::uint8_t> data(kBlockSize, 7);
    // A block we asked for, one nobody asked for, one we have, one of the wrong size.
    EXPECT_EQ(piece.absorb(BlockOffset{3 * kBlockSize}, data, "x"), PieceAssembly::Absorbed::was_requested);
    EXPECT_EQ(piece.absorb(BlockOffset{0}, data, "y"), PieceAssembly::Absorbed::was_needed);
    EXPECT_EQ(piece.absorb(BlockOffset{0}, data, "y"), PieceAssembly::Absorbed::no);
    EXPECT_EQ(piece.absorb(BlockOffset{kBlockSize}, std::span(data).first(10), "y"),
              PieceAssembly::Absorbed::no);
    EXPECT_EQ(piece.blocks_requested(), 0u);
    EXPECT_EQ(piece.blocks_unrequested(), 2u);
    // What is left is asked for from the end, skipping what was absorbed.
    EXPECT_EQ(piece.request_next(now)->offset.get(), 2u * kBlockSize);
    EXPECT_EQ(piece.request_next(now)->offset.get(), 1u * kBlockSize);
    EXPECT_FALSE(piece.request_next(now).has_value());
    std::vector<std::uint32_t> seen;
    piece.for_each_received([&](BlockOffset offset, std::span<const std::uint8_t> bytes) {
        seen.push_back(offset.get());
        EXPECT_EQ(bytes.size(), kBlockSize);
        EXPECT_EQ(bytes[0], 7);
    });
    EXPECT_EQ(seen, (std::vector<std::uint32_t>{0, 3 * kBlockSize}));
    // A choke voids the requests: they are asked again, still from the end.
    EXPECT_EQ(piece.void_requests(), 2u);
    EXPECT_EQ(piece.request_next(now)->offset.get(), 2u * kBlockSize);
    EXPECT_EQ(piece.take_helpers(), (std::vector<std::string>{"x", "y"}));
}

TEST(PieceAssembly, WritesStraightIntoItsArenaSlot) {
    const auto now = Clock::now();
    PieceMemory memory(2 * kBlockSize, PieceMemory::Kind::arenas);
    auto destination = memory.reserve(4, 2 * kBlockSize, kBlockSize + 10);
    ASSERT_TRUE(destination);
    bus::PieceArena& slots = *memory.arena_slots(2 * kBlockSize);
    PieceAssembly piece(PieceIndex{1}, 4, std::move(*destination));
    EXPECT_EQ(piece.size(), kBlockSize + 10);
    EXPECT_EQ(piece.block_count(), 2u);
    while (piece.request_next(now)) {
    }
    Clock::duration latency{};
    std::vector<std::uint8_t> first(kBlockSize, 0x11), second(10, 0x22);
    ASSERT_EQ(piece.add_block(BlockOffset{kBlockSize}, second, now, latency),
              PieceAssembly::BlockResult::accepted);
    ASSERT_EQ(piece.add_block(BlockOffset{0}, first, now, latency),
              PieceAssembly::BlockResult::accepted);
    ASSERT_TRUE(piece.complete());
    EXPECT_TRUE(piece.take_buffer().empty());  // nothing owned: the bytes are in place
    const std::span<std::uint8_t> memory_of_slot = slots.bytes(*memory.slot_of(4));
    EXPECT_EQ(memory_of_slot[0], 0x11);
    EXPECT_EQ(memory_of_slot[kBlockSize - 1], 0x11);
    EXPECT_EQ(memory_of_slot[kBlockSize + 9], 0x22);
    // Nothing past the piece's end is touched.
    EXPECT_EQ(std::count(memory_of_slot.begin() + kBlockSize + 10, memory_of_slot.end(), 0),
              kBlockSize - 10);
}

TEST(PieceAssembly, AnOwnedBufferSurvivesMoves) {
    const auto now = Clock::now();
    std::vector<PieceAssembly> leases;
    leases.emplace_back(PieceIndex{0}, 1, PieceDestination::owned(kBlockSize));
    leases.emplace_back(PieceIndex{1}, 2, PieceDestination::owned(kBlockSize));
    leases.erase(leases.begin());  // moves the second one
    leases.reserve(100);           // and again
    ASSERT_TRUE(leases[0].request_next(now).has_value());
    Clock::duration latency{};
    std::vector<std::uint8_t> block(kBlockSize, 0x33);
    ASSERT_EQ(leases[0].add_block(BlockOffset{0}, block, now, latency),
              PieceAssembly::BlockResult::accepted);
    const auto bytes = leases[0].take_buffer();
    ASSERT_EQ(bytes.size(), kBlockSize);
    EXPECT_EQ(std::count(bytes.begin(), bytes.end(), 0x33), kBlockSize);
}

bus::v1::SlotsFreed slots_freed(std::uint64_t arena_id, std::vector<std::uint64_t> lease_ids,
                                bool all_delivered = false) {
    bus::v1::SlotsFreed freed;
    freed.set_worker("peer_worker-1");
    freed.set_arena_id(arena_id);
    for (const auto id : lease_ids) freed.add_lease_ids(id);
    freed.set_all_delivered(all_delivered);
    return freed;
}

TEST(PieceMemory, ArenaSlotIsTakenOnLeaseAndFreedWhenTheLeaseEndsEarly) {
    PieceMemory memory(3 * 65536, PieceMemory::Kind::arenas);
    EXPECT_EQ(memory.arena(65536), nullptr);  // made by the first lease of that length
    EXPECT_EQ(memory.room(65536), 3u);

    auto destination = memory.reserve(11, 65536, 40000);
    ASSERT_TRUE(destination.has_value());
    ASSERT_NE(memory.arena(65536), nullptr);
    bus::PieceArena& slots = *memory.arena_slots(65536);
    EXPECT_EQ(destination->size(), 40000u);
    // Counted at once, but no slot is touched before the first block arrives.
    EXPECT_FALSE(memory.slot_of(11).has_value());
    EXPECT_EQ(slots.free_slots(), 3u);
    EXPECT_EQ(memory.room(65536), 2u);
    EXPECT_EQ(memory.held_bytes(), 65536u);
    const std::span<std::uint8_t> bytes = destination->bytes();  // the first block's copy
    const auto slot = memory.slot_of(11);
    ASSERT_TRUE(slot.has_value());
    EXPECT_EQ(slots.tag(*slot), 11u);  // tagged before the first byte is written
    EXPECT_EQ(bytes.data(), slots.bytes(*slot).data());
    EXPECT_EQ(bytes.size(), 40000u);
    EXPECT_EQ(destination->bytes().data(), bytes.data());  // bound once
    EXPECT_EQ(memory.room(65536), 2u);
    EXPECT_FALSE(memory.reserve(11, 65536, 40000).has_value());  // one slot per lease
    EXPECT_FALSE(memory.reserve(0, 65536, 40000).has_value());   // 0 tags a free slot
    EXPECT_FALSE(memory.reserve(12, 65536, 65537).has_value());  // larger than a slot

    memory.release(11);  // cancelled
    EXPECT_EQ(slots.tag(*slot), 0u);
    EXPECT_FALSE(memory.slot_of(11).has_value());
    EXPECT_EQ(memory.room(65536), 3u);
    memory.release(11);  // again, or unknown: ignored
    memory.release(99);
    EXPECT_EQ(memory.room(65536), 3u);
}

// Bytes of an arena's file the kernel holds pages for.
std::uint64_t resident_bytes(const std::string& arena_path) {
    struct stat info {};
    EXPECT_EQ(::stat(arena_path.c_str(), &info), 0);
    return static_cast<std::uint64_t>(info.st_blocks) * 512;
}

// A piece in a slot without pages takes them as its bytes come, a chunk at a time; its slot
// keeps them when freed, for the next piece, until a trim window passes without a piece
// needing that slot.
TEST(PieceMemory, PagesComeAChunkAtATimeAndStayUntilATrimFindsThemSpare) {
    constexpr std::uint32_t kPiece = 1 << 20;
    const std::vector<std::uint8_t> block(kBlockSize, 0x42);
    const auto window = std::chrono::seconds(5);
    PieceMemory memory(2 * kPiece, PieceMemory::Kind::arenas, window);
    auto destination = memory.reserve(5, kPiece, kPiece);
    ASSERT_TRUE(destination.has_value());
    const bus::ArenaInfo info = *memory.arena(kPiece);
    EXPECT_EQ(destination->range_to_write(0, 0).size(), 0u);  // binds: tags the slot
    const std::uint64_t empty = resident_bytes(info.path);  // the arena's header and tags
    EXPECT_EQ(empty, 8192u);
    auto write_block = [&](std::uint32_t index) {
        auto range = destination->range_to_write(index * kBlockSize, kBlockSize);
        std::memcpy(range.data(), block.data(), block.size());
    };
    write_block(0);
    EXPECT_EQ(resident_bytes(info.path), empty + 65536);  // a chunk: 1/16 of the piece
    for (std::uint32_t index = 1; index < 4; ++index) write_block(index);
    EXPECT_EQ(resident_bytes(info.path), empty + 65536);
    write_block(4);
    EXPECT_EQ(resident_bytes(info.path), empty + 2 * 65536);
    for (std::uint32_t index = 5; index < kPiece / kBlockSize; ++index) write_block(index);
    memory.delivered(5);
    bus::v1::SlotsFreed freed;
    freed.set_arena_id(info.id);
    freed.add_lease_ids(5);
    EXPECT_EQ(memory.free_delivered(freed), 1u);
    EXPECT_EQ(resident_bytes(info.path), empty + kPiece);  // kept for the next piece

    // The first window starts at the first trim; the slot is free all through the second.
    const auto start = std::chrono::steady_clock::now();
    memory.trim(start);
    memory.trim(start + window);
    EXPECT_EQ(resident_bytes(info.path), empty + kPiece);
    memory.trim(start + window + window / 2);
    EXPECT_EQ(resident_bytes(info.path), empty + kPiece);
    memory.trim(start + 2 * window);
    EXPECT_EQ(resident_bytes(info.path), empty);
    EXPECT_EQ(memory.resident_bound(), 0u);

    // A lease that ends before delivery gives back what its empty slot took.
    auto again = memory.reserve(7, kPiece, kPiece);
    ASSERT_TRUE(again.has_value());
    const auto range = again->range_to_write(0, kBlockSize);
    std::memcpy(range.data(), block.data(), block.size());
    EXPECT_EQ(resident_bytes(info.path), empty + 65536);
    memory.release(7);
    EXPECT_EQ(resident_bytes(info.path), empty);
}

// A slot that was used during a window is not spare: a worker whose pieces come and go keeps
// its pages through any number of trims.
TEST(PieceMemory, SlotsInUseOverAWindowAreNotTrimmed) {
    const auto window = std::chrono::seconds(5);
    PieceMemory memory(3 * 65536, PieceMemory::Kind::arenas, window);
    auto now = std::chrono::steady_clock::now();
    std::vector<std::uint32_t> bound;
    for (std::uint64_t lease = 1; lease <= 6; ++lease) {
        memory.trim(now);
        auto destination = memory.reserve(lease, 65536, 65536);
        ASSERT_TRUE(destination.has_value());
        bus::PieceArena& slots = *memory.arena_slots(65536);
        (void)destination->range_to_write(0, kBlockSize);  // binds
        const auto slot = memory.slot_of(lease).value();
        // The first piece finds no resident slot; every later one takes the one freed last.
        EXPECT_EQ(slots.resident(slot), lease > 1) << lease;
        memory.trim(now);
        memory.delivered(lease);
        bus::v1::SlotsFreed freed;
        freed.set_arena_id(slots.info().id);
        freed.add_lease_ids(lease);
        EXPECT_EQ(memory.free_delivered(freed), 1u);
        bound.push_back(slot);
        now += window;
    }
    EXPECT_TRUE(std::all_of(bound.begin(), bound.end(), [&](auto s) { return s == bound[0]; }));
}

// The budget grows with the peers sending pieces, within the first budget and the ceiling;
// the arena has slots for the ceiling from the start, so a grown budget's leases always bind.
TEST(PieceMemory, TheBudgetMovesBetweenItsFloorAndCeiling) {
    PieceMemory memory(2 * 65536, PieceMemory::Kind::arenas, PieceMemory::kTrimWindow, 4 * 65536);
    EXPECT_EQ(memory.room(65536), 2u);
    memory.set_budget(10 * 65536);  // clamped to the ceiling
    EXPECT_EQ(memory.budget(), 4u * 65536);
    for (std::uint64_t lease = 1; lease <= 4; ++lease) {
        auto destination = memory.reserve(lease, 65536, 65536);
        ASSERT_TRUE(destination.has_value()) << lease;
        (void)destination->range_to_write(0, kBlockSize);  // binds: never fails
    }
    EXPECT_FALSE(memory.reserve(5, 65536, 65536).has_value());
    EXPECT_EQ(memory.arena_slots(65536)->info().slot_count, 4u);
    memory.set_budget(0);  // back to the floor: nothing new until the held fit
    EXPECT_EQ(memory.budget(), 2u * 65536);
    EXPECT_EQ(memory.room(65536), 0u);
    memory.release(1);
    memory.release(2);
    memory.release(3);
    EXPECT_EQ(memory.room(65536), 1u);
}

TEST(PieceMemory, NoFreeSlotRefusesTheLease) {
    PieceMemory memory(2 * 16384, PieceMemory::Kind::arenas);
    EXPECT_TRUE(memory.reserve(1, 16384, 16384).has_value());
    EXPECT_TRUE(memory.reserve(2, 16384, 16384).has_value());
    EXPECT_EQ(memory.room(16384), 0u);
    EXPECT_FALSE(memory.reserve(3, 16384, 16384).has_value());
    EXPECT_EQ(memory.arena(16384)->slot_count, 2u);
}

// Leases requested ahead whose bytes never began to come touch no slot; the slot a piece
// gets is the one given back last, already in memory, so the arena's resident size follows
// the pieces actually being written rather than the cap.
TEST(PieceMemory, SlotsAreTakenByArrivingBytesAndReusedLastFreedFirst) {
    PieceMemory memory(3 * 16384, PieceMemory::Kind::arenas);
    auto first = memory.reserve(1, 16384, 16384);
    auto second = memory.reserve(2, 16384, 16384);
    auto third = memory.reserve(3, 16384, 16384);
    ASSERT_TRUE(first && second && third);
    bus::PieceArena& slots = *memory.arena_slots(16384);
    const std::uint64_t id = memory.arena(16384)->id;
    EXPECT_EQ(memory.room(16384), 0u);
    EXPECT_FALSE(memory.reserve(4, 16384, 16384).has_value());
    const std::uint8_t* written = second->bytes().data();
    EXPECT_EQ(slots.free_slots(), 2u);
    memory.delivered(2);
    EXPECT_EQ(memory.free_delivered(slots_freed(id, {2})), 1u);
    memory.release(3);  // cancelled before a byte came
    auto fourth = memory.reserve(4, 16384, 16384);
    ASSERT_TRUE(fourth);
    EXPECT_EQ(fourth->bytes().data(), written);
}

TEST(PieceMemory, DeliveredSlotsStayTakenUntilSlotsFreed) {
    PieceMemory memory(4 * 16384, PieceMemory::Kind::arenas);
    for (std::uint64_t lease = 1; lease <= 3; ++lease) {
        auto destination = memory.reserve(lease, 16384, 16384);
        ASSERT_TRUE(destination);
        (void)destination->bytes();  // its blocks arrived
    }
    bus::PieceArena& slots = *memory.arena_slots(16384);
    const std::uint64_t id = memory.arena(16384)->id;
    memory.delivered(1);
    memory.delivered(2);
    memory.delivered(3);
    EXPECT_EQ(memory.delivered_count(), 3u);
    EXPECT_EQ(memory.room(16384), 1u);
    const auto slot_of_1 = memory.slot_of(1);
    ASSERT_TRUE(slot_of_1.has_value());
    EXPECT_EQ(slots.tag(*slot_of_1), 1u);
    memory.release(1);  // a delivered piece is not the lease's to give back any more
    EXPECT_EQ(slots.tag(*slot_of_1), 1u);

    // Another arena's message, and unknown leases, free nothing.
    EXPECT_EQ(memory.free_delivered(slots_freed(id + 1, {1})), 0u);
    EXPECT_EQ(memory.free_delivered(slots_freed(id, {42})), 0u);
    EXPECT_EQ(memory.room(16384), 1u);

    EXPECT_EQ(memory.free_delivered(slots_freed(id, {1, 42})), 1u);
    EXPECT_EQ(slots.tag(*slot_of_1), 0u);
    EXPECT_EQ(memory.room(16384), 2u);
    EXPECT_EQ(memory.free_delivered(slots_freed(id, {1})), 0u);  // once

    // all_delivered: the verifier or writer died; its arena id does not matter.
    auto fourth = memory.reserve(4, 16384, 16384);
    ASSERT_TRUE(fourth);
    (void)fourth->bytes();
    EXPECT_EQ(memory.free_delivered(slots_freed(0, {}, true)), 2u);
    EXPECT_EQ(memory.delivered_count(), 0u);
    EXPECT_EQ(memory.room(16384), 3u);  // the undelivered lease keeps its slot
    EXPECT_TRUE(memory.slot_of(4).has_value());
}

TEST(PieceMemory, BuffersCountAgainstTheCapUntilDelivered) {
    PieceMemory memory(100000, PieceMemory::Kind::buffers);
    auto first = memory.reserve(1, 65536, 65536);
    ASSERT_TRUE(first.has_value());
    EXPECT_EQ(memory.arena(65536), nullptr);
    EXPECT_EQ(first->take_owned().size(), 65536u);
    EXPECT_FALSE(memory.slot_of(1).has_value());
    EXPECT_FALSE(memory.reserve(2, 65536, 65536).has_value());  // over the cap
    EXPECT_EQ(memory.room(16384), 2u);
    memory.delivered(1);  // ZeroMQ's now
    EXPECT_EQ(memory.held_bytes(), 0u);
    ASSERT_TRUE(memory.reserve(2, 65536, 65536).has_value());
    memory.release(2);
    EXPECT_EQ(memory.held_bytes(), 0u);
    EXPECT_EQ(memory.free_delivered(slots_freed(0, {}, true)), 0u);
}

// Writes every byte of a reserved piece, as its blocks would.
void fill_piece(PieceDestination& destination, std::uint8_t value) {
    const std::vector<std::uint8_t> block(kBlockSize, value);
    for (std::uint32_t offset = 0; offset < destination.size(); offset += kBlockSize) {
        const std::uint32_t length = std::min(kBlockSize, destination.size() - offset);
        auto range = destination.range_to_write(offset, length);
        std::memcpy(range.data(), block.data(), length);
    }
}

// Torrents of different piece lengths share one budget: an arena per length, each with as
// many slots as the whole budget holds, and room counted in bytes over all of them.
TEST(PieceMemory, TwoPieceLengthsShareOneBudget) {
    constexpr std::uint32_t kLong = 65536, kShort = 16384;
    PieceMemory memory(4 * kLong, PieceMemory::Kind::arenas);
    EXPECT_EQ(memory.room(kLong), 4u);
    EXPECT_EQ(memory.room(kShort), 16u);
    auto long_piece = memory.reserve(1, kLong, kLong);
    ASSERT_TRUE(long_piece);
    EXPECT_EQ(memory.room(kLong), 3u);  // room shrinks for both lengths
    EXPECT_EQ(memory.room(kShort), 12u);
    std::vector<PieceDestination> short_pieces;
    for (std::uint64_t lease = 10; lease < 22; ++lease) {
        auto destination = memory.reserve(lease, kShort, kShort);
        ASSERT_TRUE(destination) << lease;
        short_pieces.push_back(std::move(*destination));
    }
    EXPECT_EQ(memory.room(kShort), 0u);
    EXPECT_EQ(memory.room(kLong), 0u);
    EXPECT_FALSE(memory.reserve(30, kShort, kShort).has_value());
    EXPECT_FALSE(memory.reserve(31, kLong, kLong).has_value());
    EXPECT_EQ(memory.held_bytes(), 4u * kLong);

    // Two arenas, sized to the whole budget each; slots without pages cost nothing.
    ASSERT_NE(memory.arena(kLong), nullptr);
    ASSERT_NE(memory.arena(kShort), nullptr);
    EXPECT_NE(memory.arena(kLong)->id, memory.arena(kShort)->id);
    EXPECT_EQ(memory.arena(kLong)->slot_count, 4u);
    EXPECT_EQ(memory.arena(kShort)->slot_count, 16u);

    // Freeing the long piece's slot makes room for four short ones.
    fill_piece(*long_piece, 1);
    memory.delivered(1);
    EXPECT_EQ(memory.free_delivered(slots_freed(memory.arena(kLong)->id, {1})), 1u);
    EXPECT_EQ(memory.room(kShort), 4u);
    EXPECT_EQ(memory.room(kLong), 1u);
    // And short leases ending make room for a long one.
    for (std::uint64_t lease = 10; lease < 14; ++lease) memory.release(lease);
    EXPECT_EQ(memory.room(kLong), 2u);
    EXPECT_EQ(memory.room(kShort), 8u);
}

// SlotsFreed names an arena: it frees the delivered slots of that arena only, whatever the
// lease ids it lists; all_delivered frees every arena's.
TEST(PieceMemory, SlotsFreedIsRoutedToTheArenaItNames) {
    PieceMemory memory(8 * 65536, PieceMemory::Kind::arenas);
    auto long_piece = memory.reserve(1, 65536, 65536);
    auto short_piece = memory.reserve(2, 16384, 16384);
    auto other_short = memory.reserve(3, 16384, 16384);
    ASSERT_TRUE(long_piece && short_piece && other_short);
    for (auto* destination : {&*long_piece, &*short_piece, &*other_short}) fill_piece(*destination, 7);
    for (std::uint64_t lease = 1; lease <= 3; ++lease) memory.delivered(lease);
    bus::PieceArena& long_slots = *memory.arena_slots(65536);
    bus::PieceArena& short_slots = *memory.arena_slots(16384);
    const std::uint32_t long_slot = *memory.slot_of(1);
    const std::uint32_t short_slot = *memory.slot_of(2);
    const std::uint64_t long_id = long_slots.info().id;
    const std::uint64_t short_id = short_slots.info().id;

    // The short arena's message names lease 1 too: not its to free.
    EXPECT_EQ(memory.free_delivered(slots_freed(short_id, {1, 2})), 1u);
    EXPECT_EQ(short_slots.tag(short_slot), 0u);
    EXPECT_EQ(long_slots.tag(long_slot), 1u);
    EXPECT_EQ(memory.free_delivered(slots_freed(long_id, {1})), 1u);
    EXPECT_EQ(long_slots.tag(long_slot), 0u);
    EXPECT_EQ(memory.delivered_count(), 1u);
    EXPECT_EQ(memory.free_delivered(slots_freed(0, {}, true)), 1u);
    EXPECT_EQ(memory.delivered_count(), 0u);
    EXPECT_EQ(memory.held_bytes(), 0u);
}

// Fast pieces' freed slots keep their pages, but over every arena the slots in use and the
// free ones that kept pages stay within the budget: fresh pages for one length make another
// length's free slots give theirs back, and a retired length gives back all it kept.
TEST(PieceMemory, ResidentPagesStayWithinTheBudgetAcrossArenas) {
    constexpr std::uint32_t kLong = 65536, kShort = 16384;
    constexpr std::uint64_t kBudget = 4 * kLong;
    constexpr std::uint64_t kHeader = 8192;  // each arena's header and tags
    PieceMemory memory(kBudget, PieceMemory::Kind::arenas, std::chrono::hours(1));  // all fast
    const auto free_after_delivery = [&](std::uint64_t lease, std::uint32_t length) {
        memory.delivered(lease);
        EXPECT_EQ(memory.free_delivered(slots_freed(memory.arena(length)->id, {lease})), 1u);
    };
    for (std::uint64_t lease = 1; lease <= 4; ++lease) {
        auto destination = memory.reserve(lease, kLong, kLong);
        ASSERT_TRUE(destination);
        fill_piece(*destination, 1);
    }
    for (std::uint64_t lease = 1; lease <= 4; ++lease) free_after_delivery(lease, kLong);
    const std::string long_path = memory.arena(kLong)->path;
    EXPECT_EQ(resident_bytes(long_path), kHeader + kBudget);  // kept for the next long piece
    EXPECT_EQ(memory.resident_bound(), kBudget);

    std::vector<PieceDestination> short_pieces;
    for (std::uint64_t lease = 10; lease < 26; ++lease) {
        auto destination = memory.reserve(lease, kShort, kShort);
        ASSERT_TRUE(destination) << lease;
        fill_piece(*destination, 2);
        short_pieces.push_back(std::move(*destination));
        const std::string short_path = memory.arena(kShort)->path;
        EXPECT_LE(resident_bytes(long_path) + resident_bytes(short_path), 2 * kHeader + kBudget)
            << lease;
        EXPECT_LE(memory.resident_bound(), memory.resident_cap());
    }
    const std::string short_path = memory.arena(kShort)->path;
    EXPECT_EQ(resident_bytes(long_path), kHeader);  // every long slot gave its pages back
    EXPECT_EQ(resident_bytes(short_path), kHeader + kBudget);

    // The short pieces leave; their slots keep their pages until no torrent fetches short
    // pieces any more.
    for (std::uint64_t lease = 10; lease < 26; ++lease) free_after_delivery(lease, kShort);
    EXPECT_EQ(resident_bytes(short_path), kHeader + kBudget);
    memory.retire(kShort);
    EXPECT_EQ(resident_bytes(short_path), kHeader);
    EXPECT_EQ(memory.resident_bound(), 0u);
}

CompletedPiece finished(std::uint32_t piece, std::uint32_t size, bool with_bytes) {
    CompletedPiece done{PieceIndex{piece}, 100 + piece, size, {}, {}};
    if (with_bytes) done.data.assign(size, static_cast<std::uint8_t>(piece));
    return done;
}

class BatchTest : public ::testing::Test {
protected:
    asio::io_context io;
    std::vector<bus::v1::PieceBatch> sent;
    std::vector<std::vector<std::string>> sent_frames;
    bool would_block = false;
    bool send(OutgoingBatch& batch) {
        if (would_block) return false;
        sent.push_back(batch.envelope.piece_batch());
        auto& frames = sent_frames.emplace_back();
        for (auto& frame : batch.frames) frames.push_back(frame.to_string());
        return true;
    }
    // Turn by turn (no linger), so a test steps through the loop with io.poll().
    PieceBatches batches{io, "peer_worker-1", [this](OutgoingBatch& batch) { return send(batch); },
                         std::chrono::milliseconds(0)};
    static constexpr TorrentId kTorrent{7};
    PieceBatches::Lane& frame_lane = batches.lane(kTorrent, nullptr);
};

TEST_F(BatchTest, PiecesFinishedWithinTheLingerLeaveAsOneBatch) {
    PieceBatches lingering{io, "peer_worker-1", [this](OutgoingBatch& batch) { return send(batch); },
                           std::chrono::milliseconds(50)};
    PieceBatches::Lane& lane = lingering.lane(kTorrent, nullptr);
    lingering.add(lane, finished(0, 5, true), "1.2.3.4:5", std::nullopt);
    io.poll();  // another turn of the loop: the batch waits on
    lingering.add(lane, finished(1, 5, true), "1.2.3.4:5", std::nullopt);
    io.poll();
    EXPECT_TRUE(sent.empty());
    io.run_for(std::chrono::seconds(5));  // returns once the linger timer fired: no other work
    ASSERT_EQ(sent.size(), 1u);
    EXPECT_EQ(sent[0].pieces_size(), 2);
}

TEST_F(BatchTest, PiecesFinishedInOneTurnLeaveAsOneBatchOfFrames) {
    batches.add(frame_lane, finished(0, 5, true), "1.2.3.4:5", std::nullopt);
    batches.add(frame_lane, finished(1, 7, true), "1.2.3.4:5", std::nullopt);
    batches.add(frame_lane, finished(2, 3, true), "[::1]:6", std::nullopt);
    EXPECT_TRUE(sent.empty());  // not before the turn ends
    io.poll();
    ASSERT_EQ(sent.size(), 1u);
    const auto& batch = sent[0];
    EXPECT_EQ(batch.worker(), "peer_worker-1");
    EXPECT_EQ(batch.torrent(), kTorrent.get());
    EXPECT_FALSE(batch.has_arena());
    ASSERT_EQ(batch.pieces_size(), 3);
    EXPECT_EQ(batch.pieces(1).piece(), 1u);
    EXPECT_EQ(batch.pieces(1).lease_id(), 101u);
    EXPECT_EQ(batch.pieces(2).contributors(0), "[::1]:6");
    EXPECT_EQ(sent_frames[0], (std::vector<std::string>{std::string(5, '\0'), std::string(7, '\1'),
                                                         std::string(3, '\2')}));
    // The next turn starts a new batch (made of the last one's emptied messages: nothing of
    // them may remain).
    batches.add(frame_lane, finished(3, 1, true), "1.2.3.4:5", std::nullopt);
    io.restart();
    io.poll();
    ASSERT_EQ(sent.size(), 2u);
    ASSERT_EQ(sent[1].pieces_size(), 1);
    EXPECT_EQ(sent[1].pieces(0).piece(), 3u);
    EXPECT_EQ(sent[1].pieces(0).contributors_size(), 1);
    EXPECT_EQ(sent[1].pieces(0).contributors(0), "1.2.3.4:5");
    EXPECT_EQ(sent[1].worker(), "peer_worker-1");
    EXPECT_EQ(sent_frames[1], (std::vector<std::string>{std::string(1, '\3')}));
}

TEST_F(BatchTest, ArenaBatchesNameTheArenaAndSlotsAndCarryNoFrames) {
    bus::ArenaInfo arena{"/proc/1/fd/3", 77, 65536, 8};
    PieceBatches::Lane& lane = batches.lane(kTorrent, &arena);
    batches.add(lane, finished(0, 65536, false), "1.2.3.4:5", 6);
    batches.add(lane, finished(1, 40000, false), "1.2.3.4:5", 2);
    io.poll();
    ASSERT_EQ(sent.size(), 1u);
    EXPECT_TRUE(sent_frames[0].empty());
    const auto& batch = sent[0];
    EXPECT_EQ(batch.torrent(), kTorrent.get());
    EXPECT_EQ(batch.arena().path(), "/proc/1/fd/3");
    EXPECT_EQ(batch.arena().id(), 77u);
    EXPECT_EQ(batch.arena().slot_size(), 65536u);
    EXPECT_EQ(batch.arena().slot_count(), 8u);
    ASSERT_EQ(batch.pieces_size(), 2);
    EXPECT_EQ(batch.pieces(0).slot(), 6u);
    EXPECT_EQ(batch.pieces(1).slot(), 2u);
    EXPECT_EQ(batch.pieces(1).size(), 40000u);
}

TEST_F(BatchTest, AFullBatchLeavesAtOnce) {
    bus::ArenaInfo arena{"/proc/1/fd/3", 77, 16384, 1024};
    PieceBatches::Lane& lane = batches.lane(kTorrent, &arena);
    for (std::uint32_t i = 0; i <= bus::kMaxBatchPieces; ++i) {
        batches.add(lane, finished(i, 16384, false), "1.2.3.4:5", i);
    }
    ASSERT_EQ(sent.size(), 1u);
    EXPECT_EQ(static_cast<std::size_t>(sent[0].pieces_size()), bus::kMaxBatchPieces);
    io.poll();
    ASSERT_EQ(sent.size(), 2u);
    EXPECT_EQ(sent[1].pieces_size(), 1);
}

TEST_F(BatchTest, FramesStopABatchAtItsByteLimit) {
    constexpr std::uint32_t kPiece = 1u << 20;
    for (std::uint32_t i = 0; i < 5; ++i) batches.add(frame_lane, finished(i, kPiece, true), "1.2.3.4:5", std::nullopt);
    ASSERT_EQ(sent.size(), 1u);
    EXPECT_EQ(static_cast<std::size_t>(sent[0].pieces_size()), bus::kMaxBatchFrameBytes / kPiece);
    io.poll();
    ASSERT_EQ(sent.size(), 2u);
    EXPECT_EQ(sent[1].pieces_size(), 1);
}

TEST_F(BatchTest, BatchesZeroMqWouldNotTakeWaitInOrder) {
    would_block = true;
    batches.add(frame_lane, finished(0, 5, true), "1.2.3.4:5", std::nullopt);
    io.poll();
    EXPECT_TRUE(batches.backpressured());
    batches.add(frame_lane, finished(1, 5, true), "1.2.3.4:5", std::nullopt);
    io.restart();
    io.poll();
    EXPECT_EQ(batches.waiting(), 2u);
    EXPECT_TRUE(sent.empty());
    would_block = false;
    batches.flush();
    EXPECT_FALSE(batches.backpressured());
    ASSERT_EQ(sent.size(), 2u);
    EXPECT_EQ(sent[0].pieces(0).piece(), 0u);
    EXPECT_EQ(sent[1].pieces(0).piece(), 1u);
}

// Each batch names one torrent and at most one arena: pieces of two torrents finished in the
// same turn, even in the same arena, leave as two batches.
TEST_F(BatchTest, BatchesOfTwoTorrentsAreNeverMixed) {
    bus::ArenaInfo arena{"/proc/1/fd/3", 77, 65536, 8};
    bus::ArenaInfo other_arena{"/proc/1/fd/4", 78, 16384, 32};
    constexpr TorrentId kOther{8};
    PieceBatches::Lane& first = batches.lane(kTorrent, &arena);
    PieceBatches::Lane& second = batches.lane(kOther, &arena);
    PieceBatches::Lane& third = batches.lane(kOther, &other_arena);
    EXPECT_EQ(&batches.lane(kTorrent, &arena), &first);  // one lane per (torrent, arena)
    batches.add(first, finished(0, 65536, false), "1.2.3.4:5", 0);
    batches.add(second, finished(1, 65536, false), "1.2.3.4:5", 1);
    batches.add(first, finished(2, 65536, false), "1.2.3.4:5", 2);
    batches.add(third, finished(3, 16384, false), "1.2.3.4:5", 3);
    batches.add(frame_lane, finished(4, 5, true), "1.2.3.4:5", std::nullopt);
    EXPECT_EQ(batches.pieces_filling(), 5u);
    io.poll();
    ASSERT_EQ(sent.size(), 4u);
    std::map<std::pair<std::uint32_t, std::uint64_t>, std::vector<std::uint32_t>> pieces;
    for (std::size_t i = 0; i < sent.size(); ++i) {
        auto& list = pieces[{sent[i].torrent(), sent[i].arena().id()}];
        for (const auto& piece : sent[i].pieces()) list.push_back(piece.piece());
        EXPECT_EQ(sent_frames[i].size(), sent[i].has_arena() ? 0u : 1u);
    }
    EXPECT_EQ(pieces[std::make_pair(7u, std::uint64_t{77})], (std::vector<std::uint32_t>{0, 2}));
    EXPECT_EQ(pieces[std::make_pair(8u, std::uint64_t{77})], (std::vector<std::uint32_t>{1}));
    EXPECT_EQ(pieces[std::make_pair(8u, std::uint64_t{78})], (std::vector<std::uint32_t>{3}));
    EXPECT_EQ(pieces[std::make_pair(7u, std::uint64_t{0})], (std::vector<std::uint32_t>{4}));
}

// A removed torrent's pieces not sent yet, filling or waiting, are dropped (their leases are
// handed back to be freed); the other torrents' batches keep their order.
TEST_F(BatchTest, DroppingATorrentForgetsItsUnsentBatchesOnly) {
    constexpr TorrentId kOther{8};
    PieceBatches::Lane& other = batches.lane(kOther, nullptr);
    would_block = true;
    batches.add(frame_lane, finished(0, 5, true), "1.2.3.4:5", std::nullopt);
    batches.add(other, finished(1, 5, true), "1.2.3.4:5", std::nullopt);
    io.poll();
    EXPECT_EQ(batches.waiting(), 2u);
    batches.add(frame_lane, finished(2, 5, true), "1.2.3.4:5", std::nullopt);  // filling
    std::vector<std::uint64_t> dropped;
    batches.drop_torrent(kTorrent, [&](std::uint64_t lease) { dropped.push_back(lease); });
    std::sort(dropped.begin(), dropped.end());
    EXPECT_EQ(dropped, (std::vector<std::uint64_t>{100, 102}));
    EXPECT_EQ(batches.waiting(), 1u);
    EXPECT_EQ(batches.pieces_filling(), 0u);
    would_block = false;
    io.restart();
    io.poll();  // the dropped lane's scheduled turn finds nothing
    batches.flush();
    ASSERT_EQ(sent.size(), 1u);
    EXPECT_EQ(sent[0].torrent(), kOther.get());
    EXPECT_EQ(sent[0].pieces(0).piece(), 1u);
}

TEST(Pipeline, DepthGrowsWithRateAndIsCapped) {
    EXPECT_EQ(PipelineSizer::depth_for(0, Clock::duration::max()), PipelineSizer::kMinDepth);
    const double slow = 16.0 * kBlockSize;    // 16 blocks/s
    const double fast = 2000.0 * kBlockSize;  // 2000 blocks/s
    EXPECT_EQ(PipelineSizer::depth_for(slow, 1ms), PipelineSizer::kMinDepth);
    EXPECT_EQ(PipelineSizer::depth_for(200.0 * kBlockSize, 1ms), 50u);  // 0.25 s horizon
    EXPECT_EQ(PipelineSizer::depth_for(200.0 * kBlockSize, 200ms), 130u);  // 0.25 s + 2 x RTT
    EXPECT_EQ(PipelineSizer::depth_for(200.0 * kBlockSize, 300ms), 170u);  // longer RTT
    EXPECT_EQ(PipelineSizer::depth_for(200.0 * kBlockSize, 3s), 200u);  // horizon capped at 1 s
    EXPECT_EQ(PipelineSizer::depth_for(fast, 1ms), PipelineSizer::kMaxDepth);
}

TEST(Pipeline, MeasuredRateMovesTheDepthGradually) {
    auto now = Clock::now();
    PipelineSizer sizer(now);
    EXPECT_EQ(sizer.depth(), PipelineSizer::kInitialDepth);
    // A fast peer: 2000 blocks per second. The depth at most doubles per window.
    for (int second = 0; second < 6; ++second) {
        for (int i = 0; i < 2000; ++i) sizer.on_block(kBlockSize, 2ms, now);
        now += 1s;
        const auto before = sizer.depth();
        sizer.update(now);
        EXPECT_LE(sizer.depth(), std::min(2 * before, PipelineSizer::kMaxDepth));
        EXPECT_GE(sizer.depth(), before);
    }
    EXPECT_EQ(sizer.depth(), PipelineSizer::kMaxDepth);
    // An idle window leaves it alone.
    now += 1s;
    sizer.update(now);
    EXPECT_EQ(sizer.depth(), PipelineSizer::kMaxDepth);
    // Then slow: it shrinks, not below the floor.
    for (int second = 0; second < 10; ++second) {
        sizer.on_block(kBlockSize, 2ms, now);
        now += 1s;
        sizer.update(now);
    }
    EXPECT_EQ(sizer.depth(), PipelineSizer::kMinDepth);
}


TEST(Pipeline, ADistantPeerRampsUpInWindowsOfTwoRoundTrips) {
    auto now = Clock::now();
    PipelineSizer sizer(now);
    now += 700ms;  // handshake and unchoke: no block yet, which says nothing of the peer
    sizer.update(now);
    // 200 ms round trips; the peer sends what we keep in flight, up to 4 MiB/s (51 blocks
    // per round trip).
    const auto window_of_blocks = [&] {
        const std::uint32_t per_trip = std::min<std::uint32_t>(sizer.depth(), 51);
        for (int trip = 0; trip < 2; ++trip) {
            now += 200ms;
            for (std::uint32_t i = 0; i < per_trip; ++i) sizer.on_block(kBlockSize, 200ms, now);
        }
        sizer.update(now);
    };
    window_of_blocks();
    EXPECT_EQ(sizer.depth(), 2 * PipelineSizer::kInitialDepth);  // doubled after 0.4 s
    window_of_blocks();
    EXPECT_GE(sizer.depth(), 100u);  // 4 MiB/s x 2 round trips, after 0.8 s
    EXPECT_TRUE(sizer.ramping());
    // The rate no longer grows: the depth goes to what that rate needs, holds for
    // kRampFlatWindows windows, and the ramp ends (then 1 s windows, smoothed rates).
    const auto needed = PipelineSizer::depth_for(51.0 * kBlockSize / 0.2, 200ms);
    int windows = 0;
    while (sizer.ramping() && windows < 10) {
        window_of_blocks();
        ++windows;
        EXPECT_LE(sizer.depth(), needed);
    }
    EXPECT_FALSE(sizer.ramping());
    EXPECT_LE(windows, PipelineSizer::kRampFlatWindows + 1);
    EXPECT_EQ(sizer.depth(), needed);
    const auto depth = sizer.depth();
    window_of_blocks();  // 0.4 s: not a window any more
    EXPECT_EQ(sizer.depth(), depth);
}

TEST(Pipeline, ABurstySeederDoesNotEndTheRampAtItsFirstShortWindow) {
    auto now = Clock::now();
    PipelineSizer sizer(now);
    // 200 ms away, hands out its quota in bursts: a window with half what we keep in flight.
    const auto window_of = [&](std::uint32_t blocks) {
        now += 200ms;
        for (std::uint32_t i = 0; i < blocks; ++i) sizer.on_block(kBlockSize, 200ms, now);
        now += 200ms;
        sizer.update(now);
    };
    window_of(2 * PipelineSizer::kInitialDepth);
    EXPECT_EQ(sizer.depth(), 2 * PipelineSizer::kInitialDepth);
    window_of(PipelineSizer::kInitialDepth);  // the short one
    EXPECT_TRUE(sizer.ramping());
    EXPECT_EQ(sizer.depth(), 2 * PipelineSizer::kInitialDepth);
    window_of(4 * PipelineSizer::kInitialDepth);  // the depth was holding it back after all
    EXPECT_TRUE(sizer.ramping());
    EXPECT_EQ(sizer.depth(), 4 * PipelineSizer::kInitialDepth);
}

TEST(Pipeline, ASlowPeerLeavesTheRampAfterItsFlatWindowsWithoutDeepening) {
    auto now = Clock::now();
    PipelineSizer sizer(now);
    // 512 KiB/s close by: 8 blocks in a quarter second, a quarter of the pipeline.
    for (int w = 0; w < PipelineSizer::kRampFlatWindows; ++w) {
        EXPECT_TRUE(sizer.ramping());
        for (int i = 0; i < 8; ++i) sizer.on_block(kBlockSize, 5ms, now + 5ms);
        now += 250ms;
        sizer.update(now);
        EXPECT_LE(sizer.depth(), PipelineSizer::kInitialDepth);  // never deeper than it started
    }
    EXPECT_FALSE(sizer.ramping());
    EXPECT_EQ(sizer.depth(), PipelineSizer::kInitialDepth / 2);
}

TEST(Pipeline, ASlowFirstWindowDoesNotEndTheRamp) {
    auto now = Clock::now();
    PipelineSizer sizer(now);
    // 200 ms away, the first window after unchoke brings 320 KiB/s, the next 2.5 MiB/s.
    for (int i = 0; i < 8; ++i) sizer.on_block(kBlockSize, 200ms, now + 200ms);
    now += 400ms;
    sizer.update(now);
    EXPECT_TRUE(sizer.ramping());
    EXPECT_EQ(sizer.depth(), PipelineSizer::kInitialDepth);
    for (int i = 0; i < 64; ++i) sizer.on_block(kBlockSize, 200ms, now + 200ms);
    now += 400ms;
    sizer.update(now);
    EXPECT_TRUE(sizer.ramping());
    EXPECT_EQ(sizer.depth(), 2 * PipelineSizer::kInitialDepth);
}

TEST(Pipeline, TheHandshakesRoundTripSizesTheFirstRequests) {
    const auto now = Clock::now();
    PipelineSizer far(now);
    far.expect_round_trip(200ms);  // 2 MiB/s over 0.25 s + 2 x 200 ms
    EXPECT_EQ(far.depth(), 83u);
    EXPECT_TRUE(far.ramping());
    PipelineSizer near(now);
    near.expect_round_trip(1ms);
    EXPECT_EQ(near.depth(), PipelineSizer::kInitialDepth);
    PipelineSizer measured(now);
    measured.on_block(kBlockSize, 5ms, now + 5ms);
    measured.expect_round_trip(200ms);  // a block's latency says more
    EXPECT_EQ(measured.depth(), PipelineSizer::kInitialDepth);
}

TEST(Pipeline, AFullPipelineHoldsTwiceItsDepthInWholePiecesAndOneMore) {
    const auto now = Clock::now();
    // 32 blocks deep: 64 blocks leased (a request is at least kMinRequestBlocks).
    const PeerSession big{PieceGeometry{64ull << 20, 1 << 20}, digest_of(0xAB), id_of(1), now};
    EXPECT_EQ(big.pieces_held_when_full(), 2u);  // one piece of 64 blocks, one more
    const PeerSession small{PieceGeometry{64ull << 20, 64 << 10}, digest_of(0xAB), id_of(1), now};
    EXPECT_EQ(small.pieces_held_when_full(), 17u);  // 64 blocks in pieces of 4, one more
}

// --- a torrent known by its info-hash alone (magnets): BEP 10 and BEP 9 ---

class MagnetSessionTest : public ::testing::Test {
protected:
    Clock::time_point t0 = Clock::now();
    std::string metadata = std::string(40'000, 'm');
    PeerSession session{PieceGeometry{}, digest_of(0xAB), id_of(1), t0};

    void handshake(bool extended = true) {
        wire::Handshake theirs;
        theirs.info_hash = digest_of(0xAB);
        theirs.peer_id = id_of(2);
        theirs.set_fast();
        if (extended) ext::advertise_extension_protocol(theirs.reserved);
        ASSERT_TRUE(session.on_handshake(theirs, t0).ok());
    }

    // Their extended handshake: ut_metadata under id 3, and metadata_size when given.
    Status their_handshake(std::optional<std::uint32_t> size) {
        ext::ExtendedHandshake theirs;
        theirs.extensions["ut_metadata"] = 3;
        theirs.extensions["ut_pex"] = 4;
        theirs.metadata_size = size;
        return extended(0, ext::encode_handshake(theirs));
    }

    Status extended(std::uint8_t id, const std::string& payload) {
        std::vector<std::uint8_t> body{id};
        body.insert(body.end(), payload.begin(), payload.end());
        return session.on_message(wire::Extended{body}, t0);
    }

    // The extended messages queued for the peer, decoded by their id as the peer reads them.
    std::vector<std::pair<std::uint8_t, std::string>> sent_extended() {
        std::vector<std::pair<std::uint8_t, std::string>> out;
        for (const auto& m : only<wire::Extended>(sent_messages(session))) {
            out.emplace_back(m.body[0], std::string(m.body.begin() + 1, m.body.end()));
        }
        return out;
    }
};

TEST_F(MagnetSessionTest, SaysHaveNoneAndItsExtensionsThenAsksForMetadata) {
    handshake();
    EXPECT_TRUE(session.awaiting_info());
    EXPECT_TRUE(session.extended());
    const auto messages = sent_messages(session);
    EXPECT_EQ(only<wire::HaveNone>(messages).size(), 1u);
    const auto ours = only<wire::Extended>(messages);
    ASSERT_EQ(ours.size(), 1u);
    ASSERT_EQ(ours[0].body[0], 0);  // the extended handshake
    const std::string payload(ours[0].body.begin() + 1, ours[0].body.end());
    auto decoded = ext::decode_handshake(payload);
    ASSERT_TRUE(decoded.ok());
    EXPECT_EQ(decoded->id_of("ut_metadata"), ext::kOurUtMetadataId);
    EXPECT_FALSE(decoded->metadata_size.has_value());  // we have none to give
    EXPECT_FALSE(session.metadata_size_offered().has_value());
    ASSERT_TRUE(their_handshake(40'000).ok());
    EXPECT_EQ(session.metadata_size_offered(), 40'000u);
    EXPECT_TRUE(session.request_metadata(1, t0));
    const auto requests = sent_extended();
    ASSERT_EQ(requests.size(), 1u);
    EXPECT_EQ(requests[0].first, 3);  // under the id it asked for
    EXPECT_EQ(requests[0].second, ext::encode_metadata_request(1));
    // Its answer is kept for the worker; an answer to a piece we never asked for is not.
    ASSERT_TRUE(extended(ext::kOurUtMetadataId, ext::encode_metadata_data(1, 40'000, std::string(16384, 'x'))).ok());
    ASSERT_TRUE(extended(ext::kOurUtMetadataId, ext::encode_metadata_data(2, 40'000, std::string(7232, 'x'))).ok());
    ASSERT_EQ(session.metadata_replies().size(), 1u);
    EXPECT_EQ(session.metadata_replies()[0].piece, 1u);
    EXPECT_EQ(session.metadata_replies()[0].data.size(), 16384u);
}

TEST_F(MagnetSessionTest, WhatThePeerHasIsKeptUntilTheInfoThenReplayed) {
    handshake();
    (void)sent_messages(session);
    const std::vector<std::uint8_t> bits{0b1010'0000, 0b0100'0000};  // pieces 0, 2, 9
    ASSERT_TRUE(session.on_message(wire::Bitfield{bits}, t0).ok());
    ASSERT_TRUE(session.on_message(wire::Have{PieceIndex{5}}, t0).ok());
    EXPECT_FALSE(session.peer_is_seed());
    EXPECT_FALSE(session.take_has_report(true).has_value());  // nothing to say before the info
    // A request before we announced anything is rejected, not an error.
    ASSERT_TRUE(session.on_message(wire::Request{PieceIndex{0}, BlockOffset{0}, BlockLength{16384}}, t0).ok());
    EXPECT_EQ(only<wire::RejectRequest>(sent_messages(session)).size(), 1u);
    const PieceGeometry geometry{9ull * 65536 + 40000, 65536};  // 10 pieces
    LocalPieces ours(geometry.piece_count());
    ASSERT_TRUE(session.learn_info(geometry, &ours, t0).ok());
    EXPECT_FALSE(session.awaiting_info());
    EXPECT_TRUE(session.peer_has(PieceIndex{0}));
    EXPECT_TRUE(session.peer_has(PieceIndex{5}));
    EXPECT_TRUE(session.peer_has(PieceIndex{9}));
    EXPECT_FALSE(session.peer_has(PieceIndex{1}));
    EXPECT_TRUE(session.am_interested());
    EXPECT_EQ(only<wire::Interested>(sent_messages(session)).size(), 1u);
    const auto report = session.take_has_report(true);
    ASSERT_TRUE(report.has_value());
    ASSERT_TRUE(report->bitfield.has_value());
    EXPECT_EQ(*report->bitfield, (std::vector<std::uint8_t>{0b1010'0100, 0b0100'0000}));
}

TEST_F(MagnetSessionTest, ABitfieldThatDoesNotFitTheInfoDropsThePeer) {
    handshake();
    const std::vector<std::uint8_t> bits{0xFF, 0xFF, 0xFF};
    ASSERT_TRUE(session.on_message(wire::Bitfield{bits}, t0).ok());
    LocalPieces ours(10);
    EXPECT_FALSE(session.learn_info(PieceGeometry{9ull * 65536 + 40000, 65536}, &ours, t0).ok());
}

TEST_F(MagnetSessionTest, APeerWithoutTheExtensionProtocolSpeaksNone) {
    handshake(false);
    EXPECT_FALSE(session.extended());
    EXPECT_TRUE(only<wire::Extended>(sent_messages(session)).empty());
    EXPECT_FALSE(session.request_metadata(0, t0));
}

TEST_F(MagnetSessionTest, OurMetadataIsServedBoundedAndRefusedWhenWeHaveNone) {
    PieceGeometry geometry{9ull * 65536 + 40000, 65536};
    LocalPieces ours(geometry.piece_count());
    PeerSession seeding{geometry, digest_of(0xAB), id_of(1), t0, SessionLimits{}, &ours};
    ExtensionOffer offer;
    offer.metadata = &metadata;
    offer.listen_port = 6881;
    seeding.set_extension_offer(offer);
    wire::Handshake theirs;
    theirs.info_hash = digest_of(0xAB);
    theirs.peer_id = id_of(2);
    ext::advertise_extension_protocol(theirs.reserved);
    ASSERT_TRUE(seeding.on_handshake(theirs, t0).ok());
    const auto first = only<wire::Extended>(sent_messages(seeding));
    ASSERT_EQ(first.size(), 1u);
    auto decoded = ext::decode_handshake(std::string(first[0].body.begin() + 1, first[0].body.end()));
    ASSERT_TRUE(decoded.ok());
    EXPECT_EQ(decoded->metadata_size, 40'000u);
    EXPECT_EQ(decoded->listen_port, 6881);
    const auto send = [&](std::uint8_t id, const std::string& payload) {
        std::vector<std::uint8_t> body{id};
        body.insert(body.end(), payload.begin(), payload.end());
        return seeding.on_message(wire::Extended{body}, t0);
    };
    ext::ExtendedHandshake handshake;
    handshake.extensions["ut_metadata"] = 7;
    ASSERT_TRUE(send(0, ext::encode_handshake(handshake)).ok());
    ASSERT_TRUE(send(ext::kOurUtMetadataId, ext::encode_metadata_request(2)).ok());
    ASSERT_TRUE(send(ext::kOurUtMetadataId, ext::encode_metadata_request(3)).ok());  // beyond the end
    auto answers = only<wire::Extended>(sent_messages(seeding));
    ASSERT_EQ(answers.size(), 2u);
    EXPECT_EQ(answers[0].body[0], 7);
    EXPECT_EQ(std::string(answers[0].body.begin() + 1, answers[0].body.end()),
              ext::answer_metadata_request(metadata, 2));
    EXPECT_EQ(std::string(answers[1].body.begin() + 1, answers[1].body.end()), ext::encode_metadata_reject(3));
    // A peer asking again and again is refused past a few times the whole.
    for (int i = 0; i < 40; ++i) ASSERT_TRUE(send(ext::kOurUtMetadataId, ext::encode_metadata_request(0)).ok());
    answers = only<wire::Extended>(sent_messages(seeding));
    const auto rejects = std::count_if(answers.begin(), answers.end(), [](const wire::Extended& m) {
        return std::string(m.body.begin() + 1, m.body.end()) == ext::encode_metadata_reject(0);
    });
    EXPECT_GT(rejects, 25);
    EXPECT_LE(seeding.metadata_pieces_served(), 12u);
    // A malformed extended message drops the peer.
    EXPECT_FALSE(send(ext::kOurUtMetadataId, "not bencode").ok());
}

TEST_F(MagnetSessionTest, PeerExchangeOnceAMinuteWithWhoCameAndWhoLeft) {
    handshake();
    (void)sent_messages(session);
    const auto pex_peer = [](const std::string& ip, std::uint16_t port) {
        ext::PexPeer peer;
        peer.address = {ip, port};
        return peer;
    };
    EXPECT_FALSE(session.pex_due(t0));  // it has not said it takes ut_pex
    ASSERT_TRUE(their_handshake(std::nullopt).ok());
    ASSERT_TRUE(session.pex_due(t0));
    ASSERT_TRUE(session.tell_pex({pex_peer("10.0.0.1", 1000), pex_peer("10.0.0.2", 2000)}, t0));
    auto sent = sent_extended();
    ASSERT_EQ(sent.size(), 1u);
    EXPECT_EQ(sent[0].first, 4);  // its ut_pex id
    auto first = ext::decode_pex(sent[0].second);
    ASSERT_TRUE(first.ok());
    EXPECT_EQ(first->added.size(), 2u);
    EXPECT_TRUE(first->dropped.empty());
    // Not again within the minute.
    EXPECT_FALSE(session.tell_pex({pex_peer("10.0.0.3", 3000)}, t0 + 30s));
    // Then only the change: one came, one left.
    ASSERT_TRUE(session.tell_pex({pex_peer("10.0.0.2", 2000), pex_peer("10.0.0.3", 3000)}, t0 + 61s));
    auto second = ext::decode_pex(sent_extended().at(0).second);
    ASSERT_TRUE(second.ok());
    ASSERT_EQ(second->added.size(), 1u);
    EXPECT_EQ(second->added[0].address, (tracker::PeerAddress{"10.0.0.3", 3000}));
    ASSERT_EQ(second->dropped.size(), 1u);
    EXPECT_EQ(second->dropped[0], (tracker::PeerAddress{"10.0.0.1", 1000}));
    // Nothing changed: nothing sent.
    EXPECT_FALSE(session.tell_pex({pex_peer("10.0.0.2", 2000), pex_peer("10.0.0.3", 3000)}, t0 + 130s));
}

TEST_F(MagnetSessionTest, ItsPeerExchangeIsTakenAtMostTwiceAMinute) {
    handshake();
    ext::PexMessage message;
    message.added.push_back(ext::PexPeer{{"10.0.0.9", 9000}, 0});
    auto payload = ext::encode_pex(message);
    ASSERT_TRUE(payload.ok());
    ASSERT_TRUE(extended(ext::kOurUtPexId, *payload).ok());
    EXPECT_TRUE(session.take_pex().has_value());
    ASSERT_TRUE(extended(ext::kOurUtPexId, *payload).ok());  // again at once: not taken
    EXPECT_FALSE(session.take_pex().has_value());
}

TEST_F(MagnetSessionTest, WithADhtNodeTheBitIsSetAndPeersThatSetItGetOurPort) {
    ExtensionOffer offer;
    offer.dht_port = 6999;
    session.set_extension_offer(offer);
    session.send_handshake(t0);
    std::array<std::uint8_t, wire::kHandshakeSize> bytes{};
    std::copy_n(session.outgoing().begin(), bytes.size(), bytes.begin());
    session.outgoing().clear();
    auto ours = wire::decode_handshake(bytes);
    ASSERT_TRUE(ours.ok());
    EXPECT_TRUE(ours->supports_dht());
    wire::Handshake theirs;
    theirs.info_hash = digest_of(0xAB);
    theirs.peer_id = id_of(2);
    theirs.reserved[7] = 0x01;
    ASSERT_TRUE(session.on_handshake(theirs, t0).ok());
    const auto ports = only<wire::Port>(sent_messages(session));
    ASSERT_EQ(ports.size(), 1u);
    EXPECT_EQ(ports[0].port, 6999);
    // Its own port message goes up once.
    ASSERT_TRUE(session.on_message(wire::Port{7001}, t0).ok());
    ASSERT_TRUE(session.on_message(wire::Port{7002}, t0).ok());
    EXPECT_EQ(session.take_dht_port(), std::optional<std::uint16_t>(7001));
    EXPECT_FALSE(session.take_dht_port().has_value());
}

}  // namespace
}  // namespace pw::peer_worker
