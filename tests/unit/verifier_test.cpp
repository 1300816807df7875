// The verifier: the pure piece check, the forwarding data path, and the whole stage loop.
#include <chrono>
#include <cstring>
#include <span>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "stage_harness.hpp"
#include "test_torrents.hpp"
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

TEST(CheckPiece, GoodPiecePasses) {
    const TestTorrent t = sample_torrent();
    EXPECT_TRUE(check_piece(t.torrent, 0, as_bytes(t.piece(0))).ok());
    EXPECT_TRUE(check_piece(t.torrent, 2, as_bytes(t.piece(2))).ok());
}

TEST(CheckPiece, ShortLastPiecePasses) {
    const TestTorrent t = sample_torrent();
    ASSERT_EQ(t.piece(3).size(), 1000u);
    EXPECT_TRUE(check_piece(t.torrent, 3, as_bytes(t.piece(3))).ok());
}

TEST(CheckPiece, BadPieceFails) {
    const TestTorrent t = sample_torrent();
    std::string corrupt = t.piece(1);
    corrupt[5000] ^= 1;
    const Status status = check_piece(t.torrent, 1, as_bytes(corrupt));
    ASSERT_FALSE(status.ok());
    EXPECT_NE(status.error().message.find("hash mismatch"), std::string::npos);
    // Another piece's good bytes are not this piece.
    EXPECT_FALSE(check_piece(t.torrent, 1, as_bytes(t.piece(0))).ok());
}

TEST(CheckPiece, WrongSizeFails) {
    const TestTorrent t = sample_torrent();
    const std::string piece = t.piece(0);
    EXPECT_FALSE(check_piece(t.torrent, 0, as_bytes(piece.substr(0, 16383))).ok());
    EXPECT_FALSE(check_piece(t.torrent, 0, as_bytes(piece + "x")).ok());
    EXPECT_FALSE(check_piece(t.torrent, 3, as_bytes(t.piece(0))).ok());  // full size for the short one
    EXPECT_FALSE(check_piece(t.torrent, 0, {}).ok());
}

TEST(CheckPiece, IndexOutOfRangeFails) {
    const TestTorrent t = sample_torrent();
    const Status status = check_piece(t.torrent, 4, as_bytes(t.piece(3)));
    ASSERT_FALSE(status.ok());
    EXPECT_NE(status.error().message.find("does not exist"), std::string::npos);
    EXPECT_FALSE(check_piece(t.torrent, 0xffffffffu, as_bytes(t.piece(0))).ok());
}

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

    void send_piece(std::uint32_t index, std::uint64_t lease, const std::string& bytes) {
        v1::Envelope envelope;
        auto* piece = envelope.mutable_piece_data();
        piece->set_piece(index);
        piece->set_lease_id(lease);
        piece->add_contributors("10.0.0.7:6881");
        piece->add_contributors("10.0.0.8:6881");
        piece->set_worker("peer_worker-3");
        std::vector<zmq::message_t> frames;
        frames.push_back(bus::frame_from_buffer(std::vector<std::uint8_t>(bytes.begin(), bytes.end())));
        ASSERT_TRUE(bus::send(worker, "peer_worker-3", envelope, frames));
    }

    bus::Incoming receive_from_worker() {
        bus::Incoming in;
        EXPECT_EQ(bus::receive(from_workers, false, in, zmq::recv_flags::none), bus::RecvStatus::ok);
        return in;
    }
};

TEST(PieceForwarder, GoodPieceArrivesAtTheWriterUnchanged) {
    const TestTorrent t = sample_torrent();
    DataPath path;
    PieceForwarder forwarder(t.torrent, path.to_writer, "verifier-test");
    path.send_piece(2, 77, t.piece(2));
    bus::Incoming in = path.receive_from_worker();
    const void* buffer = in.frames.at(0).data();

    const auto report = forwarder.take(std::move(in));
    ASSERT_TRUE(report.has_value());
    ASSERT_TRUE(report->has_piece_verified());
    EXPECT_EQ(report->piece_verified().piece(), 2u);
    EXPECT_EQ(report->piece_verified().lease_id(), 77u);

    bus::Incoming at_writer;
    ASSERT_EQ(bus::receive(path.writer, false, at_writer, zmq::recv_flags::none), bus::RecvStatus::ok);
    ASSERT_TRUE(at_writer.envelope.has_piece_data());
    EXPECT_EQ(at_writer.envelope.piece_data().piece(), 2u);
    EXPECT_EQ(at_writer.envelope.piece_data().lease_id(), 77u);
    EXPECT_EQ(at_writer.envelope.piece_data().worker(), "peer_worker-3");
    EXPECT_EQ(at_writer.envelope.sender(), "verifier-test");
    ASSERT_EQ(at_writer.frames.size(), 1u);
    EXPECT_EQ(at_writer.frames[0].to_string(), t.piece(2));
    EXPECT_EQ(at_writer.frames[0].data(), buffer);  // moved along, never copied
    EXPECT_EQ(forwarder.stats().verified, 1u);
}

TEST(PieceForwarder, BadPieceIsReportedWithItsContributorsAndDropped) {
    const TestTorrent t = sample_torrent();
    DataPath path;
    PieceForwarder forwarder(t.torrent, path.to_writer, "verifier-test");
    std::string corrupt = t.piece(1);
    corrupt[0] ^= 0x55;
    path.send_piece(1, 9, corrupt);

    const auto report = forwarder.take(path.receive_from_worker());
    ASSERT_TRUE(report.has_value());
    ASSERT_TRUE(report->has_piece_failed());
    const v1::PieceFailed& failed = report->piece_failed();
    EXPECT_EQ(failed.piece(), 1u);
    EXPECT_EQ(failed.lease_id(), 9u);
    ASSERT_EQ(failed.contributors_size(), 2);
    EXPECT_EQ(failed.contributors(0), "10.0.0.7:6881");
    EXPECT_EQ(failed.contributors(1), "10.0.0.8:6881");
    EXPECT_EQ(failed.worker(), "peer_worker-3");

    bus::Incoming at_writer;
    EXPECT_EQ(bus::receive(path.writer, false, at_writer), bus::RecvStatus::would_block);
    EXPECT_EQ(forwarder.stats().failed, 1u);
}

TEST(PieceForwarder, WrongSizeAndOutOfRangeAndMissingFrameFail) {
    const TestTorrent t = sample_torrent();
    DataPath path;
    PieceForwarder forwarder(t.torrent, path.to_writer, "verifier-test");
    path.send_piece(0, 1, t.piece(0) + "extra");
    path.send_piece(99, 2, t.piece(0));
    for (int i = 0; i < 2; ++i) {
        const auto report = forwarder.take(path.receive_from_worker());
        ASSERT_TRUE(report.has_value());
        EXPECT_TRUE(report->has_piece_failed());
    }
    bus::Incoming no_frame;
    no_frame.envelope.mutable_piece_data()->set_piece(0);
    const auto report = forwarder.take(std::move(no_frame));
    ASSERT_TRUE(report.has_value());
    EXPECT_TRUE(report->has_piece_failed());

    bus::Incoming not_a_piece;
    not_a_piece.envelope.mutable_heartbeat();
    EXPECT_FALSE(forwarder.take(std::move(not_a_piece)).has_value());
    EXPECT_EQ(forwarder.stats().verified, 0u);
}

TEST(PieceForwarder, StopsTakingWhileTheWriterIsFullAndResumesWhenItDrains) {
    const TestTorrent t = sample_torrent();
    DataPath path(/*writer_queue=*/1);
    PieceForwarder forwarder(t.torrent, path.to_writer, "verifier-test");
    int forwarded = 0;
    // The writer reads nothing: the forwarder must say "not ready" long before 200 pieces.
    for (int i = 0; i < 200 && forwarder.ready(); ++i) {
        path.send_piece(0, static_cast<std::uint64_t>(i), t.piece(0));
        const auto report = forwarder.take(path.receive_from_worker());
        ASSERT_TRUE(report.has_value());
        if (report->has_piece_verified()) ++forwarded;
    }
    EXPECT_FALSE(forwarder.ready());
    EXPECT_LT(forwarded, 200);
    EXPECT_GE(forwarded, 1);

    bus::Incoming at_writer;
    for (int i = 0; i < forwarded; ++i) {
        ASSERT_EQ(bus::receive(path.writer, false, at_writer, zmq::recv_flags::none),
                  bus::RecvStatus::ok);
    }
    // ZeroMQ lifts the pipe's limit once the reader has caught up; give its commands a moment.
    bool ready_again = false;
    for (int i = 0; i < 100 && !ready_again; ++i) {
        ready_again = forwarder.ready();
        if (!ready_again) std::this_thread::sleep_for(10ms);
    }
    EXPECT_TRUE(ready_again);
}

// The whole stage: orchestrator (ROUTER), a worker pushing pieces, a writer pulling them.
TEST(VerifierStage, VerifiesForwardsReportsAndShutsDownCleanly) {
    const TestTorrent t = sample_torrent();
    zmq::context_t context;
    test::FakeOrchestrator orchestrator(context, t.bytes);
    VerifierOptions options;  // field by field, so a new option never breaks the test
    options.control = orchestrator.endpoint();
    options.pieces = test::unique_inproc("pieces");
    options.verified = test::unique_inproc("verified");
    options.name = "verifier-stage-test";
    options.timing = bus::Timing{100ms, 5, 3000ms};
    zmq::socket_t writer(context, zmq::socket_type::pull);
    bus::configure(writer);
    writer.set(zmq::sockopt::rcvtimeo, 5000);
    writer.bind(options.verified);

    test::StageThread stage(orchestrator, [&context, options] { return run_verifier(context, options); });
    ASSERT_TRUE(orchestrator.expect(v1::Envelope::kHeartbeat).has_value());  // past the Welcome

    zmq::socket_t worker(context, zmq::socket_type::push);
    bus::configure(worker);
    worker.connect(options.pieces);
    auto push = [&worker](std::uint32_t index, std::uint64_t lease, const std::string& bytes) {
        v1::Envelope envelope;
        envelope.mutable_piece_data()->set_piece(index);
        envelope.mutable_piece_data()->set_lease_id(lease);
        envelope.mutable_piece_data()->add_contributors("10.0.0.9:6881");
        std::vector<zmq::message_t> frames;
        frames.emplace_back(bytes.data(), bytes.size());
        ASSERT_TRUE(bus::send(worker, "peer_worker-1", envelope, frames));
    };
    push(3, 30, t.piece(3));
    std::string corrupt = t.piece(0);
    corrupt.back() ^= 1;
    push(0, 31, corrupt);

    const auto verified = orchestrator.expect(v1::Envelope::kPieceVerified);
    ASSERT_TRUE(verified.has_value());
    EXPECT_EQ(verified->envelope.piece_verified().piece(), 3u);
    EXPECT_EQ(verified->envelope.piece_verified().lease_id(), 30u);
    EXPECT_EQ(verified->identity, "verifier-stage-test");
    const auto failed = orchestrator.expect(v1::Envelope::kPieceFailed);
    ASSERT_TRUE(failed.has_value());
    EXPECT_EQ(failed->envelope.piece_failed().lease_id(), 31u);
    ASSERT_EQ(failed->envelope.piece_failed().contributors_size(), 1);

    bus::Incoming at_writer;
    ASSERT_EQ(bus::receive(writer, false, at_writer, zmq::recv_flags::none), bus::RecvStatus::ok);
    EXPECT_EQ(at_writer.envelope.piece_data().piece(), 3u);
    EXPECT_EQ(at_writer.frames.at(0).to_string(), t.piece(3));

    EXPECT_EQ(stage.stop(), 0);
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
