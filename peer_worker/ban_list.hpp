#pragma once
// The peers this worker must not talk to, in any torrent, as the orchestrator's BanPeer
// messages name them: a peer by its address and port (the one we dial, or the one it came
// from) and by its address and peer id (the same peer coming back from another port), or
// a whole address. Several peers behind one address stay independent until the address
// itself is banned. Bounded: past `max_entries` the oldest bans go first.
#include <cstddef>
#include <cstdint>
#include <deque>
#include <set>
#include <string>
#include <utility>

#include <asio/ip/address.hpp>

namespace pw::peer_worker {

class BanList {
public:
    explicit BanList(std::size_t max_entries = 4096) : max_entries_(max_entries) {}

    // `port` 0 and an empty `peer_id`: the whole address.
    void add(const asio::ip::address& address, std::uint16_t port, const std::string& peer_id);
    // Not to be dialled, nor accepted before its handshake: the address, or this address and
    // port, is banned.
    bool refuses(const asio::ip::address& address, std::uint16_t port) const;
    // Not to be kept once its handshake is in: the above, or this address with this peer id.
    bool refuses(const asio::ip::address& address, std::uint16_t port, const std::string& peer_id) const;
    // Whether a connection to `address`:`port` that gave `peer_id` is one the ban names.
    static bool names(const asio::ip::address& banned, std::uint16_t port, const std::string& peer_id,
                      const asio::ip::address& address, std::uint16_t its_port,
                      const std::string& its_peer_id);
    std::size_t size() const { return order_.size(); }

private:
    struct Entry {
        asio::ip::address address;
        std::uint16_t port = 0;
        std::string peer_id;
    };
    void forget(const Entry& entry);

    std::size_t max_entries_;
    std::set<asio::ip::address> addresses_;
    std::set<std::pair<asio::ip::address, std::uint16_t>> endpoints_;
    std::set<std::pair<asio::ip::address, std::string>> peer_ids_;
    std::deque<Entry> order_;
};

}  // namespace pw::peer_worker
