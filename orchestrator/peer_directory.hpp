#pragma once
// Every peer of one torrent we know of, which worker has it, when a dropped one may be tried
// again, and which ips are banned. Peers go to the live worker with the fewest peers over all
// torrents (the session passes that load in), within the session's room for more.
#include <chrono>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <unordered_map>
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

struct PeerDirectoryOptions {
    std::chrono::milliseconds retry_backoff{15'000};  // doubled after each drop in a row
    unsigned max_retries = 4;                         // drops in a row before we give up
    unsigned strikes_to_ban = 3;                      // failed pieces shared with others
};

// "ip" of an "ip:port" or "[ip]:port" key.
std::string ip_of_key(const std::string& key);

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
    // fewest peers, counting each one handed out.
    std::vector<Assignment> assign(Clock::time_point now, WorkerLoad& load, std::size_t room);

    void connected(const std::string& key);
    // A peer that connected to `worker` (incoming): counted like any other while connected,
    // forgotten when it goes. Ignored when the key is known already, or its ip banned.
    void incoming(const std::string& key, const std::string& worker);
    // The worker dropped the peer: retried after a growing backoff, up to max_retries.
    void disconnected(const std::string& key, Clock::time_point now);
    // A failed piece and the peers that sent its blocks: returns the ips to ban now. A sole
    // contributor is banned at once; otherwise each gets a strike.
    std::vector<std::string> record_failure(const std::vector<std::string>& contributors);
    // Bans an ip: its peers are forgotten and never handed out again.
    void ban(const std::string& ip);
    bool banned(const std::string& ip) const { return banned_.contains(ip); }

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
    };

    PeerDirectoryOptions options_;
    std::map<std::string, std::set<std::string>> workers_;  // worker -> its peer keys
    std::unordered_map<std::string, Entry> peers_;
    std::set<std::string> banned_;
    std::unordered_map<std::string, unsigned> strikes_;  // by ip
};

}  // namespace pw::orchestrator
