/// @file macros.hpp
/// @brief Portability macros shared by host and device code.
#pragma once

#if defined(__CUDACC__)
/// Marks a function callable from host and device code.
#define COMPACT_HOST_DEVICE __host__ __device__
/// Marks a device-only function that should always be inlined.
#define COMPACT_DEVICE __device__ __forceinline__
#else
#define COMPACT_HOST_DEVICE
#define COMPACT_DEVICE
#endif

namespace compact {

/// Rounds `a / b` up; both non-negative.
template <class T>
COMPACT_HOST_DEVICE constexpr T ceil_div(T a, T b) {
  return (a + b - 1) / b;
}

/// Minimum and maximum usable in device code without `<algorithm>`.
template <class T>
COMPACT_HOST_DEVICE constexpr T min_of(T a, T b) {
  return a < b ? a : b;
}
/// Larger of a and b (see min_of).
template <class T>
COMPACT_HOST_DEVICE constexpr T max_of(T a, T b) {
  return a < b ? b : a;
}

/// True for 1, 2, 4, 8, ...
COMPACT_HOST_DEVICE constexpr bool is_pow2(long long v) {
  return v > 0 && (v & (v - 1)) == 0;
}

}  // namespace compact
