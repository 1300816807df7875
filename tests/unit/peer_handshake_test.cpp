// The start of a peer connection, both ends in memory: plain and MSE, each policy against
// each, the torrent found by SKEY, the RC4 stream carried on, and refusals that say why.
#include <algorithm>
#include <cstdint>

#include <gtest/gtest.h>

#include "core/encryption.hpp"
#include "peer_worker/peer_handshake.hpp"

namespace pw::peer_worker {
namespace {

Sha1Digest digest(std::uint8_t fill) {
    Sha1Digest d{};
    d.fill(fill);
    return d;
}

std::array<std::uint8_t, wire::kHandshakeSize> handshake_bytes(const Sha1Digest& info_hash, std::uint8_t id) {
    wire::Handshake h;
    h.info_hash = info_hash;
    h.peer_id.fill(id);
    h.set_fast();
    return wire::encode_handshake(h);
}

struct Pair {
    Result<bool> out_done = false;
    Result<bool> in_done = false;
    std::optional<Handshaken> outgoing;
    std::optional<Handshaken> incoming;
};

// Runs an outgoing handshake against an incoming one; the incoming side sends its plain
// handshake (as the connection does once the worker took it) through the cipher it got.
// `chunk`: the most bytes one feed() takes (reads come in pieces of any size).
Pair run(std::optional<mse::Policy> out_policy, Encryption in_policy, const Sha1Digest& info_hash,
         std::vector<Sha1Digest> served, std::vector<std::uint8_t> after_ours = {},
         std::size_t chunk = SIZE_MAX) {
    Pair pair;
    auto made = OutgoingHandshake::make(handshake_bytes(info_hash, 'a'), info_hash, out_policy);
    EXPECT_TRUE(made);
    OutgoingHandshake out = std::move(*made);
    IncomingHandshake in(in_policy, mse::lookup_among(served));
    std::vector<std::uint8_t> to_in, to_out;
    out.start(to_in);
    bool out_done = false, in_done = false;
    const auto take = [chunk](std::vector<std::uint8_t>& from) {
        const std::size_t n = std::min(chunk, from.size());
        std::vector<std::uint8_t> bytes(from.begin(), from.begin() + static_cast<std::ptrdiff_t>(n));
        from.erase(from.begin(), from.begin() + static_cast<std::ptrdiff_t>(n));
        return bytes;
    };
    for (int round = 0; round < 20000 && !(out_done && in_done); ++round) {
        if (!in_done && !to_in.empty()) {
            const auto bytes = take(to_in);
            pair.in_done = in.feed(bytes, to_out);
            if (!pair.in_done) return pair;
            if (*pair.in_done) {
                in_done = true;
                pair.incoming = in.take();
                auto ours = handshake_bytes(info_hash, 'b');
                std::vector<std::uint8_t> stream(ours.begin(), ours.end());
                stream.insert(stream.end(), after_ours.begin(), after_ours.end());
                if (pair.incoming->cipher) pair.incoming->cipher->encrypt(stream);
                to_out.insert(to_out.end(), stream.begin(), stream.end());
            }
        }
        if (!out_done && !to_out.empty()) {
            const auto bytes = take(to_out);
            pair.out_done = out.feed(bytes, to_in);
            if (!pair.out_done) return pair;
            if (*pair.out_done) {
                out_done = true;
                pair.outgoing = out.take();
            }
        }
    }
    return pair;
}

TEST(PeerHandshake, PlainBothWays) {
    const auto ih = digest(7);
    auto pair = run(std::nullopt, Encryption::prefer, ih, {ih}, {0, 0, 0, 1, 2});
    ASSERT_TRUE(pair.incoming && pair.outgoing);
    EXPECT_FALSE(pair.incoming->encrypted);
    EXPECT_FALSE(pair.outgoing->cipher);
    EXPECT_EQ(pair.incoming->theirs.peer_id[0], 'a');
    EXPECT_EQ(pair.outgoing->theirs.peer_id[0], 'b');
    EXPECT_EQ(pair.outgoing->leftover, (std::vector<std::uint8_t>{0, 0, 0, 1, 2}));
}

TEST(PeerHandshake, Rc4WhenBothPrefer) {
    const auto ih = digest(7);
    auto pair = run(mse::Policy::prefer_rc4, Encryption::prefer, ih, {digest(1), ih, digest(2)}, {0, 0, 0, 1, 2});
    ASSERT_TRUE(pair.incoming && pair.outgoing);
    EXPECT_TRUE(pair.incoming->encrypted);
    ASSERT_TRUE(pair.incoming->cipher);
    ASSERT_TRUE(pair.outgoing->cipher);
    EXPECT_EQ(pair.incoming->theirs.info_hash, ih);
    EXPECT_EQ(pair.outgoing->theirs.peer_id[0], 'b');
    // The stream after the handshakes, decrypted by the handshake object.
    EXPECT_EQ(pair.outgoing->leftover, (std::vector<std::uint8_t>{0, 0, 0, 1, 2}));
    // And the ciphers go on in step: one message each way.
    std::vector<std::uint8_t> message{0, 0, 0, 1, 3};
    auto copy = message;
    pair.outgoing->cipher->encrypt(copy);
    EXPECT_NE(copy, message);
    pair.incoming->cipher->decrypt(copy);
    EXPECT_EQ(copy, message);
}

TEST(PeerHandshake, ByteByByteBothWays) {
    const auto ih = digest(8);
    for (auto policy : {std::optional<mse::Policy>{}, std::optional{mse::Policy::prefer_rc4}}) {
        auto pair = run(policy, Encryption::prefer, ih, {ih}, {0, 0, 0, 1, 2}, 1);
        ASSERT_TRUE(pair.incoming && pair.outgoing);
        EXPECT_EQ(pair.outgoing->theirs.peer_id[0], 'b');
        // Fed one byte at a time the leftover comes in later feeds: none lost, none doubled.
        EXPECT_EQ(pair.incoming->theirs.peer_id[0], 'a');
    }
}

TEST(PeerHandshake, RequireMeetsRequire) {
    const auto ih = digest(9);
    auto pair = run(mse::Policy::require_rc4, Encryption::require, ih, {ih});
    ASSERT_TRUE(pair.incoming && pair.outgoing);
    EXPECT_TRUE(pair.outgoing->cipher);
}

TEST(PeerHandshake, IncomingRequireRefusesPlain) {
    const auto ih = digest(9);
    auto pair = run(std::nullopt, Encryption::require, ih, {ih});
    ASSERT_FALSE(pair.in_done);
    EXPECT_NE(pair.in_done.error().describe().find("--encryption require"), std::string::npos);
}

TEST(PeerHandshake, IncomingOffRefusesMse) {
    const auto ih = digest(9);
    auto pair = run(mse::Policy::prefer_rc4, Encryption::off, ih, {ih});
    ASSERT_FALSE(pair.in_done);
    EXPECT_NE(pair.in_done.error().describe().find("--encryption off"), std::string::npos);
}

TEST(PeerHandshake, UnknownTorrentRefused) {
    auto pair = run(mse::Policy::prefer_rc4, Encryption::prefer, digest(3), {digest(4)});
    ASSERT_FALSE(pair.in_done);
    EXPECT_FALSE(pair.incoming);
}

TEST(PeerHandshake, HandshakeMustNameTheSkeyTorrent) {
    // MSE keyed with one torrent, a BitTorrent handshake inside naming another.
    const auto ih = digest(5);
    auto made = OutgoingHandshake::make(handshake_bytes(digest(6), 'a'), ih, mse::Policy::prefer_rc4);
    ASSERT_TRUE(made);
    IncomingHandshake in(Encryption::prefer, mse::lookup_among({ih, digest(6)}));
    std::vector<std::uint8_t> to_in, to_out;
    made->start(to_in);
    auto first = in.feed(to_in, to_out);
    ASSERT_TRUE(first);
    to_in.clear();
    ASSERT_TRUE(made->feed(to_out, to_in));
    to_out.clear();
    auto second = in.feed(to_in, to_out);
    ASSERT_FALSE(second);
    EXPECT_NE(second.error().describe().find("not the one"), std::string::npos);
}

TEST(PeerHandshake, GarbageFromAnOutgoingPeerFailsInMse) {
    auto made = OutgoingHandshake::make(handshake_bytes(digest(1), 'a'), digest(1), mse::Policy::prefer_rc4);
    ASSERT_TRUE(made);
    std::vector<std::uint8_t> out;
    made->start(out);
    EXPECT_TRUE(made->in_mse());
    // A plain peer's answer (its handshake, then nothing): too short to be Yb, no failure yet;
    // garbage past the sync window is one.
    std::vector<std::uint8_t> garbage(mse::kMaxInitiatorBytes + 100, 0x13);
    auto fed = made->feed(garbage, out);
    EXPECT_FALSE(fed);
    EXPECT_TRUE(made->in_mse());
}

TEST(PeerHandshake, APlainAnswerToMseFailsAtOnce) {
    auto made = OutgoingHandshake::make(handshake_bytes(digest(1), 'a'), digest(1), mse::Policy::prefer_rc4);
    ASSERT_TRUE(made);
    std::vector<std::uint8_t> out;
    made->start(out);
    const auto plain = handshake_bytes(digest(1), 'b');
    auto first = made->feed(std::span(plain).first(10), out);
    ASSERT_TRUE(first);
    auto fed = made->feed(std::span(plain).subspan(10), out);
    ASSERT_FALSE(fed);
    EXPECT_NE(fed.error().describe().find("plaintext"), std::string::npos);
    EXPECT_TRUE(made->in_mse());  // so prefer dials again in plaintext
}

TEST(PeerHandshake, IncomingBytesStayBounded) {
    IncomingHandshake in(Encryption::prefer, mse::lookup_among({digest(1)}));
    std::vector<std::uint8_t> out;
    std::vector<std::uint8_t> chunk(1000, 0xee);
    bool failed = false;
    for (int i = 0; i < 10 && !failed; ++i) {
        auto fed = in.feed(chunk, out);
        if (!fed) failed = true;
        EXPECT_LE(in.buffered(), mse::kMaxResponderBytes);
    }
    EXPECT_TRUE(failed);
}

TEST(EncryptionPolicy, WordsAndDecisions) {
    EXPECT_EQ(parse_encryption("require"), Encryption::require);
    EXPECT_EQ(parse_encryption("bogus"), std::nullopt);
    EXPECT_EQ(to_string(Encryption::off), "off");
    EXPECT_FALSE(outgoing_mse_policy(Encryption::off));
    EXPECT_EQ(outgoing_mse_policy(Encryption::require), mse::Policy::require_rc4);
    EXPECT_TRUE(retries_in_plaintext(Encryption::prefer));
    EXPECT_FALSE(retries_in_plaintext(Encryption::require));
    EXPECT_EQ(incoming_action(Encryption::prefer, mse::Incoming::plain), IncomingAction::take_plain);
    EXPECT_EQ(incoming_action(Encryption::prefer, mse::Incoming::encrypted), IncomingAction::run_mse);
    EXPECT_EQ(incoming_action(Encryption::require, mse::Incoming::plain), IncomingAction::refuse);
    EXPECT_EQ(incoming_action(Encryption::off, mse::Incoming::encrypted), IncomingAction::refuse);
    EXPECT_NE(explain_mse_failure(Encryption::require, "the peer closed the connection").find("plaintext only"),
              std::string::npos);
    EXPECT_NE(explain_plain_failure(Encryption::off, false, "the peer closed the connection").find("may require encryption"),
              std::string::npos);
}

}  // namespace
}  // namespace pw::peer_worker
