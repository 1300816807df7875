#include "peer_worker/peer_connection.hpp"

#include <asio/connect.hpp>
#include <asio/read.hpp>
#include <asio/write.hpp>

namespace pw::peer_worker {

namespace {
// One read's worth: a few blocks, so a peer costs few syscalls and few turns of the session
// (each turn may also write requests). Every peer's parser keeps a buffer of up to max
// message + this, touched: at 256 KiB for all, 16 peers held 8 MiB of read buffers, more than
// the rest of the worker. So 64 KiB, and 256 KiB for a peer measured faster than 16 MiB/s:
// at 64 KiB a 300 MB/s peer filled nearly every read (57 KiB on average), 18,000 reads and as
// many wake-ups per GiB, and the wake-ups (a context switch each) were a quarter of the
// worker's CPU.
constexpr std::size_t kReadChunk = 64 * 1024;
constexpr std::size_t kFastReadChunk = 256 * 1024;
constexpr double kFastPeerBytesPerSecond = 16.0 * 1024 * 1024;
}  // namespace

PeerConnection::PeerConnection(asio::io_context& io, std::string key,
                               asio::ip::tcp::endpoint endpoint, PeerSession session,
                               wire::ParserLimits parser_limits, const Callbacks& callbacks)
    : key_(std::move(key)), endpoint_(endpoint), socket_(io), session_(std::move(session)),
      parser_(std::move(parser_limits)), callbacks_(callbacks) {}

void PeerConnection::start(Clock::time_point now) {
    deadline_ = now + kConnectTimeout;
    socket_.async_connect(endpoint_, [self = shared_from_this()](const asio::error_code& error) {
        self->on_connected(error);
    });
}

void PeerConnection::check_deadline(Clock::time_point now) {
    if (!closed_ && deadline_ && now >= *deadline_) fail(std::string(phase_) + " timed out");
}

void PeerConnection::fail(const std::string& reason) {
    if (closed_) return;
    closed_ = true;
    asio::error_code ignored;
    socket_.close(ignored);
    callbacks_.on_closed(*this, reason);
}

void PeerConnection::on_connected(const asio::error_code& error) {
    if (closed_) return;
    if (error) return fail("connect failed: " + error.message());
    const auto now = Clock::now();
    phase_ = "handshake";
    deadline_ = now + kHandshakeTimeout;
    session_.send_handshake(now);
    flush();
    // Exactly 68 bytes: whatever follows belongs to the message stream and its parser.
    asio::async_read(socket_, asio::buffer(handshake_),
                     [self = shared_from_this()](const asio::error_code& read_error, std::size_t) {
                         self->on_handshake_read(read_error);
                     });
}

void PeerConnection::on_handshake_read(const asio::error_code& error) {
    if (closed_) return;
    if (error) return fail("handshake read failed: " + error.message());
    const auto handshake = wire::decode_handshake(handshake_);
    if (!handshake) return fail("bad handshake: " + handshake.error().describe());
    const auto now = Clock::now();
    if (auto status = session_.on_handshake(*handshake, now); !status) {
        return fail(status.error().describe());
    }
    deadline_.reset();
    callbacks_.on_handshake(*this);
    if (closed_) return;
    read_more();
}

void PeerConnection::read_more() {
    const bool fast = session_.pipeline().rate_bytes_per_s() >= kFastPeerBytesPerSecond;
    const auto room = parser_.prepare(fast ? kFastReadChunk : kReadChunk);
    socket_.async_read_some(asio::buffer(room.data(), room.size()),
                            [self = shared_from_this()](const asio::error_code& error,
                                                        std::size_t bytes) {
                                self->on_read(error, bytes);
                            });
}

void PeerConnection::on_read(const asio::error_code& error, std::size_t bytes) {
    if (closed_) return;
    if (error == asio::error::eof) return fail("connection closed by peer");
    if (error) return fail("read failed: " + error.message());
    parser_.commit(bytes);
    const auto now = Clock::now();
    for (;;) {
        auto next = parser_.next();
        if (!next) return fail("protocol error: " + next.error().describe());
        if (!*next) break;
        if (auto status = session_.on_message(**next, now); !status) {
            return fail("protocol error: " + status.error().describe());
        }
    }
    callbacks_.on_activity(*this);
    if (closed_) return;
    flush();
    read_more();
}

void PeerConnection::flush() {
    if (closed_ || write_pending_ || session_.outgoing().empty()) return;
    // Swapping keeps both buffers' capacity: no allocation per write in the steady state.
    writing_.clear();
    writing_.swap(session_.outgoing());
    write_pending_ = true;
    asio::async_write(socket_, asio::buffer(writing_),
                      [self = shared_from_this()](const asio::error_code& error, std::size_t) {
                          self->on_written(error);
                      });
}

void PeerConnection::on_written(const asio::error_code& error) {
    write_pending_ = false;
    if (closed_) return;
    if (error) return fail("write failed: " + error.message());
    flush();
}

}  // namespace pw::peer_worker
