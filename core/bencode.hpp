#pragma once
// Bencode (BEP 3): a pure decoder and a canonical encoder. No I/O.
//
// The decoder is iterative (an explicit stack), so hostile nesting cannot exhaust the C stack,
// and it rejects anything that is not exactly one well-formed value, with the byte offset of
// the problem in the error.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "core/result.hpp"

namespace pw::bencode {

struct Value;
using List = std::vector<Value>;
// Keys in the order they stood in the input (canonical input has them sorted as raw bytes).
using Dict = std::vector<std::pair<std::string, Value>>;

// A decoded value's strings are views into the input, never copies: the input must outlive
// the value. (A .torrent of 262,144 pieces holds 5 MB of hashes, and every stage decodes it
// at start-up.) Strings of values built in code are owned.
struct Value {
    std::variant<std::int64_t, std::string, List, Dict, std::string_view> data;
    // Where this value's encoding stood in the decoded input: the info-hash is the SHA-1 of
    // these exact bytes, never of a re-encoding. Zero for values built in code.
    std::size_t raw_begin = 0;
    std::size_t raw_end = 0;

    Value() = default;
    Value(std::int64_t i) : data(i) {}
    Value(std::string s) : data(std::move(s)) {}
    Value(List l) : data(std::move(l)) {}
    Value(Dict d) : data(std::move(d)) {}
    // A string that stays in the decoded input.
    static Value borrowed(std::string_view s) {
        Value value;
        value.data = s;
        return value;
    }

    bool is_int() const { return std::holds_alternative<std::int64_t>(data); }
    bool is_string() const {
        return std::holds_alternative<std::string>(data) ||
               std::holds_alternative<std::string_view>(data);
    }
    bool is_list() const { return std::holds_alternative<List>(data); }
    bool is_dict() const { return std::holds_alternative<Dict>(data); }
    std::int64_t as_int() const { return std::get<std::int64_t>(data); }
    std::string_view as_string() const {
        if (const auto* view = std::get_if<std::string_view>(&data)) return *view;
        return std::get<std::string>(data);
    }
    const List& as_list() const { return std::get<List>(data); }
    const Dict& as_dict() const { return std::get<Dict>(data); }
    List& as_list() { return std::get<List>(data); }
    Dict& as_dict() { return std::get<Dict>(data); }

    // The value under `key` in a dict, or nullptr when absent or when this is not a dict.
    const Value* find(std::string_view key) const;
    std::string_view raw(std::string_view input) const {
        return input.substr(raw_begin, raw_end - raw_begin);
    }

    // Structural equality, an owned string equal to a borrowed one; raw positions are ignored.
    friend bool operator==(const Value& a, const Value& b) {
        if (a.is_string() || b.is_string()) {
            return a.is_string() && b.is_string() && a.as_string() == b.as_string();
        }
        return a.data == b.data;
    }
};

struct DecodeLimits {
    // libtorrent uses 100: no real torrent nests deeper than a handful of levels.
    std::size_t max_depth = 100;
    // Real-world torrents occasionally have unsorted keys; duplicates are never accepted.
    bool allow_unsorted_keys = true;
};

struct Decoded {
    Value value;
    // Tolerated irregularities, e.g. "dict keys not sorted (at byte 12)".
    std::vector<std::string> warnings;
};

// Decodes exactly one value spanning the whole input; its strings point into `input`.
// Rejects: nesting deeper than the limit, integers that overflow int64, leading zeros, "-0",
// "i-e"/"ie", string lengths larger than what remains, duplicate keys (and unsorted ones
// unless allowed), non-string keys, trailing bytes, and truncated input. Memory used is a
// small multiple of the number of values, never of the strings' bytes.
Result<Decoded> decode(std::string_view input, const DecodeLimits& limits = {});

// Canonical encoding: dict keys sorted as raw bytes.
std::string encode(const Value& value);

}  // namespace pw::bencode
