// tracker_svc against a real opentracker on 127.0.0.1. The test plays the orchestrator: it
// binds the control ROUTER, answers Hello with Welcome + the torrent, keeps heartbeating, and
// watches what the stage reports.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <zmq.hpp>

#include "core/bencode.hpp"
#include "core/bus/bus.hpp"
#include "core/sha1.hpp"
#include "tests/integration/harness.hpp"

namespace pw {
namespace {

using namespace std::chrono_literals;
namespace v1 = bus::v1;
using test::Process;
using test::TempDir;
using test::LoopbackSocket;
using test::open_loopback_socket;
using test::Tracker;

constexpr std::uint16_t kFakePeerPort = 51413;
constexpr std::uint32_t kHeartbeatMs = 300;

struct BuiltTorrent {
    std::string bytes;
    std::string info_hash_hex;
    std::string info_hash_raw;
};

// A one-piece single-file torrent with the given tiers; `salt` makes distinct info-hashes.
BuiltTorrent make_torrent(const std::vector<std::vector<std::string>>& tiers,
                          const std::string& salt) {
    bencode::Dict info{{"length", bencode::Value(std::int64_t{16384})},
                       {"name", bencode::Value("payload-" + salt + ".bin")},
                       {"piece length", bencode::Value(std::int64_t{16384})},
                       {"pieces", bencode::Value(std::string(20, 'x'))}};
    const std::string info_bytes = bencode::encode(bencode::Value(info));
    bencode::List announce_list;
    for (const auto& tier : tiers) {
        bencode::List urls;
        for (const auto& url : tier) urls.emplace_back(url);
        announce_list.emplace_back(std::move(urls));
    }
    bencode::Dict root{{"announce", bencode::Value(tiers.front().front())},
                       {"announce-list", bencode::Value(std::move(announce_list))},
                       {"info", bencode::Value(info)}};
    const Sha1Digest hash = sha1(info_bytes);
    return BuiltTorrent{bencode::encode(bencode::Value(std::move(root))), to_hex(hash),
                        std::string(hash.begin(), hash.end())};
}

std::string percent_encode(const std::string& bytes) {
    static const char* digits = "0123456789ABCDEF";
    std::string out;
    for (unsigned char c : bytes) {
        out += '%';
        out += digits[c >> 4];
        out += digits[c & 15];
    }
    return out;
}

// Registers a fake seeder at 127.0.0.1:51413 with a plain HTTP announce.
void register_fake_peer(const Tracker& tracker, const BuiltTorrent& torrent) {
    const std::string target = "/announce?info_hash=" + percent_encode(torrent.info_hash_raw) +
                               "&peer_id=" + percent_encode("-XX0001-fakepeer0001") +
                               "&port=" + std::to_string(kFakePeerPort) +
                               "&uploaded=0&downloaded=0&left=0&event=started&compact=1";
    const auto body = test::http_get(tracker.port(), target);
    ASSERT_TRUE(body.has_value()) << "fake peer announce failed\n" << tracker.log();
    ASSERT_EQ(body->find("failure"), std::string::npos) << *body;
}

// The orchestrator's side of the control socket, for one tracker_svc.
class FakeOrchestrator {
public:
    explicit FakeOrchestrator(const TempDir& dir)
        : endpoint_("ipc://" + dir / "control"), socket_(context_, zmq::socket_type::router) {
        bus::configure(socket_);
        socket_.bind(endpoint_);
    }

    const std::string& endpoint() const { return endpoint_; }

    // Pumps the socket (Welcome on Hello, heartbeats) until `match` accepts a message or the
    // timeout passes. Non-matching messages are remembered in seen().
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
                if (in.envelope.has_heartbeat()) ++heartbeats_;
                if (match(in.envelope)) return in.envelope;
                if (!in.envelope.has_heartbeat()) seen_.push_back(in.envelope);
            }
        }
        return std::nullopt;
    }

    void send(v1::Envelope& envelope) {
        ASSERT_FALSE(identity_.empty()) << "the stage never said Hello";
        bus::send(socket_, "orchestrator", envelope, {}, &identity_);
    }

    void set_torrent(std::string bytes) { torrent_ = std::move(bytes); }
    const std::vector<v1::Envelope>& seen() const { return seen_; }
    bool welcomed() const { return !identity_.empty(); }
    int heartbeats() const { return heartbeats_; }

private:
    void welcome(const std::string& identity) {
        identity_ = identity;
        v1::Envelope envelope;
        auto* body = envelope.mutable_welcome();
        body->set_peer_id("-PW0001-abcdefghijkl");
        body->set_heartbeat_ms(kHeartbeatMs);
        body->set_listen_port(6881);
        std::vector<zmq::message_t> frames;
        frames.emplace_back(torrent_.data(), torrent_.size());
        bus::send(socket_, "orchestrator", envelope, frames, &identity_);
        last_beat_ = std::chrono::steady_clock::now();
    }

    void beat() {
        if (identity_.empty()) return;
        const auto now = std::chrono::steady_clock::now();
        if (now - last_beat_ < std::chrono::milliseconds(kHeartbeatMs)) return;
        v1::Envelope envelope;
        envelope.mutable_heartbeat();
        bus::send(socket_, "orchestrator", envelope, {}, &identity_);
        last_beat_ = now;
    }

    std::string endpoint_;
    zmq::context_t context_{1};
    zmq::socket_t socket_;
    std::string identity_;
    std::string torrent_;
    std::chrono::steady_clock::time_point last_beat_{};
    std::vector<v1::Envelope> seen_;
    int heartbeats_ = 0;
};

// A hostile HTTP "tracker" on 127.0.0.1: every request gets `response` verbatim, then the
// connection closes. An empty response means never answering.
class CannedHttpServer {
public:
    explicit CannedHttpServer(std::string response) : response_(std::move(response)) {
        const LoopbackSocket listener = open_loopback_socket(SOCK_STREAM);
        listener_ = listener.fd;
        port_ = listener.port;
        thread_ = std::thread([this] { serve(); });
    }
    ~CannedHttpServer() {
        stop_ = true;
        thread_.join();
        ::close(listener_);
    }
    CannedHttpServer(const CannedHttpServer&) = delete;
    CannedHttpServer& operator=(const CannedHttpServer&) = delete;

    std::string url() const { return "http://127.0.0.1:" + std::to_string(port_) + "/announce"; }
    int requests() const { return requests_; }

private:
    void serve() {
        std::vector<int> open;
        while (!stop_) {
            pollfd item{listener_, POLLIN, 0};
            if (::poll(&item, 1, 50) <= 0) continue;
            const int connection = ::accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
            if (connection < 0) continue;
            ++requests_;
            if (response_.empty()) {
                open.push_back(connection);  // held open, silent, until the test ends
                continue;
            }
            // Read the request head (small, one GET) before answering, so curl sees no reset.
            std::string request;
            char buffer[4096];
            while (request.find("\r\n\r\n") == std::string::npos) {
                pollfd readable{connection, POLLIN, 0};
                if (::poll(&readable, 1, 2000) <= 0) break;
                const ssize_t got = ::recv(connection, buffer, sizeof buffer, 0);
                if (got <= 0) break;
                request.append(buffer, static_cast<std::size_t>(got));
            }
            std::size_t sent = 0;
            while (sent < response_.size() && !stop_) {
                const ssize_t n = ::send(connection, response_.data() + sent,
                                         response_.size() - sent, MSG_NOSIGNAL);
                if (n <= 0) break;  // the client hung up (e.g. it capped the body)
                sent += static_cast<std::size_t>(n);
            }
            ::close(connection);
        }
        for (const int connection : open) ::close(connection);
    }

    std::string response_;
    int listener_ = -1;
    std::uint16_t port_ = 0;
    std::atomic<bool> stop_{false};
    std::atomic<int> requests_{0};
    std::thread thread_;
};

Process start_tracker_svc(const TempDir& dir, const FakeOrchestrator& orchestrator,
                          int announce_timeout_s = 5) {
    return Process::start({test::bin("tracker_svc"), "--control", orchestrator.endpoint(),
                           "--log-level", "debug", "--announce-timeout",
                           std::to_string(announce_timeout_s), "--min-interval", "1"},
                          dir / "tracker_svc.log");
}

bool has_fake_peer(const v1::Envelope& envelope) {
    if (!envelope.has_peers_found()) return false;
    for (const auto& peer : envelope.peers_found().peers()) {
        if (peer.ip() == "127.0.0.1" && peer.port() == kFakePeerPort) return true;
    }
    return false;
}

bool is_failure(const v1::Envelope& envelope) {
    return envelope.has_tracker_status() && !envelope.tracker_status().ok();
}

std::string describe(const std::vector<v1::Envelope>& seen) {
    std::string out;
    for (const auto& envelope : seen) out += envelope.ShortDebugString() + "\n";
    return out;
}

struct TrackerSvcStage : ::testing::Test {
    TempDir dir{"pw-tracker-svc-"};
    FakeOrchestrator orchestrator{dir};
};

// The same opentracker answers over HTTP and UDP (BEP 15); either way the stage hands the
// orchestrator the peer registered there beforehand.
class TrackerScheme : public TrackerSvcStage, public ::testing::WithParamInterface<std::string> {};

TEST_P(TrackerScheme, YieldsThePreRegisteredPeer) {
    const std::string scheme = GetParam();
    const std::uint16_t port = test::free_port();
    const auto torrent =
        make_torrent({{scheme + "://127.0.0.1:" + std::to_string(port) + "/announce"}}, scheme);
    auto tracker = Tracker::start(dir, {torrent.info_hash_hex}, port);
    register_fake_peer(tracker, torrent);
    orchestrator.set_torrent(torrent.bytes);
    auto stage = start_tracker_svc(dir, orchestrator);
    const auto found = orchestrator.wait_for(has_fake_peer, 20s);
    ASSERT_TRUE(found) << describe(orchestrator.seen()) << stage.log_tail();
    EXPECT_EQ(found->peers_found().tracker(),
              scheme == "udp" ? tracker.udp_announce() : tracker.http_announce());
}

INSTANTIATE_TEST_SUITE_P(Schemes, TrackerScheme, ::testing::Values("http", "udp"));

TEST_F(TrackerSvcStage, DeadTiersAreReportedAndTheNextTierAnswers) {
    const std::uint16_t port = test::free_port();
    const std::string dead_udp = "udp://127.0.0.1:" + std::to_string(test::free_port()) + "/announce";
    const std::string dead_http = "http://127.0.0.1:" + std::to_string(test::free_port()) + "/announce";
    const std::string live = "http://127.0.0.1:" + std::to_string(port) + "/announce";
    const auto torrent = make_torrent({{dead_udp}, {dead_http}, {"gopher://127.0.0.1/x"}, {live}}, "tiers");
    auto tracker = Tracker::start(dir, {torrent.info_hash_hex}, port);
    register_fake_peer(tracker, torrent);
    orchestrator.set_torrent(torrent.bytes);
    auto stage = start_tracker_svc(dir, orchestrator, 2);
    const auto found = orchestrator.wait_for(has_fake_peer, 30s);
    ASSERT_TRUE(found) << describe(orchestrator.seen()) << stage.log_tail();
    EXPECT_EQ(found->peers_found().tracker(), live);
    std::vector<std::string> failed;
    for (const auto& envelope : orchestrator.seen()) {
        if (is_failure(envelope)) failed.push_back(envelope.tracker_status().tracker());
    }
    EXPECT_EQ(failed, (std::vector<std::string>{dead_udp, dead_http, "gopher://127.0.0.1/x"}))
        << describe(orchestrator.seen());
}

TEST_F(TrackerSvcStage, UnlistedTorrentGetsOpentrackersFailureReason) {
    const std::uint16_t port = test::free_port();
    const auto listed = make_torrent({{"x://"}}, "listed");
    const auto torrent = make_torrent({{"http://127.0.0.1:" + std::to_string(port) + "/announce"}}, "unlisted");
    auto tracker = Tracker::start(dir, {listed.info_hash_hex}, port);
    orchestrator.set_torrent(torrent.bytes);
    auto stage = start_tracker_svc(dir, orchestrator);
    const auto status = orchestrator.wait_for(is_failure, 20s);
    ASSERT_TRUE(status) << describe(orchestrator.seen()) << stage.log_tail();
    EXPECT_EQ(status->tracker_status().tracker(), tracker.http_announce());
    // Every tracker failed: the stage says when it will retry.
    EXPECT_GE(status->tracker_status().next_announce_s(), 15u);
    EXPECT_NE(status->tracker_status().message().find("tracker says: "), std::string::npos)
        << status->tracker_status().message();
    EXPECT_NE(status->tracker_status().message().find("not authorized"), std::string::npos)
        << status->tracker_status().message();
}

TEST_F(TrackerSvcStage, ShutdownSaysStoppedAndExitsZero) {
    const std::uint16_t port = test::free_port();
    const auto torrent = make_torrent({{"http://127.0.0.1:" + std::to_string(port) + "/announce"}}, "stop");
    auto tracker = Tracker::start(dir, {torrent.info_hash_hex}, port);
    register_fake_peer(tracker, torrent);
    orchestrator.set_torrent(torrent.bytes);
    auto stage = start_tracker_svc(dir, orchestrator);
    ASSERT_TRUE(orchestrator.wait_for(has_fake_peer, 20s)) << stage.log_tail();
    ASSERT_TRUE(tracker.wait_for_peers(2, 5s)) << tracker.log();  // the fake peer and us

    v1::Envelope completed;
    completed.mutable_tracker_stats()->set_left(0);
    completed.mutable_tracker_stats()->set_downloaded(16384);
    completed.mutable_tracker_stats()->set_event(v1::TrackerStats::COMPLETED);
    orchestrator.send(completed);
    orchestrator.wait_for([](const v1::Envelope&) { return false; }, 1s);

    v1::Envelope shutdown;
    shutdown.mutable_shutdown()->set_reason("test over");
    orchestrator.send(shutdown);
    const auto deadline = std::chrono::steady_clock::now() + 6s;
    int code = -1;
    while (code == -1 && std::chrono::steady_clock::now() < deadline) {
        orchestrator.wait_for([](const v1::Envelope&) { return false; }, 100ms);
        code = stage.wait_for_exit(10ms);
    }
    EXPECT_EQ(code, 0) << stage.log_tail();
    // The stopped announce removed us from the swarm; the fake peer stays.
    EXPECT_EQ(tracker.peer_count(), 1) << tracker.log();
    const std::string log = stage.log_tail(200);
    EXPECT_NE(log.find("answered the completed announce"), std::string::npos) << log;
    EXPECT_NE(log.find("answered the stopped announce"), std::string::npos) << log;
}

TEST_F(TrackerSvcStage, SilentOrchestratorMakesTheStageExit) {
    const auto torrent = make_torrent({{"http://127.0.0.1:1/announce"}}, "silent");
    orchestrator.set_torrent(torrent.bytes);
    auto stage = start_tracker_svc(dir, orchestrator);
    ASSERT_TRUE(orchestrator.wait_for([](const v1::Envelope& e) { return e.has_hello(); }, 10s));
    // No more pumping: no heartbeats reach the stage.
    EXPECT_EQ(stage.wait_for_exit(10s), 1) << stage.log_tail();
}

// A lossy, noisy UDP tracker (BEP 15): it ignores the first connect (the client must
// retransmit), and precedes each real answer with a reply to another transaction and a
// runt packet, which the client must skip. It answers with one peer, the fake one.
class NoisyUdpTracker {
public:
    NoisyUdpTracker() {
        const LoopbackSocket bound = open_loopback_socket(SOCK_DGRAM);
        socket_ = bound.fd;
        port_ = bound.port;
        thread_ = std::thread([this] { serve(); });
    }
    ~NoisyUdpTracker() {
        stop_ = true;
        thread_.join();
        ::close(socket_);
    }
    NoisyUdpTracker(const NoisyUdpTracker&) = delete;
    NoisyUdpTracker& operator=(const NoisyUdpTracker&) = delete;

    std::string url() const { return "udp://127.0.0.1:" + std::to_string(port_); }
    int connects_seen() const { return connects_; }

private:
    static void put32(std::vector<std::uint8_t>& out, std::uint32_t v) {
        for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<std::uint8_t>(v >> shift));
    }
    static std::uint32_t get32(const std::uint8_t* p) {
        return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) |
               (std::uint32_t{p[2]} << 8) | p[3];
    }

    void serve() {
        constexpr std::uint64_t kConnectionId = 0x1122334455667788ull;
        while (!stop_) {
            pollfd item{socket_, POLLIN, 0};
            if (::poll(&item, 1, 50) <= 0) continue;
            std::uint8_t packet[2048];
            sockaddr_in from{};
            socklen_t from_length = sizeof from;
            const ssize_t got = ::recvfrom(socket_, packet, sizeof packet, 0,
                                           reinterpret_cast<sockaddr*>(&from), &from_length);
            if (got < 16) continue;
            const std::uint32_t action = get32(packet + 8);
            const std::uint32_t transaction = get32(packet + 12);
            std::vector<std::uint8_t> stray;
            std::vector<std::uint8_t> answer;
            if (got == 16 && action == 0) {
                if (++connects_ == 1) continue;  // lost in transit
                put32(stray, 0);
                put32(stray, transaction + 1);
                put32(stray, 0xdead);
                put32(stray, 0xbeef);
                put32(answer, 0);
                put32(answer, transaction);
                put32(answer, static_cast<std::uint32_t>(kConnectionId >> 32));
                put32(answer, static_cast<std::uint32_t>(kConnectionId));
            } else if (got >= 98 && get32(packet + 8) == 1) {
                put32(stray, 1);
                put32(stray, get32(packet + 12) ^ 0xffffffffu);
                put32(stray, 60);
                put32(stray, 0);
                put32(stray, 0);
                put32(answer, 1);
                put32(answer, transaction);
                put32(answer, 1800);  // interval
                put32(answer, 0);     // leechers
                put32(answer, 1);     // seeders
                for (std::uint8_t byte : {127, 0, 0, 1}) answer.push_back(byte);
                answer.push_back(static_cast<std::uint8_t>(kFakePeerPort >> 8));
                answer.push_back(static_cast<std::uint8_t>(kFakePeerPort & 0xff));
            } else {
                continue;
            }
            std::vector<std::uint8_t> runt{0, 0, 0};
            for (const auto* datagram : {&stray, &runt, &answer}) {
                ::sendto(socket_, datagram->data(), datagram->size(), 0,
                         reinterpret_cast<sockaddr*>(&from), from_length);
            }
        }
    }

    int socket_ = -1;
    std::uint16_t port_ = 0;
    std::atomic<bool> stop_{false};
    std::atomic<int> connects_{0};
    std::thread thread_;
};

TEST_F(TrackerSvcStage, UdpRetransmitsAndSkipsStrayPackets) {
    NoisyUdpTracker tracker;
    const auto torrent = make_torrent({{tracker.url()}}, "noisy");
    orchestrator.set_torrent(torrent.bytes);
    auto stage = start_tracker_svc(dir, orchestrator, 10);
    const auto found = orchestrator.wait_for(has_fake_peer, 20s);
    ASSERT_TRUE(found) << describe(orchestrator.seen()) << stage.log_tail();
    EXPECT_EQ(tracker.connects_seen(), 2);
    for (const auto& envelope : orchestrator.seen()) EXPECT_FALSE(is_failure(envelope));
}

// The stage's one-line failure report when the torrent's only tracker is `server`.
std::string failure_from(TrackerSvcStage& test, const CannedHttpServer& server,
                         int announce_timeout_s = 5) {
    const auto torrent = make_torrent({{server.url()}}, "hostile");
    test.orchestrator.set_torrent(torrent.bytes);
    auto stage = start_tracker_svc(test.dir, test.orchestrator, announce_timeout_s);
    const auto status = test.orchestrator.wait_for(is_failure, 30s);
    if (!status) {
        ADD_FAILURE() << "no failure reported\n" << stage.log_tail();
        return {};
    }
    EXPECT_EQ(status->tracker_status().tracker(), server.url());
    EXPECT_TRUE(stage.running()) << stage.log_tail();
    return status->tracker_status().message();
}

TEST_F(TrackerSvcStage, OversizedBodyIsCutOff) {
    // No Content-Length: the cap has to hold while the body streams in.
    CannedHttpServer server("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nd5:peers" +
                            std::string(6u << 20, 'x'));
    EXPECT_NE(failure_from(*this, server).find("larger than 4 MiB"), std::string::npos);
}

TEST_F(TrackerSvcStage, OversizedContentLengthIsRefused) {
    CannedHttpServer server("HTTP/1.1 200 OK\r\nContent-Length: 999999999\r\n\r\nd");
    EXPECT_NE(failure_from(*this, server).find("larger than 4 MiB"), std::string::npos);
}

TEST_F(TrackerSvcStage, RedirectToAnotherSchemeIsRefused) {
    CannedHttpServer server("HTTP/1.1 302 Found\r\nLocation: file:///etc/passwd\r\n"
                            "Content-Length: 0\r\n\r\n");
    const std::string message = failure_from(*this, server);
    EXPECT_NE(message.find("redirected to a scheme other than http/https"), std::string::npos)
        << message;
}

TEST_F(TrackerSvcStage, GarbageBodyIsReportedAsMalformed) {
    CannedHttpServer server("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n<html>hi!");
    const std::string message = failure_from(*this, server);
    EXPECT_NE(message.find("malformed response"), std::string::npos) << message;
}

TEST_F(TrackerSvcStage, HttpErrorStatusIsReported) {
    CannedHttpServer server("HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n");
    const std::string message = failure_from(*this, server);
    EXPECT_NE(message.find("HTTP status 503"), std::string::npos) << message;
}

TEST_F(TrackerSvcStage, SilentTrackerTimesOutWhileHeartbeatsFlow) {
    CannedHttpServer server("");
    const std::string message = failure_from(*this, server, 3);
    EXPECT_NE(message.find("timed out"), std::string::npos) << message;
    // 3 s of waiting at a 300 ms period: the loop kept beating (loosely counted).
    EXPECT_GE(orchestrator.heartbeats(), 5);
}

// --- issue 4: hostile answers the stage must survive and still use ---

std::string http_ok(const std::string& body) {
    return "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
}

// 127.0.0.1:kFakePeerPort in BEP 23 compact form.
std::string compact_fake_peer() {
    return std::string{'\x7f', '\x00', '\x00', '\x01', static_cast<char>(kFakePeerPort >> 8),
                       static_cast<char>(kFakePeerPort & 0xff)};
}

TEST_F(TrackerSvcStage, CompactPeersNotAMultipleOfSixKeepTheWholeEntries) {
    const std::string peers = compact_fake_peer() + "\x0a\x0b\x0c";  // 9 bytes: one whole peer
    CannedHttpServer server(http_ok("d8:intervali1800e5:peers9:" + peers + "e"));
    const auto torrent = make_torrent({{server.url()}}, "ragged");
    orchestrator.set_torrent(torrent.bytes);
    auto stage = start_tracker_svc(dir, orchestrator);
    const auto found = orchestrator.wait_for(has_fake_peer, 20s);
    ASSERT_TRUE(found) << describe(orchestrator.seen()) << stage.log_tail();
    EXPECT_EQ(found->peers_found().peers_size(), 1) << found->ShortDebugString();
    EXPECT_TRUE(stage.running());
}

// interval 0 or negative is no reason to hammer the tracker: the stage falls back to its
// default interval, so one announce only in the few seconds watched (min interval is 1 s here).
class SillyInterval : public TrackerSvcStage, public ::testing::WithParamInterface<const char*> {};

TEST_P(SillyInterval, IsClampedNotHammered) {
    CannedHttpServer server(http_ok(std::string("d8:intervali") + GetParam() + "e5:peers6:" +
                                    compact_fake_peer() + "e"));
    const auto torrent = make_torrent({{server.url()}}, std::string("interval") + GetParam());
    orchestrator.set_torrent(torrent.bytes);
    auto stage = start_tracker_svc(dir, orchestrator);
    ASSERT_TRUE(orchestrator.wait_for(has_fake_peer, 20s)) << stage.log_tail();
    orchestrator.wait_for([](const v1::Envelope&) { return false; }, 4s);
    EXPECT_EQ(server.requests(), 1) << stage.log_tail();
    EXPECT_TRUE(stage.running());
}

INSTANTIATE_TEST_SUITE_P(Intervals, SillyInterval,
                         ::testing::Values("0", "-5", "-9223372036854775807"),
                         [](const auto& param_info) {
                             return std::string(param_info.param[0] == '-' ? "minus" : "zero") +
                                    std::to_string(std::string(param_info.param).size());
                         });

// A first tier that fails (failure reason) and a second that answers garbage: both reported,
// and the third tier's peers still arrive.
TEST_F(TrackerSvcStage, HostileTiersDoNotStopTheGoodOne) {
    CannedHttpServer failing(http_ok("d14:failure reason8:go away!e"));
    CannedHttpServer garbage(http_ok("<html>nope</html>"));
    CannedHttpServer good(http_ok("d8:intervali1800e5:peers6:" + compact_fake_peer() + "e"));
    const auto torrent = make_torrent({{failing.url()}, {garbage.url()}, {good.url()}}, "tiers");
    orchestrator.set_torrent(torrent.bytes);
    auto stage = start_tracker_svc(dir, orchestrator);
    const auto found = orchestrator.wait_for(has_fake_peer, 30s);
    ASSERT_TRUE(found) << describe(orchestrator.seen()) << stage.log_tail();
    EXPECT_EQ(found->peers_found().tracker(), good.url());
    const std::string seen = describe(orchestrator.seen());
    EXPECT_NE(seen.find("go away!"), std::string::npos) << seen;
    EXPECT_GE(garbage.requests(), 1);
}

}  // namespace
}  // namespace pw
