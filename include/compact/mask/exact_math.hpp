/// @file exact_math.hpp
/// @brief Arithmetic that gives the same bits on the host and the device: explicitly rounded fp32
/// operations, a portable exp2, fixed-point softmax terms and the integer quantization that lets
/// tensor-core dot products be exact.
///
/// The score-based mask sources (FlashPrefillMask, QuestMask, XAttentionMask) promise that their
/// device kernels select exactly the blocks their host references select. Thresholds on floating
/// scores flip on the last bit, so both sides must compute the same bits, not merely close ones.
/// The recipe, shared by every estimator:
///
/// 1. Dot products are exact. Each query row and each key (or summary) vector is quantized to
///    integers in [-levels, levels] with one fp32 scale per vector (symmetric absmax, see
///    quant_of() / quantize()). Integers up to 256 in magnitude are exact in bf16, products are
///    exact, and as long as every partial sum stays below 2^24 in magnitude the fp32 accumulator
///    of mma.sync holds the exact integer whatever order the hardware adds in (the bound
///    `D * levels^2 < 2^24` is what fixes `levels`). The host computes the same integer in int32.
/// 2. Every later fp32 step is one IEEE operation with round-to-nearest, written through the
///    helpers below so that neither nvcc (which contracts a*b+c into FMA by default) nor a host
///    compiler (with -ffp-contract=fast and FMA hardware) can fuse or reorder it: on the device
///    they are the __f*_rn intrinsics, on the host the result passes through a volatile.
/// 3. exp2 is det_exp2(): a fixed polynomial evaluated with correctly rounded fma on both sides
///    (never the hardware ex2.approx or the C library's exp2f, which differ).
/// 4. Sums whose order differs between the host loop and a parallel reduction are done in
///    fixed point (uint32 / uint64 integers), where addition is associative; maxima use a total
///    order on floats (ordered_key()), so -0 and +0 never depend on the reduction order.
///
/// The device side assumes IEEE denormals (nvcc's default -ftz=false; --use_fast_math would flush
/// denormal intermediates and could, in principle, change a bit the host keeps).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "compact/core/macros.hpp"

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#endif

namespace compact::exact {

/// a * b, rounded to nearest once, never fused with a neighbouring add.
COMPACT_HOST_DEVICE inline float mul(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  volatile float r = a * b;
  return r;
#endif
}

/// a + b, rounded to nearest once, never fused.
COMPACT_HOST_DEVICE inline float add(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  volatile float r = a + b;
  return r;
#endif
}

/// a - b, rounded to nearest once, never fused.
COMPACT_HOST_DEVICE inline float sub(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fsub_rn(a, b);
#else
  volatile float r = a - b;
  return r;
#endif
}

/// a / b, correctly rounded (also under -use_fast_math on the device).
COMPACT_HOST_DEVICE inline float div(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);
#else
  volatile float r = a / b;
  return r;
#endif
}

/// a * b + c with a single rounding (IEEE fused multiply-add on both sides).
COMPACT_HOST_DEVICE inline float fma(float a, float b, float c) {
#if defined(__CUDA_ARCH__)
  return __fmaf_rn(a, b, c);
#else
  return std::fma(a, b, c);
#endif
}

/// Largest integer <= x (exact).
COMPACT_HOST_DEVICE inline float floor(float x) {
#if defined(__CUDA_ARCH__)
  return floorf(x);
#else
  return std::floor(x);
#endif
}

/// Truncates a float in [0, 2^32) toward zero.
COMPACT_HOST_DEVICE inline std::uint32_t to_u32(float x) {
#if defined(__CUDA_ARCH__)
  return __float2uint_rz(x);
#else
  return static_cast<std::uint32_t>(x);
#endif
}

/// Converts an unsigned integer to the nearest float.
COMPACT_HOST_DEVICE inline float from_u32(std::uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint2float_rn(u);
#else
  return static_cast<float>(u);
#endif
}

/// Reinterprets the bits of a float.
COMPACT_HOST_DEVICE inline std::uint32_t bits_of(float x) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(x);
#else
  std::uint32_t u;
  std::memcpy(&u, &x, sizeof(u));
  return u;
#endif
}

/// The float with the given bits.
COMPACT_HOST_DEVICE inline float float_of(std::uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float x;
  std::memcpy(&x, &u, sizeof(x));
  return x;
#endif
}

/// A key whose unsigned order is a total order of floats (-inf < ... < -0 < +0 < ... < +inf), so
/// a maximum taken in any order returns the same bits.
COMPACT_HOST_DEVICE inline std::uint32_t ordered_key(float x) {
  const std::uint32_t u = bits_of(x);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

/// Inverse of ordered_key().
COMPACT_HOST_DEVICE inline float from_ordered_key(std::uint32_t k) {
  return float_of((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}

/// ordered_key(-inf): the identity of an ordered maximum.
inline constexpr std::uint32_t kOrderedMinusInf = 0x007fffffu;

/// Maximum of a and b in the total order of ordered_key().
COMPACT_HOST_DEVICE inline float ordered_max(float a, float b) {
  return ordered_key(a) >= ordered_key(b) ? a : b;
}

/// Coefficients of det_exp2()'s polynomial for 2^f on [0, 1], kExp2P5 f^5 + ... + kExp2P0
/// (p(0) = 1 exactly; relative error below 2e-7; fitted for this library). p(f) < 2 for every
/// float f in [0, 1) (checked exhaustively), so p(f) * 2^23 is an integer in [2^23, 2^24).
inline constexpr float kExp2P5 = 1.858732430e-03f;
inline constexpr float kExp2P4 = 9.031213820e-03f;  ///< Coefficient of f^4.
inline constexpr float kExp2P3 = 5.579370633e-02f;  ///< Coefficient of f^3.
inline constexpr float kExp2P2 = 2.401643842e-01f;  ///< Coefficient of f^2.
inline constexpr float kExp2P1 = 6.931515932e-01f;  ///< Coefficient of f.
inline constexpr float kExp2P0 = 1.0f;              ///< Constant term: p(0) = 1.

/// 2^f for f in [0, 1): the degree-5 polynomial kExp2P* by Horner's rule with fused
/// multiply-adds (__fmaf_rn on the device, std::fma on the host: the same bits).
COMPACT_HOST_DEVICE inline float exp2_poly(float f) {
  float p = kExp2P5;
  p = fma(p, f, kExp2P4);
  p = fma(p, f, kExp2P3);
  p = fma(p, f, kExp2P2);
  p = fma(p, f, kExp2P1);
  return fma(p, f, kExp2P0);
}

/// 2^x for x <= 0, the same bits on host and device: 0 below -64 (and for -inf or NaN), else
/// exp2_poly(f) * 2^n with n = floor(x), f = x - n. Inputs above 0 are treated as 0.
COMPACT_HOST_DEVICE inline float det_exp2(float x) {
  if (!(x >= -64.0f)) return 0.0f;
  if (x > 0.0f) x = 0.0f;
  const float n = floor(x);
  const float p = exp2_poly(sub(x, n));
  const int e = static_cast<int>(n);  // in [-64, 0]: 2^e is a normal float
  return mul(p, float_of(static_cast<std::uint32_t>(e + 127) << 23));
}

/// Bits of fixed-point precision of softmax terms (fix_exp2()).
inline constexpr int kFixBits = 20;

/// 2^x for x <= 0 in fixed point with kFixBits fractional bits, truncated: an integer in
/// [0, 2^20]; exactly 2^20 at x = 0 and 0 below x = -20. Sums of these are exact and independent
/// of the order of addition.
COMPACT_HOST_DEVICE inline std::uint32_t fix_exp2(float x) {
  if (!(x >= -static_cast<float>(kFixBits))) return 0u;
  return to_u32(mul(det_exp2(x), static_cast<float>(1u << kFixBits)));
}

#if defined(__CUDACC__)
/// fix_exp2(x) for every x that is not above 0 (-0, -inf and NaN included), in full-rate
/// arithmetic only: no conversion or rounding instructions (F2I / I2F / FRND run at a quarter of
/// the FMA rate and dominate a softmax-sum epilogue). Same bits as fix_exp2() by construction,
/// and checked on every such input by tests/mask/test_flash_prefill_gpu.cu:
/// - x is clamped to [-24, 0] (NaN -> -24); every input below -20 gives 0 either way;
/// - t = 1.5 * 2^23 + x rounded down is 1.5 * 2^23 + floor(x) exactly (the float spacing there is
///   1), so n = t - 1.5 * 2^23 is floor(x) and the bits of t are 0x4B400000 + floor(x);
/// - f and p = exp2_poly(f) are det_exp2()'s; p in [1, 2), so P = bits(p) - 0x3F000000 =
///   p * 2^23 exactly;
/// - fix_exp2 = trunc(p * 2^n * 2^20) (both products exact) = P >> (3 - n), a shift in [3, 27].
__device__ __forceinline__ std::uint32_t fix_exp2_nonpos(float x) {
  constexpr float kMagic = 12582912.0f;  // 1.5 * 2^23
  x = fmaxf(x, -24.0f);
  const float t = __fadd_rd(x, kMagic);
  const float p = exp2_poly(__fsub_rn(x, __fsub_rn(t, kMagic)));
  return (__float_as_uint(p) - 0x3F000000u) >> (0x4B400003u - __float_as_uint(t));
}

/// The bias quantize_biased() adds to the integer: 1.5 * 2^23.
inline constexpr float kQuantBias = 12582912.0f;  // 1.5 * 2^23

/// 1.5 * 2^23 + quantize_in_range(x, inv): the float whose bits hold the integer in their low
/// 22 bits (two's complement in the low byte for |q| <= 127).
__device__ __forceinline__ float quantize_biased(float x, float inv) {
  return __fadd_rd(__fadd_rn(__fmul_rn(x, inv), 0.5f), kQuantBias);
}

/// quantize(x, inv, levels) as a float, in full-rate arithmetic (no rounding or conversion
/// instruction), for the entries x of a vector whose absmax gave inv = quant_of(amax, levels).inv.
/// Then |x * inv| rounds to at most levels * (1 + 2^-23) (levels < 2^20), so quantize()'s clamp
/// never applies, and floor(w) for |w| < 2^22 is (w + 1.5 * 2^23 rounded down) - 1.5 * 2^23.
/// The result is an integer-valued float (never -0), exact in bf16 for levels <= 256.
__device__ __forceinline__ float quantize_in_range(float x, float inv) {
  return __fsub_rn(quantize_biased(x, inv), kQuantBias);
}

/// quantize_in_range() of 8 entries of such a vector, as bf16 integers (exact: |q| <= 256)
/// packed in a uint4, the 16 bytes a thread stores into a quantized tile.
__device__ __forceinline__ uint4 quantize8_bf16(const float (&x)[8], float inv) {
  std::uint32_t packed[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(quantize_in_range(x[2 * i], inv),
                                                   quantize_in_range(x[2 * i + 1], inv));
    std::memcpy(&packed[i], &v, 4);
  }
  return make_uint4(packed[0], packed[1], packed[2], packed[3]);
}

/// quantize_in_range() of 8 entries as int8 (exact for levels <= 127) packed in a uint2: the low
/// bytes of quantize_biased(), no conversion instruction (those run at a quarter of the FMA rate).
__device__ __forceinline__ uint2 quantize8_s8(const float (&x)[8], float inv) {
  std::uint32_t b[8];
#pragma unroll
  for (int i = 0; i < 8; ++i) b[i] = __float_as_uint(quantize_biased(x[i], inv));
  const std::uint32_t lo =
      __byte_perm(__byte_perm(b[0], b[1], 0x0040), __byte_perm(b[2], b[3], 0x0040), 0x5410);
  const std::uint32_t hi =
      __byte_perm(__byte_perm(b[4], b[5], 0x0040), __byte_perm(b[6], b[7], 0x0040), 0x5410);
  return make_uint2(lo, hi);
}
#endif

/// log2(e) as a float.
inline constexpr float kLog2e = 1.44269504088896341f;

/// Quantization of one vector: value ~= scale * integer, integer = quantize(value, inv, levels).
struct Quant {
  float scale = 0.0f;  ///< amax / levels (0 for an all-zero vector).
  float inv = 0.0f;    ///< levels / amax (0 for an all-zero vector).
};

/// Symmetric absmax quantization of a vector whose largest magnitude is `amax` to integers in
/// [-levels, levels]. Magnitudes below 1e-30 count as an all-zero vector (scale 0).
COMPACT_HOST_DEVICE inline Quant quant_of(float amax, float levels) {
  Quant q;
  if (amax >= 1e-30f) {
    q.scale = div(amax, levels);
    q.inv = div(levels, amax);
  }
  return q;
}

/// Rounds x * inv half-up to an integer clamped to [-levels, levels].
COMPACT_HOST_DEVICE inline int quantize(float x, float inv, int levels) {
  const float y = floor(add(mul(x, inv), 0.5f));
  const float l = static_cast<float>(levels);
  return static_cast<int>(y > l ? l : (y < -l ? -l : y));
}

/// |x| (exact).
COMPACT_HOST_DEVICE inline float abs(float x) {
  return float_of(bits_of(x) & 0x7fffffffu);
}

}  // namespace compact::exact
