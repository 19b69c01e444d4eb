/// @file widen.cuh
/// @brief Widening of eight packed 16-bit elements (one 16-byte vector load) to float.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "compact/core/macros.hpp"

namespace compact::arch {

/// Widens the eight bf16 or fp16 elements packed in `raw` (element 0 in the low half of raw.x)
/// to float: exact, so every kernel that reads a vector this way sees the same values.
template <class T>
COMPACT_DEVICE void widen8(const uint4& raw, float (&x)[8]) {
  static_assert(std::is_same_v<T, __nv_bfloat16> || std::is_same_v<T, __half>,
                "widen8: T must be __nv_bfloat16 or __half");
  const std::uint32_t w[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    float2 f;
    if constexpr (std::is_same_v<T, __nv_bfloat16>) {
      __nv_bfloat162 v;
      std::memcpy(&v, &w[i], 4);
      f = __bfloat1622float2(v);
    } else {
      __half2 v;
      std::memcpy(&v, &w[i], 4);
      f = __half22float2(v);
    }
    x[2 * i] = f.x;
    x[2 * i + 1] = f.y;
  }
}

}  // namespace compact::arch
