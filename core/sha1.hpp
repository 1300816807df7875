#pragma once
// SHA-1 through OpenSSL EVP. Pure computation; no I/O.
#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

// OpenSSL's types, declared here so that users of this header need not include OpenSSL's.
struct evp_md_st;
struct evp_md_ctx_st;

namespace pw {

using Sha1Digest = std::array<std::uint8_t, 20>;

// One-off digests (an info-hash, a test): each call looks the algorithm up again.
Sha1Digest sha1(std::string_view data);
Sha1Digest sha1(const void* data, std::size_t size);

// For hashing many pieces: OpenSSL 3 looks the algorithm up in its provider tables (under a
// lock) and sets up a context on every one-shot EVP_Digest, a few microseconds that matter
// when a torrent has 262,144 pieces of 16 KiB. This keeps one fetched algorithm and one
// context for all of them. Not thread-safe; one per thread.
class Sha1Hasher {
public:
    Sha1Hasher();
    ~Sha1Hasher();
    Sha1Hasher(const Sha1Hasher&) = delete;
    Sha1Hasher& operator=(const Sha1Hasher&) = delete;

    Sha1Digest digest(const void* data, std::size_t size);

private:
    evp_md_st* algorithm_;
    evp_md_ctx_st* context_;
};

std::string to_hex(const Sha1Digest& digest);
std::string to_hex(std::string_view bytes);
// 40 hex digits (either case) back to a digest; nullopt for anything else.
std::optional<Sha1Digest> sha1_from_hex(std::string_view hex);

}  // namespace pw
