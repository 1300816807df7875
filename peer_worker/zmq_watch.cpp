#include "peer_worker/zmq_watch.hpp"

namespace pw::peer_worker {

ZmqWatch::ZmqWatch(asio::io_context& io, zmq::socket_t& socket)
    : socket_(socket), descriptor_(io, socket.get(zmq::sockopt::fd)) {}

ZmqWatch::~ZmqWatch() { descriptor_.release(); }

void ZmqWatch::arm(std::function<void()> on_wake) {
    if (armed_) return;
    armed_ = true;
    descriptor_.async_wait(asio::posix::stream_descriptor::wait_read,
                           [this, on_wake = std::move(on_wake)](const asio::error_code& error) {
                               // Aborted: the watch may be gone already; touch nothing.
                               if (error == asio::error::operation_aborted) return;
                               armed_ = false;
                               on_wake();
                           });
}

int ZmqWatch::events() const { return socket_.get(zmq::sockopt::events); }

}  // namespace pw::peer_worker
