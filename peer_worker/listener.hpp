#pragma once
// Incoming peers: the worker's listening socket and the handshakes of the connections it
// accepts. Every worker of a host binds the same port (SO_REUSEADDR and SO_REUSEPORT, set
// before bind), and the kernel spreads new connections among them. Nothing is read from an
// accepted connection but its 68-byte handshake, within a deadline; then the worker decides
// (which torrent, whether it wants the peer) and either takes the socket or closes it.
#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/steady_timer.hpp>

#include "core/result.hpp"
#include "core/wire.hpp"
#include "peer_worker/pipeline.hpp"

namespace pw::peer_worker {

class Listener {
public:
    // A connection whose handshake is in: the worker takes the socket (and answers) or lets
    // it close.
    using OnHandshake = std::function<void(asio::ip::tcp::socket& socket,
                                           const asio::ip::tcp::endpoint& remote,
                                           const wire::Handshake& theirs)>;

    static constexpr Clock::duration kHandshakeTimeout = std::chrono::seconds(10);
    // Connections still owing their handshake; more are closed as they come.
    static constexpr std::size_t kMaxPending = 64;

    Listener(asio::io_context& io, OnHandshake on_handshake);
    ~Listener();
    Listener(const Listener&) = delete;
    Listener& operator=(const Listener&) = delete;

    // Binds 0.0.0.0:port (0: any free port) and starts accepting; the port listened on, or
    // why not.
    Result<std::uint16_t> open(std::uint16_t port);
    void close();
    bool is_open() const { return acceptor_.is_open(); }
    std::uint16_t port() const { return port_; }
    // Connections past their handshake deadline are closed.
    void check_deadlines(Clock::time_point now);
    std::size_t pending() const { return pending_.size(); }

private:
    struct Pending {
        explicit Pending(asio::ip::tcp::socket s) : socket(std::move(s)) {}
        asio::ip::tcp::socket socket;
        asio::ip::tcp::endpoint remote;
        std::array<std::uint8_t, wire::kHandshakeSize> handshake{};
        Clock::time_point deadline{};
    };
    void accept_next();
    void on_accept(const asio::error_code& error, asio::ip::tcp::socket socket);
    void on_handshake_read(const std::shared_ptr<Pending>& pending, const asio::error_code& error);
    void forget(const std::shared_ptr<Pending>& pending);

    OnHandshake on_handshake_;
    asio::ip::tcp::acceptor acceptor_;
    asio::steady_timer retry_;
    std::uint16_t port_ = 0;
    std::vector<std::shared_ptr<Pending>> pending_;
};

}  // namespace pw::peer_worker
