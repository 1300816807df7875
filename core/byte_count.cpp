#include "core/byte_count.hpp"

#include <limits>
#include <string>

namespace pw {

Result<std::uint64_t> parse_byte_count(std::string_view text) {
    std::string quoted(1, '"');
    quoted += text;
    quoted += '"';
    const auto bad = [&] { return make_error(quoted + " is not a number of bytes with an optional K, M or G"); };
    std::size_t i = 0;
    std::uint64_t number = 0;
    for (; i < text.size() && text[i] >= '0' && text[i] <= '9'; ++i) {
        const auto digit = static_cast<std::uint64_t>(text[i] - '0');
        if (number > (std::numeric_limits<std::uint64_t>::max() - digit) / 10) return make_error(quoted + " is too large");
        number = number * 10 + digit;
    }
    if (i == 0) return bad();
    std::string suffix;
    for (; i < text.size(); ++i) {
        const char c = text[i];
        suffix += c >= 'a' && c <= 'z' ? static_cast<char>(c - 'a' + 'A') : c;
    }
    unsigned shift = 0;
    if (!suffix.empty() && suffix != "B") {
        switch (suffix.front()) {
            case 'K': shift = 10; break;
            case 'M': shift = 20; break;
            case 'G': shift = 30; break;
            default: return bad();
        }
        const std::string_view rest = std::string_view(suffix).substr(1);
        if (!rest.empty() && rest != "B" && rest != "IB") return bad();
    }
    if (number > (std::numeric_limits<std::uint64_t>::max() >> shift)) return make_error(quoted + " is too large");
    return number << shift;
}

}  // namespace pw
