#pragma once
// Lets an Asio loop own ZeroMQ sockets: waits on a socket's ZMQ_FD. That descriptor is
// edge-triggered and only says "ZMQ_EVENTS may have changed": the owner must check
// ZMQ_EVENTS and drain after every wake-up and after every send on the socket, or it can
// sleep forever with messages waiting.
#include <functional>

#include <asio/posix/stream_descriptor.hpp>
#include <zmq.hpp>

namespace pw::peer_worker {

class ZmqWatch {
public:
    ZmqWatch(asio::io_context& io, zmq::socket_t& socket);
    ~ZmqWatch();
    ZmqWatch(const ZmqWatch&) = delete;
    ZmqWatch& operator=(const ZmqWatch&) = delete;

    // Calls `on_wake` once when the descriptor becomes readable (re-arm after each wake).
    void arm(std::function<void()> on_wake);
    bool armed() const { return armed_; }
    // ZMQ_EVENTS right now (ZMQ_POLLIN / ZMQ_POLLOUT bits).
    int events() const;

private:
    zmq::socket_t& socket_;
    // ZeroMQ owns the descriptor: released, never closed, on destruction.
    asio::posix::stream_descriptor descriptor_;
    bool armed_ = false;
};

}  // namespace pw::peer_worker
