#pragma once
// Incoming peers: the worker's listening socket and the handshakes of the connections it
// accepts. Every worker of a host binds the same port (SO_REUSEADDR and SO_REUSEPORT, set
// before bind), and the kernel spreads new connections among them. Nothing is read from an
// accepted connection but its handshake, within a deadline: a plain BitTorrent one, or MSE's
// exchange (told apart by the first bytes, taken or refused by --encryption) and the
// handshake it carries, the torrent found by its SKEY hash among those the worker knows
// (peer_handshake.hpp); then the worker decides (which torrent, whether it wants the peer)
// and either takes the socket, with the stream's cipher and the bytes read past the
// handshake, or closes it. A peer that stalls or sends garbage costs one pending slot until
// its deadline, and at most the MSE codec's bounded buffer.
#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/steady_timer.hpp>

#include "core/encryption.hpp"
#include "core/result.hpp"
#include "core/wire.hpp"
#include "peer_worker/peer_handshake.hpp"
#include "peer_worker/pipeline.hpp"

namespace pw::peer_worker {

class Listener {
public:
    // A connection whose handshake is in: the worker takes the socket (and answers) or lets
    // it close.
    using OnHandshake = std::function<void(asio::ip::tcp::socket& socket,
                                           const asio::ip::tcp::endpoint& remote,
                                           Handshaken& handshaken)>;

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
    // Which incoming connections are taken (plain, MSE) and how MSE is answered; for
    // connections accepted from now on.
    void set_encryption(Encryption encryption) { encryption_ = encryption; }
    // MSE's way to the torrent: the info-hash whose HASH('req2', ·) the peer sent.
    void set_lookup(mse::InfoHashLookup lookup) { lookup_ = std::move(lookup); }
    void close();
    bool is_open() const { return acceptor_.is_open(); }
    std::uint16_t port() const { return port_; }
    // Connections past their handshake deadline are closed.
    void check_deadlines(Clock::time_point now);
    std::size_t pending() const { return pending_.size(); }

private:
    struct Pending {
        Pending(asio::ip::tcp::socket s, Encryption encryption, mse::InfoHashLookup lookup)
            : socket(std::move(s)), handshake(encryption, std::move(lookup)) {}
        asio::ip::tcp::socket socket;
        asio::ip::tcp::endpoint remote;
        IncomingHandshake handshake;
        std::vector<std::uint8_t> in;
        std::vector<std::uint8_t> out;
        Clock::time_point deadline{};
    };
    void accept_next();
    void on_accept(const asio::error_code& error, asio::ip::tcp::socket socket);
    void read_handshake(const std::shared_ptr<Pending>& pending);
    void on_handshake_read(const std::shared_ptr<Pending>& pending, const asio::error_code& error,
                           std::size_t bytes);
    void forget(const std::shared_ptr<Pending>& pending);

    OnHandshake on_handshake_;
    asio::ip::tcp::acceptor acceptor_;
    asio::steady_timer retry_;
    std::uint16_t port_ = 0;
    std::vector<std::shared_ptr<Pending>> pending_;
    Encryption encryption_ = Encryption::prefer;
    mse::InfoHashLookup lookup_;
};

}  // namespace pw::peer_worker
