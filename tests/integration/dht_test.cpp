// dht_svc against a small DHT of libtorrent sessions on 127.0.0.1 (tests/integration/lt_dht.py),
// and against hostile KRPC. The test plays the orchestrator on the control socket, as
// tracker_svc_test does: Welcome on Hello, heartbeats, TorrentAdded and TrackerStats. Every
// node is on 127.0.0.1 and every bootstrap node is given explicitly: nothing leaves the host.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <zmq.hpp>

#include "core/bus/bus.hpp"
#include "core/bus/welcome.hpp"
#include "core/krpc.hpp"
#include "core/sha1.hpp"
#include "dht_svc/routing_table.hpp"
#include "tests/integration/harness.hpp"

namespace pw {
namespace {

using namespace std::chrono_literals;
namespace v1 = bus::v1;
using test::Process;
using test::TempDir;

constexpr std::uint32_t kHeartbeatMs = 300;

class FakeOrchestrator {
public:
    explicit FakeOrchestrator(const TempDir& dir)
        : endpoint_("ipc://" + dir / "control"), socket_(context_, zmq::socket_type::router) {
        bus::configure(socket_);
        socket_.bind(endpoint_);
    }
    const std::string& endpoint() const { return endpoint_; }

    std::optional<v1::Envelope> wait_for(const std::function<bool(const v1::Envelope&)>& match,
                                         std::chrono::milliseconds timeout) {
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        while (std::chrono::steady_clock::now() < deadline) {
            beat();
            zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLIN, 0};
            zmq::poll(&item, 1, std::chrono::milliseconds(50));
            bus::Incoming in;
            while (bus::receive(socket_, true, in) != bus::RecvStatus::would_block) {
                if (in.envelope.body_case() == v1::Envelope::BODY_NOT_SET) continue;
                if (in.envelope.has_hello()) welcome(in.identity);
                if (match(in.envelope)) return in.envelope;
            }
        }
        return std::nullopt;
    }
    void pump(std::chrono::milliseconds duration) {
        wait_for([](const v1::Envelope&) { return false; }, duration);
    }
    bool welcomed() const { return !identity_.empty(); }

    void send(v1::Envelope& envelope) { bus::send(socket_, "orchestrator", envelope, {}, &identity_); }
    void add(std::uint32_t id, const Sha1Digest& hash, std::uint32_t port) {
        bus::AddedTorrent added;
        added.id = TorrentId{id};
        added.info_hash = hash;
        added.name = "torrent-" + std::to_string(id);
        v1::Envelope envelope = bus::torrent_added_message(added);
        send(envelope);
        v1::Envelope stats;
        stats.mutable_tracker_stats()->set_torrent(id);
        stats.mutable_tracker_stats()->set_port(port);
        stats.mutable_tracker_stats()->set_left(1);
        send(stats);
    }
    void shutdown() {
        v1::Envelope envelope;
        envelope.mutable_shutdown()->set_reason("test over");
        send(envelope);
    }

private:
    void welcome(const std::string& identity) {
        identity_ = identity;
        v1::Envelope envelope;
        auto* body = envelope.mutable_welcome();
        body->set_peer_id("-PW0001-abcdefghijkl");
        body->set_heartbeat_ms(kHeartbeatMs);
        body->set_listen_port(6881);
        send(envelope);
        last_beat_ = std::chrono::steady_clock::now();
    }
    void beat() {
        if (identity_.empty()) return;
        const auto now = std::chrono::steady_clock::now();
        if (now - last_beat_ < std::chrono::milliseconds(kHeartbeatMs)) return;
        v1::Envelope envelope;
        envelope.mutable_heartbeat();
        send(envelope);
        last_beat_ = now;
    }

    std::string endpoint_;
    zmq::context_t context_{1};
    zmq::socket_t socket_;
    std::string identity_;
    std::chrono::steady_clock::time_point last_beat_{};
};

Process start_stage(const TempDir& dir, const FakeOrchestrator& orchestrator, std::uint16_t port,
                    const std::vector<std::string>& bootstrap, const std::string& log = "dht_svc.log") {
    std::filesystem::create_directories(dir / "state");
    std::vector<std::string> argv{test::bin("dht_svc"), "--control", orchestrator.endpoint(), "--name", "dht_svc",
                                  "--dht-port", std::to_string(port), "--bind", "127.0.0.1",
                                  "--state-dir", dir / "state", "--log-level", "debug"};
    for (const auto& node : bootstrap) {
        argv.push_back("--dht-bootstrap");
        argv.push_back(node);
    }
    return Process::start(argv, dir / log);
}

bool wait_for_text(const std::string& path, const std::string& text, std::chrono::milliseconds timeout,
                   FakeOrchestrator* orchestrator = nullptr) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
        if (test::read_text_file(path).find(text) != std::string::npos) return true;
        if (orchestrator != nullptr) {
            orchestrator->pump(200ms);
        } else {
            std::this_thread::sleep_for(200ms);
        }
    }
    return false;
}

// A UDP socket on 127.0.0.1 talking KRPC to the stage.
class KrpcClient {
public:
    explicit KrpcClient(std::uint16_t stage_port) : port_(stage_port) {
        const test::LoopbackSocket socket = test::open_loopback_socket(SOCK_DGRAM);
        fd_ = socket.fd;
        own_port_ = socket.port;
    }
    std::uint16_t own_port() const { return own_port_; }

    // The next query the stage sends us, other datagrams skipped.
    std::optional<krpc::Message> receive_query(std::chrono::milliseconds timeout, FakeOrchestrator& orchestrator) {
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        while (std::chrono::steady_clock::now() < deadline) {
            orchestrator.pump(50ms);
            pollfd item{fd_, POLLIN, 0};
            if (::poll(&item, 1, 50) <= 0) continue;
            char buffer[4096];
            const ssize_t got = ::recv(fd_, buffer, sizeof buffer, 0);
            if (got <= 0) continue;
            auto decoded = krpc::decode(std::string_view(buffer, static_cast<std::size_t>(got)));
            if (decoded.ok() && std::holds_alternative<krpc::Query>(decoded->body)) return decoded.value();
        }
        return std::nullopt;
    }
    ~KrpcClient() { ::close(fd_); }

    void send_raw(const std::string& bytes) const {
        sockaddr_in to{};
        to.sin_family = AF_INET;
        to.sin_port = htons(port_);
        to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        ::sendto(fd_, bytes.data(), bytes.size(), 0, reinterpret_cast<const sockaddr*>(&to), sizeof to);
    }
    // The answer to transaction `t`, other datagrams skipped.
    std::optional<krpc::Message> ask(const krpc::Query& query, const std::string& t,
                                     std::chrono::milliseconds timeout = 3000ms) {
        krpc::Message message;
        message.transaction = t;
        message.body = query;
        send_raw(krpc::encode(message));
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        while (std::chrono::steady_clock::now() < deadline) {
            pollfd item{fd_, POLLIN, 0};
            if (::poll(&item, 1, 100) <= 0) continue;
            char buffer[4096];
            const ssize_t got = ::recv(fd_, buffer, sizeof buffer, 0);
            if (got <= 0) continue;
            auto decoded = krpc::decode(std::string_view(buffer, static_cast<std::size_t>(got)));
            if (decoded.ok() && decoded->transaction == t) return decoded.value();
        }
        return std::nullopt;
    }
    void drain() const {
        char buffer[4096];
        pollfd item{fd_, POLLIN, 0};
        while (::poll(&item, 1, 200) > 0) {
            if (::recv(fd_, buffer, sizeof buffer, 0) < 0) break;
        }
    }

private:
    int fd_ = -1;
    std::uint16_t own_port_ = 0;
    std::uint16_t port_;
};

krpc::NodeId client_id() {
    krpc::NodeId id{};
    id.fill(0x5A);
    return id;
}

TEST(DhtStage, FindsALibtorrentSeederAndIsFoundByLibtorrent) {
    TempDir dir("pw-dht-");
    std::vector<std::uint16_t> lt_ports;
    std::string ports_text;
    for (int i = 0; i < 4; ++i) {
        std::uint16_t port = test::free_port();
        while (std::find(lt_ports.begin(), lt_ports.end(), port) != lt_ports.end()) port = test::free_port();
        lt_ports.push_back(port);
        ports_text += (i ? "," : "") + std::to_string(port);
    }
    std::uint16_t stage_port = test::free_port();
    while (std::find(lt_ports.begin(), lt_ports.end(), stage_port) != lt_ports.end()) stage_port = test::free_port();
    constexpr std::uint16_t kOurPeerPort = 41234;
    const Sha1Digest seeded = sha1("piecework dht test: the libtorrent seeder's torrent");
    const Sha1Digest ours = sha1("piecework dht test: the torrent piecework announces");

    std::filesystem::create_directories(dir / "lt");
    Process swarm = Process::start({"/usr/bin/python3", test::helper("lt_dht.py"), "--ports", ports_text,
                                    "--extra-node", "127.0.0.1:" + std::to_string(stage_port), "--announce",
                                    to_hex(seeded), "--query", to_hex(ours), "--save-dir", dir / "lt",
                                    "--seconds", "150"},
                                   dir / "lt_dht.log");
    ASSERT_TRUE(wait_for_text(dir / "lt_dht.log", "READY", 40s)) << swarm.log_tail();

    FakeOrchestrator orchestrator(dir);
    Process stage = start_stage(dir, orchestrator, stage_port, {"127.0.0.1:" + std::to_string(lt_ports[1])});
    orchestrator.wait_for([](const v1::Envelope& e) { return e.has_hello(); }, 20s);
    ASSERT_TRUE(orchestrator.welcomed()) << stage.log_tail();
    orchestrator.add(2, ours, kOurPeerPort);  // announced with our port
    // The seeder's torrent is looked up once the seeder has announced it (a lookup that finds
    // nothing waits a quarter hour before the next); no port: looked up, not announced.
    ASSERT_TRUE(wait_for_text(dir / "lt_dht.log", "ANNOUNCED " + to_hex(seeded), 40s, &orchestrator))
        << swarm.log_tail();
    orchestrator.add(1, seeded, 0);

    const std::string seeder = "127.0.0.1:" + std::to_string(lt_ports[0]);
    const auto found = orchestrator.wait_for(
        [&](const v1::Envelope& e) {
            if (!e.has_peers_found() || e.peers_found().torrent() != 1) return false;
            EXPECT_EQ(e.peers_found().tracker(), "dht");
            for (const auto& peer : e.peers_found().peers()) {
                if (peer.ip() + ":" + std::to_string(peer.port()) == seeder) return true;
            }
            return false;
        },
        60s);
    ASSERT_TRUE(found.has_value()) << "no PeersFound naming the seeder " << seeder << "\n"
                                   << stage.log_tail(60) << "\n" << swarm.log_tail(20);

    // The other way: libtorrent's get_peers finds the port we announced.
    EXPECT_TRUE(wait_for_text(dir / "lt_dht.log",
                              "PEERS " + to_hex(ours) + " 127.0.0.1:" + std::to_string(kOurPeerPort), 60s,
                              &orchestrator))
        << swarm.log_tail(30) << "\n" << stage.log_tail(40);

    // Shutdown saves the routing table with the libtorrent nodes in it.
    orchestrator.shutdown();
    orchestrator.pump(500ms);
    EXPECT_EQ(stage.wait_for_exit(10s), 0) << stage.log_tail();
    auto saved = dht::RoutingTable::load(test::read_text_file(dir / "state/dht.dat"));
    ASSERT_TRUE(saved.ok()) << saved.error().describe();
    EXPECT_GE(saved->nodes.size(), 1u);

    // A restart comes back with the same node id and those nodes.
    Process again = start_stage(dir, orchestrator, stage_port, {"127.0.0.1:" + std::to_string(lt_ports[1])},
                                "dht_svc.again.log");
    EXPECT_TRUE(wait_for_text(dir / "dht_svc.again.log", " node(s) from ", 20s, &orchestrator)) << again.log_tail();
    const std::string first_log = test::read_text_file(dir / "dht_svc.log");
    const auto at = first_log.find("node id ");
    ASSERT_NE(at, std::string::npos);
    EXPECT_NE(test::read_text_file(dir / "dht_svc.again.log").find(first_log.substr(at, 48)), std::string::npos);
    orchestrator.shutdown();
    orchestrator.pump(500ms);
    EXPECT_EQ(again.wait_for_exit(10s), 0) << again.log_tail();
}

TEST(DhtStage, HostileKrpcIsRefusedAndTheNodeStaysUp) {
    TempDir dir("pw-dht-");
    const std::uint16_t stage_port = test::free_port();
    const std::uint16_t dead = test::free_port();  // a bootstrap node nobody answers on
    // A state file that is not ours: a warning, a fresh id, not a failure.
    std::filesystem::create_directories(dir / "state");
    {
        std::ofstream out(dir / "state/dht.dat", std::ios::binary);
        out << "d2:id5:short5:nodes7:garbagee";
    }
    FakeOrchestrator orchestrator(dir);
    Process stage = start_stage(dir, orchestrator, stage_port, {"127.0.0.1:" + std::to_string(dead)});
    orchestrator.wait_for([](const v1::Envelope& e) { return e.has_hello(); }, 20s);
    ASSERT_TRUE(orchestrator.welcomed()) << stage.log_tail();
    ASSERT_TRUE(wait_for_text(dir / "dht_svc.log", "listening on UDP", 10s, &orchestrator)) << stage.log_tail();

    KrpcClient client(stage_port);
    auto pong = client.ask(krpc::Query{client_id(), krpc::Ping{}, false}, "p0");
    ASSERT_TRUE(pong.has_value()) << stage.log_tail();

    // DhtNodes from the orchestrator (a peer named this node): the stage pings it.
    v1::Envelope nodes;
    auto* named = nodes.mutable_dht_nodes()->add_nodes();
    named->set_ip("127.0.0.1");
    named->set_port(client.own_port());
    orchestrator.send(nodes);
    const auto asked = client.receive_query(10s, orchestrator);
    ASSERT_TRUE(asked.has_value()) << stage.log_tail();
    EXPECT_TRUE(std::holds_alternative<krpc::Ping>(std::get<krpc::Query>(asked->body).arguments));

    // Malformed, huge, deeply nested, truncated.
    client.send_raw("garbage");
    client.send_raw(std::string(60000, 'd'));
    client.send_raw(std::string(1400, 'l'));
    client.send_raw("d1:t2:aa1:y1:qe");
    client.send_raw("d1:ad2:id20:");
    client.send_raw("d1:ad2:id20:aaaaaaaaaaaaaaaaaaaa9:info_hash20:bbbbbbbbbbbbbbbbbbbb4:porti99999e5:token2:xxe1:q13:announce_peer1:t2:aa1:y1:qe");
    client.send_raw(std::string());

    // A forged token is refused with a KRPC error; a real one is accepted.
    const Sha1Digest hash = sha1("hostile");
    auto refused = client.ask(krpc::Query{client_id(), krpc::AnnouncePeer{hash, 7000, false, "forged-token"}, false}, "f1");
    ASSERT_TRUE(refused.has_value()) << stage.log_tail();
    ASSERT_TRUE(std::holds_alternative<krpc::ErrorReply>(refused->body));
    EXPECT_EQ(std::get<krpc::ErrorReply>(refused->body).code, krpc::kProtocolError);
    auto peers = client.ask(krpc::Query{client_id(), krpc::GetPeers{hash}, false}, "g1");
    ASSERT_TRUE(peers.has_value());
    const auto* response = std::get_if<krpc::Response>(&peers->body);
    ASSERT_NE(response, nullptr);
    ASSERT_TRUE(response->token.has_value());
    auto accepted = client.ask(krpc::Query{client_id(), krpc::AnnouncePeer{hash, 7000, false, *response->token}, false}, "a1");
    ASSERT_TRUE(accepted.has_value());
    EXPECT_TRUE(std::holds_alternative<krpc::Response>(accepted->body));
    // An unknown method: error 204.
    auto unknown = client.ask(krpc::Query{client_id(), krpc::UnknownMethod{"sample_infohashes_x"}, false}, "u1");
    ASSERT_TRUE(unknown.has_value());
    ASSERT_TRUE(std::holds_alternative<krpc::ErrorReply>(unknown->body));
    EXPECT_EQ(std::get<krpc::ErrorReply>(unknown->body).code, krpc::kMethodUnknown);

    // A flood of pings and garbage from one address: answered only within the rate limit.
    krpc::Message ping;
    ping.transaction = "fl";
    ping.body = krpc::Query{client_id(), krpc::Ping{}, false};
    const std::string ping_bytes = krpc::encode(ping);
    for (int i = 0; i < 5000; ++i) {
        client.send_raw(i % 2 ? ping_bytes : "d1:t" + std::to_string(i));
        if (i % 500 == 0) orchestrator.pump(10ms);
    }
    orchestrator.pump(3s);  // the flood is read, the per-address budget refills
    client.drain();
    EXPECT_TRUE(stage.running()) << stage.log_tail();
    auto after = client.ask(krpc::Query{client_id(), krpc::Ping{}, false}, "p1", 5000ms);
    ASSERT_TRUE(after.has_value()) << stage.log_tail();
    EXPECT_TRUE(std::holds_alternative<krpc::Response>(after->body));

    // The log says what was refused, in bounded measure.
    orchestrator.shutdown();
    orchestrator.pump(500ms);
    EXPECT_EQ(stage.wait_for_exit(10s), 0) << stage.log_tail();
    const std::string log = test::read_text_file(dir / "dht_svc.log");
    EXPECT_NE(log.find("malformed"), std::string::npos);
    EXPECT_NE(log.find("starting with a new node id"), std::string::npos);
    EXPECT_NE(log.find("bad token"), std::string::npos);
    EXPECT_LT(std::count(log.begin(), log.end(), '\n'), 400) << "the log is not bounded";
}

}  // namespace
}  // namespace pw
