// Bencode decoder under hostile input, plus the round-trip properties: canonical input
// encodes back to itself byte for byte, and encoding then decoding gives the same value.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "core/bencode.hpp"

namespace {

using pw::bencode::Value;

// The value with every dict's keys in canonical order, i.e. what decode(encode(v)) yields.
Value canonical(const Value& value) {
    if (value.is_list()) {
        pw::bencode::List items;
        for (const Value& item : value.as_list()) items.push_back(canonical(item));
        return Value(std::move(items));
    }
    if (value.is_dict()) {
        pw::bencode::Dict entries;
        for (const auto& [key, item] : value.as_dict()) entries.emplace_back(key, canonical(item));
        std::stable_sort(entries.begin(), entries.end(),
                         [](const auto& a, const auto& b) { return a.first < b.first; });
        return Value(std::move(entries));
    }
    return value;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view input(reinterpret_cast<const char*>(data), size);
    auto decoded = pw::bencode::decode(input);
    if (!decoded.ok()) return 0;
    const Value& value = decoded->value;
    if (value.raw_begin != 0 || value.raw_end != input.size()) std::abort();

    const std::string encoded = pw::bencode::encode(value);
    if (decoded->warnings.empty() && encoded != input) std::abort();

    auto again = pw::bencode::decode(encoded);
    if (!again.ok() || !again->warnings.empty()) std::abort();
    if (!(again->value == canonical(value))) std::abort();
    if (pw::bencode::encode(again->value) != encoded) std::abort();
    return 0;
}
