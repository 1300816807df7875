#include "core/bencode.hpp"

#include <algorithm>
#include <limits>

namespace pw::bencode {

const Value* Value::find(std::string_view key) const {
    if (!is_dict()) return nullptr;
    for (const auto& [k, v] : as_dict()) {
        if (k == key) return &v;
    }
    return nullptr;
}

namespace {

// A list or dict whose closing 'e' has not been seen yet.
struct OpenContainer {
    Value value;
    // Dicts only: the key read but whose value is still to come, and where each key started
    // (to name the offset of a duplicate found late, once keys turned out unsorted).
    std::string pending_key;
    bool has_pending_key = false;
    std::size_t pending_key_offset = 0;
    std::vector<std::size_t> key_offsets;
    bool keys_unsorted = false;
};

class Decoder {
public:
    Decoder(std::string_view input, const DecodeLimits& limits) : in_(input), limits_(limits) {}

    Result<Decoded> run() {
        Decoded out;
        bool have_root = false;
        while (!have_root) {
            if (pos_ >= in_.size()) return truncated();
            if (!stack_.empty() && stack_.back().value.is_dict() &&
                !stack_.back().has_pending_key && in_[pos_] != 'e') {
                auto key_status = read_key();
                if (!key_status) return key_status.error();
                continue;
            }
            const std::size_t begin = pos_;
            const char c = in_[pos_];
            Value finished;
            if (c == 'e') {
                if (stack_.empty()) return make_error("unexpected 'e'", pos_);
                if (stack_.back().has_pending_key) {
                    return make_error("dict key without a value", pos_);
                }
                ++pos_;
                auto closed = close_container();
                if (!closed) return closed.error();
                finished = std::move(closed.value());
            } else if (c == 'l' || c == 'd') {
                if (stack_.size() >= limits_.max_depth) {
                    return make_error("nesting deeper than " + std::to_string(limits_.max_depth),
                                      pos_);
                }
                OpenContainer open;
                open.value = c == 'l' ? Value(List{}) : Value(Dict{});
                open.value.raw_begin = pos_;
                stack_.push_back(std::move(open));
                ++pos_;
                continue;
            } else if (c == 'i') {
                auto number = read_int();
                if (!number) return number.error();
                finished = Value(number.value());
                finished.raw_begin = begin;
                finished.raw_end = pos_;
            } else if (c >= '0' && c <= '9') {
                auto text = read_string();
                if (!text) return text.error();
                finished = Value::borrowed(text.value());
                finished.raw_begin = begin;
                finished.raw_end = pos_;
            } else {
                return make_error("unexpected byte " + describe_byte(c), pos_);
            }
            if (stack_.empty()) {
                out.value = std::move(finished);
                have_root = true;
            } else {
                attach(std::move(finished));
            }
        }
        if (pos_ != in_.size()) return make_error("trailing bytes after the value", pos_);
        out.warnings = std::move(warnings_);
        return out;
    }

private:
    static std::string describe_byte(char c) {
        const auto byte = static_cast<unsigned char>(c);
        if (byte >= 0x20 && byte < 0x7f) return std::string("'") + c + "'";
        static constexpr char digits[] = "0123456789abcdef";
        return std::string("0x") + digits[byte >> 4] + digits[byte & 0xf];
    }

    Error truncated() const { return make_error("truncated input", pos_); }

    Status read_key() {
        OpenContainer& dict = stack_.back();
        const std::size_t key_offset = pos_;
        if (in_[pos_] < '0' || in_[pos_] > '9') {
            return make_error("dict key is not a string", pos_);
        }
        auto key = read_string();
        if (!key) return key.error();
        const Dict& entries = dict.value.as_dict();
        if (!entries.empty() && !dict.keys_unsorted) {
            const std::string& previous = entries.back().first;
            if (key.value() == previous) {
                return make_error("duplicate dict key \"" + printable(previous) + "\"", key_offset);
            }
            if (key.value() < previous) {
                if (!limits_.allow_unsorted_keys) {
                    return make_error("dict keys not sorted", key_offset);
                }
                dict.keys_unsorted = true;
                warnings_.push_back("dict keys not sorted (at byte " + std::to_string(key_offset) +
                                    ")");
            }
        }
        dict.pending_key = std::string(key.value());
        dict.has_pending_key = true;
        dict.pending_key_offset = key_offset;
        return ok_status();
    }

    void attach(Value finished) {
        OpenContainer& parent = stack_.back();
        if (parent.value.is_list()) {
            parent.value.as_list().push_back(std::move(finished));
            return;
        }
        parent.value.as_dict().emplace_back(std::move(parent.pending_key), std::move(finished));
        parent.key_offsets.push_back(parent.pending_key_offset);
        parent.pending_key.clear();
        parent.has_pending_key = false;
    }

    Result<Value> close_container() {
        OpenContainer open = std::move(stack_.back());
        stack_.pop_back();
        if (open.keys_unsorted) {
            // Neighbour checks missed duplicates once the order broke; sorting finds them all
            // in n log n, which hostile inputs with many keys cannot turn quadratic.
            const Dict& entries = open.value.as_dict();
            std::vector<std::size_t> order(entries.size());
            for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
            std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
                return entries[a].first < entries[b].first;
            });
            for (std::size_t i = 1; i < order.size(); ++i) {
                if (entries[order[i]].first == entries[order[i - 1]].first) {
                    return make_error("duplicate dict key \"" +
                                          printable(entries[order[i]].first) + "\"",
                                      open.key_offsets[std::max(order[i], order[i - 1])]);
                }
            }
        }
        // Growth by doubling can leave half of each container unused; trimming keeps the
        // decoded tree within a fixed multiple of the input size.
        if (open.value.is_list()) {
            open.value.as_list().shrink_to_fit();
        } else {
            open.value.as_dict().shrink_to_fit();
        }
        open.value.raw_end = pos_;
        return std::move(open.value);
    }

    static std::string printable(std::string_view key) {
        std::string out;
        for (char c : key.substr(0, 64)) {
            const auto byte = static_cast<unsigned char>(c);
            out += (byte >= 0x20 && byte < 0x7f) ? c : '?';
        }
        if (key.size() > 64) out += "...";
        return out;
    }

    Result<std::int64_t> read_int() {
        ++pos_;  // 'i'
        bool negative = false;
        if (pos_ < in_.size() && in_[pos_] == '-') {
            negative = true;
            ++pos_;
        }
        const std::size_t digits_begin = pos_;
        // Accumulate as a negative number: its range includes INT64_MIN.
        std::int64_t value = 0;
        constexpr std::int64_t min = std::numeric_limits<std::int64_t>::min();
        while (pos_ < in_.size() && in_[pos_] >= '0' && in_[pos_] <= '9') {
            const int digit = in_[pos_] - '0';
            if (value < (min + digit) / 10) {
                return make_error("integer overflows int64", digits_begin);
            }
            value = value * 10 - digit;
            ++pos_;
        }
        if (pos_ >= in_.size()) return truncated();
        if (in_[pos_] != 'e') {
            return make_error("unexpected byte " + describe_byte(in_[pos_]) + " in integer", pos_);
        }
        const std::size_t digit_count = pos_ - digits_begin;
        if (digit_count == 0) return make_error("integer without digits", digits_begin);
        if (in_[digits_begin] == '0' && digit_count > 1) {
            return make_error("integer with a leading zero", digits_begin);
        }
        if (negative && value == 0) return make_error("negative zero", digits_begin);
        if (!negative) {
            if (value == min) return make_error("integer overflows int64", digits_begin);
            value = -value;
        }
        ++pos_;  // 'e'
        return value;
    }

    Result<std::string_view> read_string() {
        const std::size_t begin = pos_;
        std::size_t length = 0;
        while (pos_ < in_.size() && in_[pos_] >= '0' && in_[pos_] <= '9') {
            length = length * 10 + static_cast<std::size_t>(in_[pos_] - '0');
            // Check before the value can wrap: nothing longer than the input can be valid.
            if (length > in_.size()) {
                return make_error("string length larger than the input", begin);
            }
            ++pos_;
        }
        if (pos_ >= in_.size()) return truncated();
        if (in_[pos_] != ':') {
            return make_error("unexpected byte " + describe_byte(in_[pos_]) +
                                  " in string length",
                              pos_);
        }
        if (in_[begin] == '0' && pos_ - begin > 1) {
            return make_error("string length with a leading zero", begin);
        }
        ++pos_;  // ':'
        if (length > in_.size() - pos_) {
            return make_error("string length larger than the input", begin);
        }
        const std::string_view text = in_.substr(pos_, length);
        pos_ += length;
        return text;
    }

    std::string_view in_;
    const DecodeLimits& limits_;
    std::size_t pos_ = 0;
    std::vector<OpenContainer> stack_;
    std::vector<std::string> warnings_;
};

void encode_into(const Value& value, std::string& out);

void encode_string(std::string_view text, std::string& out) {
    out += std::to_string(text.size());
    out += ':';
    out += text;
}

void encode_into(const Value& value, std::string& out) {
    // Recursion is bounded by the depth of values we build or decoded (the decoder's limit).
    if (value.is_int()) {
        out += 'i';
        out += std::to_string(value.as_int());
        out += 'e';
    } else if (value.is_string()) {
        encode_string(value.as_string(), out);
    } else if (value.is_list()) {
        out += 'l';
        for (const Value& item : value.as_list()) encode_into(item, out);
        out += 'e';
    } else {
        const Dict& entries = value.as_dict();
        std::vector<const std::pair<std::string, Value>*> sorted;
        sorted.reserve(entries.size());
        for (const auto& entry : entries) sorted.push_back(&entry);
        // std::string compares through char_traits<char>, i.e. as unsigned bytes, which is
        // the raw-byte order BEP 3 asks for.
        std::stable_sort(sorted.begin(), sorted.end(),
                         [](const auto* a, const auto* b) { return a->first < b->first; });
        out += 'd';
        for (const auto* entry : sorted) {
            encode_string(entry->first, out);
            encode_into(entry->second, out);
        }
        out += 'e';
    }
}

}  // namespace

Result<Decoded> decode(std::string_view input, const DecodeLimits& limits) {
    return Decoder(input, limits).run();
}

std::string encode(const Value& value) {
    std::string out;
    encode_into(value, out);
    return out;
}

}  // namespace pw::bencode
