// MSE/PE handshake (core/mse): both ends against each other over in-memory pipes fed in
// every chunking, and hostile peers played by hand from the building blocks.
#include "core/mse.hpp"

#include <openssl/bn.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "core/wire.hpp"

namespace pw::mse {
namespace {

using Bytes = std::vector<std::uint8_t>;

const Sha1Digest kInfoHash = sha1("the torrent we both know");
const Sha1Digest kOtherHash = sha1("a torrent nobody serves");

Bytes bytes(std::string_view text) { return Bytes(text.begin(), text.end()); }

Bytes handshake_bytes(const Sha1Digest& info_hash, char who) {
    wire::Handshake h;
    h.info_hash = info_hash;
    h.peer_id.fill(static_cast<std::uint8_t>(who));
    const auto encoded = wire::encode_handshake(h);
    return Bytes(encoded.begin(), encoded.end());
}

Bytes pseudo_random(std::size_t n, std::uint32_t seed) {
    std::mt19937 rng(seed);
    Bytes out(n);
    for (auto& b : out) b = static_cast<std::uint8_t>(rng());
    return out;
}

PrivateKey key_of(std::uint8_t last) {
    PrivateKey key{};
    key.back() = last;
    return key;
}

// Feeds `data` in chunks of `chunk` bytes (0: all at once); stops at the first done or error.
// What a done handshake did not see (the rest of `data`) goes to *rest: the caller's, as a
// socket read that ends after the handshake would be.
Result<MseHandshake::Progress> feed_in_chunks(MseHandshake& hs, const Bytes& data,
                                              std::size_t chunk, Bytes& out, Bytes* rest = nullptr) {
    if (data.empty()) return hs.feed({}, out);
    const std::size_t step = chunk == 0 ? data.size() : chunk;
    Result<MseHandshake::Progress> last = MseHandshake::Progress::need_more;
    for (std::size_t at = 0; at < data.size(); at += step) {
        const std::size_t n = std::min(step, data.size() - at);
        last = hs.feed(std::span<const std::uint8_t>(data).subspan(at, n), out);
        if (!last.ok()) return last;
        if (*last == MseHandshake::Progress::done) {
            if (rest != nullptr) rest->assign(data.begin() + static_cast<std::ptrdiff_t>(at + n), data.end());
            else EXPECT_EQ(at + n, data.size()) << "bytes fed after done";
            return last;
        }
    }
    return last;
}

struct PairResult {
    std::optional<Error> initiator_error;
    std::optional<Error> responder_error;
    std::optional<Outcome> initiator;
    std::optional<Outcome> responder;
};

// Runs both ends over two pipes. `respond_after_done` is what the responder's caller sends
// right after its handshake is done (its BitTorrent handshake, say), through the cipher when
// RC4 was selected: it lands in the initiator's remainder.
PairResult run_pair(InitiatorOptions io, ResponderOptions ro, std::size_t chunk,
                    const Bytes& respond_after_done = {}) {
    PairResult result;
    auto initiator = MseHandshake::initiator(std::move(io));
    auto responder = MseHandshake::responder(std::move(ro));
    if (!initiator || !responder) {
        ADD_FAILURE() << "factories failed";
        return result;
    }
    Bytes to_responder, to_initiator;
    auto started = initiator->feed({}, to_responder);
    EXPECT_TRUE(started.ok());
    for (int round = 0; round < 20; ++round) {
        if (!to_responder.empty() && !responder->done() && !result.responder_error) {
            Bytes chunk_out;
            Bytes in = std::move(to_responder);
            to_responder.clear();
            auto r = feed_in_chunks(*responder, in, chunk, chunk_out);
            EXPECT_LE(responder->buffered(), kMaxResponderBytes);
            to_initiator.insert(to_initiator.end(), chunk_out.begin(), chunk_out.end());
            if (!r) {
                result.responder_error = r.error();
            } else if (*r == MseHandshake::Progress::done) {
                result.responder = responder->take_outcome();
                Bytes after = respond_after_done;
                if (result.responder->cipher) result.responder->cipher->encrypt(after);
                to_initiator.insert(to_initiator.end(), after.begin(), after.end());
            }
        }
        if (!to_initiator.empty() && !initiator->done() && !result.initiator_error) {
            Bytes in = std::move(to_initiator);
            to_initiator.clear();
            Bytes rest;
            auto r = feed_in_chunks(*initiator, in, chunk, to_responder, &rest);
            EXPECT_LE(initiator->buffered(), kMaxInitiatorBytes);
            if (!r) {
                result.initiator_error = r.error();
            } else if (*r == MseHandshake::Progress::done) {
                result.initiator = initiator->take_outcome();
                // The rest of the last read is the stream's: the caller decrypts it itself.
                if (result.initiator->cipher) result.initiator->cipher->decrypt(rest);
                auto& remainder = result.initiator->remainder;
                remainder.insert(remainder.end(), rest.begin(), rest.end());
            }
        }
        if ((result.initiator || result.initiator_error) &&
            (result.responder || result.responder_error)) {
            break;
        }
        if (to_responder.empty() && to_initiator.empty()) break;
    }
    return result;
}

// Checks that the two cipher pairs talk both ways, several messages each.
void expect_streams_interoperate(StreamCipher& a, StreamCipher& b) {
    for (int i = 0; i < 5; ++i) {
        const Bytes message = pseudo_random(16 + 977 * i, 40 + i);
        Bytes wire_ab = message;
        a.encrypt(wire_ab);
        EXPECT_NE(wire_ab, message);
        b.decrypt(wire_ab);
        EXPECT_EQ(wire_ab, message);
        Bytes wire_ba = message;
        b.encrypt(wire_ba);
        a.decrypt(wire_ba);
        EXPECT_EQ(wire_ba, message);
    }
}

// ---- the building blocks --------------------------------------------------------------

Bytes from_hex(std::string_view hex) {
    Bytes out;
    for (std::size_t i = 0; i + 1 < hex.size(); i += 2) {
        out.push_back(static_cast<std::uint8_t>(std::stoi(std::string(hex.substr(i, 2)), nullptr, 16)));
    }
    return out;
}

TEST(Mse, PrimeIsTheSpecsNotOakleyGroupOne) {
    // The spec's P, typed again here from the spec. It shares its first 87 bytes with RFC
    // 2409's 768-bit group (OpenSSL's BN_get_rfc2409_prime_768) but not its end: swapping
    // OpenSSL's in would break every handshake with other clients.
    const Bytes spec = from_hex(
        "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD1"
        "29024E088A67CC74020BBEA63B139B22514A08798E3404DD"
        "EF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245"
        "E485B576625E7EC6F44C42E9A63A36210000000000090563");
    EXPECT_EQ(Bytes(prime().begin(), prime().end()), spec);
    BIGNUM* oakley = BN_get_rfc2409_prime_768(nullptr);
    ASSERT_NE(oakley, nullptr);
    PublicKey oakley_bytes{};
    ASSERT_EQ(BN_bn2binpad(oakley, oakley_bytes.data(), static_cast<int>(oakley_bytes.size())), 96);
    BN_free(oakley);
    EXPECT_NE(prime(), oakley_bytes);
    EXPECT_TRUE(std::equal(prime().begin(), prime().begin() + 87, oakley_bytes.begin()));
}

TEST(Mse, DiffieHellmanKnownAnswers) {
    // Computed independently (Python's pow(2, x, P) and pow(y, x2, P)).
    PrivateKey x{};
    for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<std::uint8_t>(i + 1);
    auto pair = make_key_pair(x);
    ASSERT_TRUE(pair.ok()) << pair.error().message;
    EXPECT_EQ(Bytes(pair->public_key.begin(), pair->public_key.end()),
              from_hex("96e112dab29e8c5272accb9b17b26887ce54a144a4e3b697c7d159b7a817e556"
                       "b0918db2b4c658e02a87f7e5fb14b18a553e084cbf3dad2d30f16596ccb982d4"
                       "06258c61b30c5c1dae2ddc60bdbd48d79896312aad63238c39e1a633821eb693"));
    const Bytes x2 = from_hex("c8237ed9348fea45a0fb56b10c67c21d78d32e89");
    PrivateKey other{};
    std::copy(x2.begin(), x2.end(), other.begin());
    auto s = shared_secret(other, pair->public_key);
    ASSERT_TRUE(s.ok()) << s.error().message;
    EXPECT_EQ(Bytes(s->begin(), s->end()),
              from_hex("6e883711e876b95ac69934a98a75d878169113639e28b1dc6b3b478e10dccf3e"
                       "65409b54af426b43f45a564a52e2660caeda1d36380b3a4ed7a1bd73667e0cca"
                       "6022d89e46bc8af46b02e2507874d3f87d4f954c43b292c10b48055502ceb21d"));
}

TEST(Mse, PublicKeysArePowersOfTwoPaddedTo96Bytes) {
    auto one = make_key_pair(key_of(1));
    ASSERT_TRUE(one.ok()) << one.error().message;
    PublicKey two{};
    two.back() = 2;
    EXPECT_EQ(one->public_key, two);
    auto ten = make_key_pair(key_of(10));
    ASSERT_TRUE(ten.ok());
    PublicKey kilo{};
    kilo[94] = 0x04;  // 2^10 = 1024
    EXPECT_EQ(ten->public_key, kilo);
    EXPECT_FALSE(make_key_pair(PrivateKey{}).ok());  // all zeros

    auto random_a = make_key_pair();
    auto random_b = make_key_pair();
    ASSERT_TRUE(random_a.ok() && random_b.ok());
    EXPECT_NE(random_a->private_key, random_b->private_key);
    auto s_ab = shared_secret(random_a->private_key, random_b->public_key);
    auto s_ba = shared_secret(random_b->private_key, random_a->public_key);
    ASSERT_TRUE(s_ab.ok() && s_ba.ok());
    EXPECT_EQ(*s_ab, *s_ba);
}

TEST(Mse, PeerPublicKeyOutOfRangeIsRefused) {
    const PrivateKey ours = key_of(77);
    PublicKey y{};
    auto check_refused = [&](const PublicKey& key, const char* what) {
        auto s = shared_secret(ours, key);
        ASSERT_FALSE(s.ok()) << what;
        EXPECT_NE(s.error().message.find("peer's public key out of range"), std::string::npos);
    };
    check_refused(y, "0");
    y.back() = 1;
    check_refused(y, "1");
    PublicKey p = prime();
    check_refused(p, "P");
    PublicKey p_minus_1 = p;
    p_minus_1.back() -= 1;  // P ends in 0x63
    check_refused(p_minus_1, "P-1");
    PublicKey p_plus_1 = p;
    p_plus_1.back() += 1;
    check_refused(p_plus_1, "P+1");
    PublicKey all_ff;
    all_ff.fill(0xff);
    check_refused(all_ff, "2^768-1");
    y.back() = 2;
    EXPECT_TRUE(shared_secret(ours, y).ok());
    PublicKey p_minus_2 = p;
    p_minus_2.back() -= 2;
    EXPECT_TRUE(shared_secret(ours, p_minus_2).ok());
}

// RC4 written out here only as the test's oracle: the module itself uses OpenSSL's.
Bytes reference_rc4_drop1024(const Sha1Digest& key, std::size_t n) {
    std::array<std::uint8_t, 256> s{};
    for (int i = 0; i < 256; ++i) s[i] = static_cast<std::uint8_t>(i);
    for (int i = 0, j = 0; i < 256; ++i) {
        j = (j + s[i] + key[i % key.size()]) & 0xff;
        std::swap(s[i], s[j]);
    }
    Bytes stream;
    for (std::size_t k = 0, i = 0, j = 0; k < 1024 + n; ++k) {
        i = (i + 1) & 0xff;
        j = (j + s[i]) & 0xff;
        std::swap(s[i], s[j]);
        if (k >= 1024) stream.push_back(s[(s[i] + s[j]) & 0xff]);
    }
    return stream;
}

TEST(Mse, Rc4DropsTheFirst1024BytesOfEachKeystream) {
    ASSERT_TRUE(rc4_status().ok()) << rc4_status().error().message;
    const Sha1Digest out_key = sha1("out"), in_key = sha1("in");
    auto cipher = StreamCipher::from_keys(out_key, in_key);
    ASSERT_TRUE(cipher.ok()) << cipher.error().message;
    Bytes zeros(300, 0);
    cipher->encrypt(zeros);
    EXPECT_EQ(zeros, reference_rc4_drop1024(out_key, 300));
    Bytes more(300, 0);
    cipher->decrypt(more);
    EXPECT_EQ(more, reference_rc4_drop1024(in_key, 300));
    // keyA = HASH('keyA', S, SKEY) encrypts what the initiator sends.
    Secret secret{};
    secret[5] = 9;
    auto initiator = StreamCipher::make(secret, kInfoHash, true);
    ASSERT_TRUE(initiator.ok());
    Bytes first(20, 0);
    initiator->encrypt(first);
    EXPECT_EQ(first, reference_rc4_drop1024(hash("keyA", secret, kInfoHash), 20));
}

TEST(Mse, IncomingConnectionsAreToldApartFromTheirFirstBytes) {
    const Bytes plain = handshake_bytes(kInfoHash, 'p');
    EXPECT_TRUE(looks_like_plain_handshake(plain));
    EXPECT_EQ(classify_incoming(plain), Incoming::plain);
    EXPECT_EQ(classify_incoming(std::span(plain).first(20)), Incoming::plain);
    EXPECT_EQ(classify_incoming(std::span(plain).first(7)), Incoming::need_more);
    EXPECT_FALSE(looks_like_plain_handshake(std::span(plain).first(7)));
    EXPECT_EQ(classify_incoming({}), Incoming::need_more);
    auto keys = make_key_pair();
    ASSERT_TRUE(keys.ok());
    Bytes ya(keys->public_key.begin(), keys->public_key.end());
    ya[0] = 0x42;
    EXPECT_EQ(classify_incoming(std::span(ya).first(1)), Incoming::encrypted);
    EXPECT_FALSE(looks_like_plain_handshake(ya));
    Bytes almost = plain;
    almost[12] = 'P';
    EXPECT_EQ(classify_incoming(almost), Incoming::encrypted);
}

TEST(Mse, LookupAmongKnownInfoHashes) {
    const auto lookup = lookup_among({kOtherHash, kInfoHash});
    EXPECT_EQ(lookup(req2_hash(kInfoHash)), kInfoHash);
    EXPECT_EQ(lookup(req2_hash(kOtherHash)), kOtherHash);
    EXPECT_FALSE(lookup(req2_hash(sha1("nope"))).has_value());
    EXPECT_FALSE(lookup(kInfoHash).has_value());
}

// ---- both ends against each other ------------------------------------------------------

struct PolicyCase {
    Policy initiator;
    Policy responder;
    Method expected;
};

TEST(Mse, BothEndsAgreeInEveryChunkingMethodAndPayload) {
    const PolicyCase cases[] = {
        {Policy::prefer_rc4, Policy::prefer_rc4, Method::rc4},
        {Policy::require_rc4, Policy::prefer_rc4, Method::rc4},
        {Policy::prefer_rc4, Policy::require_rc4, Method::rc4},
        {Policy::plaintext_only, Policy::prefer_rc4, Method::plaintext},
        {Policy::prefer_rc4, Policy::plaintext_only, Method::plaintext},
        {Policy::plaintext_only, Policy::plaintext_only, Method::plaintext},
    };
    const Bytes payloads[] = {{}, handshake_bytes(kInfoHash, 'a'), pseudo_random(kMaxInitialPayload, 3)};
    const std::size_t chunks[] = {1, 2, 7, 97, 533, 0};
    const std::optional<std::uint16_t> pads[] = {std::nullopt, 0, 512};
    int runs = 0;
    for (const auto& c : cases) {
        for (const auto& payload : payloads) {
            for (const std::size_t chunk : chunks) {
                for (const auto& pad : pads) {
                    SCOPED_TRACE(::testing::Message() << "policies " << int(c.initiator) << "/"
                                                      << int(c.responder) << " payload "
                                                      << payload.size() << " chunk " << chunk
                                                      << " pad " << (pad ? int(*pad) : -1));
                    InitiatorOptions io;
                    io.info_hash = kInfoHash;
                    io.policy = c.initiator;
                    io.initial_payload = payload;
                    io.pad_length = pad;
                    ResponderOptions ro;
                    ro.find_info_hash = lookup_among({kOtherHash, kInfoHash});
                    ro.policy = c.responder;
                    ro.pad_length = pad;
                    const Bytes reply = handshake_bytes(kInfoHash, 'b');
                    PairResult r = run_pair(io, ro, chunk, reply);
                    ASSERT_FALSE(r.initiator_error) << r.initiator_error->message;
                    ASSERT_FALSE(r.responder_error) << r.responder_error->message;
                    ASSERT_TRUE(r.initiator && r.responder);
                    EXPECT_EQ(r.initiator->method, c.expected);
                    EXPECT_EQ(r.responder->method, c.expected);
                    EXPECT_EQ(r.responder->info_hash, kInfoHash);
                    EXPECT_EQ(r.initiator->info_hash, kInfoHash);
                    EXPECT_EQ(r.responder->initial_payload, payload);
                    EXPECT_TRUE(r.responder->remainder.empty());
                    EXPECT_EQ(r.initiator->remainder, reply);  // decrypted when RC4
                    EXPECT_TRUE(r.initiator->initial_payload.empty());
                    EXPECT_EQ(r.initiator->cipher.has_value(), c.expected == Method::rc4);
                    EXPECT_EQ(r.responder->cipher.has_value(), c.expected == Method::rc4);
                    if (r.initiator->cipher && r.responder->cipher) {
                        expect_streams_interoperate(*r.initiator->cipher, *r.responder->cipher);
                    }
                    ++runs;
                }
            }
        }
    }
    EXPECT_EQ(runs, 6 * 3 * 6 * 3);
}

TEST(Mse, RandomPadsAndKeysEveryTime) {
    for (int i = 0; i < 20; ++i) {
        InitiatorOptions io;
        io.info_hash = kInfoHash;
        io.initial_payload = handshake_bytes(kInfoHash, 'a');
        ResponderOptions ro;
        ro.find_info_hash = lookup_among({kInfoHash});
        PairResult r = run_pair(io, ro, 0);
        ASSERT_TRUE(r.initiator && r.responder);
        EXPECT_EQ(r.responder->initial_payload, io.initial_payload);
        expect_streams_interoperate(*r.initiator->cipher, *r.responder->cipher);
    }
}

TEST(Mse, PolicyMismatchesFailClearly) {
    auto expect_mismatch = [](Policy initiator, Policy responder) {
        InitiatorOptions io;
        io.info_hash = kInfoHash;
        io.policy = initiator;
        ResponderOptions ro;
        ro.find_info_hash = lookup_among({kInfoHash});
        ro.policy = responder;
        PairResult r = run_pair(io, ro, 0);
        ASSERT_TRUE(r.responder_error.has_value());
        EXPECT_NE(r.responder_error->message.find("crypto_provide offers nothing we accept"),
                  std::string::npos)
            << r.responder_error->message;
        EXPECT_FALSE(r.initiator.has_value());
    };
    expect_mismatch(Policy::require_rc4, Policy::plaintext_only);
    expect_mismatch(Policy::plaintext_only, Policy::require_rc4);
}

TEST(Mse, FactoriesRefuseWhatTheyCannotDo) {
    InitiatorOptions io;
    io.initial_payload.resize(kMaxInitialPayload + 1);
    EXPECT_FALSE(MseHandshake::initiator(io).ok());
    io.initial_payload.resize(kMaxInitialPayload);
    EXPECT_TRUE(MseHandshake::initiator(io).ok());
    io.private_key = PrivateKey{};
    EXPECT_FALSE(MseHandshake::initiator(io).ok());
    ResponderOptions ro;  // no lookup
    EXPECT_FALSE(MseHandshake::responder(ro).ok());
}

// ---- hostile peers, played by hand ----------------------------------------------------

// The initiator's side of steps 1 and 3, with every field under the test's control.
struct ScriptedInitiator {
    KeyPair keys = make_key_pair().value();
    Sha1Digest info_hash = kInfoHash;
    std::size_t pad_a = 0;
    std::size_t pad_c = 0;
    std::uint32_t provide = 0x03;
    Bytes initial = handshake_bytes(kInfoHash, 'a');
    std::optional<std::uint16_t> initial_length;  // len(IA) as sent, when it lies
    std::uint8_t vc_first = 0;                     // nonzero: a wrong VC
    Bytes after;                                   // stream bytes right after the IA
    std::optional<StreamCipher> cipher;

    Bytes step1() const {
        Bytes out(keys.public_key.begin(), keys.public_key.end());
        out.resize(out.size() + pad_a, 0xab);
        return out;
    }
    Bytes step3(std::span<const std::uint8_t> yb) {
        const Secret s = shared_secret(keys.private_key, yb.first<kKeyBytes>()).value();
        cipher.emplace(StreamCipher::make(s, info_hash, true).value());
        Bytes out;
        const auto req1 = hash("req1", s);
        out.insert(out.end(), req1.begin(), req1.end());
        const auto req2 = req2_hash(info_hash), req3 = hash("req3", s);
        for (std::size_t i = 0; i < 20; ++i) out.push_back(req2[i] ^ req3[i]);
        Bytes enc(8, 0);
        enc[0] = vc_first;
        for (int shift = 24; shift >= 0; shift -= 8) enc.push_back(static_cast<std::uint8_t>(provide >> shift));
        enc.push_back(static_cast<std::uint8_t>(pad_c >> 8));
        enc.push_back(static_cast<std::uint8_t>(pad_c));
        enc.resize(enc.size() + pad_c, 0x5a);
        const std::uint16_t ia_len = initial_length.value_or(static_cast<std::uint16_t>(initial.size()));
        enc.push_back(static_cast<std::uint8_t>(ia_len >> 8));
        enc.push_back(static_cast<std::uint8_t>(ia_len));
        enc.insert(enc.end(), initial.begin(), initial.end());
        enc.insert(enc.end(), after.begin(), after.end());  // stream after IA: RC4 here
        cipher->encrypt(enc);
        out.insert(out.end(), enc.begin(), enc.end());
        return out;
    }
};

MseHandshake make_responder(Policy policy = Policy::prefer_rc4) {
    ResponderOptions ro;
    ro.find_info_hash = lookup_among({kInfoHash});
    ro.policy = policy;
    return std::move(MseHandshake::responder(std::move(ro))).value();
}

// Steps 1 to 3 against a responder; returns feed()'s last result.
Result<MseHandshake::Progress> script_responder(MseHandshake& responder, ScriptedInitiator& peer,
                                                Bytes* replies = nullptr) {
    Bytes out;
    auto first = responder.feed(peer.step1(), out);
    if (!first) return first;
    EXPECT_GE(out.size(), kKeyBytes);
    const Bytes step3 = peer.step3(std::span(out).first(kKeyBytes));
    out.clear();
    auto last = responder.feed(step3, out);
    if (replies) *replies = out;
    return last;
}

void expect_error(const Result<MseHandshake::Progress>& r, const std::string& words) {
    ASSERT_FALSE(r.ok()) << "expected an error with \"" << words << "\"";
    EXPECT_NE(r.error().message.find(words), std::string::npos) << r.error().message;
}

TEST(MseHostile, ScriptedInitiatorIsUnderstoodAndItsStreamBytesComeDecrypted) {
    MseHandshake responder = make_responder();
    ScriptedInitiator peer;
    peer.pad_a = 512;
    peer.pad_c = 512;
    peer.initial = pseudo_random(kMaxInitialPayload, 9);
    peer.after = bytes("interested, and more after the IA");
    Bytes replies;
    auto r = script_responder(responder, peer, &replies);
    ASSERT_TRUE(r.ok()) << r.error().message;
    EXPECT_EQ(*r, MseHandshake::Progress::done);
    Outcome o = responder.take_outcome();
    EXPECT_EQ(o.method, Method::rc4);
    EXPECT_EQ(o.initial_payload, peer.initial);
    EXPECT_EQ(o.remainder, peer.after);
    // Step 4 decrypts on the peer's side to VC, crypto_select = RC4, len(PadD) = 0.
    ASSERT_EQ(replies.size(), 14u);
    peer.cipher->decrypt(replies);
    const Bytes expected = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0};
    EXPECT_EQ(replies, expected);
    expect_streams_interoperate(*peer.cipher, *o.cipher);
}

TEST(MseHostile, PlaintextMethodLeavesTheBytesAfterTheIaAsTheyCame) {
    MseHandshake responder = make_responder(Policy::plaintext_only);
    ScriptedInitiator peer;
    peer.provide = 0x01;
    Bytes out;
    ASSERT_TRUE(responder.feed(peer.step1(), out).ok());
    Bytes step3 = peer.step3(std::span(out).first(kKeyBytes));
    const Bytes plain_after = bytes("plain after");
    step3.insert(step3.end(), plain_after.begin(), plain_after.end());
    out.clear();
    auto r = responder.feed(step3, out);
    ASSERT_TRUE(r.ok()) << r.error().message;
    EXPECT_EQ(*r, MseHandshake::Progress::done);
    EXPECT_EQ(responder.outcome().method, Method::plaintext);
    EXPECT_EQ(responder.outcome().initial_payload, peer.initial);
    EXPECT_EQ(responder.outcome().remainder, plain_after);
    EXPECT_FALSE(responder.outcome().cipher.has_value());
}

TEST(MseHostile, GarbageFindsNoSynchronisation) {
    MseHandshake responder = make_responder();
    Bytes out;
    auto r = responder.feed(pseudo_random(4000, 1), out);
    expect_error(r, "no synchronisation hash within 532 bytes");
    EXPECT_EQ(responder.buffered(), 0u);
    // Dead for good: the same error again.
    expect_error(responder.feed(bytes("x"), out), "no synchronisation hash");

    InitiatorOptions io;
    io.info_hash = kInfoHash;
    auto initiator = MseHandshake::initiator(io).value();
    Bytes to_peer;
    ASSERT_TRUE(initiator.feed({}, to_peer).ok());
    expect_error(initiator.feed(pseudo_random(4000, 2), to_peer),
                 "no synchronisation (encrypted VC) within 520 bytes");
}

TEST(MseHostile, StallingPeerNeverGrowsTheBufferBeyondTheBound) {
    // PadA trickling in one byte at a time: need_more (the caller's timeout ends it), never
    // more than Ya's window held, and the 533rd byte after Ya without the hash ends it.
    MseHandshake responder = make_responder();
    ScriptedInitiator peer;
    Bytes out;
    ASSERT_TRUE(responder.feed(peer.step1(), out).ok());
    std::size_t fed = 0;
    Result<MseHandshake::Progress> r = MseHandshake::Progress::need_more;
    for (; fed < 10000; ++fed) {
        const std::uint8_t b = 0x11;
        r = responder.feed(std::span(&b, 1), out);
        if (!r.ok()) break;
        EXPECT_EQ(*r, MseHandshake::Progress::need_more);
        EXPECT_LT(responder.buffered(), kResponderSyncWindow);
    }
    EXPECT_EQ(fed + 1, kResponderSyncWindow);
    expect_error(r, "no synchronisation hash within 532 bytes");

    // A stall after the sync point: need_more, bounded.
    MseHandshake second = make_responder();
    ScriptedInitiator peer2;
    peer2.pad_c = 400;
    out.clear();
    ASSERT_TRUE(second.feed(peer2.step1(), out).ok());
    Bytes step3 = peer2.step3(std::span(out).first(kKeyBytes));
    step3.resize(step3.size() - 30);  // the end of the IA never comes
    for (std::uint8_t b : step3) {
        auto p = second.feed(std::span(&b, 1), out);
        ASSERT_TRUE(p.ok()) << p.error().message;
        ASSERT_EQ(*p, MseHandshake::Progress::need_more);
        EXPECT_LE(second.buffered(), kMaxResponderBytes);
    }
}

TEST(MseHostile, PaddingTooLong) {
    {
        // PadA of 513: the hash starts past the window.
        MseHandshake responder = make_responder();
        ScriptedInitiator peer;
        peer.pad_a = 513;
        expect_error(script_responder(responder, peer), "no synchronisation hash within 532 bytes");
    }
    {
        MseHandshake responder = make_responder();
        ScriptedInitiator peer;
        peer.pad_c = 513;
        expect_error(script_responder(responder, peer), "PadC of 513 bytes");
    }
}

TEST(MseHostile, WrongVerificationConstant) {
    MseHandshake responder = make_responder();
    ScriptedInitiator peer;
    peer.vc_first = 1;
    expect_error(script_responder(responder, peer), "wrong verification constant");
}

TEST(MseHostile, InfoHashWeDoNotServe) {
    MseHandshake responder = make_responder();
    ScriptedInitiator peer;
    peer.info_hash = kOtherHash;
    expect_error(script_responder(responder, peer), "not one we serve");
}

TEST(MseHostile, OversizeInitialPayload) {
    MseHandshake responder = make_responder();
    ScriptedInitiator peer;
    peer.initial_length = static_cast<std::uint16_t>(kMaxInitialPayload + 1);
    expect_error(script_responder(responder, peer), "initial payload of 4097 bytes");
    MseHandshake other = make_responder();
    ScriptedInitiator huge;
    huge.initial_length = 65535;
    expect_error(script_responder(other, huge), "initial payload of 65535 bytes");
}

TEST(MseHostile, CryptoProvideWithNothingKnown) {
    MseHandshake responder = make_responder();
    ScriptedInitiator peer;
    peer.provide = 0xfffffff0;
    expect_error(script_responder(responder, peer), "crypto_provide offers nothing we accept");
}

TEST(MseHostile, PublicKeyOutOfRangeAtEitherEnd) {
    for (const int which : {0, 1, 2, 3}) {
        PublicKey y{};
        if (which == 1) y.back() = 1;
        if (which >= 2) {
            y = prime();
            if (which == 2) y.back() -= 1;  // P-1; which == 3: P
        }
        MseHandshake responder = make_responder();
        Bytes out;
        expect_error(responder.feed(y, out), "peer's public key out of range");
        EXPECT_TRUE(out.empty());  // no Yb sent to such a peer

        InitiatorOptions io;
        io.info_hash = kInfoHash;
        auto initiator = MseHandshake::initiator(io).value();
        Bytes to_peer;
        ASSERT_TRUE(initiator.feed({}, to_peer).ok());
        expect_error(initiator.feed(y, to_peer), "peer's public key out of range");
    }
}

// The responder's side of steps 2 and 4, by hand, against our initiator.
struct ScriptedResponder {
    KeyPair keys = make_key_pair().value();
    std::size_t pad_b = 0;
    std::size_t pad_d = 0;
    std::uint32_t select = 0x02;

    // Given everything the initiator sent (Ya, PadA, step 3), steps 2 and 4.
    Bytes step2() const {
        Bytes out(keys.public_key.begin(), keys.public_key.end());
        out.resize(out.size() + pad_b, 0xcd);
        return out;
    }
    Bytes step4(std::span<const std::uint8_t> ya) const {
        const Secret s = shared_secret(keys.private_key, ya.first<kKeyBytes>()).value();
        auto cipher = StreamCipher::make(s, kInfoHash, false).value();
        Bytes enc(8, 0);
        for (int shift = 24; shift >= 0; shift -= 8) enc.push_back(static_cast<std::uint8_t>(select >> shift));
        enc.push_back(static_cast<std::uint8_t>(pad_d >> 8));
        enc.push_back(static_cast<std::uint8_t>(pad_d));
        enc.resize(enc.size() + pad_d, 0x77);
        cipher.encrypt(enc);
        return enc;
    }
};

Result<MseHandshake::Progress> script_initiator(Policy policy, const ScriptedResponder& peer) {
    InitiatorOptions io;
    io.info_hash = kInfoHash;
    io.policy = policy;
    auto initiator = MseHandshake::initiator(io).value();
    Bytes ya;
    EXPECT_TRUE(initiator.feed({}, ya).ok());
    Bytes in = peer.step2();
    const Bytes step4 = peer.step4(std::span(ya).first(kKeyBytes));
    in.insert(in.end(), step4.begin(), step4.end());
    Bytes out;
    auto r = initiator.feed(in, out);
    EXPECT_LE(initiator.buffered(), kMaxInitiatorBytes);
    return r;
}

TEST(MseHostile, InitiatorChecksCryptoSelectAndPadD) {
    ScriptedResponder peer;
    peer.pad_b = 512;
    peer.pad_d = 512;
    auto fine = script_initiator(Policy::prefer_rc4, peer);
    ASSERT_TRUE(fine.ok()) << fine.error().message;
    EXPECT_EQ(*fine, MseHandshake::Progress::done);

    peer.select = 0x02;
    expect_error(script_initiator(Policy::plaintext_only, peer), "crypto_select offers nothing we accept");
    peer.select = 0x03;  // both: a select must pick one
    expect_error(script_initiator(Policy::prefer_rc4, peer), "crypto_select offers nothing we accept");
    peer.select = 0;
    expect_error(script_initiator(Policy::prefer_rc4, peer), "crypto_select offers nothing we accept");
    peer.select = 0x01;
    expect_error(script_initiator(Policy::require_rc4, peer), "crypto_select offers nothing we accept");

    ScriptedResponder long_pad;
    long_pad.pad_d = 513;
    expect_error(script_initiator(Policy::prefer_rc4, long_pad), "PadD of 513 bytes");
    ScriptedResponder late_vc;
    late_vc.pad_b = 513;
    expect_error(script_initiator(Policy::prefer_rc4, late_vc),
                 "no synchronisation (encrypted VC) within 520 bytes");
}

TEST(MseHostile, FeedAfterDoneIsAnError) {
    MseHandshake responder = make_responder();
    ScriptedInitiator peer;
    auto r = script_responder(responder, peer);
    ASSERT_TRUE(r.ok());
    Bytes out;
    EXPECT_FALSE(responder.feed(bytes("more"), out).ok());
}

TEST(MseHostile, RandomBytesAtEveryStageNeverCrash) {
    // A valid exchange with one byte of step 3 flipped at a time: an error or, where the byte
    // is padding or payload, a completed handshake; never more buffered than the bound.
    ScriptedInitiator peer;
    peer.pad_a = 5;
    peer.pad_c = 3;
    const PrivateKey fixed = key_of(0x5d);
    const PublicKey responder_y = make_key_pair(fixed).value().public_key;
    for (std::size_t flip = 0; flip < 200; ++flip) {
        ResponderOptions ro;
        ro.find_info_hash = lookup_among({kInfoHash});
        ro.private_key = fixed;
        ro.pad_length = 0;
        auto responder = MseHandshake::responder(ro).value();
        Bytes wire = peer.step1();
        Bytes step3 = peer.step3(responder_y);
        wire.insert(wire.end(), step3.begin(), step3.end());
        ASSERT_LT(flip, wire.size());
        wire[flip] ^= 0x80;
        Bytes replies;
        auto result = responder.feed(wire, replies);
        EXPECT_LE(responder.buffered(), kMaxResponderBytes);
        if (result.ok() && *result == MseHandshake::Progress::done) {
            EXPECT_GE(flip, kKeyBytes);  // a changed Ya changes S: never done
        }
    }
}

}  // namespace
}  // namespace pw::mse
