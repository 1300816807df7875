#include "core/sha1.hpp"

#include <openssl/evp.h>

#include <stdexcept>

namespace pw {

Sha1Digest sha1(const void* data, std::size_t size) {
    Sha1Digest digest{};
    unsigned int written = 0;
    // EVP_Digest only fails on allocation failure or a broken OpenSSL: a bug, not input.
    if (EVP_Digest(data, size, digest.data(), &written, EVP_sha1(), nullptr) != 1 ||
        written != digest.size()) {
        throw std::runtime_error("OpenSSL SHA-1 failed");
    }
    return digest;
}

Sha1Digest sha1(std::string_view data) { return sha1(data.data(), data.size()); }

// Failures here are allocation failures or a broken OpenSSL: bugs or start-up failures, not input.
Sha1Hasher::Sha1Hasher()
    : algorithm_(EVP_MD_fetch(nullptr, "SHA1", nullptr)), context_(EVP_MD_CTX_new()) {
    if (algorithm_ == nullptr || context_ == nullptr) {
        EVP_MD_free(algorithm_);
        EVP_MD_CTX_free(context_);
        throw std::runtime_error("OpenSSL has no SHA-1");
    }
}

Sha1Hasher::~Sha1Hasher() {
    EVP_MD_CTX_free(context_);
    EVP_MD_free(algorithm_);
}

Sha1Digest Sha1Hasher::digest(const void* data, std::size_t size) {
    Sha1Digest digest{};
    unsigned int written = 0;
    if (EVP_DigestInit_ex2(context_, algorithm_, nullptr) != 1 ||
        EVP_DigestUpdate(context_, data, size) != 1 ||
        EVP_DigestFinal_ex(context_, digest.data(), &written) != 1 || written != digest.size()) {
        throw std::runtime_error("OpenSSL SHA-1 failed");
    }
    return digest;
}

std::string to_hex(std::string_view bytes) {
    static constexpr char digits[] = "0123456789abcdef";
    std::string out;
    out.reserve(bytes.size() * 2);
    for (char c : bytes) {
        const auto byte = static_cast<unsigned char>(c);
        out += digits[byte >> 4];
        out += digits[byte & 0xf];
    }
    return out;
}

std::string to_hex(const Sha1Digest& digest) {
    return to_hex(std::string_view(reinterpret_cast<const char*>(digest.data()), digest.size()));
}

std::optional<Sha1Digest> sha1_from_hex(std::string_view hex) {
    if (hex.size() != 40) return std::nullopt;
    auto nibble = [](char c) -> int {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        if (c >= 'A' && c <= 'F') return c - 'A' + 10;
        return -1;
    };
    Sha1Digest digest{};
    for (std::size_t i = 0; i < digest.size(); ++i) {
        const int high = nibble(hex[2 * i]);
        const int low = nibble(hex[2 * i + 1]);
        if (high < 0 || low < 0) return std::nullopt;
        digest[i] = static_cast<std::uint8_t>(high * 16 + low);
    }
    return digest;
}

}  // namespace pw
