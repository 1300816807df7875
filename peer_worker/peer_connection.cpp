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

PeerConnection::PeerConnection(asio::ip::tcp::socket socket, std::string key,
                               asio::ip::tcp::endpoint endpoint, PeerSession session,
                               wire::ParserLimits parser_limits, const Callbacks& callbacks)
    : key_(std::move(key)), endpoint_(endpoint), socket_(std::move(socket)), incoming_(true),
      session_(std::move(session)), parser_(std::move(parser_limits)), callbacks_(callbacks) {}

void PeerConnection::start(Clock::time_point now) {
    deadline_ = now + kConnectTimeout;
    socket_.async_connect(endpoint_, [self = shared_from_this()](const asio::error_code& error) {
        self->on_connected(error);
    });
}

void PeerConnection::start_incoming(const wire::Handshake& theirs, Clock::time_point now) {
    phase_ = "handshake";
    session_.send_handshake(now);
    handshake_done(theirs, now);
}

void PeerConnection::check_deadline(Clock::time_point now, Clock::duration write_stall) {
    if (closed_) return;
    if (deadline_ && now >= *deadline_) return fail(std::string(phase_) + " timed out");
    if (write_pending_ && now - write_progress_ >= write_stall) {
        std::string why = "not reading what we send: nothing written for ";
        why += std::to_string(std::chrono::duration_cast<std::chrono::seconds>(write_stall).count());
        why += " s";
        fail(why);
    }
}

void PeerConnection::fail(const std::string& reason) {
    if (closed_) return;
    closed_ = true;
    asio::error_code ignored;
    socket_.close(ignored);
    // Nothing is written from them once the socket is closed: their pieces may go.
    release_blocks(writing_blocks_, false);
    release_blocks(session_.out_blocks(), false);
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
    handshake_done(*handshake, Clock::now());
}

void PeerConnection::handshake_done(const wire::Handshake& theirs, Clock::time_point now) {
    if (auto status = session_.on_handshake(theirs, now); !status) {
        return fail(status.error().describe());
    }
    // BEP 6's messages are part of the stream only when both sides said so.
    parser_.set_fast(session_.fast());
    deadline_.reset();
    callbacks_.on_handshake(*this);
    if (closed_) return;
    flush();
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

void PeerConnection::resume_reading() {
    if (!read_paused_ || closed_) return;
    read_paused_ = false;
    read_more();
}

void PeerConnection::on_read(const asio::error_code& error, std::size_t bytes) {
    if (closed_) return;
    if (error == asio::error::eof) return fail("connection closed by peer");
    if (error) return fail("read failed: " + error.message());
    parser_.commit(bytes);
    const bool keep_reading = !callbacks_.on_read_bytes || callbacks_.on_read_bytes(*this, bytes);
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
    if (closed_) return;
    if (!keep_reading) {
        // Over the download budget: the next read waits for the worker's refill.
        read_paused_ = true;
        return;
    }
    read_more();
}

void PeerConnection::flush() {
    if (closed_ || session_.outgoing().empty()) return;
    if (write_pending_) {
        if (session_.outgoing().size() > kMaxBacklog) {
            fail("not reading what we send: over 1 MiB of messages queued");
        }
        return;
    }
    // Swapping keeps both buffers' capacity: no allocation per write in the steady state.
    writing_.clear();
    writing_.swap(session_.outgoing());
    writing_blocks_.clear();
    writing_blocks_.swap(session_.out_blocks());
    // The blocks' data goes between the control bytes, right after each block's header.
    gather_.clear();
    gather_at_ = 0;
    std::size_t from = 0;
    for (const OutBlock& block : writing_blocks_) {
        if (block.at > from) gather_.emplace_back(writing_.data() + from, block.at - from);
        gather_.emplace_back(block.data.data(), block.data.size());
        from = block.at;
    }
    if (writing_.size() > from) gather_.emplace_back(writing_.data() + from, writing_.size() - from);
    write_pending_ = true;
    write_progress_ = Clock::now();
    write_next();
}

void PeerConnection::write_next() {
    // A view of the part not written yet: copying it into the operation costs nothing.
    const std::span<const asio::const_buffer> rest(gather_.data() + gather_at_, gather_.size() - gather_at_);
    socket_.async_write_some(rest, [self = shared_from_this()](const asio::error_code& error,
                                                               std::size_t bytes) {
        self->on_write(error, bytes);
    });
}

void PeerConnection::on_write(const asio::error_code& error, std::size_t bytes) {
    if (closed_) return;
    if (error) return fail("write failed: " + error.message());
    write_progress_ = Clock::now();
    while (bytes > 0 && gather_at_ < gather_.size()) {
        asio::const_buffer& next = gather_[gather_at_];
        if (bytes < next.size()) {
            next += bytes;
            bytes = 0;
        } else {
            bytes -= next.size();
            ++gather_at_;
        }
    }
    while (gather_at_ < gather_.size() && gather_[gather_at_].size() == 0) ++gather_at_;
    if (gather_at_ < gather_.size()) return write_next();
    on_written();
}

void PeerConnection::on_written() {
    write_pending_ = false;
    if (!writing_blocks_.empty()) {
        // Another write may start from the callback: the blocks just written move aside.
        done_blocks_.swap(writing_blocks_);
        release_blocks(done_blocks_, true);
        if (closed_) return;
    }
    flush();
}

void PeerConnection::release_blocks(std::vector<OutBlock>& blocks, bool sent) {
    if (blocks.empty()) return;
    std::uint64_t bytes = 0;
    for (const OutBlock& block : blocks) bytes += block.data.size();
    session_.blocks_done(static_cast<std::uint32_t>(blocks.size()), bytes, sent);
    const bool intact = !callbacks_.on_blocks_done || callbacks_.on_blocks_done(*this, blocks, sent);
    blocks.clear();
    if (sent && !intact) fail("a piece's read slot was taken back while its blocks were sent");
}

}  // namespace pw::peer_worker
