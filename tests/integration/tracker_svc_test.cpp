// tracker_svc against a real opentracker and fake trackers on 127.0.0.1. The test plays the
// orchestrator of a session: it binds the control ROUTER, answers Hello with a Welcome, tells
// the stage of its torrents (TorrentAdded, TorrentInfo, then the first TrackerStats, as the
// orchestrator does), keeps heartbeating, and watches what the stage reports.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
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
#include "core/bus/welcome.hpp"
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
    std::string info_bytes;
    std::vector<std::vector<std::string>> tiers;
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
                        std::string(hash.begin(), hash.end()), info_bytes, tiers};
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

// Registers a fake seeder at 127.0.0.1:51413 with a plain HTTP announce. opentracker
// answers /stats before it has read its whitelist (another thread), so "not authorized"
// right after its start is retried for a while.
void register_fake_peer(const Tracker& tracker, const BuiltTorrent& torrent) {
    const std::string target = "/announce?info_hash=" + percent_encode(torrent.info_hash_raw) +
                               "&peer_id=" + percent_encode("-XX0001-fakepeer0001") +
                               "&port=" + std::to_string(kFakePeerPort) +
                               "&uploaded=0&downloaded=0&left=0&event=started&compact=1";
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    std::optional<std::string> body;
    for (;;) {
        body = test::http_get(tracker.port(), target);
        ASSERT_TRUE(body.has_value()) << "fake peer announce failed\n" << tracker.log();
        if (body->find("failure") == std::string::npos) return;
        if (std::chrono::steady_clock::now() >= deadline) break;
        std::this_thread::sleep_for(100ms);
    }
    FAIL() << *body;
}

// The orchestrator's side of the control socket, for one tracker_svc: the torrents of the
// session are told after every Welcome, as the real orchestrator does.
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
    // Keeps the stage company for `duration`, collecting what it says.
    void pump(std::chrono::milliseconds duration) {
        wait_for([](const v1::Envelope&) { return false; }, duration);
    }

    void send(v1::Envelope& envelope) {
        ASSERT_FALSE(identity_.empty()) << "the stage never said Hello";
        bus::send(socket_, "orchestrator", envelope, {}, &identity_);
    }

    // Torrent `id` joins the session: TorrentAdded + TorrentInfo now (when the stage is
    // welcomed already) and after every Welcome, then (with `stats`) its first TrackerStats.
    void add_torrent(std::uint32_t id, const BuiltTorrent& torrent, bool stats = true) {
        torrents_[id] = Known{torrent, stats};
        if (welcomed()) tell(id, torrents_[id]);
    }
    void remove_torrent(std::uint32_t id) {
        torrents_.erase(id);
        v1::Envelope envelope = bus::torrent_removed_message(TorrentId{id}, false);
        send(envelope);
    }
    void send_stats(std::uint32_t id, std::uint64_t left,
                    v1::TrackerStats::Event event = v1::TrackerStats::NONE) {
        v1::Envelope envelope = stats_message(id, left, event);
        send(envelope);
    }
    void shutdown() {
        v1::Envelope envelope;
        envelope.mutable_shutdown()->set_reason("test over");
        send(envelope);
    }

    const std::vector<v1::Envelope>& seen() const { return seen_; }
    bool welcomed() const { return !identity_.empty(); }
    int heartbeats() const { return heartbeats_; }

private:
    struct Known {
        BuiltTorrent torrent;
        bool stats = true;
    };

    static v1::Envelope stats_message(std::uint32_t id, std::uint64_t left,
                                      v1::TrackerStats::Event event) {
        v1::Envelope envelope;
        auto* stats = envelope.mutable_tracker_stats();
        stats->set_torrent(id);
        stats->set_left(left);
        stats->set_downloaded(16384 - left);
        stats->set_port(6881);
        stats->set_event(event);
        return envelope;
    }

    void tell(std::uint32_t id, const Known& known) {
        bus::AddedTorrent added;
        added.id = TorrentId{id};
        std::copy(known.torrent.info_hash_raw.begin(), known.torrent.info_hash_raw.end(),
                  added.info_hash.begin());
        added.name = "torrent-" + std::to_string(id);
        added.trackers = known.torrent.tiers;
        v1::Envelope envelope = bus::torrent_added_message(added);
        bus::send(socket_, "orchestrator", envelope, {}, &identity_);
        // The tracker has no use for the info dictionary; it must take it in its stride.
        v1::Envelope info = bus::torrent_info_message(TorrentId{id});
        std::vector<zmq::message_t> frames;
        frames.emplace_back(known.torrent.info_bytes.data(), known.torrent.info_bytes.size());
        bus::send(socket_, "orchestrator", info, frames, &identity_);
        if (known.stats) {
            v1::Envelope stats = stats_message(id, 16384, v1::TrackerStats::NONE);
            bus::send(socket_, "orchestrator", stats, {}, &identity_);
        }
    }

    void welcome(const std::string& identity) {
        identity_ = identity;
        v1::Envelope envelope;
        auto* body = envelope.mutable_welcome();
        body->set_peer_id("-PW0001-abcdefghijkl");
        body->set_heartbeat_ms(kHeartbeatMs);
        body->set_listen_port(6881);
        bus::send(socket_, "orchestrator", envelope, {}, &identity_);
        for (const auto& [id, known] : torrents_) tell(id, known);
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
    std::map<std::uint32_t, Known> torrents_;
    std::chrono::steady_clock::time_point last_beat_{};
    std::vector<v1::Envelope> seen_;
    int heartbeats_ = 0;
};

// A hostile HTTP "tracker" on 127.0.0.1: the first `answered` requests get `response`
// verbatim, then the connection closes; later ones (all of them when `response` is empty) are
// held open, silent, until the test ends. It keeps each request's target (path and query).
class CannedHttpServer {
public:
    explicit CannedHttpServer(std::string response, int answered = 1 << 30)
        : response_(std::move(response)), answered_(answered) {
        const LoopbackSocket listener = open_loopback_socket(SOCK_STREAM, 64);
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
    std::vector<std::string> targets() const {
        std::lock_guard lock(mutex_);
        return targets_;
    }

private:
    void serve() {
        std::vector<int> open;
        while (!stop_) {
            pollfd item{listener_, POLLIN, 0};
            if (::poll(&item, 1, 50) <= 0) continue;
            const int connection = ::accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
            if (connection < 0) continue;
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
            {
                // "GET /announce?... HTTP/1.1"
                const auto first_space = request.find(' ');
                const auto second_space = request.find(' ', first_space + 1);
                std::lock_guard lock(mutex_);
                if (first_space != std::string::npos && second_space != std::string::npos) {
                    targets_.push_back(request.substr(first_space + 1, second_space - first_space - 1));
                }
            }
            const int number = requests_++;
            if (response_.empty() || number >= answered_) {
                open.push_back(connection);  // held open, silent, until the test ends
                continue;
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
    int answered_;
    int listener_ = -1;
    std::uint16_t port_ = 0;
    std::atomic<bool> stop_{false};
    std::atomic<int> requests_{0};
    mutable std::mutex mutex_;
    std::vector<std::string> targets_;
    std::thread thread_;
};

// The value of `name` in a request target's query, percent-decoded; "" when absent.
std::string query_value(const std::string& target, const std::string& name) {
    const auto query = target.find('?');
    if (query == std::string::npos) return {};
    std::size_t at = query + 1;
    while (at < target.size()) {
        const auto end = std::min(target.find('&', at), target.size());
        const std::string pair = target.substr(at, end - at);
        at = end + 1;
        const auto equals = pair.find('=');
        if (pair.substr(0, equals) != name) continue;
        std::string value;
        const std::string encoded = equals == std::string::npos ? "" : pair.substr(equals + 1);
        for (std::size_t i = 0; i < encoded.size(); ++i) {
            if (encoded[i] == '%' && i + 2 < encoded.size()) {
                value += static_cast<char>(std::stoi(encoded.substr(i + 1, 2), nullptr, 16));
                i += 2;
            } else {
                value += encoded[i];
            }
        }
        return value;
    }
    return {};
}

// The events (query `event`, "" for a regular announce) of the requests `server` got for
// `torrent`, in order.
std::vector<std::string> events_for(const CannedHttpServer& server, const BuiltTorrent& torrent) {
    std::vector<std::string> events;
    for (const std::string& target : server.targets()) {
        if (query_value(target, "info_hash") == torrent.info_hash_raw) {
            events.push_back(query_value(target, "event"));
        }
    }
    return events;
}

Process start_tracker_svc(const TempDir& dir, const FakeOrchestrator& orchestrator,
                          int announce_timeout_s = 5, std::vector<std::string> more = {}) {
    std::vector<std::string> argv{test::bin("tracker_svc"), "--control", orchestrator.endpoint(),
                                  "--log-level", "debug", "--announce-timeout",
                                  std::to_string(announce_timeout_s), "--min-interval", "1"};
    argv.insert(argv.end(), more.begin(), more.end());
    return Process::start(argv, dir / "tracker_svc.log");
}

bool has_fake_peer(const v1::Envelope& envelope) {
    if (!envelope.has_peers_found()) return false;
    for (const auto& peer : envelope.peers_found().peers()) {
        if (peer.ip() == "127.0.0.1" && peer.port() == kFakePeerPort) return true;
    }
    return false;
}

// The fake peer, in a PeersFound naming `torrent`.
std::function<bool(const v1::Envelope&)> fake_peer_for(std::uint32_t torrent) {
    return [torrent](const v1::Envelope& envelope) {
        return has_fake_peer(envelope) && envelope.peers_found().torrent() == torrent;
    };
}

bool is_failure(const v1::Envelope& envelope) {
    return envelope.has_tracker_status() && !envelope.tracker_status().ok();
}

bool is_success(const v1::Envelope& envelope) {
    return envelope.has_tracker_status() && envelope.tracker_status().ok();
}

// Keeps the stage company until `done` holds (true) or `timeout` passes (false).
bool pump_until(FakeOrchestrator& orchestrator, const std::function<bool()>& done,
                std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!done()) {
        if (std::chrono::steady_clock::now() >= deadline) return false;
        orchestrator.pump(50ms);
    }
    return true;
}

// Keeps the stage company while it exits; its exit code, -1 when it is still running after
// `timeout`.
int exit_code_within(FakeOrchestrator& orchestrator, Process& stage,
                     std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    int code = -1;
    while (code == -1 && std::chrono::steady_clock::now() < deadline) {
        orchestrator.pump(50ms);
        code = stage.wait_for_exit(10ms);
    }
    return code;
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
    orchestrator.add_torrent(1, torrent);
    auto stage = start_tracker_svc(dir, orchestrator);
    const auto found = orchestrator.wait_for(fake_peer_for(1), 20s);
    ASSERT_TRUE(found) << describe(orchestrator.seen()) << stage.log_tail();
    const std::string url = scheme == "udp" ? tracker.udp_announce() : tracker.http_announce();
    EXPECT_EQ(found->peers_found().tracker(), url);
    EXPECT_EQ(found->peers_found().torrent(), 1u);
    // The success is reported too, for the session's per-tracker status.
    const auto status = orchestrator.wait_for(is_success, 5s);
    ASSERT_TRUE(status) << describe(orchestrator.seen());
    EXPECT_EQ(status->tracker_status().torrent(), 1u);
    EXPECT_EQ(status->tracker_status().tracker(), url);
    EXPECT_GE(status->tracker_status().peers(), 1u);
    EXPECT_GE(status->tracker_status().next_announce_s(), 1u);
    EXPECT_EQ(status->tracker_status().message(), "");
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
    orchestrator.add_torrent(1, torrent);
    auto stage = start_tracker_svc(dir, orchestrator, 2);
    const auto found = orchestrator.wait_for(fake_peer_for(1), 30s);
    ASSERT_TRUE(found) << describe(orchestrator.seen()) << stage.log_tail();
    EXPECT_EQ(found->peers_found().tracker(), live);
    std::vector<std::string> failed;
    for (const auto& envelope : orchestrator.seen()) {
        if (!is_failure(envelope)) continue;
        failed.push_back(envelope.tracker_status().tracker());
        EXPECT_EQ(envelope.tracker_status().torrent(), 1u);
        EXPECT_EQ(envelope.tracker_status().next_announce_s(), 0u);  // the round went on
    }
    EXPECT_EQ(failed, (std::vector<std::string>{dead_udp, dead_http, "gopher://127.0.0.1/x"}))
        << describe(orchestrator.seen());
}

TEST_F(TrackerSvcStage, UnlistedTorrentGetsOpentrackersFailureReason) {
    const std::uint16_t port = test::free_port();
    const auto listed = make_torrent({{"x://"}}, "listed");
    const auto torrent = make_torrent({{"http://127.0.0.1:" + std::to_string(port) + "/announce"}}, "unlisted");
    auto tracker = Tracker::start(dir, {listed.info_hash_hex}, port);
    orchestrator.add_torrent(1, torrent);
    auto stage = start_tracker_svc(dir, orchestrator);
    const auto status = orchestrator.wait_for(is_failure, 20s);
    ASSERT_TRUE(status) << describe(orchestrator.seen()) << stage.log_tail();
    EXPECT_EQ(status->tracker_status().tracker(), tracker.http_announce());
    EXPECT_EQ(status->tracker_status().torrent(), 1u);
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
    orchestrator.add_torrent(1, torrent);
    auto stage = start_tracker_svc(dir, orchestrator);
    ASSERT_TRUE(orchestrator.wait_for(fake_peer_for(1), 20s)) << stage.log_tail();
    ASSERT_TRUE(tracker.wait_for_peers(2, 5s)) << tracker.log();  // the fake peer and us

    orchestrator.send_stats(1, 0, v1::TrackerStats::COMPLETED);
    orchestrator.pump(1s);
    orchestrator.shutdown();
    EXPECT_EQ(exit_code_within(orchestrator, stage, 6s), 0) << stage.log_tail();
    // The stopped announce removed us from the swarm; the fake peer stays.
    EXPECT_EQ(tracker.peer_count(), 1) << tracker.log();
    const std::string log = stage.log_tail(200);
    EXPECT_NE(log.find("answered the completed announce"), std::string::npos) << log;
    EXPECT_NE(log.find("answered the stopped announce"), std::string::npos) << log;
}

TEST_F(TrackerSvcStage, SilentOrchestratorMakesTheStageExit) {
    const auto torrent = make_torrent({{"http://127.0.0.1:1/announce"}}, "silent");
    orchestrator.add_torrent(1, torrent);
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
    orchestrator.add_torrent(1, torrent);
    auto stage = start_tracker_svc(dir, orchestrator, 10);
    const auto found = orchestrator.wait_for(fake_peer_for(1), 20s);
    ASSERT_TRUE(found) << describe(orchestrator.seen()) << stage.log_tail();
    EXPECT_EQ(tracker.connects_seen(), 2);
    for (const auto& envelope : orchestrator.seen()) EXPECT_FALSE(is_failure(envelope));
}

// The stage's one-line failure report when the torrent's only tracker is `server`.
std::string failure_from(TrackerSvcStage& test, const CannedHttpServer& server,
                         int announce_timeout_s = 5) {
    const auto torrent = make_torrent({{server.url()}}, "hostile");
    test.orchestrator.add_torrent(1, torrent);
    auto stage = start_tracker_svc(test.dir, test.orchestrator, announce_timeout_s);
    const auto status = test.orchestrator.wait_for(is_failure, 30s);
    if (!status) {
        ADD_FAILURE() << "no failure reported\n" << stage.log_tail();
        return {};
    }
    EXPECT_EQ(status->tracker_status().tracker(), server.url());
    EXPECT_EQ(status->tracker_status().torrent(), 1u);
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
    orchestrator.add_torrent(1, torrent);
    auto stage = start_tracker_svc(dir, orchestrator);
    const auto found = orchestrator.wait_for(fake_peer_for(1), 20s);
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
    orchestrator.add_torrent(1, torrent);
    auto stage = start_tracker_svc(dir, orchestrator);
    ASSERT_TRUE(orchestrator.wait_for(fake_peer_for(1), 20s)) << stage.log_tail();
    orchestrator.pump(4s);
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
    orchestrator.add_torrent(1, torrent);
    auto stage = start_tracker_svc(dir, orchestrator);
    const auto found = orchestrator.wait_for(fake_peer_for(1), 30s);
    ASSERT_TRUE(found) << describe(orchestrator.seen()) << stage.log_tail();
    EXPECT_EQ(found->peers_found().tracker(), good.url());
    const std::string seen = describe(orchestrator.seen());
    EXPECT_NE(seen.find("go away!"), std::string::npos) << seen;
    EXPECT_GE(garbage.requests(), 1);
}


// --- schema 3: one stage, the session's many torrents ---

// Both torrents' trackers hand out the fake peer; each PeersFound names its own torrent.
std::map<std::uint32_t, std::string> wait_for_both(FakeOrchestrator& orchestrator) {
    std::map<std::uint32_t, std::string> trackers;
    orchestrator.wait_for(
        [&trackers](const v1::Envelope& envelope) {
            if (has_fake_peer(envelope)) {
                trackers[envelope.peers_found().torrent()] = envelope.peers_found().tracker();
            }
            return trackers.size() == 2;
        },
        20s);
    return trackers;
}

std::size_t count(const std::string& text, const std::string& what) {
    std::size_t n = 0;
    for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
    return n;
}

// Two torrents of the session on one opentracker, one over HTTP and one over UDP.
struct TwoTorrents : TrackerSvcStage {
    std::uint16_t port = test::free_port();
    std::string http = "http://127.0.0.1:" + std::to_string(port) + "/announce";
    std::string udp = "udp://127.0.0.1:" + std::to_string(port) + "/announce";
    BuiltTorrent first = make_torrent({{http}}, "first");
    BuiltTorrent second = make_torrent({{udp}}, "second");
    Tracker tracker = Tracker::start(dir, {first.info_hash_hex, second.info_hash_hex}, port);
    Process stage;

    // Both announced: each swarm holds the fake peer and us.
    void start_and_announce() {
        register_fake_peer(tracker, first);
        register_fake_peer(tracker, second);
        orchestrator.add_torrent(1, first);
        orchestrator.add_torrent(2, second);
        stage = start_tracker_svc(dir, orchestrator);
        const auto trackers = wait_for_both(orchestrator);
        ASSERT_EQ(trackers.size(), 2u) << describe(orchestrator.seen()) << stage.log_tail();
        EXPECT_EQ(trackers.at(1), http);
        EXPECT_EQ(trackers.at(2), udp);
        ASSERT_TRUE(tracker.wait_for_peers(4, 5s)) << tracker.log();
    }
};

TEST_F(TwoTorrents, AreAnnouncedEachNamingItsOwnTorrent) {
    start_and_announce();
    std::map<std::uint32_t, int> successes;
    for (const auto& envelope : orchestrator.seen()) {
        if (is_success(envelope)) ++successes[envelope.tracker_status().torrent()];
    }
    orchestrator.wait_for(
        [&successes](const v1::Envelope& envelope) {
            if (is_success(envelope)) ++successes[envelope.tracker_status().torrent()];
            return successes.size() == 2;
        },
        5s);
    EXPECT_EQ(successes.size(), 2u) << describe(orchestrator.seen());
}

TEST_F(TwoTorrents, ShutdownSaysStoppedForEachAndExitsZero) {
    start_and_announce();
    orchestrator.shutdown();
    const auto asked = std::chrono::steady_clock::now();
    EXPECT_EQ(exit_code_within(orchestrator, stage, 10s), 0) << stage.log_tail();
    // stop_timeout (3 s) bounds the stopped announces; opentracker answers at once.
    EXPECT_LT(std::chrono::steady_clock::now() - asked, 3s) << stage.log_tail();
    EXPECT_EQ(tracker.peer_count(), 2) << tracker.log();  // the fake peers only
    EXPECT_EQ(count(stage.log_tail(400), "answered the stopped announce"), 2u) << stage.log_tail();
}

TEST_F(TwoTorrents, ATerminationSignalSaysStoppedForEachThenGoodbye) {
    start_and_announce();
    stage.terminate();  // SIGTERM, through the stage's signalfd
    const auto goodbye = orchestrator.wait_for(
        [](const v1::Envelope& envelope) { return envelope.has_goodbye(); }, 6s);
    ASSERT_TRUE(goodbye) << describe(orchestrator.seen()) << stage.log_tail();
    EXPECT_EQ(goodbye->goodbye().reason(), "SIGTERM");
    // The goodbye comes after the stopped announces.
    EXPECT_EQ(tracker.peer_count(), 2) << tracker.log();
    EXPECT_EQ(exit_code_within(orchestrator, stage, 5s), 0) << stage.log_tail();
    EXPECT_EQ(count(stage.log_tail(400), "answered the stopped announce"), 2u) << stage.log_tail();
}

// The stopped round at the end is concurrent and bounded: a tracker that answered `started`
// and then hangs holds neither the other torrent's stopped nor the exit past stop_timeout.
TEST_F(TrackerSvcStage, AHangingTrackerHoldsNeitherTheOtherStopNorTheExit) {
    CannedHttpServer hanging(http_ok("d8:intervali1800e5:peers6:" + compact_fake_peer() + "e"), 1);
    const std::uint16_t port = test::free_port();
    const auto first = make_torrent({{hanging.url()}}, "hanging");
    const auto second = make_torrent({{"http://127.0.0.1:" + std::to_string(port) + "/announce"}}, "live");
    auto tracker = Tracker::start(dir, {second.info_hash_hex}, port);
    register_fake_peer(tracker, second);
    orchestrator.add_torrent(1, first);
    orchestrator.add_torrent(2, second);
    auto stage = start_tracker_svc(dir, orchestrator, 10);
    ASSERT_EQ(wait_for_both(orchestrator).size(), 2u) << describe(orchestrator.seen()) << stage.log_tail();
    ASSERT_TRUE(tracker.wait_for_peers(2, 5s)) << tracker.log();
    orchestrator.shutdown();
    const auto asked = std::chrono::steady_clock::now();
    EXPECT_EQ(exit_code_within(orchestrator, stage, 10s), 0) << stage.log_tail();
    EXPECT_LT(std::chrono::steady_clock::now() - asked, 5s) << stage.log_tail();
    EXPECT_EQ(tracker.peer_count(), 1) << tracker.log();  // torrent 2's stopped went through
    const auto events = events_for(hanging, first);
    ASSERT_FALSE(events.empty());
    EXPECT_EQ(events.back(), "stopped");  // asked, never answered
    // Its own timeout (what was left of the bound) or the bound itself ended it.
    const std::string log = stage.log_tail(400);
    EXPECT_TRUE(log.find("failed the stopped announce: timed out") != std::string::npos ||
                log.find("gave up on the stopped announce") != std::string::npos)
        << log;
}

// A tracker that never answers one torrent's announce does not hold up another torrent's.
TEST_F(TrackerSvcStage, ASilentTrackerDoesNotDelayAnotherTorrent) {
    CannedHttpServer silent("");
    CannedHttpServer good(http_ok("d8:intervali1800e5:peers6:" + compact_fake_peer() + "e"));
    orchestrator.add_torrent(1, make_torrent({{silent.url()}}, "stuck"));  // first in line
    orchestrator.add_torrent(2, make_torrent({{good.url()}}, "fine"));
    auto stage = start_tracker_svc(dir, orchestrator, 4);
    ASSERT_TRUE(orchestrator.wait_for([](const v1::Envelope& e) { return e.has_hello(); }, 10s));
    const auto welcomed = std::chrono::steady_clock::now();
    ASSERT_TRUE(orchestrator.wait_for(fake_peer_for(2), 10s)) << describe(orchestrator.seen()) << stage.log_tail();
    EXPECT_LT(std::chrono::steady_clock::now() - welcomed, 2s);  // well within the 4 s timeout
    EXPECT_EQ(silent.requests(), 1);
    for (const auto& envelope : orchestrator.seen()) EXPECT_FALSE(is_failure(envelope));
    // The silent one times out in its own time, and is reported as its torrent's.
    const auto failure = orchestrator.wait_for(is_failure, 10s);
    ASSERT_TRUE(failure) << describe(orchestrator.seen()) << stage.log_tail();
    EXPECT_EQ(failure->tracker_status().torrent(), 1u);
    EXPECT_NE(failure->tracker_status().message().find("timed out"), std::string::npos)
        << failure->tracker_status().message();
}

// Many torrents due at once do not open a socket each: at most --max-announces are in
// flight, the others wait their turn and go once a slot frees.
TEST_F(TrackerSvcStage, ManyTorrentsDueAtOnceTakeTurns) {
    CannedHttpServer silent("");
    constexpr std::uint32_t kTorrents = 10;
    for (std::uint32_t id = 1; id <= kTorrents; ++id) {
        orchestrator.add_torrent(id, make_torrent({{silent.url()}}, "many" + std::to_string(id)));
    }
    auto stage = start_tracker_svc(dir, orchestrator, 2, {"--max-announces", "4"});
    ASSERT_TRUE(orchestrator.wait_for([](const v1::Envelope& e) { return e.has_hello(); }, 10s));
    orchestrator.pump(1s);
    EXPECT_EQ(silent.requests(), 4) << stage.log_tail();
    // Each announce times out after 2 s and frees its slot for the next torrent in line.
    std::set<std::uint32_t> failed;
    ASSERT_TRUE(pump_until(orchestrator, [&] {
        for (const auto& envelope : orchestrator.seen()) {
            if (is_failure(envelope)) failed.insert(envelope.tracker_status().torrent());
        }
        return failed.size() == kTorrents;
    }, 15s)) << describe(orchestrator.seen()) << stage.log_tail();
    EXPECT_EQ(silent.requests(), static_cast<int>(kTorrents));
}

// Only the orchestrator knows `left`: the first announce waits for its first TrackerStats,
// and stats naming a torrent the stage does not know are ignored.
TEST_F(TrackerSvcStage, TheFirstAnnounceWaitsForTheFirstStats) {
    CannedHttpServer server(http_ok("d8:intervali1800e5:peers6:" + compact_fake_peer() + "e"));
    orchestrator.add_torrent(1, make_torrent({{server.url()}}, "gated"), /*stats=*/false);
    auto stage = start_tracker_svc(dir, orchestrator);
    orchestrator.pump(2s);
    ASSERT_TRUE(orchestrator.welcomed()) << stage.log_tail();
    EXPECT_EQ(server.requests(), 0);
    orchestrator.send_stats(1, 1000);
    ASSERT_TRUE(orchestrator.wait_for(fake_peer_for(1), 10s)) << describe(orchestrator.seen()) << stage.log_tail();
    const auto targets = server.targets();
    ASSERT_EQ(targets.size(), 1u);
    EXPECT_EQ(query_value(targets[0], "event"), "started");
    EXPECT_EQ(query_value(targets[0], "left"), "1000");
    orchestrator.send_stats(9, 0, v1::TrackerStats::COMPLETED);
    orchestrator.pump(1s);
    EXPECT_TRUE(stage.running()) << stage.log_tail();
    EXPECT_EQ(server.requests(), 1);
}

// TorrentRemoved: `stopped` to the tracker, then nothing more for that torrent, while the
// other torrent of the session goes on; added again later, it starts over.
TEST_F(TrackerSvcStage, ARemovedTorrentSaysStoppedThenNothingMore) {
    // interval 1 s, the floor here: each torrent announces every second.
    CannedHttpServer server(http_ok("d8:intervali1e5:peers6:" + compact_fake_peer() + "e"));
    const auto leaving = make_torrent({{server.url()}}, "leaving");
    const auto staying = make_torrent({{server.url()}}, "staying");
    orchestrator.add_torrent(1, leaving);
    orchestrator.add_torrent(2, staying);
    auto stage = start_tracker_svc(dir, orchestrator);
    ASSERT_TRUE(pump_until(orchestrator, [&] {
        return events_for(server, leaving).size() >= 2 && events_for(server, staying).size() >= 2;
    }, 15s)) << stage.log_tail();

    const std::size_t seen_before = orchestrator.seen().size();
    orchestrator.remove_torrent(1);
    ASSERT_TRUE(pump_until(orchestrator, [&] { return events_for(server, leaving).back() == "stopped"; }, 5s))
        << stage.log_tail();
    const auto said = events_for(server, leaving);
    EXPECT_EQ(said.front(), "started");
    EXPECT_EQ(std::count(said.begin(), said.end(), "stopped"), 1);
    const std::size_t staying_before = events_for(server, staying).size();
    orchestrator.pump(3s);
    EXPECT_EQ(events_for(server, leaving), said);  // nothing more for it
    EXPECT_GE(events_for(server, staying).size(), staying_before + 2);  // the other goes on
    for (std::size_t i = seen_before; i < orchestrator.seen().size(); ++i) {
        const auto& envelope = orchestrator.seen()[i];
        EXPECT_FALSE(envelope.has_peers_found() && envelope.peers_found().torrent() == 1)
            << envelope.ShortDebugString();
        EXPECT_FALSE(envelope.has_tracker_status() && envelope.tracker_status().torrent() == 1)
            << envelope.ShortDebugString();
    }

    orchestrator.add_torrent(1, leaving);
    ASSERT_TRUE(pump_until(orchestrator, [&] { return events_for(server, leaving).size() > said.size(); }, 5s))
        << stage.log_tail();
    EXPECT_EQ(events_for(server, leaving)[said.size()], "started");
}

}  // namespace
}  // namespace pw
