#pragma once
// Messages built by appending, part after part. g++ 12 at -O3 takes `"lit" + std::string&&`
// for an overlapping memcpy (a -Wrestrict false positive, see with_suffix in
// core/metainfo.cpp) and a Release build with -Werror stops there; appending never trips it.
#include <string>
#include <string_view>
#include <type_traits>

namespace pw::writer {

namespace text_detail {
inline void append(std::string& out, std::string_view part) { out += part; }
inline void append(std::string& out, char part) { out += part; }
template <class Number>
    requires std::is_integral_v<Number> && (!std::is_same_v<Number, char>)
void append(std::string& out, Number part) {
    out += std::to_string(part);
}
}  // namespace text_detail

// cat("piece ", 3, " changed on disk") == "piece 3 changed on disk"
template <class... Parts>
std::string cat(const Parts&... parts) {
    std::string out;
    (text_detail::append(out, parts), ...);
    return out;
}

}  // namespace pw::writer
