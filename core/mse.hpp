#pragma once
// Message Stream Encryption / Protocol Encryption (MSE/PE): the obfuscated BitTorrent
// handshake Azureus, µTorrent and others agreed on in 2006, as a sans-I/O state machine for
// both ends of a connection. No sockets, no clocks: bytes from the peer go in through
// feed(), bytes for the peer come out into the caller's buffer. The caller owns the socket
// and the timeout (a peer that stops sending leaves the handshake in need_more for ever).
//
//   1 A->B  Ya, PadA
//   2 B->A  Yb, PadB
//   3 A->B  HASH('req1', S), HASH('req2', SKEY) xor HASH('req3', S),
//           ENCRYPT(VC, crypto_provide, len(PadC), PadC, len(IA)), ENCRYPT(IA)
//   4 B->A  ENCRYPT(VC, crypto_select, len(PadD), PadD), ENCRYPT2(payload stream)
//   5 A->B  ENCRYPT2(payload stream)
//
// Y = 2^X mod P (P the spec's 768-bit prime, X 160 random bits), S = Y'^X mod P, both as 96
// big-endian bytes; HASH is SHA-1; SKEY is the torrent's info-hash; VC is 8 zero bytes;
// ENCRYPT is RC4 keyed with HASH('keyA', S, SKEY) from A to B and HASH('keyB', S, SKEY) from
// B to A, the first 1024 bytes of each keystream discarded. ENCRYPT2 is the method B selected:
// the same RC4 streams carried on, or plaintext. The IA (A's initial payload, usually its
// BitTorrent handshake) is RC4 whichever method is selected.
//
// Diffie-Hellman (BIGNUM) and RC4 (EVP) come from OpenSSL. On OpenSSL 3, RC4 lives in the
// legacy provider: this module loads it into a library context of its own, so the rest of
// the process keeps OpenSSL's defaults. Without it (an OpenSSL built without RC4, or no
// legacy module installed) no MSE handshake is possible at all, since steps 3 and 4 are
// RC4 whatever the method: rc4_status() says why, the factories fail with that message, and
// only plain BitTorrent remains (the caller then fails a policy that requires encryption).
//
// Remote input never throws or asserts: every problem is a pw::Error naming it.
#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "core/result.hpp"
#include "core/sha1.hpp"

// OpenSSL's type, declared here so that users of this header need not include OpenSSL's.
struct evp_cipher_ctx_st;

namespace pw::mse {

inline constexpr std::size_t kKeyBytes = 96;           // Ya, Yb and S, big-endian, padded
inline constexpr std::size_t kPrivateKeyBytes = 20;    // X: 160 bits
inline constexpr std::size_t kMaxPad = 512;            // PadA, PadB, PadC, PadD
inline constexpr std::size_t kVcBytes = 8;
// The spec lets len(IA) go to 65535. Clients send their 68-byte BitTorrent handshake; we
// accept up to 4096 bytes, and send no more than that ourselves.
inline constexpr std::size_t kMaxInitialPayload = 4096;
// Where the responder looks for HASH('req1', S): after Ya, at most PadA's 512 bytes, then
// the 20 bytes of the hash.
inline constexpr std::size_t kResponderSyncWindow = kMaxPad + 20;
// Where the initiator looks for ENCRYPT(VC): after Yb, at most PadB, then the 8 bytes.
inline constexpr std::size_t kInitiatorSyncWindow = kMaxPad + kVcBytes;
// The most bytes each side reads from its peer before the handshake is done; a handshake
// never holds more than this (plus what one feed() brings past the end, when it ends).
inline constexpr std::size_t kMaxResponderBytes =
    kKeyBytes + kResponderSyncWindow + 20 + kVcBytes + 4 + 2 + kMaxPad + 2 + kMaxInitialPayload;
inline constexpr std::size_t kMaxInitiatorBytes =
    kKeyBytes + kInitiatorSyncWindow + 4 + 2 + kMaxPad;

// crypto_provide / crypto_select bits.
enum class Method : std::uint32_t { plaintext = 0x01, rc4 = 0x02 };

enum class Policy {
    prefer_rc4,      // provide both, select RC4 when the peer offers it
    require_rc4,     // provide and accept only RC4
    plaintext_only,  // provide and accept only the plaintext method (whether to speak MSE at
                     // all then is the caller's choice)
};

using PrivateKey = std::array<std::uint8_t, kPrivateKeyBytes>;
using PublicKey = std::array<std::uint8_t, kKeyBytes>;
using Secret = std::array<std::uint8_t, kKeyBytes>;

// Ok when OpenSSL provides RC4 (on OpenSSL 3: its legacy provider could be loaded); the
// reason otherwise. Looked up once per process.
Status rc4_status();

// Two RC4 states, one per direction, each past its first 1024 bytes of keystream. Both work
// in place. Move-only.
class StreamCipher {
public:
    // keyA/keyB from S and SKEY; `initiator` says which one encrypts what we send.
    static Result<StreamCipher> make(const Secret& secret, const Sha1Digest& skey, bool initiator);
    // From two raw RC4 keys (the 1024 bytes are discarded here too).
    static Result<StreamCipher> from_keys(const Sha1Digest& outgoing_key,
                                          const Sha1Digest& incoming_key);

    StreamCipher(StreamCipher&&) noexcept = default;
    StreamCipher& operator=(StreamCipher&&) noexcept = default;
    ~StreamCipher();

    void encrypt(std::span<std::uint8_t> bytes);  // what we send
    void decrypt(std::span<std::uint8_t> bytes);  // what we receive

private:
    struct Free {
        void operator()(evp_cipher_ctx_st* context) const;
    };
    using Context = std::unique_ptr<evp_cipher_ctx_st, Free>;
    StreamCipher(Context out, Context in) : out_(std::move(out)), in_(std::move(in)) {}

    Context out_;
    Context in_;
};

// The building blocks, for the state machine below and for tests that play a peer by hand.
struct KeyPair {
    PrivateKey private_key{};
    PublicKey public_key{};
};
// A fresh private key from OpenSSL's RNG, or the given one (tests and fuzzing; all zeros is
// refused), and its public key.
Result<KeyPair> make_key_pair(std::optional<PrivateKey> fixed = std::nullopt);
// S from our private key and the peer's public key; the peer's key must lie in 1 < Y < P-1.
Result<Secret> shared_secret(const PrivateKey& ours, std::span<const std::uint8_t, kKeyBytes> theirs);
// HASH(tag, a, b): SHA-1 over the concatenation.
Sha1Digest hash(std::string_view tag, std::span<const std::uint8_t> a,
                std::span<const std::uint8_t> b = {});
// HASH('req2', info_hash): what a responder compares (req2 xor req3 xor HASH('req3', S)) with.
Sha1Digest req2_hash(const Sha1Digest& info_hash);
// The spec's prime P, 96 big-endian bytes.
const PublicKey& prime();

// Incoming connections: MSE or a plain BitTorrent handshake, from the first bytes.
inline constexpr std::size_t kDetectBytes = 20;  // 19, "BitTorrent protocol"
enum class Incoming { need_more, plain, encrypted };
// need_more only while the bytes so far are a prefix of a plain handshake's first 20 (a
// first byte other than 19 decides at once: encrypted).
Incoming classify_incoming(std::span<const std::uint8_t> first_bytes);
// True when the bytes start with the 20 bytes of a plain handshake; false when they differ
// or fewer than 20 were given (classify_incoming says when to wait for more).
bool looks_like_plain_handshake(std::span<const std::uint8_t> first_bytes);

// The responder's way to find SKEY: given HASH('req2', SKEY) from the peer, the info-hash of
// a torrent we serve, or nullopt.
using InfoHashLookup = std::function<std::optional<Sha1Digest>(const Sha1Digest& req2)>;
// A lookup over a fixed set of info-hashes (their req2 hashes computed once).
InfoHashLookup lookup_among(const std::vector<Sha1Digest>& info_hashes);

struct InitiatorOptions {
    Sha1Digest info_hash{};                     // SKEY
    Policy policy = Policy::prefer_rc4;
    std::vector<std::uint8_t> initial_payload;  // IA: usually our 68-byte handshake
    // For tests and fuzzing: a fixed private key and PadA length instead of random ones.
    std::optional<PrivateKey> private_key;
    std::optional<std::uint16_t> pad_length;
};

struct ResponderOptions {
    InfoHashLookup find_info_hash;
    Policy policy = Policy::prefer_rc4;
    std::optional<PrivateKey> private_key;      // tests and fuzzing
    std::optional<std::uint16_t> pad_length;    // PadB, tests and fuzzing
};

// What a finished handshake hands over to the connection.
struct Outcome {
    Method method = Method::plaintext;
    Sha1Digest info_hash{};                     // SKEY (the responder found it)
    std::vector<std::uint8_t> initial_payload;  // the responder: the peer's IA, decrypted
    std::vector<std::uint8_t> remainder;        // bytes after the handshake, decrypted if RC4
    std::optional<StreamCipher> cipher;         // set when the method is RC4
};

// One handshake, either end. PadC and PadD we send are empty (the spec's "standard
// practice"); PadA/PadB are 0-512 random bytes.
class MseHandshake {
public:
    enum class Progress { need_more, done };

    // Fail only on what the caller gave or the platform lacks, never on the peer: RC4
    // unavailable (rc4_status()), an initial payload over kMaxInitialPayload, a fixed private
    // key of all zeros or pad length over 512, a responder without find_info_hash.
    static Result<MseHandshake> initiator(InitiatorOptions options);
    static Result<MseHandshake> responder(ResponderOptions options);

    MseHandshake(MseHandshake&&) noexcept;
    MseHandshake& operator=(MseHandshake&&) noexcept;
    ~MseHandshake();

    // Takes the peer's bytes (all of them: none are left unread), appends what must be sent
    // to `out`, and says whether the handshake is done. An initiator's first call emits Ya
    // and PadA (call it with no bytes to start). After an Error the handshake is dead and
    // every later call returns the same Error; calling after done is an Error too.
    Result<Progress> feed(std::span<const std::uint8_t> in, std::vector<std::uint8_t>& out);

    bool done() const;
    // Bytes held between calls; at most kMaxResponderBytes / kMaxInitiatorBytes.
    std::size_t buffered() const;
    // Once done.
    const Outcome& outcome() const;
    Outcome take_outcome();

private:
    struct State;
    explicit MseHandshake(std::unique_ptr<State> state);
    std::unique_ptr<State> state_;
};

}  // namespace pw::mse
