#include "peer_worker/listener.hpp"

#include <sys/socket.h>

#include <algorithm>

#include <asio/read.hpp>
#include <spdlog/spdlog.h>

namespace pw::peer_worker {

namespace {
using ReusePort = asio::detail::socket_option::boolean<SOL_SOCKET, SO_REUSEPORT>;
constexpr int kBacklog = 128;
// After an accept error (out of descriptors, say), the next accept waits this long rather
// than spin.
constexpr auto kAcceptRetry = std::chrono::milliseconds(200);
}  // namespace

Listener::Listener(asio::io_context& io, OnHandshake on_handshake)
    : on_handshake_(std::move(on_handshake)), acceptor_(io), retry_(io) {}

Listener::~Listener() { close(); }

Result<std::uint16_t> Listener::open(std::uint16_t port) {
    close();
    asio::error_code error;
    const asio::ip::tcp::endpoint endpoint(asio::ip::address_v4::any(), port);
    const auto failed = [&](const char* what) -> Result<std::uint16_t> {
        const std::string why = std::string(what) + ": " + error.message();
        asio::error_code ignored;
        acceptor_.close(ignored);
        return make_error(why);
    };
    acceptor_.open(endpoint.protocol(), error);
    if (error) return failed("socket");
    // Both before bind: every worker of the host binds the same port.
    acceptor_.set_option(asio::socket_base::reuse_address(true), error);
    if (error) return failed("SO_REUSEADDR");
    acceptor_.set_option(ReusePort(true), error);
    if (error) return failed("SO_REUSEPORT");
    acceptor_.bind(endpoint, error);
    if (error) return failed("bind");
    acceptor_.listen(kBacklog, error);
    if (error) return failed("listen");
    port_ = acceptor_.local_endpoint(error).port();
    if (error) return failed("getsockname");
    accept_next();
    return port_;
}

void Listener::close() {
    asio::error_code ignored;
    retry_.cancel();
    if (acceptor_.is_open()) acceptor_.close(ignored);
    for (const auto& pending : pending_) pending->socket.close(ignored);
    pending_.clear();
    port_ = 0;
}

void Listener::accept_next() {
    if (!acceptor_.is_open()) return;
    acceptor_.async_accept([this](const asio::error_code& error, asio::ip::tcp::socket socket) {
        on_accept(error, std::move(socket));
    });
}

void Listener::on_accept(const asio::error_code& error, asio::ip::tcp::socket socket) {
    if (error == asio::error::operation_aborted || !acceptor_.is_open()) return;
    if (error) {
        spdlog::debug("accept failed: {}", error.message());
        retry_.expires_after(kAcceptRetry);
        retry_.async_wait([this](const asio::error_code& waited) {
            if (!waited) accept_next();
        });
        return;
    }
    accept_next();
    asio::error_code ignored;
    if (pending_.size() >= kMaxPending) {
        spdlog::debug("refused an incoming connection: {} handshakes pending already", pending_.size());
        socket.close(ignored);
        return;
    }
    auto pending = std::make_shared<Pending>(std::move(socket));
    pending->remote = pending->socket.remote_endpoint(ignored);
    pending->deadline = Clock::now() + kHandshakeTimeout;
    pending_.push_back(pending);
    // Exactly the handshake: nothing else is read before the worker took the connection.
    asio::async_read(pending->socket, asio::buffer(pending->handshake),
                     [this, pending](const asio::error_code& read_error, std::size_t) {
                         on_handshake_read(pending, read_error);
                     });
}

void Listener::forget(const std::shared_ptr<Pending>& pending) {
    std::erase(pending_, pending);
}

void Listener::on_handshake_read(const std::shared_ptr<Pending>& pending, const asio::error_code& error) {
    if (error == asio::error::operation_aborted) return;  // closed: the listener may be gone
    forget(pending);
    asio::error_code ignored;
    if (error) {
        spdlog::debug("incoming {}: no handshake: {}", pending->remote.address().to_string(), error.message());
        pending->socket.close(ignored);
        return;
    }
    const auto handshake = wire::decode_handshake(pending->handshake);
    if (!handshake) {
        spdlog::debug("incoming {}: bad handshake: {}", pending->remote.address().to_string(),
                      handshake.error().describe());
        pending->socket.close(ignored);
        return;
    }
    on_handshake_(pending->socket, pending->remote, *handshake);
    // Taken (moved from) or refused: either way this one is done.
    if (pending->socket.is_open()) pending->socket.close(ignored);
}

void Listener::check_deadlines(Clock::time_point now) {
    for (const auto& pending : std::vector<std::shared_ptr<Pending>>(pending_)) {
        if (now < pending->deadline) continue;
        spdlog::debug("incoming {}: handshake timed out", pending->remote.address().to_string());
        asio::error_code ignored;
        pending->socket.close(ignored);  // its read ends aborted
        forget(pending);
    }
}

}  // namespace pw::peer_worker
