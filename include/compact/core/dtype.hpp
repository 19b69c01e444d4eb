/// @file dtype.hpp
/// @brief Element types of Q, K, V and O, and their host-side conversions.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstddef>
#include <cstdint>
#include <ostream>

#include "compact/core/macros.hpp"

namespace compact {

/// Element type of queries, keys, values and outputs. Accumulation is always fp32 (fp64 in the
/// host references).
enum class DType : std::uint8_t { bf16, fp16 };

/// Name of a dtype, for messages and benchmark labels.
constexpr const char* to_string(DType t) {
  return t == DType::bf16 ? "bf16" : "fp16";
}

/// Writes to_string(t).
inline std::ostream& operator<<(std::ostream& os, DType t) {
  return os << to_string(t);
}

/// Bytes of one element.
constexpr std::size_t size_of(DType) {
  return 2;
}

/// Maps a C++ element type to its DType tag (`dtype_of_v<__nv_bfloat16> == DType::bf16`).
template <class T>
struct dtype_of;
/// bf16 elements.
template <>
struct dtype_of<__nv_bfloat16> {
  static constexpr DType value = DType::bf16;  ///< The tag.
};
/// fp16 elements.
template <>
struct dtype_of<__half> {
  static constexpr DType value = DType::fp16;  ///< The tag.
};
/// The DType tag of element type T.
template <class T>
inline constexpr DType dtype_of_v = dtype_of<T>::value;

/// Maps a DType tag back to its C++ element type.
template <DType D>
struct element_of;
/// DType::bf16 is __nv_bfloat16.
template <>
struct element_of<DType::bf16> {
  using type = __nv_bfloat16;  ///< The element type.
};
/// DType::fp16 is __half.
template <>
struct element_of<DType::fp16> {
  using type = __half;  ///< The element type.
};
/// The C++ element type of DType D.
template <DType D>
using element_t = typename element_of<D>::type;

/// Element `i` of a dtype-erased array, widened to float (host or device).
COMPACT_HOST_DEVICE inline float load_float(const void* base, DType t, std::size_t i) {
  if (t == DType::bf16) return __bfloat162float(static_cast<const __nv_bfloat16*>(base)[i]);
  return __half2float(static_cast<const __half*>(base)[i]);
}

/// Stores `v` rounded to nearest into element `i` of a dtype-erased array (host or device).
COMPACT_HOST_DEVICE inline void store_float(void* base, DType t, std::size_t i, float v) {
  if (t == DType::bf16) {
    static_cast<__nv_bfloat16*>(base)[i] = __float2bfloat16(v);
  } else {
    static_cast<__half*>(base)[i] = __float2half(v);
  }
}

}  // namespace compact
