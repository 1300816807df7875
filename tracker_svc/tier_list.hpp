#pragma once
// The announce-list of one torrent, kept in the order BEP 12 asks for: each tier shuffled
// once at start, tiers tried in order, URLs inside a tier in order, and a URL that answered
// moved to the front of its tier so it is tried first next time.
#include <cstddef>
#include <optional>
#include <random>
#include <string>
#include <vector>

namespace pw::tracker {

class TierList {
public:
    struct Position {
        std::size_t tier = 0;
        std::size_t index = 0;
        friend bool operator==(const Position&, const Position&) = default;
    };

    // Empty URLs, empty tiers and URLs repeated anywhere in the list are dropped: a torrent
    // listing the same tracker twice would otherwise make us announce to it twice a round.
    // Beyond kMaxTrackers URLs the rest is ignored: a round must stay short.
    static constexpr std::size_t kMaxTrackers = 200;
    TierList(std::vector<std::vector<std::string>> tiers, std::mt19937& rng);

    bool empty() const { return tiers_.empty(); }
    std::optional<Position> first() const;
    // The URL after `position` in trying order, or nullopt when the round is over.
    std::optional<Position> next(Position position) const;
    const std::string& url(Position position) const;
    // Moves the URL at `position` to the front of its tier; returns its new position.
    Position promote(Position position);
    const std::vector<std::vector<std::string>>& tiers() const { return tiers_; }

private:
    std::vector<std::vector<std::string>> tiers_;
};

}  // namespace pw::tracker
