#include "peer_worker/listener.hpp"

#include <sys/socket.h>

#include <algorithm>

#include <asio/write.hpp>
#include <spdlog/spdlog.h>

namespace pw::peer_worker {

namespace {
using ReusePort = asio::detail::socket_option::boolean<SOL_SOCKET, SO_REUSEPORT>;
constexpr int kBacklog = 128;
// After an accept error (out of descriptors, say), the next accept waits this long rather
// than spin.
constexpr auto kAcceptRetry = std::chrono::milliseconds(200);
// A handshake's reads: MSE's messages are at most a few hundred bytes each; a plain peer's
// handshake and whatever it sends right after (its bitfield), handed on to the connection.
constexpr std::size_t kHandshakeReadChunk = 4096;
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
    auto pending = std::make_shared<Pending>(std::move(socket), encryption_, lookup_);
    pending->remote = pending->socket.remote_endpoint(ignored);
    pending->deadline = Clock::now() + kHandshakeTimeout;
    pending_.push_back(pending);
    read_handshake(pending);
}

void Listener::read_handshake(const std::shared_ptr<Pending>& pending) {
    pending->in.resize(kHandshakeReadChunk);
    pending->socket.async_read_some(asio::buffer(pending->in),
                                    [this, pending](const asio::error_code& read_error, std::size_t bytes) {
                                        on_handshake_read(pending, read_error, bytes);
                                    });
}

void Listener::forget(const std::shared_ptr<Pending>& pending) {
    std::erase(pending_, pending);
}

void Listener::on_handshake_read(const std::shared_ptr<Pending>& pending, const asio::error_code& error,
                                 std::size_t bytes) {
    if (error == asio::error::operation_aborted) return;  // closed: the listener may be gone
    asio::error_code ignored;
    const auto drop = [&](const std::string& why) {
        spdlog::debug("incoming {}: {}", pending->remote.address().to_string(), why);
        forget(pending);
        pending->socket.close(ignored);
    };
    if (error) return drop("no handshake: " + error.message());
    pending->out.clear();
    auto done = pending->handshake.feed(std::span(pending->in.data(), bytes), pending->out);
    if (!done) return drop(done.error().describe());
    if (!pending->out.empty()) {
        // MSE's answers: a few hundred bytes into a fresh socket's empty send buffer.
        asio::write(pending->socket, asio::buffer(pending->out), ignored);
        if (ignored) return drop("write failed: " + ignored.message());
    }
    if (!*done) return read_handshake(pending);
    forget(pending);
    Handshaken handshaken = pending->handshake.take();
    on_handshake_(pending->socket, pending->remote, handshaken);
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
