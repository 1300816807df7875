#include "peer_worker/peer_connection.hpp"

#include <asio/connect.hpp>
#include <asio/read.hpp>
#include <asio/write.hpp>
#include <spdlog/spdlog.h>

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
// A handshake's reads: MSE's messages are at most a few hundred bytes each.
constexpr std::size_t kHandshakeReadChunk = 4096;

// A peer lost to the encryption policy (ours or its own) is said as a warning, so that a user
// watching 0% reads why; past a few, a swarm full of such peers would drown the log.
constexpr int kPolicyWarnings = 5;
int policy_warnings = 0;

void say_policy_failure(const std::string& key, const std::string& why) {
    if (policy_warnings < kPolicyWarnings) {
        ++policy_warnings;
        spdlog::warn("peer {}: {}{}", key, why,
                     policy_warnings == kPolicyWarnings ? " (more such peers are logged at info)" : "");
    } else {
        spdlog::info("peer {}: {}", key, why);
    }
}
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

void PeerConnection::start(Clock::time_point now) { connect(now); }

void PeerConnection::connect(Clock::time_point now) {
    phase_ = "connect";
    deadline_ = now + kConnectTimeout;
    socket_.async_connect(endpoint_, [self = shared_from_this(), attempt = attempt_](const asio::error_code& error) {
        if (attempt == self->attempt_) self->on_connected(error);
    });
}

void PeerConnection::start_incoming(Handshaken handshaken, Clock::time_point now) {
    phase_ = "handshake";
    session_.send_handshake(now);
    handshake_done(std::move(handshaken), now);
}

void PeerConnection::check_deadline(Clock::time_point now, Clock::duration write_stall) {
    if (closed_) return;
    if (deadline_ && now >= *deadline_) {
        if (handshake_) return handshake_failed("timed out");
        return fail(std::string(phase_) + " timed out");
    }
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
    deadline_ = now + kHandshakeTimeout;
    // Our handshake, taken back out of the session's queue: the handshake object sends it,
    // inside MSE's initial payload or plain.
    session_.send_handshake(now);
    auto& queued = session_.outgoing();
    std::array<std::uint8_t, wire::kHandshakeSize> ours{};
    std::copy_n(queued.begin(), ours.size(), ours.begin());
    queued.erase(queued.begin(), queued.begin() + static_cast<std::ptrdiff_t>(ours.size()));
    std::optional<mse::Policy> policy = plain_retry_ ? std::nullopt : outgoing_mse_policy(encryption_);
    const auto decoded = wire::decode_handshake(ours);
    if (!decoded) return fail("our own handshake: " + decoded.error().describe());  // not reached
    const Sha1Digest info_hash = decoded->info_hash;
    auto made = OutgoingHandshake::make(ours, info_hash, policy);
    if (!made && encryption_ == Encryption::require) {
        return fail(explain_mse_failure(encryption_, made.error().describe()));
    }
    if (!made) {
        // No RC4 in this OpenSSL: plaintext is all there is.
        spdlog::debug("peer {}: no encrypted handshake possible ({}): plaintext", key_, made.error().describe());
        plain_retry_ = true;
        made = OutgoingHandshake::make(ours, info_hash, std::nullopt);
        if (!made) return fail(made.error().describe());
    }
    handshake_.emplace(std::move(*made));
    phase_ = handshake_->in_mse() ? "encryption handshake" : "handshake";
    handshake_out_.clear();
    handshake_->start(handshake_out_);
    handshake_sent_at_ = Clock::now();
    handshake_round_trip_.reset();
    send_handshake_bytes();
    if (closed_) return;
    read_handshake();
}

void PeerConnection::send_handshake_bytes() {
    if (handshake_out_.empty()) return;
    // A few hundred bytes at most, into a fresh socket's empty send buffer: written at once.
    asio::error_code error;
    asio::write(socket_, asio::buffer(handshake_out_), error);
    handshake_out_.clear();
    if (error) handshake_failed("write failed: " + error.message());
}

void PeerConnection::read_handshake() {
    handshake_in_.resize(kHandshakeReadChunk);
    socket_.async_read_some(asio::buffer(handshake_in_),
                            [self = shared_from_this(), attempt = attempt_](const asio::error_code& error,
                                                                           std::size_t bytes) {
                                if (attempt == self->attempt_) self->on_handshake_read(error, bytes);
                            });
}

void PeerConnection::on_handshake_read(const asio::error_code& error, std::size_t bytes) {
    if (closed_ || !handshake_) return;
    if (error == asio::error::eof) return handshake_failed("the peer closed the connection");
    if (error) return handshake_failed("read failed: " + error.message());
    if (!handshake_round_trip_ && bytes > 0) {
        handshake_round_trip_ = Clock::now() - handshake_sent_at_;
    }
    const bool was_mse = handshake_->in_mse();
    auto done = handshake_->feed(std::span(handshake_in_.data(), bytes), handshake_out_);
    if (!done) {
        // Whatever the peer sent in the MSE exchange, it was not MSE with us: retried in
        // plaintext where allowed. A bad plain handshake is just that.
        return handshake_failed(done.error().describe());
    }
    if (was_mse && !handshake_->in_mse()) phase_ = "handshake";
    send_handshake_bytes();
    if (closed_) return;
    if (!*done) return read_handshake();
    Handshaken handshaken = handshake_->take();
    handshake_.reset();
    handshake_in_ = {};
    spdlog::debug("peer {}: {}", key_,
                  handshaken.cipher ? "RC4-encrypted" : (handshaken.encrypted ? "MSE, plaintext stream" : "plaintext"));
    handshake_done(std::move(handshaken), Clock::now());
}

void PeerConnection::handshake_failed(const std::string& reason) {
    if (closed_) return;
    const bool in_mse = handshake_ && handshake_->in_mse();
    if (in_mse && retries_in_plaintext(encryption_) && !plain_retry_) {
        spdlog::debug("peer {}: encrypted handshake failed ({}): trying plaintext", key_, reason);
        plain_retry_ = true;
        handshake_.reset();
        ++attempt_;  // the old socket's handlers, aborted, find a new attempt
        asio::error_code ignored;
        socket_.close(ignored);
        socket_ = asio::ip::tcp::socket(socket_.get_executor());
        session_.outgoing().clear();
        return connect(Clock::now());
    }
    handshake_.reset();
    const bool after_mse = plain_retry_ && encryption_ != Encryption::off;
    const std::string why = in_mse ? explain_mse_failure(encryption_, reason)
                                   : explain_plain_failure(encryption_, after_mse, reason);
    // Where the policies may be what kept us apart: a peer that requires encryption drops
    // a plain handshake, one without MSE drops ours.
    const bool refused = reason.rfind("bad handshake", 0) != 0;  // closed, reset or silent
    if (refused && ((in_mse && encryption_ == Encryption::require) ||
                    (!in_mse && (encryption_ == Encryption::off || after_mse)))) {
        say_policy_failure(key_, why);
    }
    fail(why);
}

void PeerConnection::handshake_done(Handshaken handshaken, Clock::time_point now) {
    cipher_ = std::move(handshaken.cipher);
    streaming_ = true;
    if (auto status = session_.on_handshake(handshaken.theirs, now); !status) {
        return fail(status.error().describe());
    }
    if (handshake_round_trip_) session_.expect_round_trip(*handshake_round_trip_);
    // BEP 6's and BEP 10's messages are part of the stream only when both sides said so.
    parser_.set_fast(session_.fast());
    parser_.set_extended(session_.extended());
    deadline_.reset();
    callbacks_.on_handshake(*this);
    if (closed_) return;
    flush();
    if (closed_) return;
    if (!handshaken.leftover.empty()) {
        // Read with the handshake, decrypted already: the stream's first bytes.
        parser_.append(handshaken.leftover);
        return consume(handshaken.leftover.size());
    }
    read_more();
}

void PeerConnection::learn_info(const PieceGeometry& geometry, const LocalPieces* ours,
                                const wire::ParserLimits& limits, Clock::time_point now) {
    if (closed_ || !session_.awaiting_info()) return;
    parser_.set_limits(limits);
    if (auto status = session_.learn_info(geometry, ours, now); !status) {
        return fail("protocol error: " + status.error().describe());
    }
    flush();
}

void PeerConnection::read_more() {
    const bool fast = session_.pipeline().rate_bytes_per_s() >= kFastPeerBytesPerSecond;
    const auto room = parser_.prepare(fast ? kFastReadChunk : kReadChunk);
    read_at_ = room.data();
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
    if (cipher_) cipher_->decrypt(std::span(read_at_, bytes));
    parser_.commit(bytes);
    consume(bytes);
}

void PeerConnection::consume(std::size_t bytes) {
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
    // Nothing of the session's goes out before the handshakes are through (it would land in
    // the middle of MSE's exchange).
    if (closed_ || !streaming_ || session_.outgoing().empty()) return;
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
    if (cipher_) {
        // RC4 cannot encrypt the blocks where they lie (shared, read-only): one copy, in
        // order, encrypted.
        encrypted_.clear();
        for (const asio::const_buffer& part : gather_) {
            const auto* bytes = static_cast<const std::uint8_t*>(part.data());
            encrypted_.insert(encrypted_.end(), bytes, bytes + part.size());
        }
        cipher_->encrypt(encrypted_);
        gather_.clear();
        gather_.emplace_back(encrypted_.data(), encrypted_.size());
    }
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
