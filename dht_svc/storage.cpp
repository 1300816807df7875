#include "dht_svc/storage.hpp"

#include <algorithm>

namespace pw::dht {

namespace {

std::string random_secret(std::mt19937_64& rng) {
    std::string secret(16, '\0');
    for (char& c : secret) c = static_cast<char>(rng() & 0xFF);
    return secret;
}

}  // namespace

TokenKeeper::TokenKeeper(std::uint64_t seed, Time now, std::chrono::seconds rotate_every)
    : rng_(seed), rotate_every_(rotate_every), rotated_at_(now) {
    current_ = random_secret(rng_);
    previous_ = random_secret(rng_);
}

void TokenKeeper::rotate_if_due(Time now) {
    if (now - rotated_at_ < rotate_every_) return;
    // After a long quiet spell both secrets are stale: two rotations at most.
    if (now - rotated_at_ >= 2 * rotate_every_) {
        previous_ = random_secret(rng_);
    } else {
        previous_ = current_;
    }
    current_ = random_secret(rng_);
    rotated_at_ = now;
}

std::string TokenKeeper::token_for(const std::string& ip, const std::string& secret) const {
    std::string input = ip;
    input.push_back('\0');
    input += secret;
    const Sha1Digest digest = sha1(input);
    return std::string(reinterpret_cast<const char*>(digest.data()), kTokenBytes);
}

std::string TokenKeeper::make(const std::string& ip, Time now) {
    rotate_if_due(now);
    return token_for(ip, current_);
}

bool TokenKeeper::valid(const std::string& ip, const std::string& token, Time now) {
    rotate_if_due(now);
    return token == token_for(ip, current_) || token == token_for(ip, previous_);
}

bool PeerStore::add(const Sha1Digest& info_hash, const PeerAddress& peer, Time now) {
    auto found = peers_.find(info_hash);
    if (found == peers_.end()) {
        if (peers_.size() >= config_.max_hashes) {
            expire(now);
            if (peers_.size() >= config_.max_hashes) return false;
        }
        found = peers_.emplace(info_hash, std::deque<Entry>{}).first;
    }
    auto& entries = found->second;
    entries.erase(std::remove_if(entries.begin(), entries.end(), [&](const Entry& e) { return e.peer == peer; }),
                  entries.end());
    if (entries.size() >= config_.per_hash) entries.pop_front();
    entries.push_back(Entry{peer, now + config_.lifetime});
    return true;
}

std::vector<PeerAddress> PeerStore::get(const Sha1Digest& info_hash, std::size_t max, Time now) {
    std::vector<PeerAddress> out;
    const auto found = peers_.find(info_hash);
    if (found == peers_.end()) return out;
    for (auto it = found->second.rbegin(); it != found->second.rend() && out.size() < max; ++it) {
        if (it->expires > now) out.push_back(it->peer);
    }
    return out;
}

void PeerStore::expire(Time now) {
    for (auto it = peers_.begin(); it != peers_.end();) {
        auto& entries = it->second;
        entries.erase(std::remove_if(entries.begin(), entries.end(), [&](const Entry& e) { return e.expires <= now; }),
                      entries.end());
        it = entries.empty() ? peers_.erase(it) : std::next(it);
    }
}

std::size_t PeerStore::peer_count() const {
    std::size_t total = 0;
    for (const auto& [hash, entries] : peers_) total += entries.size();
    return total;
}

RateLimiter::RateLimiter(Config config) : config_(config) { global_.tokens = config.global_burst; }

void RateLimiter::refill(Bucket& bucket, double rate, double burst, Time now) {
    if (bucket.last != Time{} && now > bucket.last) {
        const double seconds = std::chrono::duration<double>(now - bucket.last).count();
        bucket.tokens = std::min(burst, bucket.tokens + seconds * rate);
    }
    bucket.last = now;
}

bool RateLimiter::allow(const std::string& ip, Time now) {
    refill(global_, config_.global_rate, config_.global_burst, now);
    auto found = per_ip_.find(ip);
    if (found == per_ip_.end()) {
        if (per_ip_.size() >= config_.max_addresses) {
            // Sweeping is a pass over every address: at most once a second, not per datagram.
            if (last_sweep_ != Time{} && now - last_sweep_ < std::chrono::seconds(1)) return false;
            last_sweep_ = now;
            for (auto it = per_ip_.begin(); it != per_ip_.end();) {
                refill(it->second, config_.per_ip_rate, config_.per_ip_burst, now);
                it = it->second.tokens >= config_.per_ip_burst ? per_ip_.erase(it) : std::next(it);
            }
            if (per_ip_.size() >= config_.max_addresses) return false;
        }
        found = per_ip_.emplace(ip, Bucket{config_.per_ip_burst, now}).first;
    }
    Bucket& bucket = found->second;
    refill(bucket, config_.per_ip_rate, config_.per_ip_burst, now);
    if (bucket.tokens < 1 || global_.tokens < 1) return false;
    bucket.tokens -= 1;
    global_.tokens -= 1;
    return true;
}

}  // namespace pw::dht
