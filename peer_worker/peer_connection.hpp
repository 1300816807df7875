#pragma once
// One TCP connection to a peer on the worker's io_context: connect (or take a socket the
// listener accepted, its handshake already read), exchange handshakes, then read straight into
// the wire parser's buffer and feed the session; write whatever the session queued, the
// blocks' bytes gathered from where they lie. Deadlines (connect, handshake, a peer that
// reads nothing we send) are checked by the worker's timer.
//
// Encryption (--encryption): an outgoing connection starts with the MSE handshake unless it
// is off, our BitTorrent handshake riding in its initial payload (peer_handshake.hpp); under
// `prefer` a peer that will not speak MSE is dialled again in plaintext. When RC4 was
// negotiated, every byte read is decrypted in place before the parser sees it, and every
// write is copied into one buffer and encrypted (the blocks' bytes are shared and read-only).
#include <array>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <asio/buffer.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>

#include "core/encryption.hpp"
#include "core/wire.hpp"
#include "peer_worker/peer_handshake.hpp"
#include "peer_worker/peer_session.hpp"

namespace pw::peer_worker {

class PeerConnection : public std::enable_shared_from_this<PeerConnection> {
public:
    struct Callbacks {
        std::function<void(PeerConnection&)> on_handshake;  // the peer is ours to use
        std::function<void(PeerConnection&)> on_activity;  // messages were handled
        std::function<void(PeerConnection&, const std::string& reason)> on_closed;
        // The connection is done with these blocks: written (`sent`), or dropped unsent (the
        // connection closed). For blocks written, false means their bytes may have changed
        // under the write (a read slot taken back): the connection is then closed.
        std::function<bool(PeerConnection&, std::span<const OutBlock>, bool sent)> on_blocks_done;
        // `bytes` were read from the socket; false pauses reading until resume_reading().
        std::function<bool(PeerConnection&, std::size_t bytes)> on_read_bytes;
    };

    static constexpr Clock::duration kConnectTimeout = std::chrono::seconds(5);
    static constexpr Clock::duration kHandshakeTimeout = std::chrono::seconds(10);
    // Bytes queued for the peer beyond a write under way (control messages and block
    // headers; the blocks' data are bounded apart): a peer that lets this pile up is not
    // reading, and is dropped at once.
    static constexpr std::size_t kMaxBacklog = 1u << 20;

    // An outgoing connection, to `endpoint`.
    PeerConnection(asio::io_context& io, std::string key, asio::ip::tcp::endpoint endpoint,
                   PeerSession session, wire::ParserLimits parser_limits,
                   const Callbacks& callbacks);
    // An incoming one: the listener's socket, whose handshake was read already.
    PeerConnection(asio::ip::tcp::socket socket, std::string key, asio::ip::tcp::endpoint endpoint,
                   PeerSession session, wire::ParserLimits parser_limits,
                   const Callbacks& callbacks);

    // Before start(): how an outgoing connection begins (default: plaintext only).
    void set_encryption(Encryption encryption) { encryption_ = encryption; }
    void start(Clock::time_point now);
    // Answers the handshake the listener read (plain or after MSE, with the stream's cipher
    // and the bytes read past it): ours, then the session's first messages; then as an
    // outgoing connection after its handshake.
    void start_incoming(Handshaken handshaken, Clock::time_point now);
    // Whether the stream is RC4 (MSE negotiated it).
    bool encrypted() const { return cipher_.has_value(); }
    // Writes what the session queued, if no write is under way.
    void flush();
    // Closes the connection (once) and reports `reason` through on_closed.
    void fail(const std::string& reason);
    // Fails the connection when it is still connecting or handshaking past its deadline, or
    // when a write has made no progress for `write_stall` (the peer reads nothing).
    void check_deadline(Clock::time_point now, Clock::duration write_stall);
    // Reading was paused (on_read_bytes said so): read again.
    void resume_reading();
    bool reading_paused() const { return read_paused_; }

    const std::string& key() const { return key_; }
    asio::ip::address address() const { return endpoint_.address(); }
    std::uint16_t port() const { return endpoint_.port(); }
    bool incoming() const { return incoming_; }
    PeerSession& session() { return session_; }
    bool closed() const { return closed_; }
    // The torrent's info dictionary came (see PeerSession::learn_info): the session and the
    // parser take its geometry. The connection fails when what the peer said does not fit.
    void learn_info(const PieceGeometry& geometry, const LocalPieces* ours,
                    const wire::ParserLimits& limits, Clock::time_point now);

private:
    void connect(Clock::time_point now);
    void on_connected(const asio::error_code& error);
    void send_handshake_bytes();
    void read_handshake();
    void on_handshake_read(const asio::error_code& error, std::size_t bytes);
    // The outgoing handshake failed: dialled again in plaintext when the policy allows,
    // closed with a reason that says what the peer and our policy disagree on otherwise.
    void handshake_failed(const std::string& reason);
    void handshake_done(Handshaken handshaken, Clock::time_point now);
    void read_more();
    void on_read(const asio::error_code& error, std::size_t bytes);
    void consume(std::size_t bytes);
    void write_next();
    void on_write(const asio::error_code& error, std::size_t bytes);
    void on_written();
    void release_blocks(std::vector<OutBlock>& blocks, bool sent);

    std::string key_;
    asio::ip::tcp::endpoint endpoint_;
    asio::ip::tcp::socket socket_;
    bool incoming_ = false;
    PeerSession session_;
    wire::StreamParser parser_;
    const Callbacks& callbacks_;
    std::optional<Clock::time_point> deadline_;
    const char* phase_ = "connect";
    bool read_paused_ = false;

    Encryption encryption_ = Encryption::off;
    std::optional<OutgoingHandshake> handshake_;
    bool plain_retry_ = false;    // the MSE attempt failed; this is the plaintext one
    // From our first handshake bytes to the peer's first answer: one round trip (MSE's Ya
    // to Yb, or handshake to handshake), known before any block.
    Clock::time_point handshake_sent_at_{};
    std::optional<Clock::duration> handshake_round_trip_;
    std::uint32_t attempt_ = 0;   // handlers of an abandoned socket find it changed
    std::vector<std::uint8_t> handshake_in_;
    std::vector<std::uint8_t> handshake_out_;
    std::optional<mse::StreamCipher> cipher_;
    std::uint8_t* read_at_ = nullptr;  // the parser's room the read under way fills
    std::vector<std::uint8_t> encrypted_;  // the write under way, RC4
    bool streaming_ = false;  // the handshakes are through: the session's bytes may go

    // The write under way: the control bytes and the blocks swapped out of the session, and
    // the gather list over them (the part not yet written); every vector keeps its capacity,
    // so the steady state allocates nothing per write.
    std::vector<std::uint8_t> writing_;
    std::vector<OutBlock> writing_blocks_;
    std::vector<OutBlock> done_blocks_;
    std::vector<asio::const_buffer> gather_;
    std::size_t gather_at_ = 0;
    bool write_pending_ = false;
    Clock::time_point write_progress_{};
    bool closed_ = false;
};

}  // namespace pw::peer_worker
