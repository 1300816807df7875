// peer_worker against a real libtorrent seeder and against hostile peers on 127.0.0.1. The
// test plays the orchestrator (control ROUTER: Welcome, heartbeats, AddPeers, leases) and
// the verifier (PULL: reads each PieceBatch, from its frames or from the worker's arena, and
// checks every piece's SHA-1), and frees arena slots as the verifier and writer would.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <zmq.hpp>

#include "core/bus/bus.hpp"
#include "core/bus/piece_arena.hpp"
#include "core/metainfo.hpp"
#include "core/sha1.hpp"
#include "core/wire.hpp"
#include "tests/integration/harness.hpp"

namespace pw {
namespace {

using namespace std::chrono_literals;
namespace v1 = bus::v1;
using test::Process;
using test::TempDir;
using test::LoopbackSocket;
using test::open_loopback_socket;

constexpr std::uint32_t kHeartbeatMs = 200;
const std::string kOurPeerId = "-PW0001-integration1";

// The orchestrator and the verifier, as far as one worker can tell.
class FakePipeline {
public:
    explicit FakePipeline(const TempDir& dir)
        : control_endpoint_("ipc://" + dir / "control"),
          pieces_endpoint_("ipc://" + dir / "pieces"),
          router_(context_, zmq::socket_type::router), pull_(context_, zmq::socket_type::pull) {
        bus::configure(router_);
        bus::configure(pull_);
        router_.bind(control_endpoint_);
        pull_.bind(pieces_endpoint_);
    }

    const std::string& control_endpoint() const { return control_endpoint_; }
    bool welcomed() const { return !identity_.empty(); }
    const std::string& pieces_endpoint() const { return pieces_endpoint_; }

    void send(v1::Envelope& envelope, std::span<zmq::message_t> frames = {}) {
        ASSERT_FALSE(identity_.empty()) << "no worker has said Hello yet";
        bus::send(router_, "orchestrator", envelope, frames, &identity_);
    }

    // Pumps both sockets (answering Hello, heartbeating) and hands every message to
    // `on_control` / `on_piece` until `done` or the timeout. False on timeout.
    bool pump(const std::string& torrent_bytes, std::chrono::milliseconds timeout,
              const std::function<void(bus::Incoming&)>& on_control,
              const std::function<void(bus::Incoming&)>& on_piece,
              const std::function<bool()>& done) {
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        while (std::chrono::steady_clock::now() < deadline) {
            if (done()) return true;
            heartbeat();
            zmq::pollitem_t items[] = {{router_.handle(), 0, ZMQ_POLLIN, 0},
                                       {pull_.handle(), 0, ZMQ_POLLIN, 0}};
            zmq::poll(items, 2, 50ms);
            bus::Incoming in;
            while (bus::receive(router_, true, in) == bus::RecvStatus::ok) {
                if (in.envelope.has_hello()) {
                    identity_ = in.identity;
                    welcome(torrent_bytes);
                    continue;
                }
                if (in.envelope.has_heartbeat()) continue;
                on_control(in);
            }
            while (bus::receive(pull_, false, in) == bus::RecvStatus::ok) on_piece(in);
        }
        return done();
    }

private:
    void welcome(const std::string& torrent_bytes) {
        v1::Envelope envelope;
        envelope.mutable_welcome()->set_peer_id(kOurPeerId);
        envelope.mutable_welcome()->set_heartbeat_ms(kHeartbeatMs);
        zmq::message_t frame(torrent_bytes.data(), torrent_bytes.size());
        send(envelope, std::span<zmq::message_t>(&frame, 1));
    }

    void heartbeat() {
        const auto now = std::chrono::steady_clock::now();
        if (identity_.empty() || now - last_beat_ < std::chrono::milliseconds(kHeartbeatMs)) return;
        last_beat_ = now;
        v1::Envelope envelope;
        envelope.mutable_heartbeat();
        send(envelope);
    }

    std::string control_endpoint_;
    std::string pieces_endpoint_;
    zmq::context_t context_;
    zmq::socket_t router_;
    zmq::socket_t pull_;
    std::string identity_;
    std::chrono::steady_clock::time_point last_beat_{};
};

Process start_worker(const TempDir& dir, const FakePipeline& pipeline,
                     std::vector<std::string> extra_args = {}) {
    std::vector<std::string> argv{test::bin("peer_worker"), "--control", pipeline.control_endpoint(),
                                  "--pieces", pipeline.pieces_endpoint(), "--name", "peer_worker-test",
                                  "--log-level", "debug"};
    argv.insert(argv.end(), extra_args.begin(), extra_args.end());
    return Process::start(argv, dir / "worker.log");
}

void add_peer(FakePipeline& pipeline, std::uint16_t port) {
    v1::Envelope envelope;
    auto* peer = envelope.mutable_add_peers()->add_peers();
    peer->set_ip("127.0.0.1");
    peer->set_port(port);
    pipeline.send(envelope);
}

bool welcome_worker(FakePipeline& pipeline, const std::string& torrent_bytes) {
    return pipeline.pump(torrent_bytes, 20s, [](bus::Incoming&) {}, [](bus::Incoming&) {},
                         [&] { return pipeline.welcomed(); });
}

void shut_down(FakePipeline& pipeline, Process& worker) {
    v1::Envelope envelope;
    envelope.mutable_shutdown()->set_reason("test over");
    pipeline.send(envelope);
    EXPECT_EQ(worker.wait_for_exit(10s), 0) << worker.log_tail();
}

// How pieces reach the verifier: "off" as frames, "on" in the worker's arena.
class PeerWorkerDownload : public ::testing::TestWithParam<std::string> {};

TEST_P(PeerWorkerDownload, EveryPieceFromALibtorrentSeeder) {
    const bool arena_mode = GetParam() == "on";
    TempDir dir;
    // A short last piece and a short last block; 41 pieces, more than the arena's 16 slots
    // (1 MiB), so the worker finishes only if freed slots come back to it.
    const std::string payload = test::make_payload(dir.path(), "payload.bin", 40 * 65536 + 12345, 7);
    const std::string torrent_path = test::make_torrent(payload, 65536, {}, dir / "payload.torrent");
    const std::string torrent_bytes = test::read_text_file(torrent_path);
    auto torrent = Torrent::parse(torrent_bytes);
    ASSERT_TRUE(torrent.ok()) << torrent.error().describe();

    auto seeder = test::LibtorrentSeeder::start(torrent_path, dir.path());
    ASSERT_TRUE(seeder.wait_ready(60s)) << seeder.log();

    FakePipeline pipeline(dir);
    Process worker = start_worker(dir, pipeline,
                                  {"--shared-memory", GetParam(), "--piece-memory-mib", "1"});

    const std::string seeder_key = bus::peer_key("127.0.0.1", seeder.port());
    std::uint32_t next_piece = 0;
    std::uint64_t next_lease = 100;
    std::map<std::uint64_t, std::uint32_t> leases;  // lease id -> piece
    std::set<std::uint32_t> verified;
    std::set<std::uint64_t> delivered;
    std::size_t batches = 0;
    std::vector<std::string> problems;
    bool connected = false, saw_has = false;
    bus::ArenaReader arenas;

    // The bytes of piece `index` of `batch`, from its frame or from the worker's arena.
    const auto piece_digest = [&](const bus::Incoming& in, int index) -> std::optional<Sha1Digest> {
        const auto& batch = in.envelope.piece_batch();
        const auto& data = batch.pieces(index);
        if (!arena_mode) {
            const auto& frame = in.frames.at(static_cast<std::size_t>(index));
            return sha1(frame.data(), frame.size());
        }
        const bus::ArenaInfo arena{batch.arena().path(), batch.arena().id(),
                                   batch.arena().slot_size(), batch.arena().slot_count()};
        auto bytes = arenas.view(arena, data.slot(), data.size(), data.lease_id());
        if (!bytes.ok()) {
            problems.push_back("piece " + std::to_string(data.piece()) + ": " +
                               bytes.error().describe());
            return std::nullopt;
        }
        const auto digest = sha1(bytes->data(), bytes->size());
        if (!arenas.still_holds(arena, data.slot(), data.lease_id())) {
            problems.push_back("piece " + std::to_string(data.piece()) + ": slot reused");
            return std::nullopt;
        }
        return digest;
    };

    ASSERT_TRUE(welcome_worker(pipeline, torrent_bytes)) << worker.log_tail();
    add_peer(pipeline, seeder.port());
    const bool finished = pipeline.pump(
        torrent_bytes, 120s,
        [&](bus::Incoming& in) {
            const auto& e = in.envelope;
            if (e.has_peer_connected()) {
                connected = e.peer_connected().peer() == seeder_key;
            } else if (e.has_peer_has()) {
                saw_has = saw_has || e.peer_has().have_all() || e.peer_has().bitfield();
            } else if (e.has_peer_disconnected()) {
                problems.push_back("disconnected: " + e.peer_disconnected().reason());
            } else if (e.has_pieces_delivered()) {
                for (const auto& ref : e.pieces_delivered().pieces()) {
                    EXPECT_EQ(leases.at(ref.lease_id()), ref.piece());
                    EXPECT_TRUE(delivered.insert(ref.lease_id()).second) << "delivered twice";
                }
            } else if (e.has_lease_released()) {
                for (const auto id : e.lease_released().lease_ids()) {
                    // Give the piece out again later: rewind to it.
                    next_piece = std::min(next_piece, leases[id]);
                }
            } else if (e.has_work_request()) {
                v1::Envelope answer;
                auto* granted = answer.mutable_leases();
                granted->set_peer(e.work_request().peer());
                for (std::uint32_t i = 0; i < e.work_request().count(); ++i) {
                    while (next_piece < torrent->piece_count() && verified.count(next_piece)) ++next_piece;
                    if (next_piece >= torrent->piece_count()) break;
                    auto* lease = granted->add_leases();
                    lease->set_piece(next_piece);
                    lease->set_lease_id(next_lease);
                    leases[next_lease++] = next_piece++;
                }
                pipeline.send(answer);
            }
        },
        [&](bus::Incoming& in) {
            ASSERT_TRUE(in.envelope.has_piece_batch());
            const auto& batch = in.envelope.piece_batch();
            ++batches;
            EXPECT_EQ(batch.worker(), "peer_worker-test");
            EXPECT_EQ(batch.has_arena(), arena_mode);
            ASSERT_EQ(in.frames.size(), arena_mode ? 0u : static_cast<std::size_t>(batch.pieces_size()));
            ASSERT_GT(batch.pieces_size(), 0);
            EXPECT_LE(static_cast<std::size_t>(batch.pieces_size()), bus::kMaxBatchPieces);
            v1::Envelope freed;
            freed.mutable_slots_freed()->set_worker(batch.worker());
            freed.mutable_slots_freed()->set_arena_id(batch.arena().id());
            for (int i = 0; i < batch.pieces_size(); ++i) {
                const auto& data = batch.pieces(i);
                EXPECT_TRUE(data.worker().empty());  // the batch names the worker, once
                EXPECT_EQ(leases.at(data.lease_id()), data.piece());
                ASSERT_EQ(data.contributors_size(), 1);
                EXPECT_EQ(data.contributors(0), seeder_key);
                EXPECT_EQ(data.size(), torrent->piece_size(PieceIndex{data.piece()}));
                const auto digest = piece_digest(in, i);
                if (digest && *digest != torrent->piece_hash(PieceIndex{data.piece()})) {
                    problems.push_back("piece " + std::to_string(data.piece()) + " has a bad hash");
                }
                if (digest) verified.insert(data.piece());
                freed.mutable_slots_freed()->add_lease_ids(data.lease_id());
            }
            // As the writer would once the bytes are in the file (the orchestrator forwards it).
            if (arena_mode) pipeline.send(freed);
        },
        [&] { return verified.size() == torrent->piece_count(); });
    EXPECT_TRUE(finished) << verified.size() << " of " << torrent->piece_count()
                          << " pieces\n" << worker.log_tail() << "\n" << seeder.log();
    EXPECT_TRUE(connected);
    EXPECT_TRUE(saw_has);
    EXPECT_TRUE(problems.empty()) << problems.front();
    EXPECT_LE(batches, torrent->piece_count());
    // Each delivery is reported; the last report may still be on its way.
    const bool reported = pipeline.pump(
        torrent_bytes, 5s,
        [&](bus::Incoming& in) {
            if (!in.envelope.has_pieces_delivered()) return;
            for (const auto& ref : in.envelope.pieces_delivered().pieces()) delivered.insert(ref.lease_id());
        },
        [](bus::Incoming&) {}, [&] { return delivered.size() >= torrent->piece_count(); });
    EXPECT_TRUE(reported) << delivered.size() << " of " << torrent->piece_count() << " delivered";
    shut_down(pipeline, worker);
}

INSTANTIATE_TEST_SUITE_P(PeerWorker, PeerWorkerDownload, ::testing::Values("off", "on"),
                         [](const ::testing::TestParamInfo<std::string>& mode) {
                             return std::string(mode.param == "on" ? "InArena" : "AsFrames");
                         });

// A peer on 127.0.0.1 that answers our handshake with `reply` (all at once, or one byte per
// `trickle` interval) and then holds the line.
class ScriptedPeer {
public:
    explicit ScriptedPeer(std::string reply, std::chrono::milliseconds trickle = 0ms)
        : reply_(std::move(reply)), trickle_(trickle) {
        const LoopbackSocket listener = open_loopback_socket(SOCK_STREAM, 4);
        listener_ = listener.fd;
        port_ = listener.port;
        thread_ = std::thread([this] { serve(); });
    }
    ~ScriptedPeer() {
        stop_ = true;
        thread_.join();
        ::close(listener_);
    }
    std::uint16_t port() const { return port_; }

private:
    // Waits for `fd` to be readable, giving up when the test is over.
    bool wait_readable(int fd) {
        while (!stop_) {
            pollfd item{fd, POLLIN, 0};
            if (::poll(&item, 1, 50) > 0) return true;
        }
        return false;
    }

    void serve() {
        if (!wait_readable(listener_)) return;
        const int connection = ::accept(listener_, nullptr, nullptr);
        if (connection < 0) return;
        std::size_t got = 0;
        char handshake[wire::kHandshakeSize];
        while (got < sizeof(handshake) && wait_readable(connection)) {
            const auto n = ::read(connection, handshake + got, sizeof(handshake) - got);
            if (n <= 0) break;
            got += static_cast<std::size_t>(n);
        }
        if (got == sizeof(handshake) && trickle_ == 0ms) {
            static_cast<void>(::send(connection, reply_.data(), reply_.size(), MSG_NOSIGNAL));
        }
        for (std::size_t i = 0; got == sizeof(handshake) && trickle_ > 0ms && i < reply_.size(); ++i) {
            if (::send(connection, reply_.data() + i, 1, MSG_NOSIGNAL) != 1) break;
            for (auto waited = 0ms; waited < trickle_ && !stop_; waited += 50ms) {
                std::this_thread::sleep_for(50ms);
            }
        }
        // Hold the line (reading whatever comes) until the worker hangs up or the test ends.
        char sink[4096];
        while (wait_readable(connection) && ::read(connection, sink, sizeof(sink)) > 0) {
        }
        ::close(connection);
    }

    std::string reply_;
    std::chrono::milliseconds trickle_;
    int listener_ = -1;
    std::uint16_t port_ = 0;
    std::atomic<bool> stop_{false};
    std::thread thread_;
};

std::string handshake_bytes(const Sha1Digest& info_hash, const std::string& peer_id) {
    wire::Handshake handshake;
    handshake.info_hash = info_hash;
    std::copy(peer_id.begin(), peer_id.end(), handshake.peer_id.begin());
    const auto bytes = wire::encode_handshake(handshake);
    return std::string(bytes.begin(), bytes.end());
}

TEST(PeerWorker, DropsHostilePeersWithAReason) {
    TempDir dir;
    const std::string payload = test::make_payload(dir.path(), "payload.bin", 5 * 65536, 3);
    const std::string torrent_path = test::make_torrent(payload, 65536, {}, dir / "payload.torrent");
    const std::string torrent_bytes = test::read_text_file(torrent_path);
    auto torrent = Torrent::parse(torrent_bytes);
    ASSERT_TRUE(torrent.ok()) << torrent.error().describe();

    const std::string theirs = "-XX0001-hostile00001";
    // A length prefix of 4 GiB right after a good handshake.
    ScriptedPeer huge_prefix(handshake_bytes(torrent->info_hash(), theirs) +
                             std::string("\xFF\xFF\xFF\xFF", 4));
    // Another torrent's handshake.
    Sha1Digest other{};
    other.fill(0x42);
    ScriptedPeer wrong_torrent(handshake_bytes(other, theirs));
    // Ourselves: our own peer id comes back.
    ScriptedPeer ourselves(handshake_bytes(torrent->info_hash(), kOurPeerId));
    // A good handshake, then a message id nobody defined.
    ScriptedPeer junk(handshake_bytes(torrent->info_hash(), theirs) +
                      std::string("\x00\x00\x00\x01\x63", 5));

    // A good handshake, one byte every 2 s: the handshake deadline (10 s) ends it.
    ScriptedPeer trickle(handshake_bytes(torrent->info_hash(), theirs), 2000ms);

    FakePipeline pipeline(dir);
    Process worker = start_worker(dir, pipeline);
    ASSERT_TRUE(welcome_worker(pipeline, torrent_bytes)) << worker.log_tail();
    for (const auto* peer : {&huge_prefix, &wrong_torrent, &ourselves, &junk, &trickle}) {
        add_peer(pipeline, peer->port());
    }

    std::map<std::string, std::string> reasons;
    const bool all_dropped = pipeline.pump(
        torrent_bytes, 30s,
        [&](bus::Incoming& in) {
            if (in.envelope.has_peer_disconnected()) {
                reasons[in.envelope.peer_disconnected().peer()] =
                    in.envelope.peer_disconnected().reason();
            }
        },
        [](bus::Incoming&) {}, [&] { return reasons.size() == 5; });
    ASSERT_TRUE(all_dropped) << worker.log_tail();
    const auto reason = [&](const ScriptedPeer& peer) {
        return reasons[bus::peer_key("127.0.0.1", peer.port())];
    };
    EXPECT_NE(reason(huge_prefix).find("length prefix"), std::string::npos) << reason(huge_prefix);
    EXPECT_NE(reason(wrong_torrent).find("another torrent"), std::string::npos) << reason(wrong_torrent);
    EXPECT_NE(reason(ourselves).find("ourselves"), std::string::npos) << reason(ourselves);
    EXPECT_NE(reason(junk).find("unknown message id"), std::string::npos) << reason(junk);
    EXPECT_NE(reason(trickle).find("handshake timed out"), std::string::npos) << reason(trickle);
    EXPECT_TRUE(worker.running()) << worker.log_tail();
    shut_down(pipeline, worker);
}

TEST(PeerWorker, LeasesCancelsAndBansAgainstAPeerThatNeverSendsBlocks) {
    TempDir dir;
    const std::string payload = test::make_payload(dir.path(), "payload.bin", 5 * 65536, 4);
    const std::string torrent_path = test::make_torrent(payload, 65536, {}, dir / "payload.torrent");
    const std::string torrent_bytes = test::read_text_file(torrent_path);
    auto torrent = Torrent::parse(torrent_bytes);
    ASSERT_TRUE(torrent.ok()) << torrent.error().describe();
    // Handshake, a full bitfield of 5 pieces, unchoke; then silence.
    ScriptedPeer silent(handshake_bytes(torrent->info_hash(), "-XX0001-silentpeer01") +
                        std::string("\x00\x00\x00\x02\x05\xF8\x00\x00\x00\x01\x01", 11));
    const std::string key = bus::peer_key("127.0.0.1", silent.port());

    FakePipeline pipeline(dir);
    Process worker = start_worker(dir, pipeline);
    ASSERT_TRUE(welcome_worker(pipeline, torrent_bytes)) << worker.log_tail();
    add_peer(pipeline, silent.port());

    bool have_all = false, cancelled = false;
    std::optional<std::uint64_t> granted;
    std::vector<std::string> disconnects;
    const auto on_control = [&](bus::Incoming& in) {
        const auto& e = in.envelope;
        if (e.has_peer_has()) have_all = have_all || e.peer_has().have_all();
        if (e.has_work_request() && !granted) {
            EXPECT_EQ(e.work_request().peer(), key);
            EXPECT_GT(e.work_request().count(), 0u);
            v1::Envelope answer;
            answer.mutable_leases()->set_peer(key);
            auto* lease = answer.mutable_leases()->add_leases();
            lease->set_piece(0);
            lease->set_lease_id(42);
            pipeline.send(answer);
            granted = 42;
        }
        if (e.has_lease_released()) {
            EXPECT_EQ(e.lease_released().lease_ids_size(), 1);
            cancelled = e.lease_released().lease_ids(0) == 42;
        }
        if (e.has_peer_disconnected()) disconnects.push_back(e.peer_disconnected().reason());
    };
    const auto ignore = [](bus::Incoming&) {};
    ASSERT_TRUE(pipeline.pump(torrent_bytes, 20s, on_control, ignore,
                              [&] { return have_all && granted.has_value(); }))
        << worker.log_tail();

    v1::Envelope cancel;
    cancel.mutable_cancel_piece()->set_piece(0);
    pipeline.send(cancel);
    ASSERT_TRUE(pipeline.pump(torrent_bytes, 10s, on_control, ignore, [&] { return cancelled; }))
        << worker.log_tail();

    v1::Envelope ban;
    ban.mutable_ban_peer()->set_ip("127.0.0.1");
    ban.mutable_ban_peer()->set_reason("sent a bad piece");
    pipeline.send(ban);
    ASSERT_TRUE(pipeline.pump(torrent_bytes, 10s, on_control, ignore,
                              [&] { return disconnects.size() == 1; }))
        << worker.log_tail();
    EXPECT_NE(disconnects[0].find("banned"), std::string::npos) << disconnects[0];
    // Never again.
    add_peer(pipeline, silent.port());
    ASSERT_TRUE(pipeline.pump(torrent_bytes, 10s, on_control, ignore,
                              [&] { return disconnects.size() == 2; }))
        << worker.log_tail();
    EXPECT_EQ(disconnects[1], "banned");
    shut_down(pipeline, worker);
}

TEST(PeerWorker, ExitsNonZeroWhenTheOrchestratorFallsSilent) {
    TempDir dir;
    const std::string payload = test::make_payload(dir.path(), "payload.bin", 65536, 5);
    const std::string torrent_path = test::make_torrent(payload, 65536, {}, dir / "payload.torrent");
    const std::string torrent_bytes = test::read_text_file(torrent_path);
    FakePipeline pipeline(dir);
    Process worker = start_worker(dir, pipeline);
    ASSERT_TRUE(welcome_worker(pipeline, torrent_bytes)) << worker.log_tail();
    // No more heartbeats: five missed periods (1 s) and the worker gives up.
    const int code = worker.wait_for_exit(15s);
    EXPECT_NE(code, 0) << worker.log_tail();
    EXPECT_NE(code, -1) << "still running\n" << worker.log_tail();
}

}  // namespace
}  // namespace pw
