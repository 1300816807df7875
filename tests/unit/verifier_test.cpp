// The verifier: the pure piece check, the batch data path (frames and arenas), and the whole
// stage loop.
#include <chrono>
#include <cstring>
#include <span>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include <sys/signalfd.h>
#include <unistd.h>

#include <csignal>

#include <gtest/gtest.h>

#include "stage_harness.hpp"
#include "test_torrents.hpp"
#include "core/bus/piece_arena.hpp"
#include "verifier/piece_check.hpp"
#include "verifier/piece_forwarder.hpp"
#include "verifier/verifier_stage.hpp"

namespace pw::verifier {
namespace {

using namespace std::chrono_literals;
using test::make_torrent;
using test::TestTorrent;

std::span<const std::uint8_t> as_bytes(const std::string& s) {
    return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

// 3 pieces of 16 KiB and a short last one of 1000 bytes.
TestTorrent sample_torrent() { return make_torrent("sample.bin", 16384, {}, 3 * 16384 + 1000); }

// One hasher for many pieces gives what one-off digests give, whatever came before.
TEST(Sha1Hasher, ReusedAgreesWithOneOffDigests) {
    Sha1Hasher hasher;
    for (const std::string& data : {std::string(), std::string("abc"), std::string(16384, 'x'),
                                    std::string("abc")}) {
        EXPECT_EQ(hasher.digest(data.data(), data.size()), sha1(data)) << data.size();
    }
    EXPECT_EQ(to_hex(hasher.digest("abc", 3)), "a9993e364706816aba3e25717850c26c9cd0d89d");
}

TEST(CheckPiece, GoodPiecePasses) {
    Sha1Hasher hasher;
    const TestTorrent t = sample_torrent();
    EXPECT_TRUE(check_piece(t.torrent, 0, as_bytes(t.piece(0)), hasher).ok());
    EXPECT_TRUE(check_piece(t.torrent, 2, as_bytes(t.piece(2)), hasher).ok());
}

TEST(CheckPiece, ShortLastPiecePasses) {
    Sha1Hasher hasher;
    const TestTorrent t = sample_torrent();
    ASSERT_EQ(t.piece(3).size(), 1000u);
    EXPECT_TRUE(check_piece(t.torrent, 3, as_bytes(t.piece(3)), hasher).ok());
}

TEST(CheckPiece, BadPieceFails) {
    Sha1Hasher hasher;
    const TestTorrent t = sample_torrent();
    std::string corrupt = t.piece(1);
    corrupt[5000] ^= 1;
    const Status status = check_piece(t.torrent, 1, as_bytes(corrupt), hasher);
    ASSERT_FALSE(status.ok());
    EXPECT_NE(status.error().message.find("hash mismatch"), std::string::npos);
    // Another piece's good bytes are not this piece.
    EXPECT_FALSE(check_piece(t.torrent, 1, as_bytes(t.piece(0)), hasher).ok());
}

TEST(CheckPiece, WrongSizeFails) {
    Sha1Hasher hasher;
    const TestTorrent t = sample_torrent();
    const std::string piece = t.piece(0);
    EXPECT_FALSE(check_piece(t.torrent, 0, as_bytes(piece.substr(0, 16383)), hasher).ok());
    EXPECT_FALSE(check_piece(t.torrent, 0, as_bytes(piece + "x"), hasher).ok());
    EXPECT_FALSE(check_piece(t.torrent, 3, as_bytes(t.piece(0)), hasher).ok());  // full size for the short one
    EXPECT_FALSE(check_piece(t.torrent, 0, {}, hasher).ok());
}

TEST(CheckPiece, IndexOutOfRangeFails) {
    Sha1Hasher hasher;
    const TestTorrent t = sample_torrent();
    const Status status = check_piece(t.torrent, 4, as_bytes(t.piece(3)), hasher);
    ASSERT_FALSE(status.ok());
    EXPECT_NE(status.error().message.find("does not exist"), std::string::npos);
    EXPECT_FALSE(check_piece(t.torrent, 0xffffffffu, as_bytes(t.piece(0)), hasher).ok());
}

// --- the data path: batches in, one batch and one report out ---

Torrents torrents_of(const TestTorrent& t) {
    Torrents torrents;
    torrents.emplace(test::kTestTorrent, t.torrent);
    return torrents;
}

using Reports = std::vector<v1::Envelope>;

// The reports of one kind, in the order they came.
std::vector<const v1::Envelope*> of_kind(const Reports& reports, v1::Envelope::BodyCase kind) {
    std::vector<const v1::Envelope*> found;
    for (const v1::Envelope& report : reports) {
        if (report.body_case() == kind) found.push_back(&report);
    }
    return found;
}

// "piece/lease" for each reference, to compare whole lists at once.
template <class Refs>
std::vector<std::string> refs(const Refs& pieces) {
    std::vector<std::string> text;
    for (const auto& piece : pieces) {
        text.push_back(std::to_string(piece.piece()) + "/" + std::to_string(piece.lease_id()));
    }
    return text;
}

v1::PieceData piece_data(std::uint32_t index, std::uint64_t lease) {
    v1::PieceData piece;
    piece.set_piece(index);
    piece.set_lease_id(lease);
    piece.add_contributors("10.0.0.7:6881");
    piece.add_contributors("10.0.0.8:6881");
    return piece;
}

v1::Arena to_proto(const bus::ArenaInfo& info) {
    v1::Arena arena;
    arena.set_path(info.path);
    arena.set_id(info.id);
    arena.set_slot_size(info.slot_size);
    arena.set_slot_count(info.slot_count);
    return arena;
}

// The test plays the worker: pieces assembled straight into the slots of its arena.
struct WorkerArena {
    bus::PieceArena arena{16384, 4};

    v1::PieceData put(std::uint32_t index, std::uint64_t lease, const std::string& bytes) {
        const std::uint32_t slot = arena.acquire(lease).value();
        std::memcpy(arena.bytes(slot).data(), bytes.data(), bytes.size());
        v1::PieceData piece = piece_data(index, lease);
        piece.set_slot(slot);
        piece.set_size(static_cast<std::uint32_t>(bytes.size()));
        return piece;
    }
};

// A worker's PUSH into the verifier's PULL, and the writer's PULL behind the verifier's PUSH.
struct DataPath {
    zmq::context_t context;
    zmq::socket_t worker{context, zmq::socket_type::push};
    zmq::socket_t from_workers{context, zmq::socket_type::pull};
    zmq::socket_t to_writer{context, zmq::socket_type::push};
    zmq::socket_t writer{context, zmq::socket_type::pull};

    explicit DataPath(int writer_queue = 1000) {
        const std::string pieces = test::unique_inproc("pieces");
        const std::string verified = test::unique_inproc("verified");
        const bus::SocketLimits limits{bus::kMaxMessageBytes, writer_queue, writer_queue, 0};
        for (zmq::socket_t* socket : {&worker, &from_workers}) bus::configure(*socket);
        for (zmq::socket_t* socket : {&to_writer, &writer}) bus::configure(*socket, limits);
        from_workers.set(zmq::sockopt::rcvtimeo, 2000);
        writer.set(zmq::sockopt::rcvtimeo, 2000);
        from_workers.bind(pieces);
        worker.connect(pieces);
        writer.bind(verified);
        to_writer.connect(verified);
    }

    // Any batch, with any frames: well-formed or not.
    void send(v1::PieceBatch batch, std::vector<std::string> payloads = {}) {
        v1::Envelope envelope;
        *envelope.mutable_piece_batch() = std::move(batch);
        if (envelope.piece_batch().worker().empty()) {
            envelope.mutable_piece_batch()->set_worker("peer_worker-3");
        }
        if (envelope.piece_batch().torrent() == 0) {
            envelope.mutable_piece_batch()->set_torrent(test::kTestTorrent.get());
        }
        std::vector<zmq::message_t> frames;
        for (const std::string& bytes : payloads) {
            frames.push_back(bus::frame_from_buffer(std::vector<std::uint8_t>(bytes.begin(), bytes.end())));
        }
        ASSERT_TRUE(bus::send(worker, "peer_worker-3", envelope, frames));
    }

    struct Piece {
        std::uint32_t index;
        std::uint64_t lease;
        std::string bytes;
    };
    // A well-formed batch carried as frames.
    void send_frames(const std::vector<Piece>& pieces) {
        v1::PieceBatch batch;
        std::vector<std::string> payloads;
        for (const Piece& piece : pieces) {
            *batch.add_pieces() = piece_data(piece.index, piece.lease);
            payloads.push_back(piece.bytes);
        }
        send(std::move(batch), std::move(payloads));
    }
    // A batch naming `arena`'s slots.
    void send_arena(const bus::ArenaInfo& arena, const std::vector<v1::PieceData>& pieces,
                    std::vector<std::string> payloads = {}) {
        v1::PieceBatch batch;
        *batch.mutable_arena() = to_proto(arena);
        for (const v1::PieceData& piece : pieces) *batch.add_pieces() = piece;
        send(std::move(batch), std::move(payloads));
    }

    bus::Incoming receive_from_worker() {
        bus::Incoming in;
        EXPECT_EQ(bus::receive(from_workers, false, in, zmq::recv_flags::none), bus::RecvStatus::ok);
        return in;
    }
    bus::Incoming receive_at_writer() {
        bus::Incoming in;
        EXPECT_EQ(bus::receive(writer, false, in, zmq::recv_flags::none), bus::RecvStatus::ok);
        return in;
    }
    bool writer_has_nothing() {
        bus::Incoming in;
        return bus::receive(writer, false, in) == bus::RecvStatus::would_block;
    }
};

TEST(PieceForwarder, FrameBatchSendsItsGoodPiecesOnAsOneBatchAndFailsTheBad) {
    const TestTorrent t = sample_torrent();
    DataPath path;
    const Torrents torrents = torrents_of(t);
    PieceForwarder forwarder(torrents, path.to_writer, "verifier-test");
    std::string corrupt = t.piece(1);
    corrupt[0] ^= 0x55;
    path.send_frames({{2, 77, t.piece(2)}, {1, 9, corrupt}, {3, 78, t.piece(3)}});
    bus::Incoming in = path.receive_from_worker();
    const void* buffer_of_2 = in.frames.at(0).data();
    const void* buffer_of_3 = in.frames.at(2).data();

    const Reports reports = forwarder.take(std::move(in));
    const auto failed = of_kind(reports, v1::Envelope::kPieceFailed);
    ASSERT_EQ(failed.size(), 1u);
    EXPECT_EQ(failed[0]->piece_failed().piece(), 1u);
    EXPECT_EQ(failed[0]->piece_failed().lease_id(), 9u);
    ASSERT_EQ(failed[0]->piece_failed().contributors_size(), 2);
    EXPECT_EQ(failed[0]->piece_failed().contributors(0), "10.0.0.7:6881");
    EXPECT_EQ(failed[0]->piece_failed().contributors(1), "10.0.0.8:6881");
    EXPECT_EQ(failed[0]->piece_failed().worker(), "peer_worker-3");
    const auto verified = of_kind(reports, v1::Envelope::kPiecesVerified);
    ASSERT_EQ(verified.size(), 1u);
    EXPECT_EQ(refs(verified[0]->pieces_verified().pieces()), (std::vector<std::string>{"2/77", "3/78"}));
    EXPECT_EQ(reports.size(), 2u);  // no slots to free, nothing dropped

    bus::Incoming at_writer = path.receive_at_writer();
    ASSERT_TRUE(at_writer.envelope.has_piece_batch());
    const v1::PieceBatch& batch = at_writer.envelope.piece_batch();
    EXPECT_EQ(batch.worker(), "peer_worker-3");
    EXPECT_FALSE(batch.has_arena());
    EXPECT_EQ(refs(batch.pieces()), (std::vector<std::string>{"2/77", "3/78"}));
    EXPECT_EQ(batch.pieces(0).contributors_size(), 2);
    EXPECT_EQ(at_writer.envelope.sender(), "verifier-test");
    ASSERT_EQ(at_writer.frames.size(), 2u);
    EXPECT_EQ(at_writer.frames[0].to_string(), t.piece(2));
    EXPECT_EQ(at_writer.frames[1].to_string(), t.piece(3));
    EXPECT_EQ(at_writer.frames[0].data(), buffer_of_2);  // moved along, never copied
    EXPECT_EQ(at_writer.frames[1].data(), buffer_of_3);
    EXPECT_TRUE(path.writer_has_nothing());
    EXPECT_EQ(forwarder.stats().verified, 2u);
    EXPECT_EQ(forwarder.stats().failed, 1u);
    EXPECT_EQ(forwarder.stats().bytes_verified, t.piece(2).size() + t.piece(3).size());
}

TEST(PieceForwarder, PiecesOfATorrentNotKnownHereAreDroppedAndTheirSlotsFreed) {
    const TestTorrent t = sample_torrent();
    DataPath path;
    const Torrents torrents = torrents_of(t);
    PieceForwarder forwarder(torrents, path.to_writer, "verifier-test");
    bus::PieceArena arena(16384, 4);
    const std::uint32_t slot = arena.acquire(50).value();
    std::memcpy(arena.bytes(slot).data(), t.piece(0).data(), t.piece(0).size());
    v1::PieceData piece = piece_data(0, 50);
    piece.set_slot(slot);
    piece.set_size(16384);
    v1::PieceBatch batch;
    batch.set_torrent(7);  // never added (or removed since)
    *batch.mutable_arena() = to_proto(arena.info());
    *batch.add_pieces() = piece;
    path.send(batch);

    const Reports reports = forwarder.take(path.receive_from_worker());
    EXPECT_TRUE(of_kind(reports, v1::Envelope::kPieceFailed).empty());  // nobody to blame
    const auto dropped = of_kind(reports, v1::Envelope::kPiecesDropped);
    ASSERT_EQ(dropped.size(), 1u);
    EXPECT_EQ(dropped[0]->pieces_dropped().pieces(0).torrent(), 7u);
    EXPECT_NE(dropped[0]->pieces_dropped().reason().find("not known"), std::string::npos);
    const auto freed = of_kind(reports, v1::Envelope::kSlotsFreed);
    ASSERT_EQ(freed.size(), 1u);
    EXPECT_EQ(freed[0]->slots_freed().lease_ids(0), 50u);
    EXPECT_TRUE(path.writer_has_nothing());
}

TEST(PieceForwarder, EachBatchIsCheckedAgainstItsOwnTorrent) {
    const TestTorrent first = sample_torrent();
    const TestTorrent second = make_torrent("other", 16384, {{{"x.bin"}, 2 * 16384, false}});
    DataPath path;
    Torrents torrents = torrents_of(first);
    torrents.emplace(TorrentId{2}, second.torrent);
    PieceForwarder forwarder(torrents, path.to_writer, "verifier-test");
    v1::PieceBatch batch;
    batch.set_torrent(2);
    *batch.add_pieces() = piece_data(0, 60);
    *batch.add_pieces() = piece_data(1, 61);
    // Piece 1 of the first torrent is not piece 1 of the second.
    path.send(batch, {second.piece(0), first.piece(1)});

    const Reports reports = forwarder.take(path.receive_from_worker());
    const auto failed = of_kind(reports, v1::Envelope::kPieceFailed);
    ASSERT_EQ(failed.size(), 1u);
    EXPECT_EQ(failed[0]->piece_failed().torrent(), 2u);
    EXPECT_EQ(failed[0]->piece_failed().lease_id(), 61u);
    const auto verified = of_kind(reports, v1::Envelope::kPiecesVerified);
    ASSERT_EQ(verified.size(), 1u);
    EXPECT_EQ(verified[0]->pieces_verified().pieces(0).torrent(), 2u);
    const bus::Incoming at_writer = path.receive_at_writer();
    EXPECT_EQ(at_writer.envelope.piece_batch().torrent(), 2u);
}

TEST(PieceForwarder, WrongSizeAndUnknownPiecesFailInAFrameBatch) {
    const TestTorrent t = sample_torrent();
    DataPath path;
    const Torrents torrents = torrents_of(t);
    PieceForwarder forwarder(torrents, path.to_writer, "verifier-test");
    path.send_frames({{0, 1, t.piece(0) + "extra"}, {99, 2, t.piece(0)}, {3, 3, t.piece(0)}});
    const Reports reports = forwarder.take(path.receive_from_worker());
    EXPECT_EQ(of_kind(reports, v1::Envelope::kPieceFailed).size(), 3u);
    EXPECT_EQ(reports.size(), 3u);
    EXPECT_TRUE(path.writer_has_nothing());
}

TEST(PieceForwarder, ArenaBatchSendsItsSlotsOnWithoutFrames) {
    const TestTorrent t = sample_torrent();
    DataPath path;
    const Torrents torrents = torrents_of(t);
    PieceForwarder forwarder(torrents, path.to_writer, "verifier-test");
    WorkerArena worker;
    std::string corrupt = t.piece(1);
    corrupt.back() ^= 1;
    const std::vector<v1::PieceData> pieces = {
        worker.put(0, 11, t.piece(0)), worker.put(1, 13, corrupt), worker.put(3, 12, t.piece(3))};
    path.send_arena(worker.arena.info(), pieces);

    const Reports reports = forwarder.take(path.receive_from_worker());
    const auto failed = of_kind(reports, v1::Envelope::kPieceFailed);
    ASSERT_EQ(failed.size(), 1u);
    EXPECT_EQ(failed[0]->piece_failed().lease_id(), 13u);
    EXPECT_EQ(failed[0]->piece_failed().contributors_size(), 2);
    // The failed piece's slot goes back to its worker: it will never reach the writer.
    const auto freed = of_kind(reports, v1::Envelope::kSlotsFreed);
    ASSERT_EQ(freed.size(), 1u);
    EXPECT_EQ(freed[0]->slots_freed().worker(), "peer_worker-3");
    EXPECT_EQ(freed[0]->slots_freed().arena_id(), worker.arena.info().id);
    EXPECT_EQ(std::vector<std::uint64_t>(freed[0]->slots_freed().lease_ids().begin(),
                                         freed[0]->slots_freed().lease_ids().end()),
              (std::vector<std::uint64_t>{13}));
    EXPECT_TRUE(of_kind(reports, v1::Envelope::kPiecesDropped).empty());
    const auto verified = of_kind(reports, v1::Envelope::kPiecesVerified);
    ASSERT_EQ(verified.size(), 1u);
    EXPECT_EQ(refs(verified[0]->pieces_verified().pieces()), (std::vector<std::string>{"0/11", "3/12"}));

    bus::Incoming at_writer = path.receive_at_writer();
    EXPECT_TRUE(at_writer.frames.empty());
    const v1::PieceBatch& batch = at_writer.envelope.piece_batch();
    EXPECT_EQ(batch.worker(), "peer_worker-3");
    EXPECT_EQ(batch.arena().id(), worker.arena.info().id);
    EXPECT_EQ(batch.arena().path(), worker.arena.info().path);
    EXPECT_EQ(batch.arena().slot_size(), worker.arena.info().slot_size);
    EXPECT_EQ(batch.arena().slot_count(), worker.arena.info().slot_count);
    ASSERT_EQ(batch.pieces_size(), 2);
    EXPECT_EQ(batch.pieces(0).slot(), pieces[0].slot());
    EXPECT_EQ(batch.pieces(0).size(), 16384u);
    EXPECT_EQ(batch.pieces(1).slot(), pieces[2].slot());
    EXPECT_EQ(batch.pieces(1).size(), 1000u);
    EXPECT_EQ(forwarder.stats().bytes_verified, 16384u + 1000u);
}

// The orchestrator freed a slot early (a crash elsewhere) and the worker reused it before the
// verifier got there: the piece's bytes are gone, and nobody is to blame for that.
TEST(PieceForwarder, ReusedSlotIsDroppedAndFreedNotFailed) {
    const TestTorrent t = sample_torrent();
    DataPath path;
    const Torrents torrents = torrents_of(t);
    PieceForwarder forwarder(torrents, path.to_writer, "verifier-test");
    WorkerArena worker;
    const v1::PieceData reused = worker.put(0, 21, t.piece(0));
    const v1::PieceData kept = worker.put(2, 22, t.piece(2));
    path.send_arena(worker.arena.info(), {reused, kept});
    worker.arena.release(reused.slot());
    ASSERT_EQ(worker.put(0, 99, t.piece(0)).slot(), reused.slot());  // the same, good bytes

    const Reports reports = forwarder.take(path.receive_from_worker());
    EXPECT_TRUE(of_kind(reports, v1::Envelope::kPieceFailed).empty());
    const auto dropped = of_kind(reports, v1::Envelope::kPiecesDropped);
    ASSERT_EQ(dropped.size(), 1u);
    EXPECT_EQ(refs(dropped[0]->pieces_dropped().pieces()), (std::vector<std::string>{"0/21"}));
    EXPECT_NE(dropped[0]->pieces_dropped().reason().find("no longer holds"), std::string::npos)
        << dropped[0]->pieces_dropped().reason();
    const auto freed = of_kind(reports, v1::Envelope::kSlotsFreed);
    ASSERT_EQ(freed.size(), 1u);
    ASSERT_EQ(freed[0]->slots_freed().lease_ids_size(), 1);
    EXPECT_EQ(freed[0]->slots_freed().lease_ids(0), 21u);
    const auto verified = of_kind(reports, v1::Envelope::kPiecesVerified);
    ASSERT_EQ(verified.size(), 1u);
    EXPECT_EQ(refs(verified[0]->pieces_verified().pieces()), (std::vector<std::string>{"2/22"}));
    EXPECT_EQ(refs(path.receive_at_writer().envelope.piece_batch().pieces()),
              (std::vector<std::string>{"2/22"}));
    EXPECT_EQ(forwarder.stats().dropped, 1u);
    EXPECT_EQ(forwarder.stats().failed, 0u);
}

TEST(PieceForwarder, BatchWithNothingGoodSendsNothingToTheWriter) {
    const TestTorrent t = sample_torrent();
    DataPath path;
    const Torrents torrents = torrents_of(t);
    PieceForwarder forwarder(torrents, path.to_writer, "verifier-test");
    WorkerArena worker;
    const v1::PieceData piece = worker.put(1, 5, t.piece(1));
    worker.arena.release(piece.slot());
    path.send_arena(worker.arena.info(), {piece});
    const Reports reports = forwarder.take(path.receive_from_worker());
    ASSERT_EQ(reports.size(), 2u);
    EXPECT_TRUE(reports[0].has_pieces_dropped());
    EXPECT_TRUE(reports[1].has_slots_freed());
    EXPECT_TRUE(path.writer_has_nothing());
}

TEST(PieceForwarder, MalformedFrameBatchesFailEveryPiece) {
    const TestTorrent t = sample_torrent();
    DataPath path;
    const Torrents torrents = torrents_of(t);
    PieceForwarder forwarder(torrents, path.to_writer, "verifier-test");
    v1::PieceBatch two_pieces;
    *two_pieces.add_pieces() = piece_data(0, 1);
    *two_pieces.add_pieces() = piece_data(1, 2);
    path.send(two_pieces, {t.piece(0)});                          // a frame short
    path.send(two_pieces, {t.piece(0), t.piece(1), t.piece(2)});  // a frame too many
    path.send(two_pieces);                                        // none at all
    for (int i = 0; i < 3; ++i) {
        const Reports reports = forwarder.take(path.receive_from_worker());
        EXPECT_EQ(of_kind(reports, v1::Envelope::kPieceFailed).size(), 2u) << i;
        EXPECT_EQ(reports.size(), 2u) << i;
    }
    EXPECT_TRUE(path.writer_has_nothing());
    EXPECT_EQ(forwarder.stats().verified, 0u);
}

TEST(PieceForwarder, MalformedArenaBatchesNeverCrash) {
    const TestTorrent t = sample_torrent();
    DataPath path;
    const Torrents torrents = torrents_of(t);
    PieceForwarder forwarder(torrents, path.to_writer, "verifier-test");
    WorkerArena worker;
    const v1::PieceData good = worker.put(0, 31, t.piece(0));

    // Frames beside an arena: the sender's fault, so the pieces fail (and free their slots).
    path.send_arena(worker.arena.info(), {good}, {t.piece(0)});
    Reports reports = forwarder.take(path.receive_from_worker());
    ASSERT_EQ(reports.size(), 2u);
    EXPECT_TRUE(reports[0].has_piece_failed());
    ASSERT_TRUE(reports[1].has_slots_freed());
    EXPECT_EQ(reports[1].slots_freed().lease_ids(0), 31u);

    // Slots the arena cannot give: dropped, never read out of bounds.
    v1::PieceData beyond = good;
    beyond.set_slot(1000);
    v1::PieceData too_big = good;
    too_big.set_size(16385);
    v1::PieceData no_lease = good;
    no_lease.set_lease_id(0);
    path.send_arena(worker.arena.info(), {beyond, too_big, no_lease});
    reports = forwarder.take(path.receive_from_worker());
    ASSERT_EQ(reports.size(), 2u);
    ASSERT_TRUE(reports[0].has_pieces_dropped());
    EXPECT_EQ(reports[0].pieces_dropped().pieces_size(), 3);
    EXPECT_NE(reports[0].pieces_dropped().reason().find("beyond"), std::string::npos)
        << reports[0].pieces_dropped().reason();  // the first error
    EXPECT_TRUE(reports[1].has_slots_freed());

    // Arenas that are not the worker's.
    bus::ArenaInfo other_file = worker.arena.info();
    other_file.path = "/etc/passwd";
    bus::ArenaInfo other_id = worker.arena.info();
    other_id.id ^= 1;
    bus::ArenaInfo no_such_process = worker.arena.info();
    no_such_process.path = "/proc/999999999/fd/3";
    for (const bus::ArenaInfo& arena : {other_file, other_id, no_such_process}) {
        path.send_arena(arena, {good});
        reports = forwarder.take(path.receive_from_worker());
        ASSERT_EQ(reports.size(), 2u) << arena.path;
        EXPECT_TRUE(reports[0].has_pieces_dropped());
        EXPECT_TRUE(reports[1].has_slots_freed());
    }
    EXPECT_TRUE(path.writer_has_nothing());
    EXPECT_EQ(forwarder.stats().failed, 1u);
    EXPECT_EQ(forwarder.stats().verified, 0u);
}

TEST(PieceForwarder, WhatIsNotABatchOfOneTo256PiecesIsDroppedWithoutReport) {
    const TestTorrent t = sample_torrent();
    DataPath path;
    const Torrents torrents = torrents_of(t);
    PieceForwarder forwarder(torrents, path.to_writer, "verifier-test");
    bus::Incoming not_a_batch;
    not_a_batch.envelope.mutable_heartbeat();
    EXPECT_TRUE(forwarder.take(std::move(not_a_batch)).empty());
    bus::Incoming empty;
    empty.envelope.mutable_piece_batch()->set_worker("peer_worker-3");
    EXPECT_TRUE(forwarder.take(std::move(empty)).empty());
    bus::Incoming flood;
    for (std::size_t i = 0; i <= bus::kMaxBatchPieces; ++i) {
        *flood.envelope.mutable_piece_batch()->add_pieces() = piece_data(0, i + 1);
    }
    EXPECT_TRUE(forwarder.take(std::move(flood)).empty());
    EXPECT_TRUE(path.writer_has_nothing());
}

TEST(PieceForwarder, StopsTakingWhileTheWriterIsFullAndResumesWhenItDrains) {
    const TestTorrent t = sample_torrent();
    DataPath path(/*writer_queue=*/1);
    const Torrents torrents = torrents_of(t);
    PieceForwarder forwarder(torrents, path.to_writer, "verifier-test");
    int forwarded = 0;
    // The writer reads nothing: the forwarder must say "not ready" long before 200 batches.
    for (int i = 0; i < 200 && forwarder.ready(); ++i) {
        path.send_frames({{0, static_cast<std::uint64_t>(2 * i + 1), t.piece(0)},
                          {1, static_cast<std::uint64_t>(2 * i + 2), t.piece(1)}});
        const Reports reports = forwarder.take(path.receive_from_worker());
        forwarded += static_cast<int>(of_kind(reports, v1::Envelope::kPiecesVerified).size());
    }
    EXPECT_FALSE(forwarder.ready());
    EXPECT_LT(forwarded, 200);
    EXPECT_GE(forwarded, 1);

    for (int i = 0; i < forwarded; ++i) path.receive_at_writer();
    // ZeroMQ lifts the pipe's limit once the reader has caught up; give its commands a moment.
    bool ready_again = false;
    for (int i = 0; i < 100 && !ready_again; ++i) {
        ready_again = forwarder.ready();
        if (!ready_again) std::this_thread::sleep_for(10ms);
    }
    EXPECT_TRUE(ready_again);
}

// A batch that cannot go out is held; its report waits for it.
TEST(PieceForwarder, HeldBatchIsReportedOnlyWhenItGoesOut) {
    const TestTorrent t = sample_torrent();
    DataPath path(/*writer_queue=*/1);
    const Torrents torrents = torrents_of(t);
    PieceForwarder forwarder(torrents, path.to_writer, "verifier-test");
    std::string corrupt = t.piece(2);
    corrupt[7] ^= 1;
    bool held = false;
    for (std::uint64_t lease = 1; lease < 200 && !held; lease += 2) {
        // Taken whether or not the writer has room, as the loop never does: the writer is full.
        path.send_frames({{0, lease, t.piece(0)}, {2, lease + 1, corrupt}});
        const Reports reports = forwarder.take(path.receive_from_worker());
        EXPECT_EQ(of_kind(reports, v1::Envelope::kPieceFailed).size(), 1u);
        held = forwarder.holding();
        EXPECT_EQ(of_kind(reports, v1::Envelope::kPiecesVerified).size(), held ? 0u : 1u);
    }
    ASSERT_TRUE(held);
    EXPECT_EQ(forwarder.held_pieces(), 1u);
    EXPECT_FALSE(forwarder.ready());

    Reports reports;
    for (int i = 0; i < 200 && reports.empty(); ++i) {
        bus::Incoming at_writer;
        while (bus::receive(path.writer, false, at_writer) == bus::RecvStatus::ok) {}
        reports = forwarder.retry();
        if (reports.empty()) std::this_thread::sleep_for(10ms);
    }
    ASSERT_EQ(reports.size(), 1u);
    ASSERT_TRUE(reports[0].has_pieces_verified());
    EXPECT_EQ(reports[0].pieces_verified().pieces_size(), 1);
    EXPECT_FALSE(forwarder.holding());
    EXPECT_TRUE(forwarder.retry().empty());
}

// --- the whole stage: orchestrator (ROUTER), a worker pushing batches, a writer pulling them ---

struct StageRig {
    TestTorrent t = sample_torrent();
    zmq::context_t context;
    test::FakeOrchestrator orchestrator{context, t.bytes};
    VerifierOptions options = make_options(orchestrator);  // field by field: new options never break it
    zmq::socket_t writer{context, zmq::socket_type::pull};
    zmq::socket_t worker{context, zmq::socket_type::push};

    static VerifierOptions make_options(const test::FakeOrchestrator& orchestrator) {
        VerifierOptions options;
        options.control = orchestrator.endpoint();
        options.pieces = test::unique_inproc("pieces");
        options.verified = test::unique_inproc("verified");
        options.name = "verifier-stage-test";
        options.timing = bus::Timing{100ms, 5, 3000ms};
        return options;
    }

    StageRig() {
        bus::configure(writer);
        writer.set(zmq::sockopt::rcvtimeo, 5000);
        writer.bind(options.verified);
    }

    // After the stage bound its PULL.
    void connect_worker() {
        bus::configure(worker);
        worker.connect(options.pieces);
    }

    void push(v1::PieceBatch batch, const std::vector<std::string>& payloads = {}) {
        v1::Envelope envelope;
        if (batch.torrent() == 0) batch.set_torrent(test::kTestTorrent.get());
        *envelope.mutable_piece_batch() = std::move(batch);
        std::vector<zmq::message_t> frames;
        for (const std::string& bytes : payloads) frames.emplace_back(bytes.data(), bytes.size());
        ASSERT_TRUE(bus::send(worker, "peer_worker-1", envelope, frames));
    }
};

TEST(VerifierStage, VerifiesForwardsReportsAndShutsDownCleanly) {
    StageRig rig;
    test::StageThread stage(rig.orchestrator, [&context = rig.context, options = rig.options] {
        return run_verifier(context, options);
    });
    ASSERT_TRUE(rig.orchestrator.expect(v1::Envelope::kHeartbeat).has_value());  // past the Welcome
    rig.connect_worker();

    std::string corrupt = rig.t.piece(0);
    corrupt.back() ^= 1;
    v1::PieceBatch batch;
    batch.set_worker("peer_worker-1");
    *batch.add_pieces() = piece_data(3, 30);
    *batch.add_pieces() = piece_data(0, 31);
    rig.push(batch, {rig.t.piece(3), corrupt});

    const auto failed = rig.orchestrator.expect(v1::Envelope::kPieceFailed);
    ASSERT_TRUE(failed.has_value());
    EXPECT_EQ(failed->envelope.piece_failed().lease_id(), 31u);
    EXPECT_EQ(failed->envelope.piece_failed().contributors_size(), 2);
    const auto verified = rig.orchestrator.expect(v1::Envelope::kPiecesVerified);
    ASSERT_TRUE(verified.has_value());
    EXPECT_EQ(refs(verified->envelope.pieces_verified().pieces()), (std::vector<std::string>{"3/30"}));
    EXPECT_EQ(verified->identity, "verifier-stage-test");

    bus::Incoming at_writer;
    ASSERT_EQ(bus::receive(rig.writer, false, at_writer, zmq::recv_flags::none), bus::RecvStatus::ok);
    EXPECT_EQ(refs(at_writer.envelope.piece_batch().pieces()), (std::vector<std::string>{"3/30"}));
    EXPECT_EQ(at_writer.frames.at(0).to_string(), rig.t.piece(3));

    EXPECT_EQ(stage.stop(), 0);
}

TEST(VerifierStage, ReadsPiecesFromAWorkersArena) {
    StageRig rig;
    test::StageThread stage(rig.orchestrator, [&context = rig.context, options = rig.options] {
        return run_verifier(context, options);
    });
    ASSERT_TRUE(rig.orchestrator.expect(v1::Envelope::kHeartbeat).has_value());
    rig.connect_worker();

    WorkerArena worker;
    const v1::PieceData gone = worker.put(1, 40, rig.t.piece(1));
    const v1::PieceData good = worker.put(2, 41, rig.t.piece(2));
    worker.arena.release(gone.slot());
    v1::PieceBatch batch;
    batch.set_worker("peer_worker-1");
    *batch.mutable_arena() = to_proto(worker.arena.info());
    *batch.add_pieces() = gone;
    *batch.add_pieces() = good;
    rig.push(batch);

    const auto dropped = rig.orchestrator.expect(v1::Envelope::kPiecesDropped);
    ASSERT_TRUE(dropped.has_value());
    EXPECT_EQ(refs(dropped->envelope.pieces_dropped().pieces()), (std::vector<std::string>{"1/40"}));
    const auto freed = rig.orchestrator.expect(v1::Envelope::kSlotsFreed);
    ASSERT_TRUE(freed.has_value());
    EXPECT_EQ(freed->envelope.slots_freed().worker(), "peer_worker-1");
    const auto verified = rig.orchestrator.expect(v1::Envelope::kPiecesVerified);
    ASSERT_TRUE(verified.has_value());
    EXPECT_EQ(refs(verified->envelope.pieces_verified().pieces()), (std::vector<std::string>{"2/41"}));

    bus::Incoming at_writer;
    ASSERT_EQ(bus::receive(rig.writer, false, at_writer, zmq::recv_flags::none), bus::RecvStatus::ok);
    EXPECT_TRUE(at_writer.frames.empty());
    EXPECT_EQ(at_writer.envelope.piece_batch().arena().id(), worker.arena.info().id);
    EXPECT_EQ(stage.stop(), 0);
}

TEST(VerifierStage, ForgetsARemovedTorrent) {
    StageRig rig;
    test::StageThread stage(rig.orchestrator, [&context = rig.context, options = rig.options] {
        return run_verifier(context, options);
    });
    ASSERT_TRUE(rig.orchestrator.expect(v1::Envelope::kHeartbeat).has_value());
    rig.connect_worker();
    rig.orchestrator.remove_torrent(test::kTestTorrent);
    (void)rig.orchestrator.expect(v1::Envelope::kHeartbeat);  // the removal is in by now

    v1::PieceBatch batch;
    batch.set_worker("peer_worker-1");
    *batch.add_pieces() = piece_data(3, 30);
    rig.push(batch, {rig.t.piece(3)});
    const auto dropped = rig.orchestrator.expect(v1::Envelope::kPiecesDropped);
    ASSERT_TRUE(dropped.has_value());
    EXPECT_EQ(refs(dropped->envelope.pieces_dropped().pieces()), (std::vector<std::string>{"3/30"}));
    EXPECT_EQ(stage.stop(), 0);
}

TEST(VerifierStage, ATerminationSignalEndsItCleanlyWithAGoodbye) {
    StageRig rig;
    test::FakeSignals signals;
    rig.options.signal_fd = signals.fd();
    auto result = std::async(std::launch::async, [&context = rig.context, options = rig.options] {
        return run_verifier(context, options);
    });
    ASSERT_TRUE(rig.orchestrator.expect(v1::Envelope::kHeartbeat).has_value());
    ASSERT_TRUE(signals.raise(SIGTERM));
    const auto goodbye = rig.orchestrator.expect(v1::Envelope::kGoodbye);
    ASSERT_TRUE(goodbye.has_value());
    EXPECT_EQ(goodbye->envelope.goodbye().reason(), "SIGTERM");
    ASSERT_EQ(result.wait_for(10s), std::future_status::ready);
    EXPECT_EQ(result.get(), 0);
}

TEST(VerifierStage, GivesUpWhenTheOrchestratorFallsSilent) {
    const TestTorrent t = sample_torrent();
    zmq::context_t context;
    test::FakeOrchestrator orchestrator(context, t.bytes);
    VerifierOptions options;
    options.control = orchestrator.endpoint();
    options.pieces = test::unique_inproc("pieces");
    options.verified = test::unique_inproc("verified");
    options.name = "verifier-silence-test";
    options.timing = bus::Timing{100ms, 5, 3000ms};
    auto result = std::async(std::launch::async, [&context, options] { return run_verifier(context, options); });
    ASSERT_TRUE(orchestrator.expect(v1::Envelope::kHeartbeat).has_value());
    // Silence from here on: 5 periods of kTestHeartbeatMs, then the stage exits non-zero.
    ASSERT_EQ(result.wait_for(30s), std::future_status::ready);
    EXPECT_EQ(result.get(), 1);
}

}  // namespace
}  // namespace pw::verifier
