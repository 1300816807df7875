#pragma once
// HTTP(S) announces through libcurl's multi interface, so the stage's one loop polls curl's
// sockets next to the ZeroMQ socket and heartbeats keep flowing during a slow tracker.
// Many transfers at once, one per torrent announcing (the stage caps how many), each named
// by the caller's id; one multi handle, so announces to the same tracker share connections.
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <zmq.hpp>

#include "core/result.hpp"

namespace pw::tracker {

struct HttpReply {
    long status = 0;
    std::string body;
};

class HttpAnnouncer {
public:
    using TransferId = std::uint64_t;

    // `max_idle_connections`: connections curl keeps open for reuse once their transfer ended.
    explicit HttpAnnouncer(long max_idle_connections = 8);
    ~HttpAnnouncer();
    HttpAnnouncer(const HttpAnnouncer&) = delete;
    HttpAnnouncer& operator=(const HttpAnnouncer&) = delete;

    // Starts a GET of `url` (the whole announce URL) bounded by `timeout`, named `id` (which
    // must not be in use).
    void start(TransferId id, const std::string& url, std::chrono::milliseconds timeout);
    // Abandons transfer `id` (no result will come for it); unknown ids are ignored.
    void cancel(TransferId id);
    std::size_t active() const { return transfers_.size(); }

    // Appends curl's sockets to the loop's poll set.
    void add_poll_items(std::vector<zmq::pollitem_t>& items) const;
    // How long the loop may sleep before curl wants to be driven again.
    std::chrono::milliseconds poll_timeout() const;
    // Lets curl do whatever its sockets allow. Returns the transfers that ended: the reply,
    // or an Error (transport failure, timeout, oversized body, bad redirect).
    std::vector<std::pair<TransferId, Result<HttpReply>>> drive();

private:
    struct Transfer;  // one easy handle, its body and error buffer

    void* multi_ = nullptr;  // CURLM*, kept out of the header
    std::map<TransferId, std::unique_ptr<Transfer>> transfers_;
};

}  // namespace pw::tracker
