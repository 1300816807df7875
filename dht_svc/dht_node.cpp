#include "dht_svc/dht_node.hpp"

#include <algorithm>
#include <utility>

namespace pw::dht {

namespace {

// Only what a socket can send to: a literal IPv4 address and a port.
bool usable_ipv4(const PeerAddress& address) {
    if (address.port == 0) return false;
    const auto compact = krpc::encode_compact_peer(address);
    return compact && compact->size() == krpc::kCompactPeerV4;
}

}  // namespace

std::string address_key(const PeerAddress& address) {
    if (address.ip.find(':') != std::string::npos) return "[" + address.ip + "]:" + std::to_string(address.port);
    return address.ip + ":" + std::to_string(address.port);
}

DhtNode::DhtNode(const NodeId& own, NodeConfig config, std::uint64_t seed, Time now)
    : config_(config),
      rng_(seed),
      table_(own, config.table),
      tokens_(seed ^ 0x9E3779B97F4A7C15ULL, now, config.token_rotation),
      store_(config.store),
      limiter_(config.rate) {}

void DhtNode::note(std::string text) {
    if (log_.size() < 20) {
        log_.push_back(std::move(text));
    } else {
        ++log_dropped_;
    }
}

std::vector<std::string> DhtNode::take_log() {
    std::vector<std::string> out = std::move(log_);
    log_.clear();
    if (log_dropped_ > 0) out.push_back("... and " + std::to_string(log_dropped_) + " more not logged");
    log_dropped_ = 0;
    return out;
}

void DhtNode::send(const PeerAddress& to, const krpc::Message& message) {
    if (outgoing_.size() >= config_.max_outgoing) {
        ++stats_.dropped_outgoing;
        return;
    }
    outgoing_.push_back(Datagram{to, krpc::encode(message)});
}

void DhtNode::reply_error(const krpc::Message& message, const PeerAddress& from, std::int64_t code,
                          std::string text) {
    krpc::Message reply;
    reply.transaction = message.transaction;
    reply.body = krpc::ErrorReply{code, std::move(text)};
    send(from, reply);
}

void DhtNode::send_query(const PeerAddress& to, krpc::Query query, QueryKind kind, std::uint64_t lookup, Time now) {
    if (pending_.size() >= config_.max_pending || !usable_ipv4(to)) return;
    std::string transaction;
    for (int tries = 0; tries < 8; ++tries) {
        const std::uint16_t n = next_transaction_++;
        transaction = {static_cast<char>(n >> 8), static_cast<char>(n & 0xFF)};
        if (!pending_.contains(transaction)) break;
    }
    if (pending_.contains(transaction)) return;
    query.id = table_.own_id();
    krpc::Message message;
    message.transaction = transaction;
    message.body = std::move(query);
    pending_[transaction] = Pending{to, now, kind, lookup};
    send(to, message);
}

void DhtNode::on_datagram(std::string_view bytes, const PeerAddress& from, Time now) {
    auto decoded = krpc::decode(bytes);
    if (!decoded) {
        ++stats_.malformed;
        note("dropped a malformed datagram from " + address_key(from) + ": " + decoded.error().describe());
        return;
    }
    const krpc::Message& message = decoded.value();
    if (const auto* query = std::get_if<krpc::Query>(&message.body)) {
        if (!limiter_.allow(from.ip, now)) {
            ++stats_.rate_limited;
            return;
        }
        answer_query(message, *query, from, now);
    } else {
        on_response(message, from, now);
    }
}

void DhtNode::answer_query(const krpc::Message& message, const krpc::Query& query, const PeerAddress& from,
                           Time now) {
    krpc::Response response;
    response.id = table_.own_id();
    const std::size_t k = config_.table.bucket_size;
    if (std::holds_alternative<krpc::Ping>(query.arguments)) {
        // the id is the whole answer
    } else if (const auto* find = std::get_if<krpc::FindNode>(&query.arguments)) {
        response.nodes = table_.closest(find->target, k);
    } else if (const auto* get = std::get_if<krpc::GetPeers>(&query.arguments)) {
        response.token = tokens_.make(from.ip, now);
        auto values = store_.get(get->info_hash, config_.max_values, now);
        if (values.empty()) {
            response.nodes = table_.closest(get->info_hash, k);
        } else {
            response.values = std::move(values);
        }
    } else if (const auto* announce = std::get_if<krpc::AnnouncePeer>(&query.arguments)) {
        if (!tokens_.valid(from.ip, announce->token, now)) {
            ++stats_.bad_tokens;
            note("refused an announce_peer from " + address_key(from) + ": bad token");
            reply_error(message, from, krpc::kProtocolError, "bad token");
            return;
        }
        const std::uint16_t port = announce->implied_port ? from.port : announce->port;
        if (port == 0) {
            reply_error(message, from, krpc::kProtocolError, "no port");
            return;
        }
        if (!store_.add(announce->info_hash, PeerAddress{from.ip, port}, now)) {
            reply_error(message, from, krpc::kServerError, "peer store full");
            return;
        }
        ++stats_.announces_stored;
    } else {
        reply_error(message, from, krpc::kMethodUnknown, "method unknown");
        ++stats_.queries_answered;
        return;
    }
    krpc::Message reply;
    reply.transaction = message.transaction;
    reply.body = std::move(response);
    send(from, reply);
    ++stats_.queries_answered;
    // BEP 43: a read-only node asks but is never asked, so it stays out of the table.
    if (!query.read_only && usable_ipv4(from)) table_.heard_from(NodeInfo{query.id, from}, now, false);
}

void DhtNode::on_response(const krpc::Message& message, const PeerAddress& from, Time now) {
    const auto found = pending_.find(message.transaction);
    // An answer counts only from the address its query went to: anyone can guess a
    // transaction id, not also spoof that address's replies.
    if (found == pending_.end() || !(found->second.to == from)) {
        ++stats_.unexpected_responses;
        return;
    }
    const Pending pending = found->second;
    pending_.erase(found);
    const auto* response = std::get_if<krpc::Response>(&message.body);
    if (response != nullptr) table_.heard_from(NodeInfo{response->id, from}, now, true);
    if (pending.lookup == 0) return;
    const auto lookup_it = lookups_.find(pending.lookup);
    if (lookup_it == lookups_.end()) return;
    Lookup& lookup = lookup_it->second;
    auto candidate = std::find_if(lookup.candidates.begin(), lookup.candidates.end(),
                                  [&](const Candidate& c) { return c.node.address == from; });
    if (candidate != lookup.candidates.end()) {
        if (response == nullptr) {
            candidate->state = Candidate::State::failed;
        } else {
            candidate->state = Candidate::State::answered;
            candidate->token = response->token;
            if (!candidate->id_known || candidate->node.id != response->id) {
                // A router answered under its id: it takes its place by distance.
                Candidate moved = *candidate;
                moved.node.id = response->id;
                moved.id_known = true;
                lookup.candidates.erase(candidate);
                const auto at = std::find_if(lookup.candidates.begin(), lookup.candidates.end(), [&](const Candidate& c) {
                    return !c.id_known || krpc::closer(lookup.target, moved.node.id, c.node.id);
                });
                lookup.candidates.insert(at, std::move(moved));
            }
        }
    }
    if (response != nullptr) {
        for (const NodeInfo& node : response->nodes) add_candidate(lookup, node, true);
        if (lookup.get_peers && response->values) report_peers(lookup, *response->values);
    }
    step(pending.lookup, now);
}

void DhtNode::add_candidate(Lookup& lookup, const NodeInfo& node, bool id_known) {
    if (!usable_ipv4(node.address) || (id_known && node.id == table_.own_id())) return;
    const std::string key = address_key(node.address);
    if (lookup.queried.contains(key)) return;
    for (const Candidate& c : lookup.candidates) {
        if (c.node.address == node.address || (id_known && c.id_known && c.node.id == node.id)) return;
    }
    const auto at = std::find_if(lookup.candidates.begin(), lookup.candidates.end(), [&](const Candidate& c) {
        return !id_known ? false : (!c.id_known || krpc::closer(lookup.target, node.id, c.node.id));
    });
    lookup.candidates.insert(at, Candidate{node, id_known, Candidate::State::fresh, std::nullopt});
    while (lookup.candidates.size() > config_.max_lookup_candidates) {
        // The farthest not in flight goes (one in flight is matched when it answers).
        auto victim = std::find_if(lookup.candidates.rbegin(), lookup.candidates.rend(),
                                   [](const Candidate& c) { return c.state != Candidate::State::in_flight; });
        if (victim == lookup.candidates.rend()) break;
        lookup.candidates.erase(std::next(victim).base());
    }
}

std::uint64_t DhtNode::start_lookup(const NodeId& target, bool get_peers, std::optional<TorrentId> torrent, Time now) {
    const std::uint64_t id = next_lookup_++;
    Lookup& lookup = lookups_[id];
    lookup.target = target;
    lookup.get_peers = get_peers;
    lookup.torrent = torrent;
    for (const NodeInfo& node : table_.closest(target, config_.max_lookup_candidates / 2, false)) {
        add_candidate(lookup, node, true);
    }
    // A table this small knows little: the routers may know more.
    if (table_.size() < config_.table.bucket_size) {
        for (const PeerAddress& router : bootstrap_) add_candidate(lookup, NodeInfo{NodeId{}, router}, false);
    }
    step(id, now);
    return id;
}

void DhtNode::step(std::uint64_t id, Time now) {
    const auto found = lookups_.find(id);
    if (found == lookups_.end()) return;
    Lookup& lookup = found->second;
    std::size_t in_flight = 0;
    for (const Candidate& c : lookup.candidates) in_flight += c.state == Candidate::State::in_flight ? 1 : 0;
    std::size_t considered = 0;
    bool open = false;  // a candidate among the K closest still to ask or being asked
    for (Candidate& c : lookup.candidates) {
        if (c.state == Candidate::State::failed) continue;
        if (considered++ >= config_.table.bucket_size) break;
        if (c.state == Candidate::State::in_flight) open = true;
        if (c.state != Candidate::State::fresh) continue;
        open = true;
        if (in_flight >= config_.alpha) continue;
        const std::size_t before = pending_.size();
        krpc::Query query;
        if (lookup.get_peers) {
            Sha1Digest hash{};
            std::copy(lookup.target.begin(), lookup.target.end(), hash.begin());
            query.arguments = krpc::GetPeers{hash};
            send_query(c.node.address, std::move(query), QueryKind::get_peers, id, now);
        } else {
            query.arguments = krpc::FindNode{lookup.target};
            send_query(c.node.address, std::move(query), QueryKind::find_node, id, now);
        }
        if (pending_.size() == before) break;  // no room for another query now: next tick
        c.state = Candidate::State::in_flight;
        lookup.queried.insert(address_key(c.node.address));
        ++in_flight;
    }
    if (!open) finish(id, now);
}

void DhtNode::finish(std::uint64_t id, Time now) {
    const auto found = lookups_.find(id);
    if (found == lookups_.end()) return;
    Lookup lookup = std::move(found->second);
    lookups_.erase(found);
    ++stats_.lookups_done;
    if (!lookup.torrent) return;
    const auto torrent = torrents_.find(*lookup.torrent);
    if (torrent == torrents_.end()) return;
    torrent->second.lookup = 0;
    const bool anyone = std::any_of(lookup.candidates.begin(), lookup.candidates.end(),
                                    [](const Candidate& c) { return c.state == Candidate::State::answered; });
    // Nobody answered (a network still starting): try again soon, not in a quarter hour.
    torrent->second.next_lookup = now + (anyone ? std::chrono::duration_cast<std::chrono::seconds>(config_.relookup_every)
                                                : config_.bootstrap_backoff);
    if (!lookup.get_peers || torrent->second.port == 0) return;
    std::size_t announced = 0;
    for (const Candidate& c : lookup.candidates) {
        if (announced >= config_.table.bucket_size) break;
        if (c.state != Candidate::State::answered || !c.token) continue;
        krpc::Query query;
        query.arguments = krpc::AnnouncePeer{torrent->second.info_hash, torrent->second.port, false, *c.token};
        send_query(c.node.address, std::move(query), QueryKind::announce, 0, now);
        ++announced;
        ++stats_.announces_sent;
    }
}

void DhtNode::report_peers(Lookup& lookup, const std::vector<PeerAddress>& peers) {
    if (!lookup.torrent) return;
    const auto torrent = torrents_.find(*lookup.torrent);
    if (torrent == torrents_.end()) return;
    for (const PeerAddress& peer : peers) {
        if (lookup.peers_reported >= config_.max_peers_per_lookup) return;
        if (peer.port == 0 || !krpc::encode_compact_peer(peer)) continue;
        auto& reported = torrent->second.reported;
        const std::string key = address_key(peer);
        if (reported.contains(key)) continue;
        if (reported.size() >= config_.max_known_peers) reported.clear();  // old ones may come again
        reported.insert(key);
        found_[*lookup.torrent].push_back(peer);
        ++lookup.peers_reported;
    }
}

void DhtNode::add_torrent(TorrentId id, const Sha1Digest& info_hash, Time now) {
    const auto [it, added] = torrents_.try_emplace(id);
    if (!added && it->second.info_hash == info_hash) return;  // a repeat, after another Welcome
    if (!added && it->second.lookup != 0) lookups_.erase(it->second.lookup);
    it->second = Torrent{};
    it->second.info_hash = info_hash;
    it->second.next_lookup = now;
}

void DhtNode::remove_torrent(TorrentId id) {
    const auto found = torrents_.find(id);
    if (found == torrents_.end()) return;
    if (found->second.lookup != 0) lookups_.erase(found->second.lookup);
    torrents_.erase(found);
    found_.erase(id);
}

void DhtNode::set_port(TorrentId id, std::uint16_t port, bool announce_now, Time now) {
    const auto found = torrents_.find(id);
    if (found == torrents_.end()) return;
    Torrent& torrent = found->second;
    // A port known at last is worth announcing soon, not in a quarter of an hour.
    const bool first_port = torrent.port == 0 && port != 0;
    torrent.port = port;
    if ((announce_now || first_port) && torrent.lookup == 0) {
        Time earliest = now;
        if (torrent.last_lookup) earliest = std::max(now, *torrent.last_lookup + config_.announce_now_floor);
        torrent.next_lookup = std::min(torrent.next_lookup, earliest);
    }
}

void DhtNode::add_candidates(const std::vector<PeerAddress>& addresses, Time now) {
    std::size_t asked = 0;
    for (const PeerAddress& address : addresses) {
        if (asked >= 64) break;
        if (!usable_ipv4(address) || table_.find(address) != nullptr) continue;
        krpc::Query query;
        query.arguments = krpc::Ping{};
        send_query(address, std::move(query), QueryKind::ping, 0, now);
        ++asked;
    }
}

void DhtNode::restore(const std::vector<NodeInfo>& nodes) {
    for (const NodeInfo& node : nodes) {
        if (usable_ipv4(node.address)) table_.heard_from(node, Time{}, false);
    }
}

void DhtNode::maybe_bootstrap(Time now) {
    if (last_bootstrap_ && (table_.size() > 0 || now - *last_bootstrap_ < config_.bootstrap_backoff)) return;
    for (const auto& [id, lookup] : lookups_) {
        if (lookup.bootstrap) return;
    }
    if (bootstrap_.empty() && table_.size() == 0) return;
    last_bootstrap_ = now;
    const std::uint64_t id = next_lookup_;
    // Looking up our own id fills the buckets near us, and tells those nodes of us.
    start_lookup(table_.own_id(), false, std::nullopt, now);
    if (const auto it = lookups_.find(id); it != lookups_.end()) {
        it->second.bootstrap = true;
        // Every router, not only when the table is small: this is the bootstrap.
        for (const PeerAddress& router : bootstrap_) add_candidate(it->second, NodeInfo{NodeId{}, router}, false);
        step(id, now);
    }
}

void DhtNode::tick(Time now) {
    std::set<std::uint64_t> to_step;
    for (auto it = pending_.begin(); it != pending_.end();) {
        if (now - it->second.sent < config_.query_timeout) {
            ++it;
            continue;
        }
        ++stats_.timeouts;
        table_.failed(it->second.to);
        if (const auto lookup = lookups_.find(it->second.lookup); lookup != lookups_.end()) {
            for (Candidate& c : lookup->second.candidates) {
                if (c.node.address == it->second.to && c.state == Candidate::State::in_flight) {
                    c.state = Candidate::State::failed;
                }
            }
            to_step.insert(it->second.lookup);
        }
        it = pending_.erase(it);
    }
    if (!last_expire_ || now - *last_expire_ >= std::chrono::seconds(60)) {
        store_.expire(now);
        last_expire_ = now;
    }
    if (!last_ping_round_ || now - *last_ping_round_ >= std::chrono::seconds(5)) {
        last_ping_round_ = now;
        std::size_t pinged = 0;
        for (const NodeInfo& node : table_.questionable(now, config_.pings_per_tick * 4)) {
            if (pinged >= config_.pings_per_tick) break;
            if (std::any_of(pending_.begin(), pending_.end(), [&](const auto& p) { return p.second.to == node.address; })) {
                continue;
            }
            krpc::Query query;
            query.arguments = krpc::Ping{};
            send_query(node.address, std::move(query), QueryKind::ping, 0, now);
            ++pinged;
        }
    }
    maybe_bootstrap(now);
    for (auto& [id, torrent] : torrents_) {
        if (torrent.lookup != 0 || now < torrent.next_lookup) continue;
        if (lookups_.size() >= config_.max_lookups) break;
        if (table_.size() == 0 && bootstrap_.empty()) {
            torrent.next_lookup = now + config_.bootstrap_backoff;  // nobody to ask yet
            continue;
        }
        NodeId target{};
        std::copy(torrent.info_hash.begin(), torrent.info_hash.end(), target.begin());
        torrent.last_lookup = now;
        torrent.next_lookup = now + config_.relookup_every;
        const std::uint64_t lookup = next_lookup_;
        torrent.lookup = lookup;
        start_lookup(target, true, id, now);  // may finish at once, resetting torrent.lookup
    }
    for (const auto& [id, lookup] : lookups_) to_step.insert(id);
    for (const std::uint64_t id : to_step) step(id, now);
}

Time DhtNode::next_wakeup(Time now) const {
    Time wake = now + std::chrono::seconds(5);
    for (const auto& [transaction, pending] : pending_) wake = std::min(wake, pending.sent + config_.query_timeout);
    // Lookups due but over max_lookups wait for one to end, which a datagram or a timeout
    // brings: counting them here had a node with 200 torrents and dead routers spin.
    if (lookups_.size() < config_.max_lookups) {
        for (const auto& [id, torrent] : torrents_) {
            if (torrent.lookup == 0) wake = std::min(wake, torrent.next_lookup);
        }
    }
    return std::max(wake, now);
}

std::vector<Datagram> DhtNode::take_outgoing() {
    std::vector<Datagram> out = std::move(outgoing_);
    outgoing_.clear();
    return out;
}

std::vector<FoundPeers> DhtNode::take_found() {
    std::vector<FoundPeers> out;
    for (auto& [id, peers] : found_) {
        if (!peers.empty()) out.push_back(FoundPeers{id, std::move(peers)});
    }
    found_.clear();
    return out;
}

}  // namespace pw::dht
