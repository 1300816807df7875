#include "core/mse.hpp"

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/opensslv.h>
#include <openssl/rand.h>
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
#include <openssl/provider.h>
#endif

#include <algorithm>
#include <climits>
#include <cstring>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <utility>

namespace pw::mse {
namespace {

// The spec's P: the 768-bit MODP group of RFC 2409 (Oakley group 1); the generator is 2.
constexpr char kPrimeHex[] =
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A0879"
    "8E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A63A3621"
    "0000000000090563";

constexpr std::size_t kDiscard = 1024;  // RC4 keystream bytes thrown away per direction
constexpr std::size_t kHashBytes = 20;

std::string openssl_reason() {
    const unsigned long code = ERR_get_error();
    ERR_clear_error();
    if (code == 0) return "no reason given";
    char text[256];
    ERR_error_string_n(code, text, sizeof text);
    return text;
}

Error openssl_error(std::string_view what) {
    std::string message("OpenSSL: ");
    message += what;
    message += " failed (";
    message += openssl_reason();
    message += ")";
    return make_error(std::move(message));
}

// ---- Diffie-Hellman over the spec's group, with OpenSSL's BIGNUM ----------------------------

struct BnFree {
    void operator()(BIGNUM* n) const { BN_clear_free(n); }
};
struct BnCtxFree {
    void operator()(BN_CTX* c) const { BN_CTX_free(c); }
};
using Bn = std::unique_ptr<BIGNUM, BnFree>;
using BnCtx = std::unique_ptr<BN_CTX, BnCtxFree>;

// P, P-1, 2 and P's Montgomery form: made once and only read afterwards (safe to share
// between threads); kept for the life of the process.
struct Group {
    BIGNUM* p = nullptr;
    BIGNUM* p_minus_1 = nullptr;
    BIGNUM* g = nullptr;
    BN_MONT_CTX* mont = nullptr;
    std::string error;  // set when the group could not be made (allocation failure)
};

const Group& group() {
    static const Group made = [] {
        Group group;
        BnCtx ctx(BN_CTX_new());
        group.p_minus_1 = BN_new();
        group.g = BN_new();
        group.mont = BN_MONT_CTX_new();
        if (!ctx || group.p_minus_1 == nullptr || group.g == nullptr || group.mont == nullptr ||
            BN_hex2bn(&group.p, kPrimeHex) == 0 || BN_num_bytes(group.p) != int(kKeyBytes) ||
            BN_copy(group.p_minus_1, group.p) == nullptr || BN_sub_word(group.p_minus_1, 1) != 1 ||
            BN_set_word(group.g, 2) != 1 || BN_MONT_CTX_set(group.mont, group.p, ctx.get()) != 1) {
            group.error = openssl_error("setting up the MSE Diffie-Hellman group").message;
        }
        return group;
    }();
    return made;
}

Result<Bn> to_bn(std::span<const std::uint8_t> bytes) {
    Bn n(BN_bin2bn(bytes.data(), static_cast<int>(bytes.size()), nullptr));
    if (!n) return openssl_error("BN_bin2bn");
    return n;
}

// base^exponent mod P, as 96 big-endian bytes.
Result<PublicKey> mod_exp(const BIGNUM* base, const BIGNUM* exponent) {
    const Group& g = group();
    if (!g.error.empty()) return make_error(g.error);
    BnCtx ctx(BN_CTX_new());
    Bn result(BN_new());
    if (!ctx || !result ||
        BN_mod_exp_mont_consttime(result.get(), base, exponent, g.p, ctx.get(), g.mont) != 1) {
        return openssl_error("BN_mod_exp_mont_consttime");
    }
    PublicKey out{};
    if (BN_bn2binpad(result.get(), out.data(), static_cast<int>(out.size())) != int(out.size())) {
        return openssl_error("BN_bn2binpad");
    }
    return out;
}

// ---- RC4, from OpenSSL's legacy provider on OpenSSL 3 --------------------------------------

struct Rc4Source {
    const EVP_CIPHER* cipher = nullptr;
    std::string error;
};

const Rc4Source& rc4_source() {
    static const Rc4Source source = [] {
        Rc4Source found;
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
        // A library context of our own: loading "legacy" into the default one would change
        // which providers the whole process uses (and stop "default" loading by itself).
        // Kept for the life of the process.
        OSSL_LIB_CTX* context = OSSL_LIB_CTX_new();
        if (context == nullptr) {
            found.error = openssl_error("OSSL_LIB_CTX_new").message;
            return found;
        }
        if (OSSL_PROVIDER_load(context, "legacy") == nullptr) {
            std::string message(
                "RC4 is not available: OpenSSL 3 keeps it in its legacy provider, which could "
                "not be loaded (");
            message += openssl_reason();
            message += "); MSE is impossible, only plain BitTorrent";
            found.error = std::move(message);
            return found;
        }
        found.cipher = EVP_CIPHER_fetch(context, "RC4", nullptr);
#else
        found.cipher = EVP_rc4();
#endif
        if (found.cipher == nullptr) {
            std::string message("RC4 is not available from OpenSSL (");
            message += openssl_reason();
            message += "); MSE is impossible, only plain BitTorrent";
            found.error = std::move(message);
        }
        return found;
    }();
    return source;
}

std::uint32_t read_u32(const std::uint8_t* p) {
    return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) |
           (std::uint32_t{p[2]} << 8) | std::uint32_t{p[3]};
}
std::uint16_t read_u16(const std::uint8_t* p) {
    return static_cast<std::uint16_t>((p[0] << 8) | p[1]);
}
void put_u32(std::vector<std::uint8_t>& out, std::uint32_t v) {
    out.push_back(static_cast<std::uint8_t>(v >> 24));
    out.push_back(static_cast<std::uint8_t>(v >> 16));
    out.push_back(static_cast<std::uint8_t>(v >> 8));
    out.push_back(static_cast<std::uint8_t>(v));
}
void put_u16(std::vector<std::uint8_t>& out, std::size_t v) {
    out.push_back(static_cast<std::uint8_t>(v >> 8));
    out.push_back(static_cast<std::uint8_t>(v));
}

std::span<const std::uint8_t> bytes_of(std::string_view text) {
    return {reinterpret_cast<const std::uint8_t*>(text.data()), text.size()};
}

Result<std::uint16_t> random_pad_length(std::optional<std::uint16_t> fixed) {
    if (fixed) {
        if (*fixed > kMaxPad) return make_error("pad length over 512 bytes");
        return *fixed;
    }
    std::uint8_t two[2];
    if (RAND_bytes(two, sizeof two) != 1) return openssl_error("RAND_bytes");
    return static_cast<std::uint16_t>(read_u16(two) % (kMaxPad + 1));
}

Status append_random(std::vector<std::uint8_t>& out, std::size_t count) {
    const std::size_t at = out.size();
    out.resize(at + count);
    if (count != 0 && RAND_bytes(out.data() + at, static_cast<int>(count)) != 1) {
        out.resize(at);
        return openssl_error("RAND_bytes");
    }
    return ok_status();
}

// Where `needle` starts in haystack[from, limit] (offsets), or npos.
std::size_t find_at_most(std::span<const std::uint8_t> haystack,
                         std::span<const std::uint8_t> needle, std::size_t from,
                         std::size_t limit) {
    for (std::size_t at = from; at <= limit && at + needle.size() <= haystack.size(); ++at) {
        if (std::equal(needle.begin(), needle.end(), haystack.begin() + at)) return at;
    }
    return std::string::npos;
}

constexpr std::array<std::uint8_t, kDetectBytes> kPlainHeader = {
    19, 'B', 'i', 't', 'T', 'o', 'r', 'r', 'e', 'n', 't', ' ', 'p', 'r', 'o', 't', 'o', 'c', 'o', 'l'};

std::string hex32(std::uint32_t value) {
    static constexpr char digits[] = "0123456789abcdef";
    std::string out("0x");
    bool started = false;
    for (int shift = 28; shift >= 0; shift -= 4) {
        const unsigned nibble = (value >> shift) & 0xf;
        if (nibble != 0 || started || shift == 0) {
            out += digits[nibble];
            started = true;
        }
    }
    return out;
}

std::uint32_t provide_bits(Policy policy) {
    switch (policy) {
        case Policy::prefer_rc4: return 0x03;
        case Policy::require_rc4: return 0x02;
        case Policy::plaintext_only: return 0x01;
    }
    return 0x03;
}

}  // namespace

// ---- public building blocks ----------------------------------------------------------------

Status rc4_status() {
    const Rc4Source& source = rc4_source();
    if (source.cipher == nullptr) return make_error(source.error);
    return ok_status();
}

const PublicKey& prime() {
    static const PublicKey bytes = [] {
        PublicKey out{};
        const Group& g = group();
        if (g.error.empty()) BN_bn2binpad(g.p, out.data(), static_cast<int>(out.size()));
        return out;
    }();
    return bytes;
}

Result<KeyPair> make_key_pair(std::optional<PrivateKey> fixed) {
    KeyPair pair;
    if (fixed) {
        pair.private_key = *fixed;
        if (std::all_of(pair.private_key.begin(), pair.private_key.end(),
                        [](std::uint8_t b) { return b == 0; })) {
            return make_error("a private key of all zeros");
        }
    } else {
        do {
            if (RAND_priv_bytes(pair.private_key.data(), static_cast<int>(pair.private_key.size())) != 1) {
                return openssl_error("RAND_priv_bytes");
            }
        } while (std::all_of(pair.private_key.begin(), pair.private_key.end(),
                             [](std::uint8_t b) { return b == 0; }));
    }
    auto x = to_bn(pair.private_key);
    if (!x) return x.error();
    BN_set_flags(x->get(), BN_FLG_CONSTTIME);
    const Group& g = group();
    if (!g.error.empty()) return make_error(g.error);
    auto y = mod_exp(g.g, x->get());
    if (!y) return y.error();
    pair.public_key = *y;
    return pair;
}

Result<Secret> shared_secret(const PrivateKey& ours, std::span<const std::uint8_t, kKeyBytes> theirs) {
    const Group& g = group();
    if (!g.error.empty()) return make_error(g.error);
    auto y = to_bn(theirs);
    if (!y) return y.error();
    // 1 < Y < P-1: 0 and 1 (and P-1, of order 2) would make S guessable; P and over are not
    // residues at all.
    if (BN_cmp(y->get(), BN_value_one()) <= 0 || BN_cmp(y->get(), g.p_minus_1) >= 0) {
        return make_error("peer's public key out of range (not 1 < Y < P-1)");
    }
    auto x = to_bn(ours);
    if (!x) return x.error();
    BN_set_flags(x->get(), BN_FLG_CONSTTIME);
    return mod_exp(y->get(), x->get());
}

Sha1Digest hash(std::string_view tag, std::span<const std::uint8_t> a,
                std::span<const std::uint8_t> b) {
    std::vector<std::uint8_t> joined;
    joined.reserve(tag.size() + a.size() + b.size());
    const auto t = bytes_of(tag);
    joined.insert(joined.end(), t.begin(), t.end());
    joined.insert(joined.end(), a.begin(), a.end());
    joined.insert(joined.end(), b.begin(), b.end());
    return sha1(joined.data(), joined.size());
}

Sha1Digest req2_hash(const Sha1Digest& info_hash) { return hash("req2", info_hash); }

Incoming classify_incoming(std::span<const std::uint8_t> first_bytes) {
    const std::size_t n = std::min(first_bytes.size(), kPlainHeader.size());
    if (!std::equal(first_bytes.begin(), first_bytes.begin() + static_cast<std::ptrdiff_t>(n),
                    kPlainHeader.begin())) {
        return Incoming::encrypted;
    }
    return n == kPlainHeader.size() ? Incoming::plain : Incoming::need_more;
}

bool looks_like_plain_handshake(std::span<const std::uint8_t> first_bytes) {
    return classify_incoming(first_bytes) == Incoming::plain;
}

InfoHashLookup lookup_among(const std::vector<Sha1Digest>& info_hashes) {
    struct DigestHash {
        std::size_t operator()(const Sha1Digest& d) const {
            std::size_t h = 0;
            std::memcpy(&h, d.data(), sizeof h);
            return h;
        }
    };
    auto table = std::make_shared<std::unordered_map<Sha1Digest, Sha1Digest, DigestHash>>();
    for (const auto& info_hash : info_hashes) table->emplace(req2_hash(info_hash), info_hash);
    return [table](const Sha1Digest& req2) -> std::optional<Sha1Digest> {
        const auto found = table->find(req2);
        if (found == table->end()) return std::nullopt;
        return found->second;
    };
}

// ---- StreamCipher ------------------------------------------------------------------------

void StreamCipher::Free::operator()(evp_cipher_ctx_st* context) const {
    EVP_CIPHER_CTX_free(context);
}

StreamCipher::~StreamCipher() = default;

namespace {

// One RC4 direction keyed with `key`, its first 1024 bytes of keystream discarded.
Result<std::unique_ptr<evp_cipher_ctx_st, void (*)(evp_cipher_ctx_st*)>> rc4_context(
    const Sha1Digest& key) {
    using Owned = std::unique_ptr<evp_cipher_ctx_st, void (*)(evp_cipher_ctx_st*)>;
    const Rc4Source& source = rc4_source();
    if (source.cipher == nullptr) return make_error(source.error);
    Owned context(EVP_CIPHER_CTX_new(), [](evp_cipher_ctx_st* c) { EVP_CIPHER_CTX_free(c); });
    if (!context) return openssl_error("EVP_CIPHER_CTX_new");
    // RC4's key length is variable: set it to 20 before giving the key.
    if (EVP_CipherInit_ex(context.get(), source.cipher, nullptr, nullptr, nullptr, 1) != 1 ||
        EVP_CIPHER_CTX_set_key_length(context.get(), static_cast<int>(key.size())) != 1 ||
        EVP_CipherInit_ex(context.get(), nullptr, nullptr, key.data(), nullptr, 1) != 1) {
        return openssl_error("setting up RC4");
    }
    std::array<std::uint8_t, kDiscard> scratch{};
    int written = 0;
    if (EVP_CipherUpdate(context.get(), scratch.data(), &written, scratch.data(),
                         static_cast<int>(scratch.size())) != 1 ||
        written != static_cast<int>(scratch.size())) {
        return openssl_error("RC4");
    }
    return context;
}

void rc4_in_place(evp_cipher_ctx_st* context, std::span<std::uint8_t> bytes) {
    // In-place is allowed for stream ciphers; lengths go to OpenSSL as int.
    while (!bytes.empty()) {
        const std::size_t chunk = std::min<std::size_t>(bytes.size(), INT_MAX / 2);
        int written = 0;
        if (EVP_CipherUpdate(context, bytes.data(), &written, bytes.data(),
                             static_cast<int>(chunk)) != 1 ||
            written != static_cast<int>(chunk)) {
            // Only a broken OpenSSL gets here: a bug, never the peer's input.
            throw std::runtime_error("OpenSSL RC4 failed");
        }
        bytes = bytes.subspan(chunk);
    }
}

}  // namespace

Result<StreamCipher> StreamCipher::from_keys(const Sha1Digest& outgoing_key,
                                             const Sha1Digest& incoming_key) {
    auto out = rc4_context(outgoing_key);
    if (!out) return out.error();
    auto in = rc4_context(incoming_key);
    if (!in) return in.error();
    return StreamCipher(Context(out->release()), Context(in->release()));
}

Result<StreamCipher> StreamCipher::make(const Secret& secret, const Sha1Digest& skey,
                                        bool initiator) {
    const Sha1Digest key_a = hash("keyA", secret, skey);
    const Sha1Digest key_b = hash("keyB", secret, skey);
    return initiator ? from_keys(key_a, key_b) : from_keys(key_b, key_a);
}

void StreamCipher::encrypt(std::span<std::uint8_t> bytes) { rc4_in_place(out_.get(), bytes); }
void StreamCipher::decrypt(std::span<std::uint8_t> bytes) { rc4_in_place(in_.get(), bytes); }

// ---- the handshake -------------------------------------------------------------------------

namespace {
enum class Step {
    start,         // initiator: Ya and PadA not yet sent
    public_key,    // waiting for the peer's 96-byte Y
    sync,          // responder: HASH('req1', S); initiator: ENCRYPT(VC)
    skey_vc,       // responder: req2 xor req3, ENCRYPT(VC)
    crypto_field,  // crypto_provide/select and len(PadC/PadD)
    pad,           // responder: PadC and len(IA); initiator: PadD
    initial,       // responder: IA
    done,
    failed,
};
}  // namespace

struct MseHandshake::State {
    bool initiator = false;
    Policy policy = Policy::prefer_rc4;
    InfoHashLookup lookup;
    KeyPair keys;
    std::uint16_t pad_length = 0;
    std::vector<std::uint8_t> payload;  // the initiator's IA

    Step step = Step::start;
    std::vector<std::uint8_t> in;  // the peer's bytes not yet consumed
    std::size_t scanned = 0;       // sync offsets already looked at
    Secret secret{};
    Sha1Digest sync_hash{};                   // responder: HASH('req1', S)
    std::array<std::uint8_t, kVcBytes> vc{};  // initiator: ENCRYPT(VC)
    std::optional<StreamCipher> cipher;
    std::uint32_t selected = 0;
    std::size_t pad_bytes = 0;
    std::size_t initial_bytes = 0;
    Outcome outcome;
    std::optional<Error> error;

    void consume(std::size_t n) { in.erase(in.begin(), in.begin() + static_cast<std::ptrdiff_t>(n)); }
    std::span<std::uint8_t> head(std::size_t n) { return {in.data(), n}; }

    Status send_public_key(std::vector<std::uint8_t>& out) {
        out.insert(out.end(), keys.public_key.begin(), keys.public_key.end());
        return append_random(out, pad_length);
    }

    // One step forward; false when more bytes are needed first.
    Result<bool> advance(std::vector<std::uint8_t>& out);
    Result<bool> on_public_key(std::vector<std::uint8_t>& out);
    Result<bool> on_sync();
    Result<bool> on_skey_vc();
    Result<bool> on_crypto_field();
    Result<bool> on_pad(std::vector<std::uint8_t>& out);
    Result<bool> on_initial(std::vector<std::uint8_t>& out);
    Status finish(std::vector<std::uint8_t>& out);
};

Result<bool> MseHandshake::State::advance(std::vector<std::uint8_t>& out) {
    switch (step) {
        case Step::public_key: return on_public_key(out);
        case Step::sync: return on_sync();
        case Step::skey_vc: return on_skey_vc();
        case Step::crypto_field: return on_crypto_field();
        case Step::pad: return on_pad(out);
        case Step::initial: return on_initial(out);
        case Step::start:
        case Step::done:
        case Step::failed: break;
    }
    return false;
}

Result<bool> MseHandshake::State::on_public_key(std::vector<std::uint8_t>& out) {
    if (in.size() < kKeyBytes) return false;
    auto s = shared_secret(keys.private_key, std::span<const std::uint8_t, kKeyBytes>(in.data(), kKeyBytes));
    if (!s) return s.error();
    secret = *s;
    consume(kKeyBytes);
    if (!initiator) {
        // Step 2: Yb, PadB. Then look for HASH('req1', S).
        if (auto sent = send_public_key(out); !sent) return sent.error();
        sync_hash = hash("req1", secret);
        step = Step::sync;
        return true;
    }
    // Step 3: HASH('req1', S), HASH('req2', SKEY) xor HASH('req3', S),
    // ENCRYPT(VC, crypto_provide, len(PadC), PadC, len(IA)), ENCRYPT(IA).
    auto made = StreamCipher::make(secret, outcome.info_hash, true);
    if (!made) return made.error();
    cipher.emplace(std::move(made).value());
    vc.fill(0);
    cipher->decrypt(vc);  // what VC looks like from the peer; the decrypting side is now past it

    const Sha1Digest req1 = hash("req1", secret);
    const Sha1Digest req2 = req2_hash(outcome.info_hash);
    const Sha1Digest req3 = hash("req3", secret);
    out.insert(out.end(), req1.begin(), req1.end());
    for (std::size_t i = 0; i < kHashBytes; ++i) out.push_back(req2[i] ^ req3[i]);
    const std::size_t encrypted_from = out.size();
    out.insert(out.end(), kVcBytes, 0);
    put_u32(out, provide_bits(policy));
    put_u16(out, 0);  // len(PadC)
    put_u16(out, payload.size());
    out.insert(out.end(), payload.begin(), payload.end());
    cipher->encrypt(std::span<std::uint8_t>(out).subspan(encrypted_from));
    step = Step::sync;
    scanned = 0;
    return true;
}

Result<bool> MseHandshake::State::on_sync() {
    const std::span<const std::uint8_t> needle =
        initiator ? std::span<const std::uint8_t>(vc) : std::span<const std::uint8_t>(sync_hash);
    const std::size_t window = initiator ? kInitiatorSyncWindow : kResponderSyncWindow;
    const std::size_t found = find_at_most(in, needle, scanned, kMaxPad);
    if (found == std::string::npos) {
        if (in.size() >= window) {
            std::string message(initiator ? "no synchronisation (encrypted VC) within "
                                          : "no synchronisation hash within ");
            message += std::to_string(window);
            message += " bytes";
            return make_error(std::move(message));
        }
        if (in.size() >= needle.size()) scanned = in.size() - needle.size() + 1;
        return false;
    }
    consume(found + needle.size());
    step = initiator ? Step::crypto_field : Step::skey_vc;
    return true;
}

Result<bool> MseHandshake::State::on_skey_vc() {
    if (in.size() < kHashBytes + kVcBytes) return false;
    const Sha1Digest req3 = hash("req3", secret);
    Sha1Digest req2{};
    for (std::size_t i = 0; i < kHashBytes; ++i) req2[i] = in[i] ^ req3[i];
    std::optional<Sha1Digest> info_hash;
    if (lookup) info_hash = lookup(req2);
    if (!info_hash) return make_error("the peer's info-hash (req2 hash) is not one we serve");
    outcome.info_hash = *info_hash;
    auto made = StreamCipher::make(secret, outcome.info_hash, false);
    if (!made) return made.error();
    cipher.emplace(std::move(made).value());
    auto vc_bytes = std::span<std::uint8_t>(in).subspan(kHashBytes, kVcBytes);
    cipher->decrypt(vc_bytes);
    if (std::any_of(vc_bytes.begin(), vc_bytes.end(), [](std::uint8_t b) { return b != 0; })) {
        return make_error("wrong verification constant (not the key the info-hash gives)");
    }
    consume(kHashBytes + kVcBytes);
    step = Step::crypto_field;
    return true;
}

Result<bool> MseHandshake::State::on_crypto_field() {
    if (in.size() < 6) return false;
    cipher->decrypt(head(6));
    const std::uint32_t field = read_u32(in.data());
    const std::size_t pad = read_u16(in.data() + 4);
    const std::uint32_t ours = provide_bits(policy);
    if (initiator) {
        if ((field != 0x01 && field != 0x02) || (field & ours) == 0) {
            std::string message("crypto_select offers nothing we accept (selected ");
            message += hex32(field);
            message += ", we provided ";
            message += hex32(ours);
            message += ")";
            return make_error(std::move(message));
        }
        selected = field;
    } else {
        const std::uint32_t both = field & ours;
        if (both == 0) {
            std::string message("crypto_provide offers nothing we accept (offered ");
            message += hex32(field);
            message += ", we accept ";
            message += hex32(ours);
            message += ")";
            return make_error(std::move(message));
        }
        selected = (both & 0x02) != 0 ? 0x02 : 0x01;
    }
    if (pad > kMaxPad) {
        std::string message(initiator ? "PadD" : "PadC");
        message += " of ";
        message += std::to_string(pad);
        message += " bytes (at most 512)";
        return make_error(std::move(message));
    }
    consume(6);
    pad_bytes = pad;
    step = Step::pad;
    return true;
}

Result<bool> MseHandshake::State::on_pad(std::vector<std::uint8_t>& out) {
    const std::size_t need = pad_bytes + (initiator ? 0 : 2);
    if (in.size() < need) return false;
    cipher->decrypt(head(need));
    if (initiator) {
        consume(need);
        if (auto finished = finish(out); !finished) return finished.error();
        return true;
    }
    initial_bytes = read_u16(in.data() + pad_bytes);
    if (initial_bytes > kMaxInitialPayload) {
        std::string message("initial payload of ");
        message += std::to_string(initial_bytes);
        message += " bytes (we accept at most ";
        message += std::to_string(kMaxInitialPayload);
        message += ")";
        return make_error(std::move(message));
    }
    consume(need);
    step = Step::initial;
    return true;
}

Result<bool> MseHandshake::State::on_initial(std::vector<std::uint8_t>& out) {
    if (in.size() < initial_bytes) return false;
    cipher->decrypt(head(initial_bytes));
    outcome.initial_payload.assign(in.begin(), in.begin() + static_cast<std::ptrdiff_t>(initial_bytes));
    consume(initial_bytes);
    if (auto finished = finish(out); !finished) return finished.error();
    return true;
}

Status MseHandshake::State::finish(std::vector<std::uint8_t>& out) {
    if (!initiator) {
        // Step 4: ENCRYPT(VC, crypto_select, len(PadD), PadD).
        const std::size_t from = out.size();
        out.insert(out.end(), kVcBytes, 0);
        put_u32(out, selected);
        put_u16(out, 0);
        cipher->encrypt(std::span<std::uint8_t>(out).subspan(from));
    }
    outcome.method = selected == 0x02 ? Method::rc4 : Method::plaintext;
    outcome.remainder = std::move(in);
    in.clear();
    if (outcome.method == Method::rc4) {
        cipher->decrypt(outcome.remainder);
        outcome.cipher = std::move(cipher);
    }
    cipher.reset();
    step = Step::done;
    return ok_status();
}

MseHandshake::MseHandshake(std::unique_ptr<State> state) : state_(std::move(state)) {}
MseHandshake::MseHandshake(MseHandshake&&) noexcept = default;
MseHandshake& MseHandshake::operator=(MseHandshake&&) noexcept = default;
MseHandshake::~MseHandshake() = default;

Result<MseHandshake> MseHandshake::initiator(InitiatorOptions options) {
    if (auto rc4 = rc4_status(); !rc4) return rc4.error();
    if (options.initial_payload.size() > kMaxInitialPayload) {
        std::string message("initial payload over ");
        message += std::to_string(kMaxInitialPayload);
        message += " bytes";
        return make_error(std::move(message));
    }
    auto state = std::make_unique<State>();
    state->initiator = true;
    state->policy = options.policy;
    state->payload = std::move(options.initial_payload);
    state->outcome.info_hash = options.info_hash;
    auto keys = make_key_pair(options.private_key);
    if (!keys) return keys.error();
    state->keys = *keys;
    auto pad = random_pad_length(options.pad_length);
    if (!pad) return pad.error();
    state->pad_length = *pad;
    state->step = Step::start;
    return MseHandshake(std::move(state));
}

Result<MseHandshake> MseHandshake::responder(ResponderOptions options) {
    if (auto rc4 = rc4_status(); !rc4) return rc4.error();
    if (!options.find_info_hash) return make_error("a responder needs a way to find info-hashes");
    auto state = std::make_unique<State>();
    state->initiator = false;
    state->policy = options.policy;
    state->lookup = std::move(options.find_info_hash);
    auto keys = make_key_pair(options.private_key);
    if (!keys) return keys.error();
    state->keys = *keys;
    auto pad = random_pad_length(options.pad_length);
    if (!pad) return pad.error();
    state->pad_length = *pad;
    state->step = Step::public_key;
    return MseHandshake(std::move(state));
}

Result<MseHandshake::Progress> MseHandshake::feed(std::span<const std::uint8_t> in,
                                                  std::vector<std::uint8_t>& out) {
    State& s = *state_;
    if (s.error) return *s.error;
    if (s.step == Step::done) return make_error("the MSE handshake is already done");
    auto fail = [&s](Error error) -> Result<Progress> {
        s.error = error;
        s.step = Step::failed;
        s.in.clear();
        s.in.shrink_to_fit();
        s.cipher.reset();
        return error;
    };
    if (s.step == Step::start) {
        // Step 1: Ya, PadA.
        if (auto sent = s.send_public_key(out); !sent) return fail(sent.error());
        s.step = Step::public_key;
    }
    s.in.insert(s.in.end(), in.begin(), in.end());
    for (;;) {
        auto moved = s.advance(out);
        if (!moved) return fail(moved.error());
        if (s.step == Step::done) return Progress::done;
        if (!*moved) return Progress::need_more;
    }
}

bool MseHandshake::done() const { return state_->step == Step::done; }
std::size_t MseHandshake::buffered() const { return state_->in.size(); }
const Outcome& MseHandshake::outcome() const { return state_->outcome; }
Outcome MseHandshake::take_outcome() { return std::move(state_->outcome); }

}  // namespace pw::mse
