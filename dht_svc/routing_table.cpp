#include "dht_svc/routing_table.hpp"

#include <algorithm>

#include "core/bencode.hpp"

namespace pw::dht {

RoutingTable::RoutingTable(const NodeId& own) : RoutingTable(own, Config{}) {}

RoutingTable::RoutingTable(const NodeId& own, Config config) : own_(own), config_(config) {
    buckets_.emplace_back();
}

std::size_t RoutingTable::bucket_index(const NodeId& id) const {
    const auto shared = static_cast<std::size_t>(krpc::shared_prefix_bits(own_, id));
    return std::min(shared, buckets_.size() - 1);
}

// The last bucket holds every node sharing at least (count - 1) bits with us; splitting it
// keeps in it those that share exactly that many and moves the closer ones to a new last.
void RoutingTable::split_last() {
    const std::size_t depth = buckets_.size() - 1;
    Bucket next;
    Bucket& last = buckets_.back();
    auto move_closer = [&](std::vector<Node>& from, std::vector<Node>& to) {
        for (auto it = from.begin(); it != from.end();) {
            if (static_cast<std::size_t>(krpc::shared_prefix_bits(own_, it->info.id)) > depth) {
                to.push_back(*it);
                it = from.erase(it);
            } else {
                ++it;
            }
        }
    };
    move_closer(last.nodes, next.nodes);
    move_closer(last.replacements, next.replacements);
    buckets_.push_back(std::move(next));
}

bool RoutingTable::has_room_for(const NodeId& id) const {
    if (id == own_) return false;
    const std::size_t index = bucket_index(id);
    const Bucket& bucket = buckets_[index];
    if (bucket.nodes.size() < config_.bucket_size) return true;
    if (std::any_of(bucket.nodes.begin(), bucket.nodes.end(), [&](const Node& n) { return bad(n) || !n.answered; })) {
        return true;
    }
    return index == buckets_.size() - 1 && buckets_.size() < 160;
}

bool RoutingTable::contains(const NodeId& id) const {
    const Bucket& bucket = buckets_[bucket_index(id)];
    return std::any_of(bucket.nodes.begin(), bucket.nodes.end(), [&](const Node& n) { return n.info.id == id; });
}

const Node* RoutingTable::find(const PeerAddress& address) const {
    for (const Bucket& bucket : buckets_) {
        for (const Node& node : bucket.nodes) {
            if (node.info.address == address) return &node;
        }
    }
    return nullptr;
}

RoutingTable::Added RoutingTable::heard_from(const NodeInfo& info, Time now, bool answered) {
    if (info.id == own_) return Added::refused;
    for (Bucket& bucket : buckets_) {
        for (Node& node : bucket.nodes) {
            const bool same_id = node.info.id == info.id;
            const bool same_address = node.info.address == info.address;
            if (same_id && same_address) {
                // A query alone does not make a node good: it must have answered us once.
                if (answered || node.answered) node.last_seen = now;
                node.answered = node.answered || answered;
                if (answered) node.failures = 0;
                return Added::updated;
            }
            if (same_id || same_address) return Added::refused;
        }
    }
    for (;;) {
        const std::size_t index = bucket_index(info.id);
        Bucket& bucket = buckets_[index];
        Node fresh{info, answered ? now : Time{}, answered, 0};
        if (bucket.nodes.size() < config_.bucket_size) {
            bucket.nodes.push_back(fresh);
            return Added::added;
        }
        // Only a node that answered us displaces anyone: a bad node, or one that only queried
        // us (a flood of made-up queriers must not hold the slots of real nodes).
        if (answered) {
            auto worst = std::find_if(bucket.nodes.begin(), bucket.nodes.end(), [&](const Node& n) { return bad(n); });
            if (worst == bucket.nodes.end()) {
                worst = std::find_if(bucket.nodes.begin(), bucket.nodes.end(), [](const Node& n) { return !n.answered; });
            }
            if (worst != bucket.nodes.end()) {
                *worst = fresh;
                return Added::added;
            }
        }
        if (index == buckets_.size() - 1 && buckets_.size() < 160) {
            split_last();
            continue;
        }
        if (!answered) return Added::refused;
        auto& spare = bucket.replacements;
        spare.erase(std::remove_if(spare.begin(), spare.end(),
                                   [&](const Node& n) { return n.info.id == info.id || n.info.address == info.address; }),
                    spare.end());
        if (spare.size() >= config_.replacements) spare.erase(spare.begin());  // the oldest goes
        spare.push_back(fresh);
        return Added::replacement;
    }
}

void RoutingTable::failed(const PeerAddress& address) {
    for (Bucket& bucket : buckets_) {
        for (auto it = bucket.nodes.begin(); it != bucket.nodes.end(); ++it) {
            if (!(it->info.address == address)) continue;
            ++it->failures;
            if (bad(*it) && !bucket.replacements.empty()) {
                *it = bucket.replacements.back();
                bucket.replacements.pop_back();
            } else if (bad(*it) && !it->answered) {
                bucket.nodes.erase(it);  // never answered at all: not worth a slot
            }
            return;
        }
    }
}

std::vector<NodeInfo> RoutingTable::closest(const NodeId& target, std::size_t count, bool answered_only) const {
    std::vector<const Node*> usable;
    for (const Bucket& bucket : buckets_) {
        for (const Node& node : bucket.nodes) {
            if (!bad(node) && (node.answered || !answered_only)) usable.push_back(&node);
        }
    }
    const std::size_t n = std::min(count, usable.size());
    std::partial_sort(usable.begin(), usable.begin() + static_cast<std::ptrdiff_t>(n), usable.end(),
                      [&](const Node* a, const Node* b) { return krpc::closer(target, a->info.id, b->info.id); });
    std::vector<NodeInfo> out;
    out.reserve(n);
    for (std::size_t i = 0; i < n; ++i) out.push_back(usable[i]->info);
    return out;
}

std::vector<NodeInfo> RoutingTable::questionable(Time now, std::size_t max) const {
    std::vector<NodeInfo> out;
    for (const Bucket& bucket : buckets_) {
        for (const Node& node : bucket.nodes) {
            if (out.size() >= max) return out;
            if (!bad(node) && (!node.answered || now - node.last_seen >= kGoodFor)) out.push_back(node.info);
        }
    }
    return out;
}

std::size_t RoutingTable::size() const {
    std::size_t total = 0;
    for (const Bucket& bucket : buckets_) total += bucket.nodes.size();
    return total;
}

std::size_t RoutingTable::good_count(Time now) const {
    std::size_t total = 0;
    for (const Bucket& bucket : buckets_) {
        for (const Node& node : bucket.nodes) {
            if (!bad(node) && node.answered && now - node.last_seen < kGoodFor) ++total;
        }
    }
    return total;
}

std::vector<NodeInfo> RoutingTable::all() const {
    std::vector<NodeInfo> out;
    for (const Bucket& bucket : buckets_) {
        for (const Node& node : bucket.nodes) out.push_back(node.info);
    }
    return out;
}

std::string RoutingTable::save() const {
    std::vector<NodeInfo> v4;
    for (const NodeInfo& node : all()) {
        if (krpc::encode_compact_peer(node.address).value_or("").size() == krpc::kCompactPeerV4) v4.push_back(node);
    }
    auto nodes = krpc::encode_compact_nodes(v4, false);
    bencode::Dict root{{"id", bencode::Value(std::string(own_.begin(), own_.end()))},
                       {"nodes", bencode::Value(nodes ? std::move(nodes).value() : std::string())}};
    return bencode::encode(bencode::Value(std::move(root)));
}

Result<RoutingTable::Loaded> RoutingTable::load(std::string_view bytes) {
    if (bytes.size() > 64 + kMaxSavedNodes * krpc::kCompactNodeV4) return make_error("DHT state file is too large");
    bencode::DecodeLimits limits;
    limits.max_depth = 4;
    auto decoded = bencode::decode(bytes, limits);
    if (!decoded) return make_error("DHT state file is not bencoded: " + decoded.error().describe());
    const bencode::Value& root = decoded->value;
    if (!root.is_dict()) return make_error("DHT state file is not a dictionary");
    const bencode::Value* id = root.find("id");
    if (id == nullptr || !id->is_string() || id->as_string().size() != 20) {
        return make_error("DHT state file has no 20-byte \"id\"");
    }
    Loaded loaded;
    std::copy(id->as_string().begin(), id->as_string().end(), loaded.id.begin());
    if (const bencode::Value* nodes = root.find("nodes")) {
        if (!nodes->is_string()) return make_error("DHT state file \"nodes\" is not a string");
        auto list = krpc::decode_compact_nodes(nodes->as_string(), false, kMaxSavedNodes);
        if (!list) return make_error("DHT state file \"nodes\": " + list.error().describe());
        loaded.nodes = std::move(list).value();
    }
    return loaded;
}

}  // namespace pw::dht
