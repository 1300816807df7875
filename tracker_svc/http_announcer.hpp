#pragma once
// HTTP(S) announces through libcurl's multi interface, so the stage's one loop polls curl's
// sockets next to the ZeroMQ socket and heartbeats keep flowing during a slow tracker.
// One transfer at a time: a round tries trackers one after another.
#include <chrono>
#include <optional>
#include <string>
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
    HttpAnnouncer();
    ~HttpAnnouncer();
    HttpAnnouncer(const HttpAnnouncer&) = delete;
    HttpAnnouncer& operator=(const HttpAnnouncer&) = delete;

    // Starts a GET of `url` (the whole announce URL) bounded by `timeout`; cancels any
    // transfer still running.
    void start(const std::string& url, std::chrono::milliseconds timeout);
    bool active() const { return easy_ != nullptr; }
    void cancel();

    // Appends curl's sockets to the loop's poll set.
    void add_poll_items(std::vector<zmq::pollitem_t>& items) const;
    // How long the loop may sleep before curl wants to be driven again.
    std::chrono::milliseconds poll_timeout() const;
    // Lets curl do whatever its sockets allow. Returns the reply, or an Error (transport
    // failure, timeout, oversized body, bad redirect), once the transfer is over.
    std::optional<Result<HttpReply>> drive();

private:
    void* multi_ = nullptr;  // CURLM*, kept out of the header
    void* easy_ = nullptr;   // CURL*, the transfer in flight
    std::string body_;
    bool body_too_large_ = false;
    char error_buffer_[256] = {};

    static std::size_t on_body(char* data, std::size_t size, std::size_t count, void* self);
};

}  // namespace pw::tracker
