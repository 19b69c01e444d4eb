/// @file error.hpp
/// @brief compact::Error and the argument checks that raise it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>

namespace compact {

/// The one exception type of the library: a bad argument, an unsupported configuration, a CUDA
/// failure. The message names the argument, its value and what was expected.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {

/// Concatenates any streamable values into a string (messages only; never on a hot path).
template <class... Ts>
std::string cat(const Ts&... parts) {
  std::ostringstream s;
  (s << ... << parts);
  return s.str();
}

}  // namespace detail

/// Throws compact::Error("compact: <arg> = <value>: expected <expected>").
template <class V>
[[noreturn]] void fail(std::string_view arg, const V& value, std::string_view expected) {
  throw Error(detail::cat("compact: ", arg, " = ", value, ": expected ", expected));
}

/// Throws compact::Error("compact: <arg> = <value>: expected <expected>") unless `ok`.
template <class V>
void require(bool ok, std::string_view arg, const V& value, std::string_view expected) {
  if (!ok) fail(arg, value, expected);
}

/// Throws when a pointer argument is null.
inline void require_not_null(const void* p, std::string_view arg) {
  require(p != nullptr, arg, "nullptr", "a valid pointer");
}

/// Throws when a pointer argument is null or not aligned to `alignment` bytes.
inline void require_aligned(const void* p, std::size_t alignment, std::string_view arg) {
  require_not_null(p, arg);
  require(reinterpret_cast<std::uintptr_t>(p) % alignment == 0, arg, p,
          detail::cat("an address aligned to ", alignment, " bytes"));
}

}  // namespace compact
