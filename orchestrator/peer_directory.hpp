#pragma once
// Every peer of one torrent we know of, which worker has it, when a dropped one may be tried
// again; and, for the whole session, which peers are banned (PeerJudge). Peers go to the live
// worker with the fewest peers over all torrents (the session passes that load in), within
// the session's room for more.
#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace pw::orchestrator {

struct PeerAddress {
    std::string ip;
    std::uint32_t port = 0;
    friend bool operator==(const PeerAddress&, const PeerAddress&) = default;
};

struct Assignment {
    std::string worker;
    std::vector<PeerAddress> peers;
};

// Live workers and how many peers each holds over every torrent.
using WorkerLoad = std::map<std::string, std::size_t>;

// "ip" of an "ip:port" or "[ip]:port" key.
std::string ip_of_key(const std::string& key);
// "port" of such a key; 0 when there is none.
std::uint16_t port_of_key(const std::string& key);

// A peer as the judge knows it: its address, the port it is keyed by (the one we dial, or
// the one an incoming peer came from) and the peer id of its handshake ("" when not known).
// Several peers on one address (a NAT, a host of containers, a test on 127.0.0.1) are
// several peers.
struct PeerIdentity {
    std::string ip;
    std::uint16_t port = 0;
    std::string peer_id;
};

// What to refuse from now on: a peer (its address and port, and any connection from that
// address that gives its peer id), or with neither a port nor a peer id, the whole address.
struct Ban {
    std::string ip;
    std::uint16_t port = 0;
    std::string peer_id;
    std::string reason;
    bool whole_address() const { return port == 0 && peer_id.empty(); }
};

struct PeerJudgeOptions {
    // A piece that failed with several contributors proves only that one of them lied: each
    // gets a strike, and this many live strikes ban it.
    unsigned shared_strikes_to_ban = 2;
    // Peers of one address banned within a strike's lifetime before the address goes whole.
    unsigned banned_peers_to_ban_address = 3;
    std::chrono::seconds strike_lifetime{3600};  // strikes decay: forgotten after this
    std::size_t max_remembered = 4096;           // bans, and peers or addresses with strikes
};

// Who is banned, session-wide, and why. A piece is fetched whole from one peer (a lease is
// one peer's), so a piece that fails its hash check mostly has one contributor, and every
// block of the bad copy is that peer's: the failure itself is the proof smart-ban would get
// from comparing the bad copy's blocks with a good one, and that peer (address, port, peer
// id) is banned at once, no other. Only in endgame do two or three peers of one worker fill a
// piece together: such a failure names them all, and each gets a strike. Peers on
// the same address stay independent until `banned_peers_to_ban_address` of them have been
// banned (within a strike's lifetime); then the address goes whole. A plain object: the
// time is passed in.
class PeerJudge {
public:
    using Clock = std::chrono::steady_clock;

    explicit PeerJudge(PeerJudgeOptions options = {}) : options_(options) {}

    // A piece failed its hash check; `contributors` sent its blocks. Returns the bans to make
    // now (a peer's, then its address's when that was the last straw), each once.
    std::vector<Ban> piece_failed(const std::vector<PeerIdentity>& contributors, Clock::time_point now);

    // Not to be dialled: its address, or this address and port, is banned.
    bool endpoint_banned(const std::string& ip, std::uint16_t port) const;
    // Not to be served or kept: its address, its address and port, or its address and peer id.
    bool banned(const PeerIdentity& peer) const;
    bool address_banned(const std::string& ip) const { return addresses_.contains(ip); }
    std::size_t banned_peers() const { return endpoints_.size(); }
    // Live strikes against an address: its peers banned lately.
    unsigned address_strikes(const std::string& ip, Clock::time_point now) const;

private:
    using Times = std::deque<Clock::time_point>;
    // Adds a strike at `now` to `key`'s list, after dropping those that decayed; returns the
    // live count.
    unsigned strike(std::map<std::string, Times>& table, const std::string& key, Clock::time_point now);
    void forget_decayed(Times& times, Clock::time_point now) const;
    void remember(Ban ban);

    PeerJudgeOptions options_;
    std::set<std::string> addresses_;
    std::set<std::pair<std::string, std::uint16_t>> endpoints_;
    std::set<std::pair<std::string, std::string>> peer_ids_;  // (ip, peer id)
    std::deque<Ban> order_;  // the bans remembered, oldest first: the first to go past the cap
    std::map<std::string, Times> peer_strikes_;     // by "ip:port"
    std::map<std::string, Times> address_strikes_;  // by ip: when each of its peers was banned
};

struct PeerDirectoryOptions {
    std::chrono::milliseconds retry_backoff{15'000};  // doubled after each drop in a row
    unsigned max_retries = 4;                         // drops in a row before we give up
    const PeerJudge* judge = nullptr;                 // the session's; none: nobody is banned
};

// Where a torrent's peers stand, for the user: what to say when none is connected.
struct PeerCounts {
    std::size_t connected = 0;
    std::size_t connecting = 0;   // handed to a worker, no handshake yet
    std::size_t ready = 0;        // waiting for room or a worker
    std::size_t backing_off = 0;  // dropped, to be tried again
    std::size_t given_up = 0;     // dropped too often in a row
    std::size_t banned = 0;       // of this torrent's peers, since it started
    std::optional<std::chrono::steady_clock::time_point> next_retry;  // the soonest backing off
};

class PeerDirectory {
public:
    using Clock = std::chrono::steady_clock;

    explicit PeerDirectory(PeerDirectoryOptions options = {}) : options_(options) {}

    // The worker is gone; its peers wait to be handed to another worker. Returns their keys.
    std::vector<std::string> remove_worker(const std::string& worker);
    // Every peer goes back to waiting, ready at once (the torrent was stopped, and the workers
    // forgot its peers).
    void release_all();
    // A new peer (tracker or --peer). Known, banned and given-up peers are ignored.
    void offer(const PeerAddress& peer);
    // Hands out up to `room` peers that are ready, each to the worker of `load` with the
    // fewest peers, counting each one handed out. While `we_seed`, peers known to be seeds are
    // left alone.
    std::vector<Assignment> assign(Clock::time_point now, WorkerLoad& load, std::size_t room,
                                   bool we_seed = false);

    // The handshake went through; `peer_id` is the one it gave.
    void connected(const std::string& key, const std::string& peer_id = {});
    // A peer that connected to `worker` (incoming): counted like any other while connected,
    // forgotten when it goes. Ignored when the key is known already, or it is banned.
    void incoming(const std::string& key, const std::string& worker);
    // The worker dropped the peer: retried after a growing backoff, up to max_retries.
    // `seed`: it had every piece (remembered, for assign's `we_seed`).
    void disconnected(const std::string& key, Clock::time_point now, bool seed = false);
    // The peers the ban names are forgotten (the judge keeps them from coming back); returns
    // how many.
    std::size_t ban(const Ban& ban);
    // The peer behind a key as the judge sees it (its peer id once it connected).
    PeerIdentity identity(const std::string& key) const;
    // Peers given up on may be tried again (nothing else is left): each once more, at once.
    std::size_t revive_given_up(Clock::time_point now);
    PeerCounts counts(Clock::time_point now) const;

    std::size_t peers_of(const std::string& worker) const;
    // Peers handed to a worker (connecting or connected).
    std::size_t assigned() const;
    // The worker that holds a peer, or "" when none does.
    std::string worker_of(const std::string& key) const;
    std::size_t known_peers() const { return peers_.size(); }
    // Peers waiting for a worker and not given up on.
    std::size_t waiting() const;

private:
    struct Entry {
        PeerAddress address;
        std::string worker;  // "" while waiting
        unsigned drops = 0;  // in a row, reset on connect
        Clock::time_point ready_at{};
        bool given_up = false;
        bool incoming = false;  // it came to us: not ours to dial again
        bool connected = false;
        bool seed = false;    // it had every piece when it went
        std::string peer_id;  // from its handshake
    };
    bool judged_banned(const std::string& ip, std::uint16_t port) const {
        return options_.judge != nullptr && options_.judge->endpoint_banned(ip, port);
    }

    PeerDirectoryOptions options_;
    std::map<std::string, std::set<std::string>> workers_;  // worker -> its peer keys
    std::unordered_map<std::string, Entry> peers_;
    std::size_t banned_ = 0;
};

}  // namespace pw::orchestrator
