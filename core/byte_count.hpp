#pragma once
// Sizes and rates as people type them: "4096", "256K", "1M", "2GiB", "16kb" (K, M, G are
// binary: 1024, 1024^2, 1024^3; an optional trailing B or iB; any case). Pure.
#include <cstdint>
#include <string_view>

#include "core/result.hpp"

namespace pw {

Result<std::uint64_t> parse_byte_count(std::string_view text);

}  // namespace pw
