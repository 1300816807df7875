#pragma once
// What the DHT node keeps for others: the tokens it hands out with get_peers answers, the
// peers announced to it, and the budget of answers each address may have. Pure state, time
// passed in, bounded everywhere: all of it is driven by datagrams from anyone.
#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "core/krpc.hpp"
#include "core/sha1.hpp"
#include "dht_svc/routing_table.hpp"

namespace pw::dht {

// announce_peer tokens (BEP 5): the SHA-1 of the querier's IP and a secret, so only an
// address that asked get_peers recently can announce, and nothing is stored per querier. The
// secret changes every `rotate_every`; a token of the previous secret is still accepted, so a
// token lives between one and two periods.
class TokenKeeper {
public:
    static constexpr std::size_t kTokenBytes = 8;
    TokenKeeper(std::uint64_t seed, Time now, std::chrono::seconds rotate_every = std::chrono::minutes(5));

    std::string make(const std::string& ip, Time now);
    bool valid(const std::string& ip, const std::string& token, Time now);

private:
    void rotate_if_due(Time now);
    std::string token_for(const std::string& ip, const std::string& secret) const;

    std::mt19937_64 rng_;
    std::chrono::seconds rotate_every_;
    Time rotated_at_;
    std::string current_;
    std::string previous_;
};

// The peers announced to us, by info-hash: at most per_hash each (the oldest announce goes
// first), at most max_hashes info-hashes (a new one is refused while full), every entry gone
// `lifetime` after its last announce.
class PeerStore {
public:
    struct Config {
        std::size_t per_hash = 100;
        std::size_t max_hashes = 1000;
        std::chrono::seconds lifetime = std::chrono::minutes(30);
    };
    PeerStore() : PeerStore(Config{}) {}
    explicit PeerStore(Config config) : config_(config) {}

    // False when refused (the store is full of other info-hashes).
    bool add(const Sha1Digest& info_hash, const PeerAddress& peer, Time now);
    // At most `max` peers of info_hash, the most recent announces first.
    std::vector<PeerAddress> get(const Sha1Digest& info_hash, std::size_t max, Time now);
    void expire(Time now);
    std::size_t hash_count() const { return peers_.size(); }
    std::size_t peer_count() const;

private:
    struct Entry {
        PeerAddress peer;
        Time expires;
    };
    Config config_;
    std::map<Sha1Digest, std::deque<Entry>> peers_;
};

// Token buckets: one per source IP (rate per second, burst), and one for all of them, so a
// flood from one address or from many gets a bounded number of answers. The per-IP table is
// bounded too: when full, addresses whose bucket is full again (idle ones) are forgotten (at
// most one such sweep a second), and if none is, newcomers are refused until some are.
class RateLimiter {
public:
    struct Config {
        double per_ip_rate = 10;
        double per_ip_burst = 40;
        double global_rate = 500;
        double global_burst = 1000;
        std::size_t max_addresses = 10000;
    };
    RateLimiter() : RateLimiter(Config{}) {}
    explicit RateLimiter(Config config);

    bool allow(const std::string& ip, Time now);

private:
    struct Bucket {
        double tokens = 0;
        Time last{};
    };
    static void refill(Bucket& bucket, double rate, double burst, Time now);

    Config config_;
    Bucket global_;
    std::map<std::string, Bucket> per_ip_;
    Time last_sweep_{};
};

}  // namespace pw::dht
