#pragma once
// The start of a peer connection up to the peer's BitTorrent handshake, plain or under Message
// Stream Encryption (core/mse.hpp), as sans-I/O state objects the connection and the listener
// pump: bytes read go in through feed(), bytes to send come out into the caller's buffer, and
// once done, the result says what the stream after the handshakes is (RC4 or plain) and holds
// the bytes already read past the peer's handshake. No sockets, no clocks: the caller owns the
// deadline. Every byte held is bounded (the MSE codec's limits, then 68 bytes plus one read).
#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "core/encryption.hpp"
#include "core/mse.hpp"
#include "core/result.hpp"
#include "core/wire.hpp"

namespace pw::peer_worker {

// What the handshakes leave for the connection.
struct Handshaken {
    wire::Handshake theirs;
    bool encrypted = false;                   // MSE was spoken (either method)
    std::optional<mse::StreamCipher> cipher;  // RC4 from here on, both ways
    std::vector<std::uint8_t> leftover;       // stream bytes after their handshake, decrypted
};

// Collects the peer's 68-byte handshake from bytes already decrypted.
class HandshakeCollector {
public:
    // True once the 68 bytes are in; what came after them stays in leftover().
    Result<bool> add(std::span<const std::uint8_t> bytes);
    bool done() const { return theirs_.has_value(); }
    const wire::Handshake& theirs() const { return *theirs_; }
    std::vector<std::uint8_t>& leftover() { return leftover_; }

private:
    std::array<std::uint8_t, wire::kHandshakeSize> bytes_{};
    std::size_t have_ = 0;
    std::optional<wire::Handshake> theirs_;
    std::vector<std::uint8_t> leftover_;
};

// An outgoing connection: MSE first (when `policy` is set) with our handshake as its initial
// payload, or our plain handshake; then theirs.
class OutgoingHandshake {
public:
    // Fails only when MSE cannot be spoken here at all (no RC4 in this OpenSSL).
    static Result<OutgoingHandshake> make(const std::array<std::uint8_t, wire::kHandshakeSize>& ours,
                                          const Sha1Digest& info_hash,
                                          std::optional<mse::Policy> policy);

    // The first bytes to send (Ya and PadA, or our plain handshake).
    void start(std::vector<std::uint8_t>& out);
    // Bytes from the peer; what to send goes to `out`. True once their handshake is in.
    Result<bool> feed(std::span<const std::uint8_t> in, std::vector<std::uint8_t>& out);
    // Still in the MSE exchange: a failure now says the peer would not speak MSE with us.
    bool in_mse() const { return mse_.has_value() && !mse_->done(); }
    bool encrypted() const { return mse_.has_value(); }
    Handshaken take();

private:
    OutgoingHandshake() = default;
    std::array<std::uint8_t, wire::kHandshakeSize> ours_{};
    std::optional<mse::MseHandshake> mse_;
    std::optional<mse::StreamCipher> cipher_;
    HandshakeCollector collector_;
    std::array<std::uint8_t, mse::kDetectBytes> head_{};  // the peer's first bytes
    std::size_t head_bytes_ = 0;
};

// An incoming connection: plain or MSE told from the first bytes, by the policy taken or
// refused; for MSE the torrent is found by its SKEY hash through `lookup`.
class IncomingHandshake {
public:
    IncomingHandshake(Encryption encryption, mse::InfoHashLookup lookup)
        : encryption_(encryption), lookup_(std::move(lookup)) {}

    // True once their handshake is in (we send ours later, through the connection); an Error
    // says why the connection is refused.
    Result<bool> feed(std::span<const std::uint8_t> in, std::vector<std::uint8_t>& out);
    bool encrypted() const { return mse_.has_value(); }
    std::size_t buffered() const;
    Handshaken take();

private:
    Result<bool> after_mse(std::vector<std::uint8_t>& out);
    // An encrypted peer's handshake must name the torrent its SKEY chose.
    Result<bool> checked(Result<bool> done) const;

    Encryption encryption_;
    mse::InfoHashLookup lookup_;
    std::vector<std::uint8_t> first_;  // until plain or MSE is known
    bool decided_ = false;
    std::optional<mse::MseHandshake> mse_;
    std::optional<mse::StreamCipher> cipher_;
    Sha1Digest skey_{};
    HandshakeCollector collector_;
};

}  // namespace pw::peer_worker
