/// @file error.hpp
/// @brief compact::Error and the argument checks that raise it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>

namespace compact {

/// The one exception type of the library: a bad argument, an unsupported configuration, a CUDA
/// failure. The message names the argument, its value and what was expected.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {

/// The parts of a message, held by value and formatted only when streamed or converted to a
/// string: checks that pass build no string (validation loops run on every plan()).
template <class... Ts>
struct Cat {
  std::tuple<Ts...> parts;

  friend std::ostream& operator<<(std::ostream& os, const Cat& c) {
    std::apply([&os](const auto&... p) { (os << ... << p); }, c.parts);
    return os;
  }
  operator std::string() const {  // NOLINT: implicit, so `throw Error(cat(...))` reads naturally
    std::ostringstream s;
    s << *this;
    return s.str();
  }
};

/// Concatenates streamable values into a lazily formatted message.
template <class... Ts>
Cat<std::decay_t<Ts>...> cat(Ts&&... parts) {
  return Cat<std::decay_t<Ts>...>{{std::forward<Ts>(parts)...}};
}

}  // namespace detail

/// Throws compact::Error("compact: <arg> = <value>: expected <expected>").
template <class A, class V, class E>
[[noreturn]] void fail(const A& arg, const V& value, const E& expected) {
  std::ostringstream s;
  s << "compact: " << arg << " = " << value << ": expected " << expected;
  throw Error(s.str());
}

/// Throws compact::Error("compact: <arg> = <value>: expected <expected>") unless `ok`. The
/// message parts are only formatted on failure.
template <class A, class V, class E>
void require(bool ok, const A& arg, const V& value, const E& expected) {
  if (!ok) fail(arg, value, expected);
}

/// Throws when a pointer argument is null.
template <class A>
void require_not_null(const void* p, const A& arg) {
  require(p != nullptr, arg, "nullptr", "a valid pointer");
}

/// Throws when a pointer argument is null or not aligned to `alignment` bytes.
template <class A>
void require_aligned(const void* p, std::size_t alignment, const A& arg) {
  require_not_null(p, arg);
  require(reinterpret_cast<std::uintptr_t>(p) % alignment == 0, arg, p,
          detail::cat("an address aligned to ", alignment, " bytes"));
}

}  // namespace compact
