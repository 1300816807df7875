#include "peer_worker/ban_list.hpp"

namespace pw::peer_worker {

void BanList::forget(const Entry& entry) {
    if (entry.port == 0 && entry.peer_id.empty()) {
        addresses_.erase(entry.address);
        return;
    }
    if (entry.port != 0) endpoints_.erase({entry.address, entry.port});
    if (!entry.peer_id.empty()) peer_ids_.erase({entry.address, entry.peer_id});
}

void BanList::add(const asio::ip::address& address, std::uint16_t port, const std::string& peer_id) {
    if (max_entries_ == 0) return;
    while (order_.size() >= max_entries_) {
        forget(order_.front());
        order_.pop_front();
    }
    Entry entry{address, port, peer_id};
    if (port == 0 && peer_id.empty()) {
        addresses_.insert(address);
    } else {
        if (port != 0) endpoints_.insert({address, port});
        if (!peer_id.empty()) peer_ids_.insert({address, peer_id});
    }
    order_.push_back(std::move(entry));
}

bool BanList::refuses(const asio::ip::address& address, std::uint16_t port) const {
    return addresses_.count(address) != 0 || endpoints_.count({address, port}) != 0;
}

bool BanList::refuses(const asio::ip::address& address, std::uint16_t port, const std::string& peer_id) const {
    return refuses(address, port) || (!peer_id.empty() && peer_ids_.count({address, peer_id}) != 0);
}

bool BanList::names(const asio::ip::address& banned, std::uint16_t port, const std::string& peer_id,
                    const asio::ip::address& address, std::uint16_t its_port, const std::string& its_peer_id) {
    if (banned != address) return false;
    if (port == 0 && peer_id.empty()) return true;
    return (port != 0 && port == its_port) || (!peer_id.empty() && peer_id == its_peer_id);
}

}  // namespace pw::peer_worker
