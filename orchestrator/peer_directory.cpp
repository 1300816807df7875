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
        entry.ready_at = {};
    }
}

void PeerDirectory::offer(const PeerAddress& peer) {
    if (peer.port == 0 || peer.port > 65535 || peer.ip.empty() || banned(peer.ip)) return;
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
                                              std::size_t room) {
    std::vector<Assignment> out;
    if (load.empty() || room == 0) return out;
    std::map<std::string, std::size_t> batch_index;
    std::vector<std::string> ready;
    for (const auto& [key, entry] : peers_) {
        if (entry.worker.empty() && !entry.given_up && entry.ready_at <= now) ready.push_back(key);
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

void PeerDirectory::connected(const std::string& key) {
    const auto it = peers_.find(key);
    if (it != peers_.end()) it->second.drops = 0;
}

void PeerDirectory::incoming(const std::string& key, const std::string& worker) {
    if (peers_.contains(key) || banned(ip_of_key(key))) return;
    Entry& entry = peers_[key];
    entry.address.ip = ip_of_key(key);
    entry.worker = worker;
    entry.incoming = true;
    workers_[worker].insert(key);
}

void PeerDirectory::disconnected(const std::string& key, Clock::time_point now) {
    const auto it = peers_.find(key);
    if (it == peers_.end()) return;
    Entry& entry = it->second;
    if (!entry.worker.empty()) {
        const auto worker = workers_.find(entry.worker);
        if (worker != workers_.end()) worker->second.erase(key);
        entry.worker.clear();
    }
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

std::vector<std::string> PeerDirectory::record_failure(const std::vector<std::string>& contributors) {
    std::set<std::string> ips;
    for (const auto& key : contributors) ips.insert(ip_of_key(key));
    std::vector<std::string> to_ban;
    for (const auto& ip : ips) {
        if (banned(ip)) continue;
        if (ips.size() == 1 || ++strikes_[ip] >= options_.strikes_to_ban) to_ban.push_back(ip);
    }
    for (const auto& ip : to_ban) ban(ip);
    return to_ban;
}

void PeerDirectory::ban(const std::string& ip) {
    banned_.insert(ip);
    for (auto it = peers_.begin(); it != peers_.end();) {
        if (it->second.address.ip != ip) {
            ++it;
            continue;
        }
        const auto worker = workers_.find(it->second.worker);
        if (worker != workers_.end()) worker->second.erase(it->first);
        it = peers_.erase(it);
    }
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
