// peer_worker against real libtorrent seeders and leechers and against hostile peers on
// 127.0.0.1. The test plays the orchestrator (control ROUTER: Welcome with the listen port,
// the session's torrents and the pieces we have, heartbeats, AddPeers, leases, choke
// decisions, rate budgets), the verifier (PULL: reads each PieceBatch, from its frames or from
// the worker's arena, and checks every piece's SHA-1 against its own torrent), and the
// writer: it frees arena slots as the writer would, and answers the worker's reads (ROUTER:
// ReadPiece -> PieceRead, as a frame or in a read arena of its own, ReadsDone).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstring>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <zmq.hpp>

#include "core/bus/bus.hpp"
#include "core/bus/piece_arena.hpp"
#include "core/bus/welcome.hpp"
#include "core/metainfo.hpp"
#include "core/sha1.hpp"
#include "core/wire.hpp"
#include "peer_worker/worker_service.hpp"
#include "tests/integration/harness.hpp"
#include "tests/integration/raw_leecher.hpp"
#include "tests/unit/stage_harness.hpp"

namespace pw {
namespace {

using namespace std::chrono_literals;
namespace v1 = bus::v1;
using test::Process;
using test::TempDir;
using test::LoopbackSocket;
using test::open_loopback_socket;
using test::peer_id_for;
using test::RawLeecher;
using test::resident_kib;

constexpr std::uint32_t kHeartbeatMs = 200;
const std::string kOurPeerId = "-PW0001-integration1";
constexpr TorrentId kFirst{1};
constexpr TorrentId kSecond{2};

// A payload and its .torrent, made for one test.
struct TestTorrent {
    std::string path;  // the .torrent
    Torrent torrent;
    std::string payload;  // the content (one file)
};

TestTorrent make_test_torrent(const TempDir& dir, const std::string& name, std::uint64_t size,
                              std::uint32_t piece_bytes, std::uint32_t seed) {
    const std::string payload = test::make_payload(dir.path(), name, size, seed);
    const std::string path = test::make_torrent(payload, piece_bytes, {}, dir / (name + ".torrent"));
    auto torrent = Torrent::parse(test::read_text_file(path));
    if (!torrent) throw std::runtime_error(name + ": " + torrent.error().describe());
    return TestTorrent{path, std::move(torrent).value(), payload};
}

// The torrent an envelope from the worker is about; nullopt for those about none.
std::optional<TorrentId> torrent_of(const v1::Envelope& e) {
    switch (e.body_case()) {
        case v1::Envelope::kPeerConnected: return TorrentId{e.peer_connected().torrent()};
        case v1::Envelope::kPeerDisconnected: return TorrentId{e.peer_disconnected().torrent()};
        case v1::Envelope::kPeerHas: return TorrentId{e.peer_has().torrent()};
        case v1::Envelope::kWorkRequest: return TorrentId{e.work_request().torrent()};
        case v1::Envelope::kLeaseReleased: return TorrentId{e.lease_released().torrent()};
        case v1::Envelope::kPiecesDelivered:
            if (e.pieces_delivered().pieces_size() == 0) return std::nullopt;
            return TorrentId{e.pieces_delivered().pieces(0).torrent()};
        case v1::Envelope::kPeerStats: return TorrentId{e.peer_stats().torrent()};
        default: return std::nullopt;
    }
}

// The orchestrator and the verifier, as far as one worker can tell.
class FakePipeline {
public:
    // `tag` tells apart the endpoints of several pipelines in one folder.
    explicit FakePipeline(const TempDir& dir, const std::string& tag = "")
        : control_endpoint_("ipc://" + dir / ("control" + tag)),
          pieces_endpoint_("ipc://" + dir / ("pieces" + tag)),
          reads_endpoint_("ipc://" + dir / ("reads" + tag)),
          router_(context_, zmq::socket_type::router), pull_(context_, zmq::socket_type::pull),
          reads_(context_, zmq::socket_type::router) {
        bus::configure(router_);
        bus::configure(pull_);
        bus::configure(reads_);
        router_.bind(control_endpoint_);
        pull_.bind(pieces_endpoint_);
        reads_.bind(reads_endpoint_);
    }

    // The writer's read service (--reads): every message on it goes to `on_read`, which
    // answers through reads_socket().
    const std::string& reads_endpoint() const { return reads_endpoint_; }
    zmq::socket_t& reads_socket() { return reads_; }
    void on_reads(std::function<void(bus::Incoming&)> handler) { on_read_ = std::move(handler); }
    // The port the Welcome tells the worker to listen on (0: none).
    void set_listen_port(std::uint16_t port) { listen_port_ = port; }
    // The Welcome's encryption policy: off by default, as the scripted peers here take one
    // connection each and speak plaintext (encryption_itest proves MSE against libtorrent).
    void set_encryption(v1::Encryption encryption) { encryption_ = encryption; }
    // What the worker may serve of a torrent, told after its info: every piece, or a bitfield.
    void set_pieces_available(TorrentId id, std::optional<std::string> bitfield = std::nullopt) {
        for (Known& known : known_) {
            if (known.id == id) known.ours = bitfield.value_or(kHaveAll);
        }
    }

    const std::string& control_endpoint() const { return control_endpoint_; }
    bool welcomed() const { return !identity_.empty(); }
    const std::string& pieces_endpoint() const { return pieces_endpoint_; }
    // The worker's latest heartbeat, and how many came.
    const v1::Heartbeat& last_heartbeat() const { return last_heartbeat_; }
    std::size_t heartbeats() const { return heartbeats_; }

    // A torrent of the session: the worker hears of it after its Welcome (TorrentAdded, then
    // TorrentInfo unless `with_info` is false), or at once when it was welcomed already.
    void add_torrent(TorrentId id, const Torrent& torrent, bool with_info = true) {
        known_.push_back(Known{id, torrent.info_hash(), torrent.name(),
                               with_info ? torrent.info_bytes() : std::string(), std::string()});
        if (welcomed()) tell(known_.back());
    }

    void remove_torrent(TorrentId id) {
        v1::Envelope envelope = bus::torrent_removed_message(id, false);
        send(envelope);
    }

    void send(v1::Envelope& envelope, std::span<zmq::message_t> frames = {}) {
        ASSERT_FALSE(identity_.empty()) << "no worker has said Hello yet";
        bus::send(router_, "orchestrator", envelope, frames, &identity_);
    }

    // Pumps both sockets (answering Hello, heartbeating) and hands every message to
    // `on_control` / `on_piece` until `done` or the timeout. False on timeout.
    bool pump(std::chrono::milliseconds timeout,
              const std::function<void(bus::Incoming&)>& on_control,
              const std::function<void(bus::Incoming&)>& on_piece,
              const std::function<bool()>& done) {
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        while (std::chrono::steady_clock::now() < deadline) {
            if (done()) return true;
            heartbeat();
            zmq::pollitem_t items[] = {{router_.handle(), 0, ZMQ_POLLIN, 0},
                                       {pull_.handle(), 0, ZMQ_POLLIN, 0},
                                       {reads_.handle(), 0, ZMQ_POLLIN, 0}};
            zmq::poll(items, 3, 20ms);
            bus::Incoming in;
            while (bus::receive(router_, true, in) == bus::RecvStatus::ok) {
                if (in.envelope.has_hello()) {
                    identity_ = in.identity;
                    welcome();
                    continue;
                }
                if (in.envelope.has_heartbeat()) {
                    last_heartbeat_ = in.envelope.heartbeat();
                    ++heartbeats_;
                    continue;
                }
                on_control(in);
            }
            while (bus::receive(pull_, false, in) == bus::RecvStatus::ok) on_piece(in);
            while (bus::receive(reads_, true, in) == bus::RecvStatus::ok) {
                if (on_read_) on_read_(in);
            }
        }
        return done();
    }

private:
    inline static const std::string kHaveAll = "all";
    struct Known {
        TorrentId id;
        Sha1Digest info_hash;
        std::string name;
        std::string info;  // the info dictionary; empty: not told
        std::string ours;  // kHaveAll, a bitfield, or empty: no PiecesAvailable
    };
    v1::Encryption encryption_ = v1::ENCRYPTION_OFF;

    void welcome() {
        v1::Envelope envelope;
        envelope.mutable_welcome()->set_peer_id(kOurPeerId);
        envelope.mutable_welcome()->set_heartbeat_ms(kHeartbeatMs);
        envelope.mutable_welcome()->set_listen_port(listen_port_);
        envelope.mutable_welcome()->set_encryption(encryption_);
        send(envelope);
        for (const Known& known : known_) tell(known);
    }

    void tell(const Known& known) {
        bus::AddedTorrent added;
        added.id = known.id;
        added.info_hash = known.info_hash;
        added.name = known.name;
        v1::Envelope envelope = bus::torrent_added_message(added);
        send(envelope);
        if (known.info.empty()) return;
        v1::Envelope info = bus::torrent_info_message(known.id);
        zmq::message_t frame(known.info.data(), known.info.size());
        send(info, std::span<zmq::message_t>(&frame, 1));
        if (known.ours.empty()) return;
        v1::Envelope available;
        available.mutable_pieces_available()->set_torrent(known.id.get());
        if (known.ours == kHaveAll) {
            available.mutable_pieces_available()->set_have_all(true);
            send(available);
        } else {
            available.mutable_pieces_available()->set_bitfield(true);
            zmq::message_t bits(known.ours.data(), known.ours.size());
            send(available, std::span<zmq::message_t>(&bits, 1));
        }
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
    std::string reads_endpoint_;
    zmq::context_t context_;
    zmq::socket_t router_;
    zmq::socket_t pull_;
    zmq::socket_t reads_;
    std::function<void(bus::Incoming&)> on_read_;
    std::uint16_t listen_port_ = 0;
    std::string identity_;
    std::vector<Known> known_;
    v1::Heartbeat last_heartbeat_;
    std::size_t heartbeats_ = 0;
    std::chrono::steady_clock::time_point last_beat_{};
};

// One torrent's download as the orchestrator and the verifier see it: leases its pieces in
// order to whichever peer asks, checks each piece that arrives against the torrent's own
// hashes, and frees arena slots as the writer would.
class FakeDownload {
public:
    FakeDownload(FakePipeline& pipeline, TorrentId id, const Torrent& torrent, bool arena_mode,
                 std::uint64_t first_lease)
        : pipeline_(pipeline), id_(id), torrent_(torrent), arena_mode_(arena_mode),
          next_lease_(first_lease) {}

    TorrentId id() const { return id_; }
    bool complete() const { return verified.size() == torrent_.piece_count(); }
    bool all_delivered() const { return delivered.size() >= torrent_.piece_count(); }

    // A control message about this torrent; false (untouched) when it is about another.
    bool on_control(const bus::Incoming& in) {
        const auto& e = in.envelope;
        if (torrent_of(e) != id_) return false;
        ++messages;
        if (e.has_peer_connected()) {
            connected.insert(e.peer_connected().peer());
        } else if (e.has_peer_has()) {
            saw_has = saw_has || e.peer_has().have_all() || e.peer_has().bitfield();
        } else if (e.has_peer_disconnected()) {
            disconnected[e.peer_disconnected().peer()] = e.peer_disconnected().reason();
        } else if (e.has_pieces_delivered()) {
            for (const auto& ref : e.pieces_delivered().pieces()) {
                EXPECT_EQ(ref.torrent(), id_.get()) << "one report, one torrent";
                const auto lease = leases_.find(ref.lease_id());
                if (lease == leases_.end() || lease->second != ref.piece()) {
                    problems.push_back("delivered a lease of another piece or torrent");
                }
                EXPECT_TRUE(delivered.insert(ref.lease_id()).second) << "delivered twice";
            }
        } else if (e.has_lease_released()) {
            for (const auto id : e.lease_released().lease_ids()) {
                // Give the piece out again later: rewind to it.
                if (leases_.count(id) != 0) next_piece_ = std::min(next_piece_, leases_[id]);
            }
        } else if (e.has_work_request() && granting) {
            v1::Envelope answer;
            auto* granted = answer.mutable_leases();
            granted->set_peer(e.work_request().peer());
            granted->set_torrent(id_.get());
            for (std::uint32_t i = 0; i < e.work_request().count(); ++i) {
                while (next_piece_ < torrent_.piece_count() && verified.count(next_piece_) != 0) {
                    ++next_piece_;
                }
                if (next_piece_ >= torrent_.piece_count()) break;
                auto* lease = granted->add_leases();
                lease->set_piece(next_piece_);
                lease->set_lease_id(next_lease_);
                leases_[next_lease_++] = next_piece_++;
            }
            pipeline_.send(answer);
        }
        return true;
    }

    // A batch of this torrent's pieces; false (untouched) when it is another torrent's.
    bool on_piece(const bus::Incoming& in, bus::ArenaReader& arenas) {
        const auto& batch = in.envelope.piece_batch();
        if (TorrentId{batch.torrent()} != id_) return false;
        ++batches;
        EXPECT_EQ(batch.worker(), "peer_worker-test");
        EXPECT_EQ(batch.has_arena(), arena_mode_);
        EXPECT_EQ(in.frames.size(), arena_mode_ ? 0u : static_cast<std::size_t>(batch.pieces_size()));
        EXPECT_GT(batch.pieces_size(), 0);
        EXPECT_LE(static_cast<std::size_t>(batch.pieces_size()), bus::kMaxBatchPieces);
        if (arena_mode_) {
            EXPECT_EQ(batch.arena().slot_size(), torrent_.piece_length());  // an arena per length
            arenas_seen.insert(batch.arena().id());
        }
        v1::Envelope freed;
        freed.mutable_slots_freed()->set_worker(batch.worker());
        freed.mutable_slots_freed()->set_arena_id(batch.arena().id());
        for (int i = 0; i < batch.pieces_size(); ++i) {
            const auto& data = batch.pieces(i);
            const auto lease = leases_.find(data.lease_id());
            if (lease == leases_.end() || lease->second != data.piece()) {
                problems.push_back("piece " + std::to_string(data.piece()) +
                                   ": not a lease of this torrent's");
                continue;
            }
            EXPECT_EQ(data.contributors_size(), 1);
            if (data.contributors_size() == 1 && connected.count(data.contributors(0)) == 0) {
                problems.push_back("a contributor that never connected: " + data.contributors(0));
            }
            EXPECT_EQ(data.size(), torrent_.piece_size(PieceIndex{data.piece()}));
            const auto digest = piece_digest(in, i, arenas);
            if (digest && *digest != torrent_.piece_hash(PieceIndex{data.piece()})) {
                problems.push_back("piece " + std::to_string(data.piece()) + " has a bad hash");
            }
            if (digest) verified.insert(data.piece());
            freed.mutable_slots_freed()->add_lease_ids(data.lease_id());
        }
        // As the writer would once the bytes are in the file (the orchestrator forwards it).
        if (arena_mode_) pipeline_.send(freed);
        return true;
    }

    bool granting = true;  // answers WorkRequests
    std::set<std::string> connected;
    std::map<std::string, std::string> disconnected;  // peer -> reason
    bool saw_has = false;
    std::set<std::uint32_t> verified;
    std::set<std::uint64_t> delivered;
    std::set<std::uint64_t> arenas_seen;
    std::size_t batches = 0;
    std::size_t messages = 0;  // control messages about this torrent
    std::vector<std::string> problems;

private:
    // The bytes of piece `index` of the batch, from its frame or from the worker's arena.
    std::optional<Sha1Digest> piece_digest(const bus::Incoming& in, int index,
                                           bus::ArenaReader& arenas) {
        const auto& batch = in.envelope.piece_batch();
        const auto& data = batch.pieces(index);
        if (!arena_mode_) {
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
    }

    FakePipeline& pipeline_;
    TorrentId id_;
    const Torrent& torrent_;
    bool arena_mode_;
    std::uint32_t next_piece_ = 0;
    std::uint64_t next_lease_;
    std::map<std::uint64_t, std::uint32_t> leases_;  // lease id -> piece
};

Process start_worker(const TempDir& dir, const FakePipeline& pipeline,
                     std::vector<std::string> extra_args = {}) {
    std::vector<std::string> argv{test::bin("peer_worker"), "--control", pipeline.control_endpoint(),
                                  "--pieces", pipeline.pieces_endpoint(), "--name", "peer_worker-test",
                                  "--log-level", "debug"};
    argv.insert(argv.end(), extra_args.begin(), extra_args.end());
    return Process::start(argv, dir / "worker.log");
}

void add_peer(FakePipeline& pipeline, TorrentId torrent, std::uint16_t port) {
    v1::Envelope envelope;
    envelope.mutable_add_peers()->set_torrent(torrent.get());
    auto* peer = envelope.mutable_add_peers()->add_peers();
    peer->set_ip("127.0.0.1");
    peer->set_port(port);
    pipeline.send(envelope);
}

const auto kIgnore = [](bus::Incoming&) {};

bool welcome_worker(FakePipeline& pipeline) {
    return pipeline.pump(20s, kIgnore, kIgnore, [&] { return pipeline.welcomed(); });
}

void shut_down(FakePipeline& pipeline, Process& worker) {
    v1::Envelope envelope;
    envelope.mutable_shutdown()->set_reason("test over");
    pipeline.send(envelope);
    EXPECT_EQ(worker.wait_for_exit(10s), 0) << worker.log_tail();
}

// One libtorrent session seeding several torrents (their content all in `data_dir`) on one
// port, as one client seeding many torrents does (lt_seeder.py --also).
class MultiSeeder {
public:
    MultiSeeder(const TempDir& dir, const std::vector<std::string>& torrents,
                std::uint32_t rate_kib = 0)
        : port_(test::free_port()) {
        std::vector<std::string> argv{"/usr/bin/python3", test::helper("lt_seeder.py"), torrents.at(0),
                                      dir.path(), "--port", std::to_string(port_),
                                      "--rate-kib", std::to_string(rate_kib)};
        for (std::size_t i = 1; i < torrents.size(); ++i) argv.insert(argv.end(), {"--also", torrents[i]});
        process_ = Process::start(argv, dir / "lt_seeder.log");
    }
    std::uint16_t port() const { return port_; }
    bool wait_ready(std::chrono::milliseconds timeout) {
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        while (std::chrono::steady_clock::now() < deadline) {
            const std::string text = test::read_text_file(process_.log_path());
            const auto ready = text.find("READY ");
            if (ready != std::string::npos && text.find('\n', ready) != std::string::npos) return true;
            if (!process_.running()) return false;
            std::this_thread::sleep_for(50ms);
        }
        return false;
    }
    std::string log() const { return process_.log_tail(60); }

private:
    std::uint16_t port_;
    Process process_;
};

// How pieces reach the verifier: "off" as frames, "on" in the worker's arenas.
class PeerWorkerDownload : public ::testing::TestWithParam<std::string> {};

TEST_P(PeerWorkerDownload, EveryPieceFromALibtorrentSeeder) {
    const bool arena_mode = GetParam() == "on";
    TempDir dir;
    // A short last piece and a short last block; 41 pieces, more than the arena's 16 slots
    // (1 MiB), so the worker finishes only if freed slots come back to it.
    const TestTorrent t = make_test_torrent(dir, "payload.bin", 40 * 65536 + 12345, 65536, 7);
    auto seeder = test::LibtorrentSeeder::start(t.path, dir.path());
    ASSERT_TRUE(seeder.wait_ready(60s)) << seeder.log();

    FakePipeline pipeline(dir);
    pipeline.add_torrent(kFirst, t.torrent);
    Process worker = start_worker(dir, pipeline,
                                  {"--shared-memory", GetParam(), "--piece-memory-mib", "1"});
    FakeDownload download(pipeline, kFirst, t.torrent, arena_mode, 100);
    bus::ArenaReader arenas;

    ASSERT_TRUE(welcome_worker(pipeline)) << worker.log_tail();
    add_peer(pipeline, kFirst, seeder.port());
    const bool finished = pipeline.pump(
        120s, [&](bus::Incoming& in) { EXPECT_TRUE(download.on_control(in)) << in.envelope.DebugString(); },
        [&](bus::Incoming& in) { EXPECT_TRUE(download.on_piece(in, arenas)); },
        [&] { return download.complete(); });
    EXPECT_TRUE(finished) << download.verified.size() << " of " << t.torrent.piece_count()
                          << " pieces\n" << worker.log_tail() << "\n" << seeder.log();
    const std::string seeder_key = bus::peer_key("127.0.0.1", seeder.port());
    EXPECT_EQ(download.connected, std::set<std::string>{seeder_key});
    EXPECT_TRUE(download.saw_has);
    EXPECT_TRUE(download.disconnected.empty()) << download.disconnected.begin()->second;
    EXPECT_TRUE(download.problems.empty()) << download.problems.front();
    EXPECT_LE(download.batches, t.torrent.piece_count());
    // Each delivery is reported; the last report may still be on its way.
    const bool reported = pipeline.pump(
        5s, [&](bus::Incoming& in) { download.on_control(in); }, kIgnore,
        [&] { return download.all_delivered(); });
    EXPECT_TRUE(reported) << download.delivered.size() << " of " << t.torrent.piece_count()
                          << " delivered";
    shut_down(pipeline, worker);
}

// Two torrents of different piece lengths at once from one libtorrent session seeding both on
// one port: the same "ip:port" is two connections, one per torrent; each piece is checked
// against its own torrent's hashes; batches never mix torrents; one piece budget (1 MiB) for
// both, an arena per piece length.
TEST_P(PeerWorkerDownload, TwoTorrentsAtOnceFromOneSeederOnOnePort) {
    const bool arena_mode = GetParam() == "on";
    TempDir dir;
    const TestTorrent a = make_test_torrent(dir, "a.bin", 40 * 65536 + 12345, 65536, 11);
    const TestTorrent b = make_test_torrent(dir, "b.bin", 150 * 16384 + 777, 16384, 12);
    MultiSeeder seeder(dir, {a.path, b.path});
    ASSERT_TRUE(seeder.wait_ready(60s)) << seeder.log();

    FakePipeline pipeline(dir);
    pipeline.add_torrent(kFirst, a.torrent);
    pipeline.add_torrent(kSecond, b.torrent);
    Process worker = start_worker(dir, pipeline,
                                  {"--shared-memory", GetParam(), "--piece-memory-mib", "1"});
    FakeDownload download_a(pipeline, kFirst, a.torrent, arena_mode, 100);
    FakeDownload download_b(pipeline, kSecond, b.torrent, arena_mode, 1'000'000);
    bus::ArenaReader arenas;
    std::vector<std::string> strays;

    ASSERT_TRUE(welcome_worker(pipeline)) << worker.log_tail();
    add_peer(pipeline, kFirst, seeder.port());
    add_peer(pipeline, kSecond, seeder.port());
    const auto on_control = [&](bus::Incoming& in) {
        if (!download_a.on_control(in) && !download_b.on_control(in)) {
            strays.push_back(bus::body_name(in.envelope));
        }
    };
    const auto on_piece = [&](bus::Incoming& in) {
        if (!download_a.on_piece(in, arenas) && !download_b.on_piece(in, arenas)) {
            strays.push_back("a batch of torrent " + std::to_string(in.envelope.piece_batch().torrent()));
        }
    };
    const bool finished = pipeline.pump(120s, on_control, on_piece, [&] {
        return download_a.complete() && download_b.complete();
    });
    EXPECT_TRUE(finished) << download_a.verified.size() << " of " << a.torrent.piece_count()
                          << " and " << download_b.verified.size() << " of "
                          << b.torrent.piece_count() << " pieces\n"
                          << worker.log_tail() << "\n" << seeder.log();
    const std::string seeder_key = bus::peer_key("127.0.0.1", seeder.port());
    for (FakeDownload* download : {&download_a, &download_b}) {
        SCOPED_TRACE("torrent " + std::to_string(download->id().get()));
        EXPECT_EQ(download->connected, std::set<std::string>{seeder_key});
        EXPECT_TRUE(download->disconnected.empty()) << download->disconnected.begin()->second;
        EXPECT_TRUE(download->problems.empty()) << download->problems.front();
        if (arena_mode) {
            EXPECT_EQ(download->arenas_seen.size(), 1u);
        }
    }
    EXPECT_TRUE(strays.empty()) << strays.front();
    if (arena_mode) {
        EXPECT_NE(download_a.arenas_seen, download_b.arenas_seen);
    }
    // The heartbeat counts each torrent's bytes (both complete, every byte once at least).
    ASSERT_TRUE(pipeline.pump(5s, on_control, on_piece, [&] {
        const auto& beat = pipeline.last_heartbeat();
        return beat.torrents_size() == 2 &&
               beat.bytes_downloaded() >= a.torrent.total_size() + b.torrent.total_size();
    })) << pipeline.last_heartbeat().DebugString();
    for (const auto& counters : pipeline.last_heartbeat().torrents()) {
        const std::uint64_t size = counters.torrent() == kFirst.get() ? a.torrent.total_size()
                                                                      : b.torrent.total_size();
        EXPECT_GE(counters.bytes_downloaded(), size) << counters.torrent();
        EXPECT_EQ(counters.peers_connected(), 1u);
    }
    EXPECT_EQ(pipeline.last_heartbeat().peers_connected(), 2u);
    shut_down(pipeline, worker);
}

INSTANTIATE_TEST_SUITE_P(PeerWorker, PeerWorkerDownload, ::testing::Values("off", "on"),
                         [](const ::testing::TestParamInfo<std::string>& mode) {
                             return std::string(mode.param == "on" ? "InArena" : "AsFrames");
                         });

// A peer on 127.0.0.1 that answers our handshake with `reply` (all at once, or one byte per
// `trickle` interval) and then holds the line until the worker hangs up.
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
    // The worker closed the connection.
    bool hung_up() const { return hung_up_; }

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
        if (!stop_) hung_up_ = true;
        ::close(connection);
    }

    std::string reply_;
    std::chrono::milliseconds trickle_;
    int listener_ = -1;
    std::uint16_t port_ = 0;
    std::atomic<bool> stop_{false};
    std::atomic<bool> hung_up_{false};
    std::thread thread_;
};

std::string handshake_bytes(const Sha1Digest& info_hash, const std::string& peer_id) {
    wire::Handshake handshake;
    handshake.info_hash = info_hash;
    std::copy(peer_id.begin(), peer_id.end(), handshake.peer_id.begin());
    const auto bytes = wire::encode_handshake(handshake);
    return std::string(bytes.begin(), bytes.end());
}

// A handshake for `info_hash`, a full bitfield of `pieces` and an unchoke; then silence.
std::string silent_seeder_reply(const Sha1Digest& info_hash, const std::string& peer_id,
                                std::uint32_t pieces = 5) {
    std::string bits((pieces + 7) / 8, '\xFF');
    if (pieces % 8 != 0) bits.back() = static_cast<char>(0xFF << (8 - pieces % 8));
    const std::uint32_t length = htonl(static_cast<std::uint32_t>(1 + bits.size()));
    std::string bitfield(reinterpret_cast<const char*>(&length), 4);
    bitfield += '\x05' + bits;
    return handshake_bytes(info_hash, peer_id) + bitfield + std::string("\x00\x00\x00\x01\x01", 5);
}

// Torrent A is removed while its pieces come in: its peers are closed without a report (the
// orchestrator forgot it), its leases and their room go, and torrent B, fetched from the same
// seeder on the same port, completes.
TEST(PeerWorker, RemovingATorrentMidDownloadClosesItsPeersAndTheOtherCompletes) {
    TempDir dir;
    const TestTorrent a = make_test_torrent(dir, "a.bin", 80 * 65536, 65536, 21);
    const TestTorrent b = make_test_torrent(dir, "b.bin", 100 * 16384 + 5, 16384, 22);
    // Capped, so A is still coming in when it is removed.
    MultiSeeder seeder(dir, {a.path, b.path}, 1024);
    ASSERT_TRUE(seeder.wait_ready(60s)) << seeder.log();
    // Another peer of A that takes leases and never sends a block.
    ScriptedPeer silent(silent_seeder_reply(a.torrent.info_hash(), "-XX0001-silentpeer01", 80));
    ScriptedPeer too_late(silent_seeder_reply(a.torrent.info_hash(), "-XX0001-toolatepeer1", 80));

    FakePipeline pipeline(dir);
    pipeline.add_torrent(kFirst, a.torrent);
    pipeline.add_torrent(kSecond, b.torrent);
    Process worker = start_worker(dir, pipeline, {"--shared-memory", "on", "--piece-memory-mib", "2"});
    FakeDownload download_a(pipeline, kFirst, a.torrent, true, 100);
    FakeDownload download_b(pipeline, kSecond, b.torrent, true, 1'000'000);
    bus::ArenaReader arenas;
    bool removed = false;
    std::vector<std::string> about_a_after_removal;
    std::optional<std::string> refusal;
    const std::string too_late_key = bus::peer_key("127.0.0.1", too_late.port());
    const auto on_control = [&](bus::Incoming& in) {
        const auto& e = in.envelope;
        if (removed && torrent_of(e) == kFirst) {
            if (e.has_peer_disconnected() && e.peer_disconnected().peer() == too_late_key) {
                refusal = e.peer_disconnected().reason();
                return;
            }
            // What the worker sent before it read the removal still comes; the refusal, its
            // answer to an AddPeers sent after the removal, marks the point from which nothing
            // about A may come. Its closed peers are never reported.
            if (refusal || e.has_peer_disconnected()) about_a_after_removal.push_back(e.DebugString());
            return;
        }
        download_a.on_control(in);
        download_b.on_control(in);
    };
    const auto on_piece = [&](bus::Incoming& in) {
        // A's pieces sent before the removal still come; a verifier drops them as unknown.
        if (!download_a.on_piece(in, arenas)) download_b.on_piece(in, arenas);
    };

    ASSERT_TRUE(welcome_worker(pipeline)) << worker.log_tail();
    add_peer(pipeline, kFirst, silent.port());
    add_peer(pipeline, kFirst, seeder.port());
    add_peer(pipeline, kSecond, seeder.port());
    ASSERT_TRUE(pipeline.pump(60s, on_control, on_piece, [&] {
        return download_a.verified.size() >= 5 && download_a.connected.size() == 2;
    })) << download_a.verified.size() << " pieces of A\n" << worker.log_tail();
    ASSERT_FALSE(download_a.complete());
    ASSERT_TRUE(download_a.disconnected.empty()) << download_a.disconnected.begin()->second;

    pipeline.remove_torrent(kFirst);
    removed = true;
    add_peer(pipeline, kFirst, too_late.port());  // answered only after the removal is done
    ASSERT_TRUE(pipeline.pump(10s, on_control, on_piece, [&] { return refusal.has_value(); }))
        << worker.log_tail();
    EXPECT_EQ(*refusal, "torrent not known here");
    ASSERT_TRUE(pipeline.pump(10s, on_control, on_piece, [&] { return silent.hung_up(); }))
        << "A's silent peer still connected\n" << worker.log_tail();

    ASSERT_TRUE(pipeline.pump(120s, on_control, on_piece, [&] { return download_b.complete(); }))
        << download_b.verified.size() << " of " << b.torrent.piece_count() << " pieces of B\n"
        << worker.log_tail() << "\n" << seeder.log();
    EXPECT_TRUE(download_b.problems.empty()) << download_b.problems.front();
    EXPECT_TRUE(download_b.disconnected.empty()) << download_b.disconnected.begin()->second;
    EXPECT_TRUE(about_a_after_removal.empty()) << about_a_after_removal.front();
    // The heartbeat counts only B now.
    ASSERT_TRUE(pipeline.pump(5s, on_control, on_piece, [&] {
        const auto& beat = pipeline.last_heartbeat();
        return beat.torrents_size() == 1 && beat.torrents(0).torrent() == kSecond.get() &&
               beat.peers_connected() == 1;
    })) << pipeline.last_heartbeat().DebugString();
    shut_down(pipeline, worker);
}

// Peers of a torrent the worker does not know, or knows by info-hash only, are refused (BEP 9
// will connect before the info); leases for an unknown torrent go straight back.
// A torrent known by info-hash alone (a magnet) takes peers: they fetch its metadata.
TEST(PeerWorker, PeersOfATorrentNotKnownHereAreRefusedThoseOfAMagnetDialled) {
    TempDir dir;
    const TestTorrent a = make_test_torrent(dir, "a.bin", 5 * 65536, 65536, 31);
    const TestTorrent b = make_test_torrent(dir, "b.bin", 5 * 65536, 65536, 32);
    FakePipeline pipeline(dir);
    pipeline.add_torrent(kFirst, a.torrent);
    pipeline.add_torrent(kSecond, b.torrent, /*with_info=*/false);
    Process worker = start_worker(dir, pipeline);
    ASSERT_TRUE(welcome_worker(pipeline)) << worker.log_tail();
    add_peer(pipeline, TorrentId{9}, 6881);
    add_peer(pipeline, kSecond, 6882);
    v1::Envelope leases;
    leases.mutable_leases()->set_torrent(9);
    leases.mutable_leases()->set_peer("127.0.0.1:6881");
    leases.mutable_leases()->add_leases()->set_lease_id(77);
    pipeline.send(leases);

    std::map<std::uint32_t, std::pair<std::string, std::string>> refused;  // torrent -> peer, reason
    std::optional<v1::LeaseReleased> released;
    ASSERT_TRUE(pipeline.pump(
        10s,
        [&](bus::Incoming& in) {
            const auto& e = in.envelope;
            if (e.has_peer_disconnected()) {
                refused[e.peer_disconnected().torrent()] = {e.peer_disconnected().peer(),
                                                            e.peer_disconnected().reason()};
            }
            if (e.has_lease_released()) released = e.lease_released();
        },
        kIgnore, [&] { return refused.size() == 2 && released.has_value(); }))
        << worker.log_tail();
    EXPECT_EQ(refused[9], std::make_pair(std::string("127.0.0.1:6881"), std::string("torrent not known here")));
    EXPECT_EQ(refused[2].first, "127.0.0.1:6882");
    EXPECT_EQ(refused[2].second.rfind("connect failed", 0), 0u) << refused[2].second;  // nobody listens there
    EXPECT_EQ(released->torrent(), 9u);
    ASSERT_EQ(released->lease_ids_size(), 1);
    EXPECT_EQ(released->lease_ids(0), 77u);
    EXPECT_TRUE(worker.running()) << worker.log_tail();
    shut_down(pipeline, worker);
}

// --max-peers counts every connection of every torrent.
TEST(PeerWorker, MaxPeersHoldsAcrossTwoTorrents) {
    TempDir dir;
    const TestTorrent a = make_test_torrent(dir, "a.bin", 5 * 65536, 65536, 41);
    const TestTorrent b = make_test_torrent(dir, "b.bin", 5 * 65536, 65536, 42);
    auto a1 = std::make_unique<ScriptedPeer>(handshake_bytes(a.torrent.info_hash(), "-XX0001-peera1000001"));
    ScriptedPeer a2(handshake_bytes(a.torrent.info_hash(), "-XX0001-peera2000002"));
    ScriptedPeer b1(handshake_bytes(b.torrent.info_hash(), "-XX0001-peerb1000001"));
    ScriptedPeer b2(handshake_bytes(b.torrent.info_hash(), "-XX0001-peerb2000002"));

    FakePipeline pipeline(dir);
    pipeline.add_torrent(kFirst, a.torrent);
    pipeline.add_torrent(kSecond, b.torrent);
    Process worker = start_worker(dir, pipeline, {"--max-peers", "3"});
    ASSERT_TRUE(welcome_worker(pipeline)) << worker.log_tail();
    std::set<std::pair<std::uint32_t, std::string>> connected;
    std::map<std::pair<std::uint32_t, std::string>, std::string> disconnected;
    const auto on_control = [&](bus::Incoming& in) {
        const auto& e = in.envelope;
        if (e.has_peer_connected()) connected.insert({e.peer_connected().torrent(), e.peer_connected().peer()});
        if (e.has_peer_disconnected()) {
            disconnected[{e.peer_disconnected().torrent(), e.peer_disconnected().peer()}] =
                e.peer_disconnected().reason();
        }
    };
    add_peer(pipeline, kFirst, a1->port());
    add_peer(pipeline, kFirst, a2.port());
    ASSERT_TRUE(pipeline.pump(10s, on_control, kIgnore, [&] { return connected.size() == 2; }))
        << worker.log_tail();
    add_peer(pipeline, kSecond, b1.port());
    add_peer(pipeline, kSecond, b2.port());
    const std::pair<std::uint32_t, std::string> b2_key{2, bus::peer_key("127.0.0.1", b2.port())};
    ASSERT_TRUE(pipeline.pump(10s, on_control, kIgnore, [&] {
        return connected.size() == 3 && disconnected.size() == 1;
    })) << worker.log_tail();
    EXPECT_EQ(disconnected.begin()->first, b2_key);
    EXPECT_NE(disconnected.begin()->second.find("--max-peers"), std::string::npos);
    EXPECT_EQ(connected.count({2, bus::peer_key("127.0.0.1", b1.port())}), 1u);

    // One of A's peers leaves: B may have its second peer now.
    const std::pair<std::uint32_t, std::string> a1_key{1, bus::peer_key("127.0.0.1", a1->port())};
    a1.reset();
    ASSERT_TRUE(pipeline.pump(10s, on_control, kIgnore, [&] { return disconnected.count(a1_key) == 1; }))
        << worker.log_tail();
    add_peer(pipeline, kSecond, b2.port());
    ASSERT_TRUE(pipeline.pump(10s, on_control, kIgnore, [&] { return connected.count(b2_key) == 1; }))
        << worker.log_tail();
    ASSERT_TRUE(pipeline.pump(5s, on_control, kIgnore, [&] {
        return pipeline.last_heartbeat().peers_connected() == 3;
    })) << pipeline.last_heartbeat().DebugString();
    shut_down(pipeline, worker);
}

// SIGTERM (through the signalfd run_stage makes) ends the worker cleanly: its peers are
// closed, it says Goodbye so the orchestrator takes back its leases at once, and it exits 0.
TEST(PeerWorker, SigtermEndsItWithAGoodbyeAndExitZero) {
    TempDir dir;
    const TestTorrent a = make_test_torrent(dir, "a.bin", 5 * 65536, 65536, 51);
    ScriptedPeer peer(silent_seeder_reply(a.torrent.info_hash(), "-XX0001-sigtermpeer1"));
    FakePipeline pipeline(dir);
    pipeline.add_torrent(kFirst, a.torrent);
    Process worker = start_worker(dir, pipeline);
    ASSERT_TRUE(welcome_worker(pipeline)) << worker.log_tail();
    add_peer(pipeline, kFirst, peer.port());
    bool connected = false;
    std::optional<std::string> goodbye;
    const auto on_control = [&](bus::Incoming& in) {
        connected = connected || in.envelope.has_peer_connected();
        if (in.envelope.has_goodbye()) goodbye = in.envelope.goodbye().reason();
    };
    ASSERT_TRUE(pipeline.pump(10s, on_control, kIgnore, [&] { return connected; })) << worker.log_tail();
    worker.terminate();
    ASSERT_TRUE(pipeline.pump(10s, on_control, kIgnore, [&] { return goodbye.has_value(); }))
        << worker.log_tail();
    EXPECT_EQ(*goodbye, "SIGTERM");
    EXPECT_EQ(worker.wait_for_exit(10s), 0) << worker.log_tail();
    ASSERT_TRUE(pipeline.pump(5s, kIgnore, kIgnore, [&] { return peer.hung_up(); }));
}

// The same in-process, with a pipe standing in for the signalfd (a test cannot block signals
// for a worker on one of its threads): the signal descriptor is the worker's loop's business.
TEST(PeerWorker, ATerminationSignalOnItsDescriptorEndsTheLoopWithAGoodbye) {
    TempDir dir;
    const TestTorrent a = make_test_torrent(dir, "a.bin", 5 * 65536, 65536, 52);
    FakePipeline pipeline(dir);
    pipeline.add_torrent(kFirst, a.torrent);
    test::FakeSignals signals;
    peer_worker::WorkerOptions options;
    options.control = pipeline.control_endpoint();
    options.pieces = pipeline.pieces_endpoint();
    options.name = "peer_worker-test";
    options.signal_fd = signals.fd();
    auto result = std::async(std::launch::async, [options] {
        peer_worker::WorkerService service(options);
        return service.run();
    });
    ASSERT_TRUE(welcome_worker(pipeline));
    ASSERT_TRUE(pipeline.pump(5s, kIgnore, kIgnore, [&] { return pipeline.heartbeats() > 0; }));
    ASSERT_TRUE(signals.raise(SIGTERM));
    std::optional<std::string> goodbye;
    ASSERT_TRUE(pipeline.pump(10s,
                              [&](bus::Incoming& in) {
                                  if (in.envelope.has_goodbye()) goodbye = in.envelope.goodbye().reason();
                              },
                              kIgnore, [&] { return goodbye.has_value(); }));
    EXPECT_EQ(*goodbye, "SIGTERM");
    ASSERT_EQ(result.wait_for(10s), std::future_status::ready);
    EXPECT_EQ(result.get(), 0);
}

TEST(PeerWorker, DropsHostilePeersWithAReason) {
    TempDir dir;
    const TestTorrent t = make_test_torrent(dir, "payload.bin", 5 * 65536, 65536, 3);
    const Torrent& torrent = t.torrent;

    const std::string theirs = "-XX0001-hostile00001";
    // A length prefix of 4 GiB right after a good handshake.
    ScriptedPeer huge_prefix(handshake_bytes(torrent.info_hash(), theirs) +
                             std::string("\xFF\xFF\xFF\xFF", 4));
    // Another torrent's handshake.
    Sha1Digest other{};
    other.fill(0x42);
    ScriptedPeer wrong_torrent(handshake_bytes(other, theirs));
    // Ourselves: our own peer id comes back.
    ScriptedPeer ourselves(handshake_bytes(torrent.info_hash(), kOurPeerId));
    // A good handshake, then a message id nobody defined.
    ScriptedPeer junk(handshake_bytes(torrent.info_hash(), theirs) +
                      std::string("\x00\x00\x00\x01\x63", 5));

    // A good handshake, one byte every 2 s: the handshake deadline (10 s) ends it.
    ScriptedPeer trickle(handshake_bytes(torrent.info_hash(), theirs), 2000ms);

    FakePipeline pipeline(dir);
    pipeline.add_torrent(kFirst, torrent);
    Process worker = start_worker(dir, pipeline);
    ASSERT_TRUE(welcome_worker(pipeline)) << worker.log_tail();
    for (const auto* peer : {&huge_prefix, &wrong_torrent, &ourselves, &junk, &trickle}) {
        add_peer(pipeline, kFirst, peer->port());
    }

    std::map<std::string, std::string> reasons;
    const bool all_dropped = pipeline.pump(
        30s,
        [&](bus::Incoming& in) {
            if (in.envelope.has_peer_disconnected()) {
                EXPECT_EQ(in.envelope.peer_disconnected().torrent(), kFirst.get());
                reasons[in.envelope.peer_disconnected().peer()] =
                    in.envelope.peer_disconnected().reason();
            }
        },
        kIgnore, [&] { return reasons.size() == 5; });
    ASSERT_TRUE(all_dropped) << worker.log_tail();
    const auto reason = [&](const ScriptedPeer& peer) {
        return reasons[bus::peer_key("127.0.0.1", peer.port())];
    };
    EXPECT_NE(reason(huge_prefix).find("length prefix"), std::string::npos) << reason(huge_prefix);
    EXPECT_NE(reason(wrong_torrent).find("another torrent"), std::string::npos) << reason(wrong_torrent);
    EXPECT_NE(reason(ourselves).find("ourselves"), std::string::npos) << reason(ourselves);
    EXPECT_NE(reason(junk).find("unknown message id"), std::string::npos) << reason(junk);
    EXPECT_NE(reason(trickle).find("timed out"), std::string::npos) << reason(trickle);
    EXPECT_TRUE(worker.running()) << worker.log_tail();
    shut_down(pipeline, worker);
}

// Leases, cancels and bans name their torrent; a ban holds in every torrent. A ban of a peer
// (address and port) drops that peer only; a ban without port or peer id, the whole address.
TEST(PeerWorker, LeasesCancelsAndBansAgainstAPeerThatNeverSendsBlocks) {
    TempDir dir;
    const TestTorrent t = make_test_torrent(dir, "payload.bin", 5 * 65536, 65536, 4);
    const TestTorrent other = make_test_torrent(dir, "other.bin", 5 * 65536, 65536, 5);
    const Torrent& torrent = t.torrent;
    ScriptedPeer silent(silent_seeder_reply(torrent.info_hash(), "-XX0001-silentpeer01"));
    // The same address serving the other torrent: the ban reaches it too.
    ScriptedPeer other_silent(silent_seeder_reply(other.torrent.info_hash(), "-XX0001-silentpeer02"));
    const std::string key = bus::peer_key("127.0.0.1", silent.port());

    FakePipeline pipeline(dir);
    pipeline.add_torrent(kFirst, torrent);
    pipeline.add_torrent(kSecond, other.torrent);
    Process worker = start_worker(dir, pipeline);
    ASSERT_TRUE(welcome_worker(pipeline)) << worker.log_tail();
    add_peer(pipeline, kFirst, silent.port());
    add_peer(pipeline, kSecond, other_silent.port());

    bool have_all = false, cancelled = false;
    std::set<std::uint32_t> connected;
    std::optional<std::uint64_t> granted;
    std::vector<std::pair<std::uint32_t, std::string>> disconnects;
    const auto on_control = [&](bus::Incoming& in) {
        const auto& e = in.envelope;
        if (e.has_peer_connected()) connected.insert(e.peer_connected().torrent());
        if (e.has_peer_has() && e.peer_has().torrent() == kFirst.get()) {
            have_all = have_all || e.peer_has().have_all();
        }
        if (e.has_work_request() && e.work_request().torrent() == kFirst.get() && !granted) {
            EXPECT_EQ(e.work_request().peer(), key);
            EXPECT_GT(e.work_request().count(), 0u);
            v1::Envelope answer;
            answer.mutable_leases()->set_peer(key);
            answer.mutable_leases()->set_torrent(kFirst.get());
            auto* lease = answer.mutable_leases()->add_leases();
            lease->set_piece(0);
            lease->set_lease_id(42);
            pipeline.send(answer);
            granted = 42;
        }
        if (e.has_lease_released()) {
            EXPECT_EQ(e.lease_released().torrent(), kFirst.get());
            EXPECT_EQ(e.lease_released().lease_ids_size(), 1);
            cancelled = e.lease_released().lease_ids(0) == 42;
        }
        if (e.has_peer_disconnected()) {
            disconnects.emplace_back(e.peer_disconnected().torrent(), e.peer_disconnected().reason());
        }
    };
    ASSERT_TRUE(pipeline.pump(20s, on_control, kIgnore, [&] {
        return have_all && granted.has_value() && connected.size() == 2;
    })) << worker.log_tail();

    // Another torrent's cancel of the same piece touches nothing here.
    v1::Envelope wrong_cancel;
    wrong_cancel.mutable_cancel_piece()->set_piece(0);
    wrong_cancel.mutable_cancel_piece()->set_torrent(kSecond.get());
    pipeline.send(wrong_cancel);
    v1::Envelope cancel;
    cancel.mutable_cancel_piece()->set_piece(0);
    cancel.mutable_cancel_piece()->set_torrent(kFirst.get());
    pipeline.send(cancel);
    ASSERT_TRUE(pipeline.pump(10s, on_control, kIgnore, [&] { return cancelled; }))
        << worker.log_tail();

    // The peer of the first torrent alone: its neighbour on 127.0.0.1 stays.
    v1::Envelope peer_ban;
    peer_ban.mutable_ban_peer()->set_ip("127.0.0.1");
    peer_ban.mutable_ban_peer()->set_port(silent.port());
    peer_ban.mutable_ban_peer()->set_peer_id("-XX0001-silentpeer01");
    peer_ban.mutable_ban_peer()->set_reason("sent a bad piece");
    pipeline.send(peer_ban);
    ASSERT_TRUE(pipeline.pump(10s, on_control, kIgnore, [&] { return disconnects.size() == 1; }))
        << worker.log_tail();
    EXPECT_EQ(disconnects[0].first, kFirst.get());
    pipeline.pump(1s, on_control, kIgnore, [] { return false; });
    EXPECT_EQ(disconnects.size(), 1u) << worker.log_tail();
    // The whole address: the other goes too.
    v1::Envelope ban;
    ban.mutable_ban_peer()->set_ip("127.0.0.1");
    ban.mutable_ban_peer()->set_reason("three liars");
    pipeline.send(ban);
    ASSERT_TRUE(pipeline.pump(10s, on_control, kIgnore, [&] { return disconnects.size() == 2; }))
        << worker.log_tail();
    std::sort(disconnects.begin(), disconnects.end());
    EXPECT_EQ(disconnects[0].first, kFirst.get());
    EXPECT_EQ(disconnects[1].first, kSecond.get());
    for (const auto& [torrent_id, reason] : disconnects) {
        EXPECT_NE(reason.find("banned"), std::string::npos) << reason;
    }
    // Never again, in either torrent.
    add_peer(pipeline, kFirst, silent.port());
    add_peer(pipeline, kSecond, other_silent.port());
    ASSERT_TRUE(pipeline.pump(10s, on_control, kIgnore, [&] { return disconnects.size() == 4; }))
        << worker.log_tail();
    EXPECT_EQ(disconnects[2].second, "banned");
    EXPECT_EQ(disconnects[3].second, "banned");
    shut_down(pipeline, worker);
}

// --- uploads ---

Process start_named_worker(const TempDir& dir, const FakePipeline& pipeline, const std::string& name,
                           std::vector<std::string> extra_args = {}) {
    std::vector<std::string> argv{test::bin("peer_worker"), "--control", pipeline.control_endpoint(),
                                  "--pieces", pipeline.pieces_endpoint(), "--name", name,
                                  "--log-level", "debug"};
    argv.insert(argv.end(), extra_args.begin(), extra_args.end());
    return Process::start(argv, dir / (name + ".log"));
}

// The writer's read service as a worker sees it: answers ReadPiece from the torrents' payload
// files, as a frame, or in a read arena of its own (a slot per read, tagged with the request,
// given back by ReadsDone). Reads of the pieces in `held` wait until release_held(); those in
// `failing` get an error, as a piece changed on disk would.
class FakeReads {
public:
    FakeReads(FakePipeline& pipeline, bool arena_mode) : pipeline_(pipeline), arena_mode_(arena_mode) {
        pipeline.on_reads([this](bus::Incoming& in) { on_message(in); });
    }
    void add(TorrentId id, const TestTorrent& t) {
        torrents_.emplace(id.get(), Served{&t.torrent, test::read_text_file(t.payload)});
        if (arena_mode_ && arenas_.count(t.torrent.piece_length()) == 0) {
            arenas_.emplace(t.torrent.piece_length(),
                            std::make_unique<bus::PieceArena>(t.torrent.piece_length(), kSlots));
        }
    }
    void release_held() {
        held.clear();
        for (auto& waiting : waiting_) answer(waiting);
        waiting_.clear();
    }

    std::set<std::uint32_t> held;
    std::set<std::uint32_t> failing;
    std::size_t reads = 0;       // ReadPiece received
    std::size_t slots_lent = 0;  // answered in an arena slot
    std::size_t given_back = 0;  // arena slots given back
    std::size_t slots_held() const { return holds_.size(); }
    std::vector<std::string> problems;

private:
    // As many as the writer lets one worker hold (ReadOptions::per_worker).
    static constexpr std::uint32_t kSlots = 64;
    struct Served {
        const Torrent* torrent;
        std::string payload;
    };
    struct Waiting {
        std::string identity;
        v1::ReadPiece read;
    };

    void on_message(bus::Incoming& in) {
        const auto& e = in.envelope;
        if (e.has_reads_done()) {
            for (const auto request : e.reads_done().requests()) {
                const auto held_slot = holds_.find(request);
                if (held_slot == holds_.end()) {
                    problems.push_back("ReadsDone for request " + std::to_string(request) + ", not held");
                    continue;
                }
                held_slot->second.first->release(held_slot->second.second);
                holds_.erase(held_slot);
                ++given_back;
            }
            return;
        }
        if (!e.has_read_piece()) {
            problems.push_back("a " + bus::body_name(e) + " on the reads socket");
            return;
        }
        ++reads;
        Waiting waiting{in.identity, e.read_piece()};
        if (held.count(e.read_piece().piece()) != 0) {
            waiting_.push_back(std::move(waiting));
            return;
        }
        answer(waiting);
    }

    void answer(const Waiting& waiting) {
        const auto& read = waiting.read;
        v1::Envelope envelope;
        auto* out = envelope.mutable_piece_read();
        out->set_torrent(read.torrent());
        out->set_piece(read.piece());
        out->set_request(read.request());
        const auto served = torrents_.find(read.torrent());
        if (served == torrents_.end() || read.piece() >= served->second.torrent->piece_count()) {
            out->set_error("unknown piece");
            return send(waiting.identity, envelope);
        }
        if (failing.count(read.piece()) != 0) {
            out->set_error("piece " + std::to_string(read.piece()) + " changed on disk");
            return send(waiting.identity, envelope);
        }
        const Torrent& torrent = *served->second.torrent;
        const PieceIndex piece{read.piece()};
        const std::uint64_t offset = std::uint64_t{piece.get()} * torrent.piece_length();
        const std::string_view bytes =
            std::string_view(served->second.payload).substr(offset, torrent.piece_size(piece));
        if (!arena_mode_) {
            zmq::message_t frame(bytes.data(), bytes.size());
            return send(waiting.identity, envelope, std::span<zmq::message_t>(&frame, 1));
        }
        bus::PieceArena& arena = *arenas_.at(torrent.piece_length());
        const auto slot = arena.acquire(read.request());
        if (!slot) {
            out->set_error("busy");
            return send(waiting.identity, envelope);
        }
        std::memcpy(arena.bytes(*slot).data(), bytes.data(), bytes.size());
        holds_[read.request()] = {&arena, *slot};
        ++slots_lent;
        out->mutable_arena()->set_path(arena.info().path);
        out->mutable_arena()->set_id(arena.info().id);
        out->mutable_arena()->set_slot_size(arena.info().slot_size);
        out->mutable_arena()->set_slot_count(arena.info().slot_count);
        out->set_slot(*slot);
        send(waiting.identity, envelope);
    }

    void send(const std::string& identity, v1::Envelope& envelope, std::span<zmq::message_t> frames = {}) {
        bus::send(pipeline_.reads_socket(), "writer", envelope, frames, &identity);
    }

    FakePipeline& pipeline_;
    bool arena_mode_;
    std::map<std::uint32_t, Served> torrents_;
    std::map<std::uint32_t, std::unique_ptr<bus::PieceArena>> arenas_;  // by piece length
    std::map<std::uint64_t, std::pair<bus::PieceArena*, std::uint32_t>> holds_;  // request -> slot
    std::vector<Waiting> waiting_;
};

// A libtorrent session downloading one torrent from the workers' port (lt_leecher.py).
class LtLeecher {
public:
    LtLeecher(const TempDir& dir, const TestTorrent& t, std::uint16_t port, const std::string& tag = "leech")
        : save_dir_(dir / tag) {
        std::filesystem::create_directories(save_dir_);
        process_ = Process::start({"/usr/bin/python3", test::helper("lt_leecher.py"), t.path, save_dir_,
                                   "--peer", "127.0.0.1:" + std::to_string(port), "--timeout", "150"},
                                  dir / (tag + ".log"));
    }
    // True once it exited (see exit_code).
    bool done() {
        if (!exit_code_) {
            const int code = process_.wait_for_exit(0ms);
            if (code != -1) exit_code_ = code;
        }
        return exit_code_.has_value();
    }
    int exit_code() const { return exit_code_.value_or(-1); }
    std::string file(const std::string& name) const { return save_dir_ + "/" + name; }
    std::string log() const { return process_.log_tail(30); }

private:
    std::string save_dir_;
    Process process_;
    std::optional<int> exit_code_;
};

// Waits (pumping) until the worker says it listens on `port`.
bool wait_listening(FakePipeline& pipeline, std::uint16_t port) {
    return pipeline.pump(10s, kIgnore, kIgnore,
                         [&] { return pipeline.last_heartbeat().listen_port() == port; });
}

// The choker's part, as the tests play it: every incoming peer is unchoked at once, but those
// named in `keep_choked`.
struct FakeChoker {
    explicit FakeChoker(FakePipeline& to) : pipeline(to) {}
    FakePipeline& pipeline;
    std::set<std::string> keep_choked;
    std::set<std::string> incoming;
    std::map<std::string, std::string> disconnected;  // peer -> reason
    std::set<std::string> interested;                 // peers PeerStats said are interested
    std::vector<std::string> problems;

    void operator()(bus::Incoming& in) {
        const auto& e = in.envelope;
        if (e.has_peer_connected()) {
            const auto& connected = e.peer_connected();
            if (!connected.incoming()) problems.push_back("an outgoing peer: " + connected.peer());
            incoming.insert(connected.peer());
            if (keep_choked.count(connected.peer()) == 0) {
                v1::Envelope decision;
                decision.mutable_choke_decision()->set_torrent(connected.torrent());
                decision.mutable_choke_decision()->add_unchoke(connected.peer());
                pipeline.send(decision);
            }
        } else if (e.has_peer_disconnected()) {
            disconnected[e.peer_disconnected().peer()] = e.peer_disconnected().reason();
        } else if (e.has_peer_stats()) {
            for (const auto& peer : e.peer_stats().peers()) {
                if (peer.interested()) interested.insert(peer.peer());
            }
        }
    }
};

// How the writer answers reads: "off" as frames, "on" in its read arena.
class PeerWorkerUpload : public ::testing::TestWithParam<std::string> {};

// A real libtorrent leecher connects to the worker's port and downloads a whole torrent from
// the worker alone; every byte is the payload's.
TEST_P(PeerWorkerUpload, ALibtorrentLeecherGetsEveryByteFromTheWorker) {
    const bool arena_mode = GetParam() == "on";
    TempDir dir;
    const TestTorrent t = make_test_torrent(dir, "payload.bin", 40 * 65536 + 12345, 65536, 61);
    FakePipeline pipeline(dir);
    const std::uint16_t port = test::free_port();
    pipeline.set_listen_port(port);
    pipeline.add_torrent(kFirst, t.torrent);
    pipeline.set_pieces_available(kFirst);
    FakeReads reads(pipeline, arena_mode);
    reads.add(kFirst, t);
    Process worker = start_worker(dir, pipeline, {"--reads", pipeline.reads_endpoint()});
    ASSERT_TRUE(welcome_worker(pipeline)) << worker.log_tail();
    ASSERT_TRUE(wait_listening(pipeline, port)) << worker.log_tail();

    LtLeecher leecher(dir, t, port);
    FakeChoker choker(pipeline);
    ASSERT_TRUE(pipeline.pump(150s, std::ref(choker), kIgnore, [&] { return leecher.done(); }))
        << worker.log_tail() << "\n" << leecher.log();
    EXPECT_EQ(leecher.exit_code(), 0) << leecher.log() << "\n" << worker.log_tail();
    EXPECT_TRUE(test::read_text_file(leecher.file("payload.bin")) == test::read_text_file(t.payload))
        << "the leecher's file differs from the payload";
    EXPECT_EQ(choker.incoming.size(), 1u);
    EXPECT_EQ(choker.interested, choker.incoming) << "PeerStats never said the leecher was interested";
    EXPECT_TRUE(choker.problems.empty()) << choker.problems.front();
    EXPECT_TRUE(reads.problems.empty()) << reads.problems.front();
    EXPECT_GT(reads.reads, 0u);
    // Every payload byte was counted as uploaded, for the torrent and the worker.
    ASSERT_TRUE(pipeline.pump(5s, std::ref(choker), kIgnore, [&] {
        const auto& beat = pipeline.last_heartbeat();
        return beat.bytes_uploaded() >= t.torrent.total_size() && beat.torrents_size() == 1 &&
               beat.torrents(0).bytes_uploaded() >= t.torrent.total_size();
    })) << pipeline.last_heartbeat().DebugString();
    if (arena_mode) {
        // Each slot goes back once no block uses it (after a short linger).
        ASSERT_TRUE(pipeline.pump(15s, std::ref(choker), kIgnore, [&] { return reads.slots_held() == 0; }))
            << reads.slots_held() << " read slots still held\n" << worker.log_tail();
        EXPECT_EQ(reads.given_back, reads.slots_lent);
        EXPECT_GT(reads.slots_lent, 0u);
    }
    shut_down(pipeline, worker);
}

INSTANTIATE_TEST_SUITE_P(PeerWorker, PeerWorkerUpload, ::testing::Values("off", "on"),
                         [](const ::testing::TestParamInfo<std::string>& mode) {
                             return std::string(mode.param == "on" ? "FromReadArena" : "FromFrames");
                         });

// Two workers of one host bind the same port (SO_REUSEPORT) and both take connections.
TEST(PeerWorker, TwoWorkersShareOneListenPort) {
    TempDir dir;
    const TestTorrent t = make_test_torrent(dir, "payload.bin", 8 * 65536, 65536, 62);
    const std::uint16_t port = test::free_port();
    FakePipeline a(dir, "-a");
    FakePipeline b(dir, "-b");
    for (FakePipeline* pipeline : {&a, &b}) {
        pipeline->set_listen_port(port);
        pipeline->add_torrent(kFirst, t.torrent);
        pipeline->set_pieces_available(kFirst);
    }
    Process worker_a = start_named_worker(dir, a, "peer_worker-a");
    Process worker_b = start_named_worker(dir, b, "peer_worker-b");
    ASSERT_TRUE(welcome_worker(a)) << worker_a.log_tail();
    ASSERT_TRUE(welcome_worker(b)) << worker_b.log_tail();
    ASSERT_TRUE(wait_listening(a, port)) << worker_a.log_tail();
    ASSERT_TRUE(wait_listening(b, port)) << worker_b.log_tail();

    constexpr int kPeers = 24;
    std::set<std::string> on_a, on_b;
    const auto count = [](std::set<std::string>& into) {
        return [&into](bus::Incoming& in) {
            if (in.envelope.has_peer_connected() && in.envelope.peer_connected().incoming()) {
                into.insert(in.envelope.peer_connected().peer());
            }
        };
    };
    std::vector<std::unique_ptr<RawLeecher>> leechers;
    for (int i = 0; i < kPeers; ++i) {
        leechers.push_back(std::make_unique<RawLeecher>(port, t.torrent.info_hash(), peer_id_for(i), true));
        // Pump both while they accept (each answers from its own loop).
        a.pump(20ms, count(on_a), kIgnore, [] { return false; });
        b.pump(20ms, count(on_b), kIgnore, [] { return false; });
    }
    for (auto& leecher : leechers) {
        ASSERT_TRUE(leecher->read_handshake(5s)) << leecher->problem << "\n" << worker_a.log_tail() << "\n"
                                                 << worker_b.log_tail();
    }
    for (auto deadline = std::chrono::steady_clock::now() + 10s;
         on_a.size() + on_b.size() < kPeers && std::chrono::steady_clock::now() < deadline;) {
        a.pump(50ms, count(on_a), kIgnore, [] { return false; });
        b.pump(50ms, count(on_b), kIgnore, [] { return false; });
    }
    EXPECT_EQ(on_a.size() + on_b.size(), static_cast<std::size_t>(kPeers));
    EXPECT_GE(on_a.size(), 1u) << "worker a took none of " << kPeers;
    EXPECT_GE(on_b.size(), 1u) << "worker b took none of " << kPeers;
    leechers.clear();
    shut_down(a, worker_a);
    shut_down(b, worker_b);
}

// An incoming handshake is matched to its torrent by info-hash; an unknown torrent, our own
// peer id, a peer id already connected, and a peer over --max-peers are refused (closed).
TEST(PeerWorker, IncomingHandshakesAreMatchedOrRefused) {
    TempDir dir;
    const TestTorrent t = make_test_torrent(dir, "payload.bin", 8 * 65536, 65536, 63);
    const TestTorrent unknown = make_test_torrent(dir, "other.bin", 8 * 65536, 65536, 64);
    FakePipeline pipeline(dir);
    const std::uint16_t port = test::free_port();
    pipeline.set_listen_port(port);
    pipeline.add_torrent(kFirst, t.torrent);
    pipeline.set_pieces_available(kFirst);
    Process worker = start_worker(dir, pipeline, {"--max-peers", "2"});
    ASSERT_TRUE(welcome_worker(pipeline)) << worker.log_tail();
    ASSERT_TRUE(wait_listening(pipeline, port)) << worker.log_tail();
    FakeChoker choker(pipeline);
    const auto settle = [&] { pipeline.pump(300ms, std::ref(choker), kIgnore, [] { return false; }); };
    const auto keep_alive = [&] { pipeline.pump(20ms, std::ref(choker), kIgnore, [] { return false; }); };

    // A torrent not served here.
    RawLeecher stranger(port, unknown.torrent.info_hash(), peer_id_for(1), true);
    stranger.idle = keep_alive;
    EXPECT_FALSE(stranger.read_handshake(5s));
    EXPECT_TRUE(stranger.closed());

    // Ourselves: our handshake comes back (so a dialling worker of ours learns it), then the end.
    RawLeecher self(port, t.torrent.info_hash(), kOurPeerId, true);
    self.idle = keep_alive;
    ASSERT_TRUE(self.read_handshake(5s));
    EXPECT_EQ(std::string(self.theirs()->peer_id.begin(), self.theirs()->peer_id.end()), kOurPeerId);
    EXPECT_TRUE(self.wait_closed(5s));

    // A good one: our handshake (fast bit) and have_all.
    RawLeecher first(port, t.torrent.info_hash(), peer_id_for(2), true);
    first.idle = keep_alive;
    ASSERT_TRUE(first.read_handshake(5s)) << first.problem;
    EXPECT_TRUE(first.theirs()->supports_fast());
    EXPECT_TRUE(first.read_until([](const wire::Message& m) { return std::holds_alternative<wire::HaveAll>(m); }, 5s));
    settle();
    EXPECT_EQ(choker.incoming, std::set<std::string>{first.key()});

    // The same peer id again.
    RawLeecher twin(port, t.torrent.info_hash(), peer_id_for(2), true);
    twin.idle = keep_alive;
    EXPECT_FALSE(twin.read_handshake(5s));
    EXPECT_TRUE(twin.closed());

    // A second peer fills --max-peers 2; a third is refused.
    RawLeecher second(port, t.torrent.info_hash(), peer_id_for(3), false);
    second.idle = keep_alive;
    ASSERT_TRUE(second.read_handshake(5s)) << worker.log_tail();
    EXPECT_TRUE(second.read_until([](const wire::Message& m) { return std::holds_alternative<wire::Bitfield>(m); }, 5s))
        << "a peer without the fast extension gets a bitfield";
    RawLeecher third(port, t.torrent.info_hash(), peer_id_for(4), true);
    third.idle = keep_alive;
    EXPECT_FALSE(third.read_handshake(5s));
    EXPECT_TRUE(third.closed());
    settle();
    EXPECT_EQ(choker.incoming.size(), 2u);
    EXPECT_TRUE(worker.running());
    shut_down(pipeline, worker);
}

// Hostile leechers, each rejected or dropped as docs/architecture.md says, while an honest
// libtorrent leecher downloads the whole torrent; the worker's memory stays flat.
TEST(PeerWorker, HostileLeechersAreRejectedOrDroppedAndTheHonestOneCompletes) {
    TempDir dir;
    const TestTorrent a = make_test_torrent(dir, "a.bin", 48 * 65536, 65536, 65);
    const TestTorrent b = make_test_torrent(dir, "b.bin", 8 * 65536, 65536, 66);
    FakePipeline pipeline(dir);
    const std::uint16_t port = test::free_port();
    pipeline.set_listen_port(port);
    pipeline.add_torrent(kFirst, a.torrent);
    pipeline.add_torrent(kSecond, b.torrent);
    pipeline.set_pieces_available(kFirst);
    pipeline.set_pieces_available(kSecond, std::string("\xEF", 1));  // all of B but piece 3
    FakeReads reads(pipeline, false);
    reads.add(kFirst, a);
    reads.add(kSecond, b);
    Process worker = start_worker(dir, pipeline, {"--reads", pipeline.reads_endpoint(), "--upload-cache-mib", "4",
                                                  "--upload-stall-seconds", "3"});
    ASSERT_TRUE(welcome_worker(pipeline)) << worker.log_tail();
    ASSERT_TRUE(wait_listening(pipeline, port)) << worker.log_tail();
    FakeChoker choker(pipeline);
    const auto settle = [&](std::chrono::milliseconds time) {
        pipeline.pump(time, std::ref(choker), kIgnore, [] { return false; });
    };
    const std::uint64_t rss_before = resident_kib(worker.pid());
    const auto unchoked = [](const wire::Message& m) { return std::holds_alternative<wire::Unchoke>(m); };
    const auto rejected = [](const wire::Message& m) { return std::holds_alternative<wire::RejectRequest>(m); };
    const auto request = [](std::uint32_t piece, std::uint32_t offset, std::uint32_t length = kBlockSize) {
        return wire::Request{PieceIndex{piece}, BlockOffset{offset}, BlockLength{length}};
    };
    // Connects and waits for the choker's unchoke (pumped meanwhile).
    const auto connect = [&](const TestTorrent& t, int n, bool fast, bool unchoke = true, int receive_buffer = 0) {
        auto leecher = std::make_unique<RawLeecher>(port, t.torrent.info_hash(), peer_id_for(n), fast, receive_buffer);
        leecher->idle = [&] { settle(20ms); };
        if (!unchoke) choker.keep_choked.insert(leecher->key());
        EXPECT_TRUE(leecher->read_handshake(5s)) << leecher->problem;
        leecher->send(wire::Interested{});
        settle(200ms);
        if (unchoke) {
            EXPECT_TRUE(leecher->read_until(unchoked, 5s)) << "no unchoke for " << leecher->key();
        }
        return leecher;
    };
    const auto dropped_with = [&](const RawLeecher& leecher, const std::string& words) {
        EXPECT_TRUE(pipeline.pump(10s, std::ref(choker), kIgnore,
                                  [&] { return choker.disconnected.count(leecher.key()) != 0; }))
            << leecher.key() << " not dropped\n" << worker.log_tail();
        EXPECT_NE(choker.disconnected[leecher.key()].find(words), std::string::npos)
            << choker.disconnected[leecher.key()];
    };

    LtLeecher honest(dir, a, port);

    // A flood: 501 requests held (their piece's read does not come back yet) drop the peer.
    reads.held.insert(7);
    {
        auto flood = connect(a, 1, true);
        for (std::uint32_t i = 0; i < 501; ++i) flood->send(request(7, (i % 4) * kBlockSize));
        dropped_with(*flood, "more than 500");
        EXPECT_TRUE(flood->wait_closed(5s));
    }
    reads.release_held();

    // Pieces we do not have: rejected under the fast extension, dropped without it.
    {
        auto missing = connect(b, 2, true);
        missing->send(request(3, 0));
        EXPECT_TRUE(missing->read_until(rejected, 5s));
        auto plain = connect(b, 3, false);
        plain->send(request(3, 0));
        dropped_with(*plain, "which we do not have");
    }
    // A block outside its piece, and one of 32 KiB: likewise.
    {
        auto outside = connect(a, 4, true);
        outside->send(request(0, 65536 - 100));
        outside->send(request(0, 0, 32768));
        int rejects = 0;
        EXPECT_TRUE(outside->read_until([&](const wire::Message& m) { return rejected(m) && ++rejects == 2; }, 5s));
        auto plain_outside = connect(a, 5, false);
        plain_outside->send(request(0, 65536 - 100));
        dropped_with(*plain_outside, "invalid block");
        auto plain_long = connect(a, 6, false);
        plain_long->send(request(0, 0, 32768));
        dropped_with(*plain_long, "invalid block");
    }
    // While choked: rejected, or ignored without the extension (no answer, not dropped); but
    // the pieces of BEP 6's allowed-fast set for its address are served.
    {
        const auto allowed = wire::allowed_fast_set(0x7F000001, a.torrent.info_hash(), a.torrent.piece_count(), 10);
        std::uint32_t not_allowed = 0;
        while (std::find(allowed.begin(), allowed.end(), not_allowed) != allowed.end()) ++not_allowed;
        auto choked = connect(a, 7, true, false);
        choked->send(request(not_allowed, 0));
        EXPECT_TRUE(choked->read_until(rejected, 5s));
        choked->send(request(allowed.front(), kBlockSize));
        EXPECT_TRUE(choked->read_until([&](const wire::Message& m) {
            const auto* piece = std::get_if<wire::Piece>(&m);
            return piece != nullptr && piece->index.get() == allowed.front() && piece->data.size() == kBlockSize;
        }, 5s)) << "no block of allowed-fast piece " << allowed.front();
        auto plain_choked = connect(a, 8, false, false);
        plain_choked->send(request(allowed.front(), 0));
        bool answered = false;
        plain_choked->read_until([&](const wire::Message& m) {
            answered = answered || std::holds_alternative<wire::Piece>(m);
            return false;
        }, 1s);
        EXPECT_FALSE(answered);
        EXPECT_FALSE(plain_choked->closed());
        EXPECT_EQ(choker.disconnected.count(plain_choked->key()), 0u);
    }
    // One that never reads what we send: dropped once nothing is written for 3 s.
    {
        auto deaf = connect(a, 9, true, true, 4096);
        for (std::uint32_t i = 0; i < 480; ++i) deaf->send(request(i % 48, (i / 48 % 4) * kBlockSize));
        dropped_with(*deaf, "not reading what we send");
    }
    // The honest one completes, byte for byte.
    ASSERT_TRUE(pipeline.pump(150s, std::ref(choker), kIgnore, [&] { return honest.done(); }))
        << worker.log_tail() << "\n" << honest.log();
    EXPECT_EQ(honest.exit_code(), 0) << honest.log();
    EXPECT_TRUE(test::read_text_file(honest.file("a.bin")) == test::read_text_file(a.payload));
    EXPECT_TRUE(reads.problems.empty()) << reads.problems.front();
    // Memory stayed flat: the upload cache (4 MiB) and per-peer queues are bounded.
    const std::uint64_t rss_after = resident_kib(worker.pid());
    EXPECT_LT(rss_after, rss_before + 16 * 1024) << rss_before << " KiB before, " << rss_after << " after";
    EXPECT_TRUE(worker.running());
    shut_down(pipeline, worker);
}

// RateBudget: an upload share of 512 KiB/s holds within 10% over the download, measured from
// the worker's own counters (its heartbeats), not from the client's speed.
TEST(PeerWorker, AnUploadBudgetHoldsTheRate) {
    TempDir dir;
    const TestTorrent t = make_test_torrent(dir, "payload.bin", 128 * 65536, 65536, 67);
    FakePipeline pipeline(dir);
    const std::uint16_t port = test::free_port();
    pipeline.set_listen_port(port);
    pipeline.add_torrent(kFirst, t.torrent);
    pipeline.set_pieces_available(kFirst);
    FakeReads reads(pipeline, false);
    reads.add(kFirst, t);
    Process worker = start_worker(dir, pipeline, {"--reads", pipeline.reads_endpoint()});
    ASSERT_TRUE(welcome_worker(pipeline)) << worker.log_tail();
    ASSERT_TRUE(wait_listening(pipeline, port)) << worker.log_tail();
    constexpr std::uint64_t kRate = 512 * 1024;
    v1::Envelope budget;
    budget.mutable_rate_budget()->set_upload_bytes_per_s(kRate);
    pipeline.send(budget);

    LtLeecher leecher(dir, t, port);
    FakeChoker choker(pipeline);
    std::vector<std::pair<std::chrono::steady_clock::time_point, std::uint64_t>> samples;
    std::size_t beats = 0;
    ASSERT_TRUE(pipeline.pump(150s, std::ref(choker), kIgnore, [&] {
        if (pipeline.heartbeats() != beats) {
            beats = pipeline.heartbeats();
            samples.emplace_back(std::chrono::steady_clock::now(), pipeline.last_heartbeat().bytes_uploaded());
        }
        return leecher.done();
    })) << worker.log_tail() << "\n" << leecher.log();
    EXPECT_EQ(leecher.exit_code(), 0) << leecher.log();
    // From the first MiB to the seventh: past the bucket's initial burst, before the end.
    const auto first_past = [&](std::uint64_t bytes) {
        return std::find_if(samples.begin(), samples.end(), [&](const auto& s) { return s.second >= bytes; });
    };
    const auto from = first_past(1u << 20);
    const auto to = first_past(7u << 20);
    ASSERT_TRUE(from != samples.end() && to != samples.end());
    const double seconds = std::chrono::duration<double>(to->first - from->first).count();
    const double rate = static_cast<double>(to->second - from->second) / seconds;
    EXPECT_GE(rate, 0.9 * kRate) << rate << " B/s over " << seconds << " s";
    EXPECT_LE(rate, 1.1 * kRate) << rate << " B/s over " << seconds << " s";
    shut_down(pipeline, worker);
}

TEST(PeerWorker, ExitsNonZeroWhenTheOrchestratorFallsSilent) {
    TempDir dir;
    const TestTorrent t = make_test_torrent(dir, "payload.bin", 65536, 65536, 5);
    FakePipeline pipeline(dir);
    pipeline.add_torrent(kFirst, t.torrent);
    Process worker = start_worker(dir, pipeline);
    ASSERT_TRUE(welcome_worker(pipeline)) << worker.log_tail();
    // No more heartbeats: five missed periods (1 s) and the worker gives up.
    const int code = worker.wait_for_exit(15s);
    EXPECT_NE(code, 0) << worker.log_tail();
    EXPECT_NE(code, -1) << "still running\n" << worker.log_tail();
}

}  // namespace
}  // namespace pw
