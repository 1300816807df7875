#pragma once
// One DHT node (BEP 5), with no socket and no clock of its own: datagrams and time go in,
// datagrams to send and peers found come out. It answers other nodes' queries (ping,
// find_node, get_peers, announce_peer; error 204 for the rest) within rate limits, keeps its
// routing table alive, bootstraps from the configured routers whenever the table is empty,
// and looks each torrent up (iterative get_peers, alpha queries in flight, converging on the K
// closest nodes), then announces the torrent's port to the closest nodes that gave tokens.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "core/krpc.hpp"
#include "core/sha1.hpp"
#include "core/units.hpp"
#include "dht_svc/routing_table.hpp"
#include "dht_svc/storage.hpp"

namespace pw::dht {

struct NodeConfig {
    std::size_t alpha = 3;                                   // queries in flight per lookup
    std::chrono::milliseconds query_timeout{4000};
    std::chrono::minutes relookup_every{15};
    std::chrono::seconds announce_now_floor{60};              // between lookups of one torrent
    std::chrono::seconds bootstrap_backoff{30};               // between bootstraps of an empty table
    std::size_t max_lookups = 8;                              // at once; others wait
    std::size_t max_lookup_candidates = 64;                   // per lookup, the closest kept
    std::size_t max_pending = 512;                            // queries of ours awaiting answers
    std::size_t max_outgoing = 1024;                          // datagrams queued for the socket
    std::size_t max_peers_per_lookup = 300;                   // reported to the orchestrator
    std::size_t max_known_peers = 2000;                       // per torrent, to report only new ones
    std::size_t max_values = 50;                              // peers in one get_peers answer
    std::size_t pings_per_tick = 4;                           // questionable nodes pinged per tick
    std::chrono::seconds token_rotation{300};
    RateLimiter::Config rate{};
    PeerStore::Config store{};
    RoutingTable::Config table{};
};

struct Datagram {
    PeerAddress to;
    std::string bytes;
};

struct FoundPeers {
    TorrentId torrent;
    std::vector<PeerAddress> peers;
};

struct NodeStats {
    std::uint64_t queries_answered = 0;
    std::uint64_t rate_limited = 0;
    std::uint64_t malformed = 0;
    std::uint64_t unexpected_responses = 0;  // unknown transaction, or from the wrong address
    std::uint64_t bad_tokens = 0;
    std::uint64_t announces_stored = 0;
    std::uint64_t lookups_done = 0;
    std::uint64_t announces_sent = 0;
    std::uint64_t timeouts = 0;
    std::uint64_t dropped_outgoing = 0;
};

class DhtNode {
public:
    DhtNode(const NodeId& own, NodeConfig config, std::uint64_t seed, Time now);

    // --- from the network ---
    void on_datagram(std::string_view bytes, const PeerAddress& from, Time now);

    // --- from the orchestrator ---
    void add_torrent(TorrentId id, const Sha1Digest& info_hash, Time now);
    void remove_torrent(TorrentId id);
    // The port to announce (0: none yet, lookups only); announce_now asks for an early
    // lookup (no sooner than announce_now_floor after the last one began).
    void set_port(TorrentId id, std::uint16_t port, bool announce_now, Time now);
    // Addresses that may be DHT nodes (the peer wire's port message): pinged, added if they
    // answer. Bounded by the pending queries.
    void add_candidates(const std::vector<PeerAddress>& addresses, Time now);
    void set_bootstrap(std::vector<PeerAddress> routers) { bootstrap_ = std::move(routers); }
    // Nodes of a saved table: known only to the table as questionable until they answer.
    void restore(const std::vector<NodeInfo>& nodes);

    // --- the loop ---
    // Timeouts, token rotation, expiry, pings of questionable nodes, bootstrap, lookups due.
    void tick(Time now);
    Time next_wakeup(Time now) const;
    std::vector<Datagram> take_outgoing();
    std::vector<FoundPeers> take_found();

    const RoutingTable& table() const { return table_; }
    const NodeStats& stats() const { return stats_; }
    const NodeId& id() const { return table_.own_id(); }
    std::size_t active_lookups() const { return lookups_.size(); }
    std::size_t pending_queries() const { return pending_.size(); }
    // Last messages describing malformed input, for a bounded log (taken once).
    std::vector<std::string> take_log();

private:
    enum class QueryKind { ping, find_node, get_peers, announce };
    struct Pending {
        PeerAddress to;
        Time sent;
        QueryKind kind;
        std::uint64_t lookup = 0;  // 0: none
    };
    struct Candidate {
        NodeInfo node;
        bool id_known = true;
        enum class State { fresh, in_flight, answered, failed } state = State::fresh;
        std::optional<std::string> token;
    };
    struct Lookup {
        NodeId target{};
        bool get_peers = false;
        bool bootstrap = false;
        std::optional<TorrentId> torrent;
        std::vector<Candidate> candidates;  // closest first; unknown ids last
        std::set<std::string> queried;      // addresses asked in this lookup
        std::size_t peers_reported = 0;
    };
    struct Torrent {
        Sha1Digest info_hash{};
        std::uint16_t port = 0;
        Time next_lookup{};
        std::optional<Time> last_lookup;
        std::uint64_t lookup = 0;  // 0: none active
        std::set<std::string> reported;  // peers told to the orchestrator already
    };

    void answer_query(const krpc::Message& message, const krpc::Query& query, const PeerAddress& from, Time now);
    void on_response(const krpc::Message& message, const PeerAddress& from, Time now);
    void send_query(const PeerAddress& to, krpc::Query query, QueryKind kind, std::uint64_t lookup, Time now);
    void send(const PeerAddress& to, const krpc::Message& message);
    void reply_error(const krpc::Message& message, const PeerAddress& from, std::int64_t code, std::string text);
    void note(std::string text);

    std::uint64_t start_lookup(const NodeId& target, bool get_peers, std::optional<TorrentId> torrent, Time now);
    void add_candidate(Lookup& lookup, const NodeInfo& node, bool id_known);
    void step(std::uint64_t id, Time now);
    void finish(std::uint64_t id, Time now);
    void report_peers(Lookup& lookup, const std::vector<PeerAddress>& peers);
    void maybe_bootstrap(Time now);

    NodeConfig config_;
    std::mt19937_64 rng_;
    RoutingTable table_;
    TokenKeeper tokens_;
    PeerStore store_;
    RateLimiter limiter_;
    std::vector<PeerAddress> bootstrap_;
    std::optional<Time> last_bootstrap_;
    std::optional<Time> last_expire_;
    std::optional<Time> last_ping_round_;

    std::map<std::string, Pending> pending_;  // by transaction id
    std::uint16_t next_transaction_ = 0;
    std::map<std::uint64_t, Lookup> lookups_;
    std::uint64_t next_lookup_ = 1;
    std::map<TorrentId, Torrent> torrents_;

    std::vector<Datagram> outgoing_;
    std::map<TorrentId, std::vector<PeerAddress>> found_;
    std::vector<std::string> log_;
    std::size_t log_dropped_ = 0;
    NodeStats stats_;
};

// "ip:port" (IPv6 as "[ip]:port").
std::string address_key(const PeerAddress& address);

}  // namespace pw::dht
