#pragma once
// The DHT's routing table (BEP 5): k-buckets of K nodes, the bucket that holds our own id
// split when full, so the table knows many nodes near us and a few far away. Pure state, time
// passed in; the node (dht_node.hpp) decides whom to ping.
//
// A node is good while it answered us within the last 15 minutes, questionable after that,
// bad once it failed to answer max_failures queries in a row. A node that only queried us takes
// a free slot until it answers a ping (or fails). A full bucket takes a newcomer that answered
// in place of a bad node or of one that never answered; otherwise the newcomer waits in the bucket's small replacement
// list and takes the place of the first node that goes bad.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/krpc.hpp"
#include "core/result.hpp"

namespace pw::dht {

using Clock = std::chrono::steady_clock;
using Time = Clock::time_point;
using krpc::NodeId;
using krpc::NodeInfo;
using krpc::PeerAddress;

inline constexpr std::size_t kBucketSize = 8;  // K
inline constexpr std::chrono::minutes kGoodFor{15};

struct Node {
    NodeInfo info;
    Time last_seen{};          // its last answer (or query, once it had answered)
    bool answered = false;     // it answered a query of ours at least once
    int failures = 0;          // queries in a row it did not answer
};

class RoutingTable {
public:
    struct Config {
        std::size_t bucket_size = kBucketSize;
        std::size_t replacements = kBucketSize;  // per bucket
        int max_failures = 3;
    };

    explicit RoutingTable(const NodeId& own);
    RoutingTable(const NodeId& own, Config config);

    const NodeId& own_id() const { return own_; }

    enum class Added { added, updated, replacement, refused };
    // `node` answered a query of ours at `now` (answered = true) or queried us. A node whose
    // id is ours, or whose id is known at another address (or address under another id), is
    // refused: an address does not get to take over a known node.
    Added heard_from(const NodeInfo& node, Time now, bool answered);
    // A query to this address went unanswered.
    void failed(const PeerAddress& address);

    // Would a node of this id find a place (a free slot, a bad node to replace, or a split)?
    bool has_room_for(const NodeId& id) const;
    bool contains(const NodeId& id) const;
    const Node* find(const PeerAddress& address) const;

    // The `count` nodes closest to `target`, closest first, bad ones left out; with
    // `answered_only` (what we tell others of) also those that never answered us.
    std::vector<NodeInfo> closest(const NodeId& target, std::size_t count, bool answered_only = true) const;
    // Nodes not heard from in kGoodFor (and not bad): to be pinged.
    std::vector<NodeInfo> questionable(Time now, std::size_t max) const;

    std::size_t size() const;
    std::size_t bucket_count() const { return buckets_.size(); }
    std::size_t good_count(Time now) const;
    std::vector<NodeInfo> all() const;

    // Persistence: our id and the nodes, as a bencoded dictionary {"id", "nodes" (compact
    // IPv4 nodes)}. load() refuses anything else with an Error; a caller then starts afresh.
    std::string save() const;
    struct Loaded {
        NodeId id{};
        std::vector<NodeInfo> nodes;
    };
    static Result<Loaded> load(std::string_view bytes);
    static constexpr std::size_t kMaxSavedNodes = 2000;

private:
    struct Bucket {
        std::vector<Node> nodes;
        std::vector<Node> replacements;
    };

    std::size_t bucket_index(const NodeId& id) const;
    bool bad(const Node& node) const { return node.failures >= config_.max_failures; }
    void split_last();

    NodeId own_;
    Config config_;
    std::vector<Bucket> buckets_;
};

}  // namespace pw::dht
