#pragma once
// A small result type for codecs. std::expected needs C++23 (not on g++ 12 with -std=c++20,
// and absent from clang 14 with Debian's libstdc++, which the fuzzers build with).
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <variant>

namespace pw {

struct Error {
    std::string message;
    // Where in the input the problem was found, when the input is a byte string.
    std::optional<std::uint64_t> offset;

    std::string describe() const {
        if (!offset) return message;
        return message + " (at byte " + std::to_string(*offset) + ")";
    }
};

inline Error make_error(std::string message) { return Error{std::move(message), std::nullopt}; }
inline Error make_error(std::string message, std::uint64_t offset) {
    return Error{std::move(message), offset};
}

template <class T>
class [[nodiscard]] Result {
public:
    Result(T value) : state_(std::in_place_index<0>, std::move(value)) {}
    Result(Error error) : state_(std::in_place_index<1>, std::move(error)) {}

    bool ok() const { return state_.index() == 0; }
    explicit operator bool() const { return ok(); }

    T& value() & { return std::get<0>(state_); }
    const T& value() const& { return std::get<0>(state_); }
    T&& value() && { return std::get<0>(std::move(state_)); }
    T* operator->() { return &value(); }
    const T* operator->() const { return &value(); }
    T& operator*() & { return value(); }
    const T& operator*() const& { return value(); }

    const Error& error() const { return std::get<1>(state_); }

private:
    std::variant<T, Error> state_;
};

// For operations that produce nothing but may fail.
struct Unit {};
using Status = Result<Unit>;
inline Status ok_status() { return Unit{}; }

}  // namespace pw
