#include "orchestrator/choker.hpp"

#include <algorithm>
#include <set>

namespace pw::orchestrator {

std::uint32_t Choker::unchoked() const {
    std::uint32_t count = 0;
    for (const auto& [key, peer] : peers_) count += peer.unchoked ? 1 : 0;
    return count;
}

std::uint32_t Choker::regular_unchoked() const {
    std::uint32_t count = 0;
    for (const auto& [key, peer] : peers_) {
        if (peer.unchoked && (!optimistic_ || *optimistic_ != key)) ++count;
    }
    return count;
}

bool Choker::is_unchoked(const std::string& peer) const {
    const auto found = peers_.find(peer);
    return found != peers_.end() && found->second.unchoked;
}

std::vector<ChokeChange> Choker::update(const std::string& key, const ChokePeer& state,
                                        Clock::time_point now) {
    auto [it, added] = peers_.try_emplace(key);
    Peer& peer = it->second;
    if (added) {
        peer.joined = now;
        peer.since = now;
    }
    const bool became_interested = state.interested && !peer.state.interested;
    peer.state = state;
    if (!became_interested || peer.unchoked || regular_unchoked() >= slots_) return {};
    peer.unchoked = true;
    peer.since = now;
    return {ChokeChange{peer.state.worker, key, true}};
}

void Choker::remove(const std::string& peer) {
    peers_.erase(peer);
    if (optimistic_ && *optimistic_ == peer) optimistic_.reset();
}

void Choker::remove_worker(const std::string& worker) {
    for (auto it = peers_.begin(); it != peers_.end();) {
        if (it->second.state.worker == worker) {
            if (optimistic_ && *optimistic_ == it->first) optimistic_.reset();
            it = peers_.erase(it);
        } else {
            ++it;
        }
    }
}

std::vector<ChokeChange> Choker::tick(Clock::time_point now, bool seeding, bool force) {
    if (!force && now < next_round_) return {};
    next_round_ = now + kRound;

    std::vector<std::string> candidates;
    bool anyone_waits = false;
    for (const auto& [key, peer] : peers_) {
        if (!peer.state.interested) continue;
        if (!seeding && peer.state.snubbed) continue;  // anti-snubbing: no regular slot
        candidates.push_back(key);
        anyone_waits = anyone_waits || !peer.unchoked;
    }
    // Random among equals, then the order of merit.
    std::shuffle(candidates.begin(), candidates.end(), rng_);
    const auto rank = [&](const std::string& key) -> std::int64_t {
        const Peer& peer = peers_.at(key);
        if (!seeding) return peer.state.download_rate;
        // A turn is over once a peer held its slot long enough while others wait.
        if (peer.unchoked && anyone_waits && now - peer.since >= kSeedTurn) return -1;
        return peer.state.upload_rate;
    };
    std::stable_sort(candidates.begin(), candidates.end(),
                     [&](const std::string& a, const std::string& b) { return rank(a) > rank(b); });
    if (candidates.size() > slots_) candidates.resize(slots_);
    std::set<std::string> wanted(candidates.begin(), candidates.end());

    const bool optimistic_valid = optimistic_ && peers_.contains(*optimistic_) &&
                                  peers_.at(*optimistic_).state.interested && !wanted.contains(*optimistic_);
    if (!optimistic_valid || now - optimistic_since_ >= kOptimisticTurn) {
        optimistic_.reset();
        std::vector<std::string> pool;
        for (const auto& [key, peer] : peers_) {
            if (!peer.state.interested || wanted.contains(key)) continue;
            // Newcomers have nothing to show for themselves yet: three times the chance.
            const int weight = now - peer.joined < kNewcomer ? 3 : 1;
            for (int i = 0; i < weight; ++i) pool.push_back(key);
        }
        if (!pool.empty()) {
            std::uniform_int_distribution<std::size_t> pick(0, pool.size() - 1);
            optimistic_ = pool[pick(rng_)];
            optimistic_since_ = now;
        }
    }
    if (optimistic_) wanted.insert(*optimistic_);

    std::vector<ChokeChange> changes;
    for (auto& [key, peer] : peers_) {
        const bool unchoke = wanted.contains(key);
        if (unchoke == peer.unchoked) continue;
        peer.unchoked = unchoke;
        peer.since = now;
        changes.push_back(ChokeChange{peer.state.worker, key, unchoke});
    }
    return changes;
}

}  // namespace pw::orchestrator
