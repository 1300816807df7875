// The MSE/PE handshake with the fuzzer as the peer. Input layout:
//   byte 0: what runs (mod 3)
//     0: our responder, fed the rest as the initiator's bytes
//     1: our initiator, fed the rest as the responder's bytes
//     2: both ends against each other, the rest choosing policies, pads, the IA and chunking
//   byte 1: the chunk size the peer's bytes arrive in (0: all at once)
// Both ends use fixed private keys (the peer's recorded exchanges in the seed corpus were made
// against them, so mutations reach past the Diffie-Hellman step into the encrypted fields).
// Invariants: never more buffered than the bounds, the IA within its cap, a completed
// responder found our info-hash, and two honest ends always agree.
//
// The seed corpus (tests/fuzz/corpus/mse) is written by this program:
//   PW_MSE_WRITE_CORPUS=tests/fuzz/corpus/mse build/fuzz/fuzz_mse
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "core/mse.hpp"
#include "core/sha1.hpp"

namespace {

using pw::mse::MseHandshake;
using Bytes = std::vector<std::uint8_t>;

constexpr pw::mse::PrivateKey kOurKey = {0x3a, 0x51, 0x07, 0xc2, 0x9e, 0x44, 0x18, 0xd0, 0x6b, 0x2f,
                                         0x81, 0x5c, 0xe3, 0x0a, 0x77, 0x95, 0x26, 0xbd, 0x4e, 0x13};
constexpr pw::mse::PrivateKey kPeerKey = {0x71, 0x0e, 0xa4, 0x39, 0x5d, 0xc8, 0x12, 0x6f, 0x93, 0x2a,
                                          0xe7, 0x40, 0x1b, 0xd6, 0x85, 0x3c, 0x59, 0xf2, 0x08, 0xab};

const pw::Sha1Digest& info_hash() {
    static const pw::Sha1Digest hash = pw::sha1("fuzz_mse torrent");
    return hash;
}

Bytes plain_handshake(std::uint8_t who) {
    Bytes out = {19, 'B', 'i', 't', 'T', 'o', 'r', 'r', 'e', 'n',
                 't', ' ', 'p', 'r', 'o', 't', 'o', 'c', 'o', 'l'};
    out.resize(28, 0);
    out.insert(out.end(), info_hash().begin(), info_hash().end());
    out.resize(68, who);
    return out;
}

void check(bool condition) {
    if (!condition) __builtin_trap();
}

MseHandshake make_initiator(const pw::mse::PrivateKey& key, pw::mse::Policy policy, Bytes payload,
                            std::optional<std::uint16_t> pad) {
    pw::mse::InitiatorOptions options;
    options.info_hash = info_hash();
    options.policy = policy;
    options.initial_payload = std::move(payload);
    options.private_key = key;
    options.pad_length = pad;
    auto made = MseHandshake::initiator(std::move(options));
    check(made.ok());
    return std::move(made).value();
}

MseHandshake make_responder(const pw::mse::PrivateKey& key, pw::mse::Policy policy,
                            std::optional<std::uint16_t> pad) {
    pw::mse::ResponderOptions options;
    options.find_info_hash = pw::mse::lookup_among({pw::sha1("another torrent"), info_hash()});
    options.policy = policy;
    options.private_key = key;
    options.pad_length = pad;
    auto made = MseHandshake::responder(std::move(options));
    check(made.ok());
    return std::move(made).value();
}

// Feeds `data` in chunks; returns how many bytes were fed (fewer than all when done came
// first: the rest is the caller's stream), or nullopt on error.
std::optional<std::size_t> feed(MseHandshake& hs, std::span<const std::uint8_t> data,
                                std::size_t chunk, Bytes& out, bool initiator) {
    const std::size_t bound = initiator ? pw::mse::kMaxInitiatorBytes : pw::mse::kMaxResponderBytes;
    const std::size_t step = chunk == 0 ? std::max<std::size_t>(data.size(), 1) : chunk;
    std::size_t at = 0;
    do {
        const std::size_t n = std::min(step, data.size() - at);
        auto r = hs.feed(data.subspan(at, n), out);
        at += n;
        if (!r.ok()) {
            check(!r.error().message.empty());
            check(hs.buffered() == 0);
            return std::nullopt;
        }
        if (*r == MseHandshake::Progress::done) return at;
        check(hs.buffered() <= bound);
    } while (at < data.size());
    return at;
}

void one_side(bool initiator, std::size_t chunk, std::span<const std::uint8_t> peer_bytes) {
    MseHandshake ours = initiator
                            ? make_initiator(kOurKey, pw::mse::Policy::prefer_rc4, plain_handshake('o'), 0)
                            : make_responder(kOurKey, pw::mse::Policy::prefer_rc4, 0);
    Bytes out;
    if (initiator) check(ours.feed({}, out).ok());
    const auto fed = feed(ours, peer_bytes, chunk, out, initiator);
    if (!fed || !ours.done()) return;
    const pw::mse::Outcome& outcome = ours.outcome();
    check(outcome.info_hash == info_hash());
    check(outcome.initial_payload.size() <= pw::mse::kMaxInitialPayload);
    check(initiator ? outcome.initial_payload.empty() : true);
    check(outcome.cipher.has_value() == (outcome.method == pw::mse::Method::rc4));
}

// Reads fuzz bytes as parameters, zero when they run out.
struct Reader {
    std::span<const std::uint8_t> data;
    std::size_t at = 0;
    std::uint8_t byte() { return at < data.size() ? data[at++] : 0; }
    std::uint16_t u16() { return static_cast<std::uint16_t>((byte() << 8) | byte()); }
};

pw::mse::Policy policy_of(std::uint8_t b) {
    switch (b % 3) {
        case 0: return pw::mse::Policy::prefer_rc4;
        case 1: return pw::mse::Policy::require_rc4;
        default: return pw::mse::Policy::plaintext_only;
    }
}

bool compatible(pw::mse::Policy a, pw::mse::Policy b) {
    using P = pw::mse::Policy;
    if (a == P::prefer_rc4 || b == P::prefer_rc4) return true;
    return a == b;
}

void pair(std::span<const std::uint8_t> params) {
    Reader r{params};
    const pw::mse::Policy ip = policy_of(r.byte());
    const pw::mse::Policy rp = policy_of(r.byte());
    const std::uint16_t pad_a = r.u16() % 513;
    const std::uint16_t pad_b = r.u16() % 513;
    const std::size_t to_responder_chunk = r.byte();
    const std::size_t to_initiator_chunk = r.byte();
    const std::size_t ia_size = r.u16() % (pw::mse::kMaxInitialPayload + 1);
    Bytes payload;
    for (std::size_t i = 0; i < ia_size; ++i) payload.push_back(r.byte());
    const Bytes reply = plain_handshake('r');

    MseHandshake initiator = make_initiator(kPeerKey, ip, payload, pad_a);
    MseHandshake responder = make_responder(kOurKey, rp, pad_b);
    Bytes to_responder, to_initiator, initiator_got;
    std::optional<pw::mse::Outcome> responder_outcome;
    bool failed = false;
    check(initiator.feed({}, to_responder).ok());
    for (int round = 0; round < 6 && !failed && !initiator.done(); ++round) {
        if (!to_responder.empty() && !responder.done()) {
            Bytes in = std::move(to_responder);
            to_responder.clear();
            auto fed = feed(responder, in, to_responder_chunk, to_initiator, false);
            if (!fed) {
                failed = true;
                break;
            }
            check(*fed == in.size());  // an initiator sends nothing after its IA unasked
            if (responder.done()) {
                responder_outcome = responder.take_outcome();
                Bytes after = reply;
                if (responder_outcome->cipher) responder_outcome->cipher->encrypt(after);
                to_initiator.insert(to_initiator.end(), after.begin(), after.end());
            }
        }
        if (!to_initiator.empty()) {
            Bytes in = std::move(to_initiator);
            to_initiator.clear();
            auto fed = feed(initiator, in, to_initiator_chunk, to_responder, true);
            check(fed.has_value());  // an honest responder never makes it fail
            if (initiator.done()) {
                initiator_got = initiator.outcome().remainder;
                initiator_got.insert(initiator_got.end(), in.begin() + static_cast<std::ptrdiff_t>(*fed), in.end());
            }
        }
    }
    if (!compatible(ip, rp)) {
        check(failed && !responder_outcome && !initiator.done());
        return;
    }
    check(!failed && responder_outcome && initiator.done());
    pw::mse::Outcome initiator_outcome = initiator.take_outcome();
    check(initiator_outcome.method == responder_outcome->method);
    check(responder_outcome->initial_payload == payload);
    check(responder_outcome->info_hash == info_hash());
    if (initiator_outcome.cipher) {
        // The rest of the last read: the caller decrypts it itself.
        const std::size_t from = initiator_outcome.remainder.size();
        initiator_outcome.cipher->decrypt(std::span(initiator_got).subspan(from));
        Bytes ping = payload;
        initiator_outcome.cipher->encrypt(ping);
        responder_outcome->cipher->decrypt(ping);
        check(ping == payload);
    }
    check(initiator_got == reply);
}

// ---- the seed corpus ------------------------------------------------------------------

void write_file(const std::string& dir, const std::string& name, std::uint8_t mode,
                std::uint8_t chunk, const Bytes& body) {
    std::ofstream file(dir + "/" + name, std::ios::binary);
    file.put(static_cast<char>(mode));
    file.put(static_cast<char>(chunk));
    file.write(reinterpret_cast<const char*>(body.data()), static_cast<std::streamsize>(body.size()));
}

// What the peer (kPeerKey) sends in a whole exchange against our end (kOurKey).
Bytes record(bool peer_is_initiator, pw::mse::Policy peer_policy, std::uint16_t peer_pad) {
    MseHandshake peer = peer_is_initiator
                            ? make_initiator(kPeerKey, peer_policy, plain_handshake('p'), peer_pad)
                            : make_responder(kPeerKey, peer_policy, peer_pad);
    MseHandshake ours = peer_is_initiator
                            ? make_responder(kOurKey, pw::mse::Policy::prefer_rc4, 0)
                            : make_initiator(kOurKey, pw::mse::Policy::prefer_rc4, plain_handshake('o'), 0);
    Bytes from_peer, from_us, recorded;
    if (peer_is_initiator) {
        check(peer.feed({}, from_peer).ok());
    } else {
        check(ours.feed({}, from_us).ok());
    }
    for (int round = 0; round < 6; ++round) {
        if (!from_us.empty() && !peer.done()) {
            Bytes in = std::move(from_us);
            from_us.clear();
            check(peer.feed(in, from_peer).ok());
            if (peer.done() && !peer_is_initiator) {
                // The responder's BitTorrent handshake follows step 4.
                pw::mse::Outcome o = peer.take_outcome();
                Bytes reply = plain_handshake('p');
                if (o.cipher) o.cipher->encrypt(reply);
                from_peer.insert(from_peer.end(), reply.begin(), reply.end());
            }
        }
        if (!from_peer.empty() && !ours.done()) {
            recorded.insert(recorded.end(), from_peer.begin(), from_peer.end());
            Bytes in = std::move(from_peer);
            from_peer.clear();
            check(ours.feed(in, from_us).ok());
        }
    }
    check(ours.done());
    return recorded;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    const char* dir = std::getenv("PW_MSE_WRITE_CORPUS");
    if (dir == nullptr) return 0;
    using P = pw::mse::Policy;
    write_file(dir, "responder_rc4", 0, 0, record(true, P::prefer_rc4, 17));
    write_file(dir, "responder_rc4_chunks_of_7", 0, 7, record(true, P::require_rc4, 0));
    write_file(dir, "responder_plaintext", 0, 0, record(true, P::plaintext_only, 512));
    write_file(dir, "initiator_rc4", 1, 0, record(false, P::prefer_rc4, 33));
    write_file(dir, "initiator_plaintext_bytewise", 1, 1, record(false, P::plaintext_only, 0));
    write_file(dir, "pair_rc4", 2, 0, {0, 0, 0, 5, 1, 200, 3, 0, 0, 68});
    write_file(dir, "pair_plaintext_chunked", 2, 0, {2, 0, 2, 0, 0, 0, 1, 9, 0, 3, 'a', 'b', 'c'});
    write_file(dir, "pair_mismatch", 2, 0, {1, 2, 0, 0, 0, 0, 0, 0, 0, 0});
    std::exit(0);
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 2) return 0;
    const std::span<const std::uint8_t> rest(data + 2, size - 2);
    switch (data[0] % 3) {
        case 0: one_side(false, data[1], rest); break;
        case 1: one_side(true, data[1], rest); break;
        default: pair(rest); break;
    }
    return 0;
}
