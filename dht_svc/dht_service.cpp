#include "dht_svc/dht_service.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <future>
#include <iterator>
#include <optional>
#include <random>
#include <stdexcept>

#include <spdlog/spdlog.h>

#include "core/atomic_file.hpp"
#include "core/bus/stage.hpp"
#include "core/bus/welcome.hpp"

namespace pw::dht {

namespace {

namespace v1 = bus::v1;
using std::chrono::milliseconds;

constexpr std::size_t kMaxStateFile = 1 << 20;
constexpr std::size_t kMaxDatagramsPerTurn = 256;

NodeId random_id(std::mt19937_64& rng) {
    NodeId id{};
    for (auto& byte : id) byte = static_cast<std::uint8_t>(rng() & 0xFF);
    return id;
}

class UdpSocket {
public:
    UdpSocket(const std::string& bind, std::uint16_t port) {
        sockaddr_in address{};
        address.sin_family = AF_INET;
        address.sin_port = htons(port);
        if (inet_pton(AF_INET, bind.c_str(), &address.sin_addr) != 1) {
            throw std::runtime_error("--bind " + bind + " is not an IPv4 address");
        }
        fd_ = ::socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd_ < 0) throw std::runtime_error(std::string("cannot open a UDP socket: ") + std::strerror(errno));
        if (::bind(fd_, reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0) {
            const int error = errno;
            ::close(fd_);
            throw std::runtime_error("cannot bind UDP " + bind + ":" + std::to_string(port) + ": " +
                                     std::strerror(error));
        }
        socklen_t length = sizeof address;
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&address), &length);
        port_ = ntohs(address.sin_port);
    }
    ~UdpSocket() { ::close(fd_); }
    UdpSocket(const UdpSocket&) = delete;
    UdpSocket& operator=(const UdpSocket&) = delete;

    int fd() const { return fd_; }
    std::uint16_t port() const { return port_; }

    bool send(const Datagram& datagram) const {
        sockaddr_in address{};
        address.sin_family = AF_INET;
        address.sin_port = htons(datagram.to.port);
        if (inet_pton(AF_INET, datagram.to.ip.c_str(), &address.sin_addr) != 1) return false;
        return ::sendto(fd_, datagram.bytes.data(), datagram.bytes.size(), 0,
                        reinterpret_cast<const sockaddr*>(&address), sizeof address) >= 0;
    }

private:
    int fd_ = -1;
    std::uint16_t port_ = 0;
};

class DhtBody final : public bus::StageBody {
public:
    DhtBody(bus::Stage& stage, const ServiceOptions& options, UdpSocket& socket, DhtNode& node,
            std::vector<PeerAddress> routers, std::future<std::vector<PeerAddress>> resolving)
        : stage_(stage),
          options_(options),
          socket_(socket),
          node_(node),
          routers_(std::move(routers)),
          resolving_(std::move(resolving)) {}

    void on_control(bus::Incoming& message) override {
        const v1::Envelope& envelope = message.envelope;
        const auto now = Clock::now();
        if (envelope.has_torrent_added()) {
            auto added = bus::read_torrent_added(envelope.torrent_added());
            if (!added) {
                spdlog::warn("ignored a torrent: {}", added.error().describe());
                return;
            }
            node_.add_torrent(added->id, added->info_hash, now);
            spdlog::info("torrent {} ('{}', {}): looking it up in the DHT", added->id.get(), added->name,
                         to_hex(added->info_hash));
        } else if (envelope.has_torrent_removed()) {
            node_.remove_torrent(TorrentId{envelope.torrent_removed().torrent()});
        } else if (envelope.has_tracker_stats()) {
            const auto& stats = envelope.tracker_stats();
            const auto port = static_cast<std::uint16_t>(stats.port() <= 65535 ? stats.port() : 0);
            node_.set_port(TorrentId{stats.torrent()}, port, stats.announce_now(), now);
        } else if (envelope.has_dht_nodes()) {
            std::vector<PeerAddress> nodes;
            for (const auto& peer : envelope.dht_nodes().nodes()) {
                if (nodes.size() >= 64) break;
                if (peer.port() == 0 || peer.port() > 65535) continue;
                nodes.push_back(PeerAddress{peer.ip(), static_cast<std::uint16_t>(peer.port())});
            }
            node_.add_candidates(nodes, now);
        } else {
            spdlog::debug("ignored a {} message", bus::body_name(envelope));
        }
        flush();
    }

    void on_terminate(const std::string& reason) override {
        save();
        spdlog::info("stopping ({}): {} node(s) in the routing table", reason, node_.table().size());
    }

    v1::Heartbeat heartbeat() override {
        v1::Heartbeat beat;
        beat.set_queue_depth(static_cast<std::uint32_t>(node_.active_lookups()));
        beat.set_listen_port(socket_.port());  // for the workers' port messages (BEP 5)
        return beat;
    }

    void on_readable() {
        std::array<char, 65536> buffer;  // a whole datagram, so an oversized one is seen as such
        for (std::size_t i = 0; i < kMaxDatagramsPerTurn; ++i) {
            sockaddr_in from{};
            socklen_t length = sizeof from;
            const ssize_t got = ::recvfrom(socket_.fd(), buffer.data(), buffer.size(), MSG_TRUNC,
                                           reinterpret_cast<sockaddr*>(&from), &length);
            if (got < 0) break;  // EAGAIN: drained
            if (from.sin_family != AF_INET) continue;
            char text[INET_ADDRSTRLEN] = {};
            inet_ntop(AF_INET, &from.sin_addr, text, sizeof text);
            const auto size = std::min(static_cast<std::size_t>(got), buffer.size());
            node_.on_datagram(std::string_view(buffer.data(), size), PeerAddress{text, ntohs(from.sin_port)},
                              Clock::now());
        }
    }

    void drive() {
        const auto now = Clock::now();
        if (resolving_.valid() && resolving_.wait_for(std::chrono::seconds(0)) == std::future_status::ready) {
            const auto resolved = resolving_.get();
            routers_.insert(routers_.end(), resolved.begin(), resolved.end());
            if (routers_.empty() && node_.table().size() == 0) {
                spdlog::warn("no bootstrap node could be resolved and no saved nodes: the DHT waits for nodes peers name");
            } else {
                spdlog::info("{} bootstrap address(es)", routers_.size());
            }
            node_.set_bootstrap(routers_);
        }
        node_.tick(now);
        flush();
        for (const std::string& line : node_.take_log()) {
            if (logged_ < kLogBudget) spdlog::warn("{}", line);
            ++logged_;
        }
        if (now - last_status_ >= options_.status_every) {
            last_status_ = now;
            logged_ = 0;  // a fresh budget of warnings each status period
            const auto& stats = node_.stats();
            spdlog::info("status: {} node(s) in the table ({} good), {} lookup(s) running, {} done; answered {}, "
                         "rate-limited {}, malformed {}, bad tokens {}, stored announces {}, sent announces {}",
                         node_.table().size(), node_.table().good_count(now), node_.active_lookups(),
                         stats.lookups_done, stats.queries_answered, stats.rate_limited, stats.malformed,
                         stats.bad_tokens, stats.announces_stored, stats.announces_sent);
        }
        if (now - last_save_ >= std::chrono::minutes(5)) {
            last_save_ = now;
            save();
        }
    }

    milliseconds timeout() const {
        const auto now = Clock::now();
        auto wake = std::min(node_.next_wakeup(now), last_status_ + options_.status_every);
        if (resolving_.valid()) wake = std::min(wake, now + milliseconds(200));  // until the names are in
        return std::max(milliseconds(1), std::chrono::ceil<milliseconds>(wake - now));
    }

private:
    static constexpr std::size_t kLogBudget = 50;

    void flush() {
        for (const Datagram& datagram : node_.take_outgoing()) socket_.send(datagram);
        for (FoundPeers& found : node_.take_found()) {
            v1::Envelope envelope;
            auto* out = envelope.mutable_peers_found();
            out->set_torrent(found.torrent.get());
            out->set_tracker("dht");
            for (const PeerAddress& peer : found.peers) {
                auto* one = out->add_peers();
                one->set_ip(peer.ip);
                one->set_port(peer.port);
            }
            spdlog::info("torrent {}: {} new peer(s) from the DHT", found.torrent.get(), found.peers.size());
            stage_.link().send(envelope);
        }
    }

    void save() {
        if (options_.state_dir.empty()) return;
        const auto status = replace_file_atomically(options_.state_dir, kStateFile, node_.table().save());
        if (!status) spdlog::warn("could not save the DHT routing table: {}", status.error().describe());
    }

    bus::Stage& stage_;
    const ServiceOptions& options_;
    UdpSocket& socket_;
    DhtNode& node_;
    std::vector<PeerAddress> routers_;
    std::future<std::vector<PeerAddress>> resolving_;
    Clock::time_point last_status_ = Clock::now();
    Clock::time_point last_save_ = Clock::now();
    std::size_t logged_ = 0;
};

std::optional<RoutingTable::Loaded> load_state(const std::string& dir) {
    if (dir.empty()) return std::nullopt;
    const std::string path = dir + "/" + kStateFile;
    std::ifstream in(path, std::ios::binary);
    if (!in) return std::nullopt;
    std::string bytes;
    bytes.resize(kMaxStateFile + 1);
    in.read(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    bytes.resize(static_cast<std::size_t>(in.gcount()));
    auto loaded = RoutingTable::load(bytes);
    if (!loaded) {
        spdlog::warn("ignored {}: {}; starting with a new node id and an empty table", path, loaded.error().describe());
        return std::nullopt;
    }
    return std::move(loaded).value();
}

}  // namespace

Result<std::vector<PeerAddress>> resolve_host_port(const std::string& host_port) {
    const auto colon = host_port.rfind(':');
    if (colon == std::string::npos || colon == 0 || colon + 1 == host_port.size()) {
        return make_error("\"" + host_port + "\" is not HOST:PORT");
    }
    const std::string host = host_port.substr(0, colon);
    const std::string port_text = host_port.substr(colon + 1);
    unsigned long port = 0;
    try {
        std::size_t used = 0;
        port = std::stoul(port_text, &used);
        if (used != port_text.size() || port == 0 || port > 65535) throw std::out_of_range("port");
    } catch (const std::exception&) {
        return make_error("\"" + host_port + "\": the port is not 1..65535");
    }
    addrinfo hints{};
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_DGRAM;
    addrinfo* result = nullptr;
    if (const int error = ::getaddrinfo(host.c_str(), nullptr, &hints, &result); error != 0) {
        return make_error("cannot resolve " + host + ": " + gai_strerror(error));
    }
    std::vector<PeerAddress> out;
    for (const addrinfo* ai = result; ai != nullptr && out.size() < 8; ai = ai->ai_next) {
        char text[INET_ADDRSTRLEN] = {};
        const auto* in = reinterpret_cast<const sockaddr_in*>(ai->ai_addr);
        inet_ntop(AF_INET, &in->sin_addr, text, sizeof text);
        PeerAddress address{text, static_cast<std::uint16_t>(port)};
        if (std::find(out.begin(), out.end(), address) == out.end()) out.push_back(address);
    }
    ::freeaddrinfo(result);
    return out;
}

int run_dht(zmq::context_t& context, const ServiceOptions& options) {
    // Another client on the machine may hold the usual port: a node on any port still finds
    // peers (others learn it from our queries), so that is a warning, not the end of the DHT.
    std::optional<UdpSocket> bound;
    try {
        bound.emplace(options.bind, options.port);
    } catch (const std::runtime_error& error) {
        if (options.port == 0) throw;
        spdlog::warn("{}: the DHT node takes a port the system picks", error.what());
        bound.emplace(options.bind, 0);
    }
    UdpSocket& socket = *bound;
    spdlog::info("DHT node listening on UDP {}:{}", options.bind, socket.port());

    std::mt19937_64 rng(std::random_device{}());
    auto state = load_state(options.state_dir);
    const NodeId id = state ? state->id : random_id(rng);
    DhtNode node(id, options.node, rng(), Clock::now());
    if (state) {
        node.restore(state->nodes);
        spdlog::info("node id {} and {} node(s) from {}/{}", to_hex(std::string_view(reinterpret_cast<const char*>(id.data()), id.size())),
                     node.table().size(), options.state_dir, kStateFile);
    } else {
        spdlog::info("node id {} (new)", to_hex(std::string_view(reinterpret_cast<const char*>(id.data()), id.size())));
    }
    // Literal addresses now; names on a thread of their own, since a resolver that cannot
    // reach its server blocks for seconds and the loop must keep answering heartbeats.
    std::vector<PeerAddress> routers;
    std::vector<std::string> names;
    for (const std::string& entry : options.bootstrap) {
        const auto colon = entry.rfind(':');
        in_addr literal{};
        if (colon != std::string::npos && inet_pton(AF_INET, entry.substr(0, colon).c_str(), &literal) == 1) {
            auto resolved = resolve_host_port(entry);
            if (resolved) {
                routers.insert(routers.end(), resolved->begin(), resolved->end());
            } else {
                spdlog::warn("bootstrap node {}: {}", entry, resolved.error().describe());
            }
        } else {
            names.push_back(entry);
        }
    }
    node.set_bootstrap(routers);
    std::future<std::vector<PeerAddress>> resolving;
    if (!names.empty()) {
        resolving = std::async(std::launch::async, [names] {
            std::vector<PeerAddress> out;
            for (const std::string& entry : names) {
                auto resolved = resolve_host_port(entry);
                if (!resolved) {
                    spdlog::warn("bootstrap node {}: {}", entry, resolved.error().describe());
                    continue;
                }
                out.insert(out.end(), resolved->begin(), resolved->end());
            }
            return out;
        });
    } else if (routers.empty() && node.table().size() == 0) {
        spdlog::warn("no bootstrap node and no saved nodes: the DHT waits for nodes peers name");
    }

    bus::Stage stage(context, bus::StageConfig{options.control, options.name, v1::ROLE_DHT, options.timing,
                                               options.curve, options.metrics, options.signal_fd});
    const auto welcome = stage.handshake();
    if (!welcome) return 0;
    DhtBody body(stage, options, socket, node, std::move(routers), std::move(resolving));
    bus::PollLoop loop(stage, body);
    loop.watch_fd(socket.fd(), [] { return static_cast<short>(ZMQ_POLLIN); }, [&body](short) { body.on_readable(); });
    loop.set_timeout([&body] { return body.timeout(); });
    loop.every_turn([&body] { body.drive(); });
    return loop.run();
}

}  // namespace pw::dht
