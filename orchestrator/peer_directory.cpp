#include "orchestrator/peer_directory.hpp"

#include <algorithm>

#include "core/bus/bus.hpp"

namespace pw::orchestrator {

std::string ip_of_key(const std::string& key) {
    if (!key.empty() && key.front() == '[') {
        const auto close = key.find(']');
        return close == std::string::npos ? key : key.substr(1, close - 1);
    }
    const auto colon = key.rfind(':');
    return colon == std::string::npos ? key : key.substr(0, colon);
}

std::uint16_t port_of_key(const std::string& key) {
    const auto colon = key.rfind(':');
    if (colon == std::string::npos || (!key.empty() && key.front() == '[' && key.find(']') > colon)) return 0;
    unsigned long port = 0;
    for (std::size_t i = colon + 1; i < key.size(); ++i) {
        if (key[i] < '0' || key[i] > '9') return 0;
        port = port * 10 + static_cast<unsigned long>(key[i] - '0');
        if (port > 65535) return 0;
    }
    return static_cast<std::uint16_t>(port);
}

// --- the judge ---

void PeerJudge::forget_decayed(Times& times, Clock::time_point now) const {
    while (!times.empty() && now - times.front() >= options_.strike_lifetime) times.pop_front();
}

unsigned PeerJudge::strike(std::map<std::string, Times>& table, const std::string& key,
                           Clock::time_point now) {
    auto found = table.find(key);
    if (found == table.end()) {
        if (table.size() >= options_.max_remembered) {
            // Room first from strikes that decayed, else from the first key (an old one, or
            // a random one: the cap only bounds memory against a flood of addresses).
            for (auto it = table.begin(); it != table.end();) {
                forget_decayed(it->second, now);
                it = it->second.empty() ? table.erase(it) : std::next(it);
            }
            if (table.size() >= options_.max_remembered) table.erase(table.begin());
        }
        found = table.emplace(key, Times{}).first;
    }
    forget_decayed(found->second, now);
    found->second.push_back(now);
    return static_cast<unsigned>(found->second.size());
}

unsigned PeerJudge::address_strikes(const std::string& ip, Clock::time_point now) const {
    const auto found = address_strikes_.find(ip);
    if (found == address_strikes_.end()) return 0;
    unsigned live = 0;
    for (const auto at : found->second) live += now - at < options_.strike_lifetime ? 1 : 0;
    return live;
}

void PeerJudge::remember(Ban ban) {
    if (order_.size() >= options_.max_remembered) {
        const Ban& oldest = order_.front();
        if (oldest.whole_address()) {
            addresses_.erase(oldest.ip);
        } else {
            endpoints_.erase({oldest.ip, oldest.port});
            if (!oldest.peer_id.empty()) peer_ids_.erase({oldest.ip, oldest.peer_id});
        }
        order_.pop_front();
    }
    if (ban.whole_address()) {
        addresses_.insert(ban.ip);
    } else {
        endpoints_.insert({ban.ip, ban.port});
        if (!ban.peer_id.empty()) peer_ids_.insert({ban.ip, ban.peer_id});
    }
    order_.push_back(std::move(ban));
}

std::vector<Ban> PeerJudge::piece_failed(const std::vector<PeerIdentity>& contributors,
                                         Clock::time_point now) {
    std::vector<PeerIdentity> peers;
    for (const auto& peer : contributors) {
        const bool seen = std::any_of(peers.begin(), peers.end(), [&](const PeerIdentity& other) {
            return other.ip == peer.ip && other.port == peer.port;
        });
        if (!seen && !peer.ip.empty()) peers.push_back(peer);
    }
    std::vector<Ban> bans;
    for (const auto& peer : peers) {
        if (banned(peer)) continue;
        const std::string key = peer.ip + ":" + std::to_string(peer.port);
        Ban ban{peer.ip, peer.port, peer.peer_id, {}};
        if (peers.size() == 1) {
            ban.reason = "sent a piece that failed its hash check";
        } else if (const unsigned strikes = strike(peer_strikes_, key, now);
                   strikes >= options_.shared_strikes_to_ban) {
            ban.reason = "shared in " + std::to_string(strikes) + " pieces that failed their hash check";
        } else {
            continue;
        }
        peer_strikes_.erase(key);
        remember(ban);
        bans.push_back(ban);
        const unsigned against_address = strike(address_strikes_, peer.ip, now);
        if (against_address >= options_.banned_peers_to_ban_address && !address_banned(peer.ip)) {
            Ban whole{peer.ip, 0, {}, std::to_string(against_address) + " of its peers sent bad data"};
            address_strikes_.erase(peer.ip);
            remember(whole);
            bans.push_back(std::move(whole));
        }
    }
    return bans;
}

bool PeerJudge::endpoint_banned(const std::string& ip, std::uint16_t port) const {
    return addresses_.contains(ip) || endpoints_.contains({ip, port});
}

bool PeerJudge::banned(const PeerIdentity& peer) const {
    return endpoint_banned(peer.ip, peer.port) ||
           (!peer.peer_id.empty() && peer_ids_.contains({peer.ip, peer.peer_id}));
}

// --- the directory ---

std::vector<std::string> PeerDirectory::remove_worker(const std::string& worker) {
    const auto it = workers_.find(worker);
    if (it == workers_.end()) return {};
    std::vector<std::string> keys(it->second.begin(), it->second.end());
    for (const auto& key : it->second) {
        const auto entry = peers_.find(key);
        if (entry == peers_.end()) continue;
        if (entry->second.incoming) {
            peers_.erase(entry);  // it came to that worker; it may come to another
            continue;
        }
        entry->second.worker.clear();
        entry->second.connected = false;
        entry->second.ready_at = {};
    }
    workers_.erase(it);
    return keys;
}

void PeerDirectory::release_all() {
    workers_.clear();
    std::erase_if(peers_, [](const auto& entry) { return entry.second.incoming; });
    for (auto& [key, entry] : peers_) {
        entry.worker.clear();
        entry.connected = false;
        entry.ready_at = {};
    }
}

void PeerDirectory::offer(const PeerAddress& peer) {
    if (peer.port == 0 || peer.port > 65535 || peer.ip.empty() ||
        judged_banned(peer.ip, static_cast<std::uint16_t>(peer.port))) {
        return;
    }
    const std::string key = bus::peer_key(peer.ip, peer.port);
    auto [it, inserted] = peers_.try_emplace(key);
    if (inserted) {
        it->second.address = peer;
        return;
    }
    // A tracker naming a peer again is a hint that it is alive: given-up peers stay given up,
    // but one waiting out its backoff may go now.
    if (it->second.worker.empty() && !it->second.given_up && it->second.drops == 0) {
        it->second.ready_at = {};
    }
}

std::vector<Assignment> PeerDirectory::assign(Clock::time_point now, WorkerLoad& load,
                                              std::size_t room, bool we_seed) {
    std::vector<Assignment> out;
    if (load.empty() || room == 0) return out;
    std::map<std::string, std::size_t> batch_index;
    std::vector<std::string> ready;
    for (const auto& [key, entry] : peers_) {
        if (entry.worker.empty() && !entry.given_up && entry.ready_at <= now && !(we_seed && entry.seed)) {
            ready.push_back(key);
        }
    }
    std::sort(ready.begin(), ready.end());
    if (ready.size() > room) ready.resize(room);
    for (const auto& key : ready) {
        auto fewest = std::min_element(load.begin(), load.end(), [](const auto& a, const auto& b) {
            return a.second < b.second;
        });
        ++fewest->second;
        Entry& entry = peers_[key];
        entry.worker = fewest->first;
        workers_[fewest->first].insert(key);
        auto [slot, fresh] = batch_index.try_emplace(fewest->first, out.size());
        if (fresh) out.push_back(Assignment{fewest->first, {}});
        out[slot->second].peers.push_back(entry.address);
    }
    return out;
}

void PeerDirectory::connected(const std::string& key, const std::string& peer_id) {
    const auto it = peers_.find(key);
    if (it == peers_.end()) return;
    it->second.drops = 0;
    it->second.connected = true;
    it->second.peer_id = peer_id;
}

void PeerDirectory::incoming(const std::string& key, const std::string& worker) {
    if (peers_.contains(key) || judged_banned(ip_of_key(key), port_of_key(key))) return;
    Entry& entry = peers_[key];
    entry.address.ip = ip_of_key(key);
    entry.address.port = port_of_key(key);
    entry.worker = worker;
    entry.incoming = true;
    workers_[worker].insert(key);
}

void PeerDirectory::disconnected(const std::string& key, Clock::time_point now, bool seed) {
    const auto it = peers_.find(key);
    if (it == peers_.end()) return;
    Entry& entry = it->second;
    entry.seed = entry.seed || seed;
    if (!entry.worker.empty()) {
        const auto worker = workers_.find(entry.worker);
        if (worker != workers_.end()) worker->second.erase(key);
        entry.worker.clear();
    }
    entry.connected = false;
    if (entry.incoming) {
        peers_.erase(it);
        return;
    }
    ++entry.drops;
    if (entry.drops > options_.max_retries) {
        entry.given_up = true;
        return;
    }
    entry.ready_at = now + options_.retry_backoff * (1u << (entry.drops - 1));
}

std::size_t PeerDirectory::ban(const Ban& ban) {
    std::size_t removed = 0;
    for (auto it = peers_.begin(); it != peers_.end();) {
        const Entry& entry = it->second;
        const bool named = entry.address.ip == ban.ip &&
                           (ban.whole_address() || entry.address.port == ban.port ||
                            (!ban.peer_id.empty() && entry.peer_id == ban.peer_id));
        if (!named) {
            ++it;
            continue;
        }
        const auto worker = workers_.find(entry.worker);
        if (worker != workers_.end()) worker->second.erase(it->first);
        it = peers_.erase(it);
        ++removed;
    }
    banned_ += removed;
    return removed;
}

PeerIdentity PeerDirectory::identity(const std::string& key) const {
    PeerIdentity peer{ip_of_key(key), port_of_key(key), {}};
    if (const auto it = peers_.find(key); it != peers_.end()) peer.peer_id = it->second.peer_id;
    return peer;
}

std::size_t PeerDirectory::revive_given_up(Clock::time_point now) {
    std::size_t revived = 0;
    for (auto& [key, entry] : peers_) {
        if (!entry.given_up) continue;
        // One more try: the next drop gives up on it again.
        entry.given_up = false;
        entry.drops = options_.max_retries;
        entry.ready_at = now;
        ++revived;
    }
    return revived;
}

PeerCounts PeerDirectory::counts(Clock::time_point now) const {
    PeerCounts counts;
    counts.banned = banned_;
    for (const auto& [key, entry] : peers_) {
        if (!entry.worker.empty()) {
            ++(entry.connected ? counts.connected : counts.connecting);
        } else if (entry.given_up) {
            ++counts.given_up;
        } else if (entry.ready_at <= now) {
            ++counts.ready;
        } else {
            ++counts.backing_off;
            if (!counts.next_retry || entry.ready_at < *counts.next_retry) counts.next_retry = entry.ready_at;
        }
    }
    return counts;
}

std::size_t PeerDirectory::assigned() const {
    std::size_t total = 0;
    for (const auto& [worker, keys] : workers_) total += keys.size();
    return total;
}

std::size_t PeerDirectory::waiting() const {
    std::size_t total = 0;
    for (const auto& [key, entry] : peers_) total += entry.worker.empty() && !entry.given_up ? 1 : 0;
    return total;
}

std::size_t PeerDirectory::peers_of(const std::string& worker) const {
    const auto it = workers_.find(worker);
    return it == workers_.end() ? 0 : it->second.size();
}

std::string PeerDirectory::worker_of(const std::string& key) const {
    const auto it = peers_.find(key);
    return it == peers_.end() ? std::string{} : it->second.worker;
}

}  // namespace pw::orchestrator
