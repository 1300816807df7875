// The bus layer over inproc://: framing, what gets dropped, and the control link's lifecycle.
#include "core/bus/bus.hpp"

#include <atomic>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include <gtest/gtest.h>

namespace pw::bus {
namespace {

using namespace std::chrono_literals;

// Every test gets its own endpoint names so a failed test cannot leak into the next one.
std::string unique_endpoint(const std::string& stem) {
    static std::atomic<int> counter{0};
    return "inproc://" + stem + "-" + std::to_string(counter++);
}

// A PUSH/PULL pair; receives block for at most two seconds so a bug fails instead of hanging.
struct Pipe {
    zmq::context_t context;
    zmq::socket_t push{context, zmq::socket_type::push};
    zmq::socket_t pull{context, zmq::socket_type::pull};

    Pipe() {
        const std::string endpoint = unique_endpoint("pipe");
        configure(push);
        configure(pull);
        pull.set(zmq::sockopt::rcvtimeo, 2000);
        pull.bind(endpoint);
        push.connect(endpoint);
    }

    void send_raw(const std::vector<std::string>& parts) {
        for (std::size_t i = 0; i < parts.size(); ++i) {
            const bool last = i + 1 == parts.size();
            ASSERT_TRUE(push.send(zmq::buffer(parts[i]),
                                  last ? zmq::send_flags::none : zmq::send_flags::sndmore));
        }
    }

    void send_piece(std::uint32_t piece) {
        v1::Envelope envelope;
        envelope.mutable_piece_batch()->add_pieces()->set_piece(piece);
        ASSERT_TRUE(send(push, "test", envelope));
    }

    RecvStatus receive_one(Incoming& in) { return receive(pull, false, in, zmq::recv_flags::none); }
};

TEST(Bus, RoundTripCarriesHeaderAndRawFrameWithoutCopy) {
    Pipe pipe;
    std::vector<std::uint8_t> buffer(100'000);
    for (std::size_t i = 0; i < buffer.size(); ++i) buffer[i] = static_cast<std::uint8_t>(i * 7);
    const std::vector<std::uint8_t> expected = buffer;
    const void* original_address = buffer.data();

    v1::Envelope envelope;
    envelope.mutable_piece_batch()->set_worker("peer_worker-1");
    auto* piece = envelope.mutable_piece_batch()->add_pieces();
    piece->set_piece(42);
    piece->set_lease_id(7);
    piece->add_contributors("10.0.0.1:6881");
    std::vector<zmq::message_t> frames;
    frames.push_back(frame_from_buffer(std::move(buffer)));
    ASSERT_TRUE(send(pipe.push, "peer_worker-1", envelope, frames));

    Incoming in;
    ASSERT_EQ(pipe.receive_one(in), RecvStatus::ok);
    EXPECT_EQ(in.envelope.version(), kSchemaVersion);
    EXPECT_EQ(in.envelope.sender(), "peer_worker-1");
    ASSERT_TRUE(in.envelope.has_piece_batch());
    ASSERT_EQ(in.envelope.piece_batch().pieces_size(), 1);
    const auto& received = in.envelope.piece_batch().pieces(0);
    EXPECT_EQ(received.piece(), 42u);
    EXPECT_EQ(received.lease_id(), 7u);
    ASSERT_EQ(received.contributors_size(), 1);
    EXPECT_EQ(received.contributors(0), "10.0.0.1:6881");
    ASSERT_EQ(in.frames.size(), 1u);
    ASSERT_EQ(in.frames[0].size(), expected.size());
    EXPECT_EQ(std::memcmp(in.frames[0].data(), expected.data(), expected.size()), 0);
    // inproc hands the message itself over: the very buffer we filled arrives.
    EXPECT_EQ(in.frames[0].data(), original_address);
}

TEST(Bus, EmptyBufferFrameArrivesEmpty) {
    Pipe pipe;
    v1::Envelope envelope;
    envelope.mutable_piece_batch()->add_pieces()->set_piece(1);
    std::vector<zmq::message_t> frames;
    frames.push_back(frame_from_buffer({}));
    ASSERT_TRUE(send(pipe.push, "test", envelope, frames));
    Incoming in;
    ASSERT_EQ(pipe.receive_one(in), RecvStatus::ok);
    ASSERT_EQ(in.frames.size(), 1u);
    EXPECT_EQ(in.frames[0].size(), 0u);
}

TEST(Bus, MalformedEnvelopeIsDroppedAndTheNextMessageArrives) {
    Pipe pipe;
    pipe.send_raw({std::string("\xff\xff\xff\xff\x0f garbage", 13), "trailing frame"});
    pipe.send_piece(5);

    Incoming in;
    EXPECT_EQ(pipe.receive_one(in), RecvStatus::dropped);
    ASSERT_EQ(pipe.receive_one(in), RecvStatus::ok);
    EXPECT_EQ(in.envelope.piece_batch().pieces(0).piece(), 5u);
    EXPECT_TRUE(in.frames.empty());
}

TEST(Bus, OtherSchemaVersionIsDropped) {
    Pipe pipe;
    v1::Envelope future;
    future.set_version(kSchemaVersion + 1);
    future.set_sender("from-the-future");
    future.mutable_piece_batch()->add_pieces()->set_piece(1);
    pipe.send_raw({future.SerializeAsString(), "a frame"});
    pipe.send_piece(2);

    Incoming in;
    EXPECT_EQ(pipe.receive_one(in), RecvStatus::dropped);
    ASSERT_EQ(pipe.receive_one(in), RecvStatus::ok);
    EXPECT_EQ(in.envelope.piece_batch().pieces(0).piece(), 2u);
}

TEST(Bus, TooManyFramesAreDroppedWholeButTheLimitItselfPasses) {
    Pipe pipe;
    v1::Envelope envelope;
    envelope.mutable_piece_batch()->add_pieces()->set_piece(3);
    std::vector<zmq::message_t> too_many;
    for (std::size_t i = 0; i < kMaxFrames + 1; ++i) too_many.emplace_back(std::string("x"));
    ASSERT_TRUE(send(pipe.push, "test", envelope, too_many));
    std::vector<zmq::message_t> just_enough;
    for (std::size_t i = 0; i < kMaxFrames; ++i) just_enough.emplace_back(std::string("y"));
    ASSERT_TRUE(send(pipe.push, "test", envelope, just_enough));
    pipe.send_piece(4);

    Incoming in;
    EXPECT_EQ(pipe.receive_one(in), RecvStatus::dropped);
    ASSERT_EQ(pipe.receive_one(in), RecvStatus::ok);
    EXPECT_EQ(in.frames.size(), kMaxFrames);
    ASSERT_EQ(pipe.receive_one(in), RecvStatus::ok);
    EXPECT_EQ(in.envelope.piece_batch().pieces(0).piece(), 4u);
    EXPECT_TRUE(in.frames.empty());
}

TEST(Bus, EnvelopeWithoutBodyIsDropped) {
    Pipe pipe;
    v1::Envelope empty;
    empty.set_version(kSchemaVersion);
    pipe.send_raw({empty.SerializeAsString()});
    // A newer stage's message type we do not know: field 99 is no oneof case of ours.
    std::string unknown_type = empty.SerializeAsString();
    unknown_type += std::string("\x9a\x06\x03" "abc", 6);  // field 99, length-delimited
    pipe.send_raw({unknown_type});
    pipe.send_piece(6);

    Incoming in;
    EXPECT_EQ(pipe.receive_one(in), RecvStatus::dropped);
    EXPECT_EQ(pipe.receive_one(in), RecvStatus::dropped);
    ASSERT_EQ(pipe.receive_one(in), RecvStatus::ok);
    EXPECT_EQ(in.envelope.piece_batch().pieces(0).piece(), 6u);
}

TEST(Bus, NothingToReadIsWouldBlock) {
    Pipe pipe;
    Incoming in;
    EXPECT_EQ(receive(pipe.pull, false, in), RecvStatus::would_block);
}

TEST(Bus, PeerKeyBracketsIpv6) {
    EXPECT_EQ(peer_key("10.1.2.3", 6881), "10.1.2.3:6881");
    EXPECT_EQ(peer_key("::1", 51413), "[::1]:51413");
}

// Plays the orchestrator on a ROUTER: answers the first Hello with a Welcome carrying
// `torrent` as its raw frame, then stays silent.
class FakeOrchestrator {
public:
    FakeOrchestrator(zmq::context_t& context, std::uint32_t heartbeat_ms)
        : endpoint_(unique_endpoint("control")), router_(context, zmq::socket_type::router) {
        configure(router_);
        router_.set(zmq::sockopt::rcvtimeo, 5000);
        router_.bind(endpoint_);
        thread_ = std::thread([this, heartbeat_ms] { answer_hello(heartbeat_ms); });
    }
    ~FakeOrchestrator() { thread_.join(); }

    const std::string& endpoint() const { return endpoint_; }
    // Valid once the ControlLink's handshake returned.
    const std::string& hello_identity() const { return identity_; }
    v1::Role hello_role() const { return role_; }
    // After the handshake (the answering thread is done with the socket by then): the
    // heartbeats among everything the stage sent within `window`.
    std::vector<v1::Heartbeat> heartbeats_within(std::chrono::milliseconds window) {
        std::vector<v1::Heartbeat> beats;
        const auto end = std::chrono::steady_clock::now() + window;
        Incoming in;
        while (std::chrono::steady_clock::now() < end) {
            if (receive(router_, true, in, zmq::recv_flags::dontwait) == RecvStatus::ok &&
                in.envelope.has_heartbeat()) {
                beats.push_back(in.envelope.heartbeat());
            }
        }
        return beats;
    }

private:
    void answer_hello(std::uint32_t heartbeat_ms) {
        Incoming in;
        while (receive(router_, true, in, zmq::recv_flags::none) != RecvStatus::would_block) {
            if (!in.envelope.has_hello()) continue;
            identity_ = in.identity;
            role_ = in.envelope.hello().role();
            v1::Envelope welcome;
            welcome.mutable_welcome()->set_heartbeat_ms(heartbeat_ms);
            welcome.mutable_welcome()->set_peer_id(std::string(20, 'P'));
            send(router_, "orchestrator", welcome, {}, &identity_);
            return;
        }
    }

    std::string endpoint_;
    zmq::socket_t router_;
    std::string identity_;
    v1::Role role_ = v1::ROLE_UNSPECIFIED;
    std::thread thread_;
};

TEST(ControlLink, HandshakeGetsTheWelcome) {
    zmq::context_t context;
    FakeOrchestrator orchestrator(context, 1000);
    ControlLink link(context, orchestrator.endpoint(), "verifier-test", v1::ROLE_VERIFIER,
                     Timing{100ms, 5, 5000ms});
    const auto answered = link.handshake();
    ASSERT_TRUE(answered.has_value());
    const Incoming& welcome = *answered;
    ASSERT_TRUE(welcome.envelope.has_welcome());
    EXPECT_EQ(welcome.envelope.sender(), "orchestrator");
    EXPECT_EQ(welcome.envelope.welcome().peer_id(), std::string(20, 'P'));
    EXPECT_EQ(orchestrator.hello_identity(), "verifier-test");
    EXPECT_EQ(orchestrator.hello_role(), v1::ROLE_VERIFIER);
}

TEST(ControlLink, HandshakeGivesUpWhenNobodyAnswers) {
    zmq::context_t context;
    zmq::socket_t silent(context, zmq::socket_type::router);
    configure(silent);
    const std::string endpoint = unique_endpoint("silent");
    silent.bind(endpoint);
    ControlLink link(context, endpoint, "writer-test", v1::ROLE_WRITER, Timing{20ms, 5, 100ms});
    EXPECT_THROW(link.handshake(), std::runtime_error);
}

// A termination signal before any Welcome ends the wait at once, not at the timeout.
TEST(ControlLink, HandshakeStopsWaitingWhenInterrupted) {
    zmq::context_t context;
    zmq::socket_t silent(context, zmq::socket_type::router);
    configure(silent);
    const std::string endpoint = unique_endpoint("silent");
    silent.bind(endpoint);
    ControlLink link(context, endpoint, "writer-test", v1::ROLE_WRITER, Timing{20ms, 5, 60'000ms});
    int fds[2];
    ASSERT_EQ(::pipe(fds), 0);
    ASSERT_EQ(::write(fds[1], "x", 1), 1);
    EXPECT_FALSE(link.handshake(fds[0]).has_value());
    ::close(fds[0]);
    ::close(fds[1]);
}

// A writer's link, welcomed by a fake orchestrator that beats every `heartbeat_ms`.
struct WelcomedLink {
    WelcomedLink(std::uint32_t heartbeat_ms, Timing timing)
        : orchestrator(context, heartbeat_ms),
          link(context, orchestrator.endpoint(), "writer-test", v1::ROLE_WRITER, timing) {
        (void)link.handshake();
    }
    zmq::context_t context;
    FakeOrchestrator orchestrator;
    ControlLink link;
};

TEST(ControlLink, TickReportsTheOrchestratorDeadAfterSilence) {
    // The Welcome's period (50 ms) replaces the link's own (an hour): silence is then judged
    // by the orchestrator's clock, 3 x 50 ms here.
    WelcomedLink welcomed(50, Timing{3600s, 3, 5000ms});
    EXPECT_LE(welcomed.link.until_next_tick(), 50ms);
    std::this_thread::sleep_for(400ms);
    EXPECT_FALSE(welcomed.link.tick(v1::Heartbeat{}));
}

TEST(ControlLink, TickKeepsTheLinkAliveWhileTheOrchestratorSpeaks) {
    WelcomedLink welcomed(60'000, Timing{100ms, 5, 5000ms});
    EXPECT_TRUE(welcomed.link.tick(v1::Heartbeat{}));
}

// A busy stage sends something every few milliseconds; its heartbeats (the only carriers of
// its counters, such as the peers the progress line shows) must still go out every period.
TEST(ControlLink, HeartbeatsGoOutWhileOtherMessagesFlow) {
    WelcomedLink welcomed(50, Timing{3600s, 100, 5000ms});
    ControlLink& link = welcomed.link;
    FakeOrchestrator& orchestrator = welcomed.orchestrator;
    v1::Heartbeat stats;
    stats.set_peers_connected(7);
    const auto end = std::chrono::steady_clock::now() + 300ms;
    while (std::chrono::steady_clock::now() < end) {
        v1::Envelope busy;
        busy.mutable_pieces_delivered();
        link.send(busy);
        (void)link.tick(stats);
        std::this_thread::sleep_for(5ms);
    }
    const std::vector<v1::Heartbeat> beats = orchestrator.heartbeats_within(100ms);
    ASSERT_GE(beats.size(), 2u);
    EXPECT_EQ(beats.back().peers_connected(), 7u);
}

}  // namespace
}  // namespace pw::bus

namespace pw::bus {
namespace {

v1::Envelope verified(std::uint32_t piece) {
    v1::Envelope envelope;
    auto* ref = envelope.mutable_pieces_verified()->add_pieces();
    ref->set_piece(piece);
    ref->set_lease_id(piece + 100);
    return envelope;
}

v1::Envelope freed(const std::string& worker, std::uint64_t arena, std::uint64_t lease,
                   bool all = false) {
    v1::Envelope envelope;
    auto* body = envelope.mutable_slots_freed();
    body->set_worker(worker);
    body->set_arena_id(arena);
    body->add_lease_ids(lease);
    body->set_all_delivered(all);
    return envelope;
}

TEST(MergeReport, ReportsOfOneKindTravelAsOne) {
    v1::Envelope into = verified(1);
    ASSERT_TRUE(merge_report(into, verified(2)));
    ASSERT_EQ(into.pieces_verified().pieces_size(), 2);
    EXPECT_EQ(into.pieces_verified().pieces(1).lease_id(), 102u);

    v1::Envelope slots = freed("peer_worker-1", 7, 1);
    ASSERT_TRUE(merge_report(slots, freed("peer_worker-1", 7, 2)));
    EXPECT_EQ(slots.slots_freed().lease_ids_size(), 2);
}

TEST(MergeReport, DifferentKindsWorkersArenasAndFreeAllStayApart) {
    v1::Envelope into = verified(1);
    EXPECT_FALSE(merge_report(into, freed("peer_worker-1", 7, 1)));
    v1::Envelope slots = freed("peer_worker-1", 7, 1);
    EXPECT_FALSE(merge_report(slots, freed("peer_worker-2", 7, 2)));
    EXPECT_FALSE(merge_report(slots, freed("peer_worker-1", 8, 2)));
    EXPECT_FALSE(merge_report(slots, freed("peer_worker-1", 7, 2, true)));
    v1::Envelope failed;
    failed.mutable_piece_failed()->set_piece(3);
    v1::Envelope other_failed = failed;
    EXPECT_FALSE(merge_report(failed, other_failed));  // each one may ban a peer
    EXPECT_EQ(slots.slots_freed().lease_ids_size(), 1);
}

}  // namespace
}  // namespace pw::bus
