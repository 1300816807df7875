#pragma once
// One TCP connection to a peer on the worker's io_context: connect, exchange handshakes, then
// read straight into the wire parser's buffer and feed the session; write whatever the
// session queued. Deadlines (connect, handshake) are checked by the worker's timer.
#include <array>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>

#include "core/wire.hpp"
#include "peer_worker/peer_session.hpp"

namespace pw::peer_worker {

class PeerConnection : public std::enable_shared_from_this<PeerConnection> {
public:
    struct Callbacks {
        std::function<void(PeerConnection&)> on_handshake;  // the peer is ours to use
        std::function<void(PeerConnection&)> on_activity;  // messages were handled
        std::function<void(PeerConnection&, const std::string& reason)> on_closed;
    };

    static constexpr Clock::duration kConnectTimeout = std::chrono::seconds(5);
    static constexpr Clock::duration kHandshakeTimeout = std::chrono::seconds(10);

    PeerConnection(asio::io_context& io, std::string key, asio::ip::tcp::endpoint endpoint,
                   PeerSession session, wire::ParserLimits parser_limits,
                   const Callbacks& callbacks);

    void start(Clock::time_point now);
    // Writes what the session queued, if no write is under way.
    void flush();
    // Closes the connection (once) and reports `reason` through on_closed.
    void fail(const std::string& reason);
    // Fails the connection when it is still connecting or handshaking past its deadline.
    void check_deadline(Clock::time_point now);

    const std::string& key() const { return key_; }
    asio::ip::address address() const { return endpoint_.address(); }
    PeerSession& session() { return session_; }
    bool closed() const { return closed_; }

private:
    void on_connected(const asio::error_code& error);
    void on_handshake_read(const asio::error_code& error);
    void read_more();
    void on_read(const asio::error_code& error, std::size_t bytes);
    void on_written(const asio::error_code& error);

    std::string key_;
    asio::ip::tcp::endpoint endpoint_;
    asio::ip::tcp::socket socket_;
    PeerSession session_;
    wire::StreamParser parser_;
    const Callbacks& callbacks_;
    std::optional<Clock::time_point> deadline_;
    const char* phase_ = "connect";
    std::array<std::uint8_t, wire::kHandshakeSize> handshake_{};
    std::vector<std::uint8_t> writing_;
    bool write_pending_ = false;
    bool closed_ = false;
};

}  // namespace pw::peer_worker
