#include "tracker_svc/tier_list.hpp"

#include <algorithm>
#include <set>
#include <stdexcept>

namespace pw::tracker {

TierList::TierList(std::vector<std::vector<std::string>> tiers, std::mt19937& rng) {
    std::set<std::string> seen;
    for (auto& tier : tiers) {
        std::vector<std::string> kept;
        for (auto& url : tier) {
            if (seen.size() == kMaxTrackers) break;
            if (url.empty() || !seen.insert(url).second) continue;
            kept.push_back(std::move(url));
        }
        if (kept.empty()) continue;
        std::shuffle(kept.begin(), kept.end(), rng);
        tiers_.push_back(std::move(kept));
    }
}

std::optional<TierList::Position> TierList::first() const {
    if (tiers_.empty()) return std::nullopt;
    return Position{0, 0};
}

std::optional<TierList::Position> TierList::next(Position position) const {
    if (position.tier >= tiers_.size()) return std::nullopt;
    if (position.index + 1 < tiers_[position.tier].size()) {
        return Position{position.tier, position.index + 1};
    }
    if (position.tier + 1 < tiers_.size()) return Position{position.tier + 1, 0};
    return std::nullopt;
}

const std::string& TierList::url(Position position) const {
    return tiers_.at(position.tier).at(position.index);
}

TierList::Position TierList::promote(Position position) {
    auto& tier = tiers_.at(position.tier);
    if (position.index >= tier.size()) throw std::out_of_range("TierList::promote");
    std::rotate(tier.begin(), tier.begin() + static_cast<std::ptrdiff_t>(position.index),
                tier.begin() + static_cast<std::ptrdiff_t>(position.index) + 1);
    return Position{position.tier, 0};
}

}  // namespace pw::tracker
