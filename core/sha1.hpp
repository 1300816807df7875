#pragma once
// SHA-1 through OpenSSL EVP. Pure computation; no I/O.
#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace pw {

using Sha1Digest = std::array<std::uint8_t, 20>;

Sha1Digest sha1(std::string_view data);
Sha1Digest sha1(const void* data, std::size_t size);

std::string to_hex(const Sha1Digest& digest);
std::string to_hex(std::string_view bytes);
// 40 hex digits (either case) back to a digest; nullopt for anything else.
std::optional<Sha1Digest> sha1_from_hex(std::string_view hex);

}  // namespace pw
