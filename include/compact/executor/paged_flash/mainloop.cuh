/// @file mainloop.cuh
/// @brief The math of one KV tile: S = Q K^T, masking, online softmax, O += P V.
#pragma once

#include <cmath>
#include <cstdint>

#include "compact/arch/math.cuh"
#include "compact/arch/mma.cuh"

namespace compact::paged_flash {

/// P for k16 step kk of atom a as an mma A fragment: two n8 chunks of the C layout are one k16
/// step of the A layout, so P never leaves registers.
template <class T, int kCols>
__device__ __forceinline__ void pack_p(std::uint32_t (&pa)[4], const float (&s)[kCols], int kk) {
  pa[0] = arch::pack2<T>(s[8 * kk + 0], s[8 * kk + 1]);
  pa[1] = arch::pack2<T>(s[8 * kk + 2], s[8 * kk + 3]);
  pa[2] = arch::pack2<T>(s[8 * kk + 4], s[8 * kk + 5]);
  pa[3] = arch::pack2<T>(s[8 * kk + 6], s[8 * kk + 7]);
}

/// Accumulators and online-softmax state of one warp's rows, in the mma.sync C layout that the
/// wgmma accumulators share: for row atom a, thread lane holds rows lane/4 and lane/4 + 8 and,
/// in chunk c, columns 8c + 2 (lane % 4) + {0, 1} as [a][4c + {0, 1}] and [a][4c + {2, 3}].
/// The two GEMMs come from Traits::Mma; everything else is shared by the sm80 and sm90 kernels.
template <class Traits>
struct WarpAttention {
  using T = typename Traits::Element;           ///< Element type.
  using Mma = typename Traits::Mma;             ///< GEMM policy.
  static constexpr int kM = Traits::kMAtoms;    ///< m16 row atoms per warp.
  static constexpr int kNS = Traits::kNAtomsS;  ///< n8 column chunks of S.
  static constexpr int kNO = Traits::kNAtomsO;  ///< n8 column chunks of O.

  float o[kM][kNO * 4];  ///< Unnormalized O accumulators.
  float s[kM][kNS * 4];  ///< S of the current tile, then P after softmax().
  float row_max[kM][2];  ///< running max of scaled logits, log2 domain
  float row_sum[kM][2];  ///< this thread's share of the running sum of exp2

  /// Zeroes O and the row sums, sets the running maxima to -inf.
  __device__ __forceinline__ void init() {
#pragma unroll
    for (int a = 0; a < kM; ++a) {
#pragma unroll
      for (int i = 0; i < kNO * 4; ++i) o[a][i] = 0.0f;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        row_max[a][h] = -INFINITY;
        row_sum[a][h] = 0.0f;
      }
    }
  }

  /// First row (within the CTA tile) of this warp's atom a.
  static __device__ __forceinline__ int atom_row(int warp, int a) {
    return warp * Traits::kRowsPerWarp + a * 16;
  }

  /// S = Q K^T for the warp's rows against the K tile in shared memory.
  __device__ __forceinline__ void qk(const T* smem_q, const T* smem_k, int warp, int lane) {
    Mma::template qk<Traits>(s, smem_q, smem_k, warp, lane);
  }

  /// Sets S to -inf where key position > query position (bottom-right causal) or >= kv_len.
  /// Row positions are derived here rather than kept live: few tiles need a mask.
  template <class RowMap>
  __device__ __forceinline__ void mask(const RowMap& rows, int m0, int pos0, int kv_pos0,
                                       int kv_len, int warp, int lane) {
    const int col0 = kv_pos0 + 2 * (lane & 3);
    const int last_row = rows.rows() - 1;  // padding rows mirror the last real one
#pragma unroll
    for (int a = 0; a < kM; ++a) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int r = min(m0 + atom_row(warp, a) + (lane >> 2) + 8 * h, last_row);
        const int qpos = pos0 + rows.token(r);
#pragma unroll
        for (int n = 0; n < kNS; ++n) {
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const int key = col0 + n * 8 + e;
            if (key > qpos || key >= kv_len) s[a][4 * n + 2 * h + e] = -INFINITY;
          }
        }
      }
    }
  }

  /// Online softmax: scales S into the log2 domain, updates the running max, rescales O and the
  /// running sums, and leaves P = exp2(S - max) in s.
  __device__ __forceinline__ void softmax(float scale_log2) {
#pragma unroll
    for (int a = 0; a < kM; ++a) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        float mx = -INFINITY;
#pragma unroll
        for (int n = 0; n < kNS; ++n) {
          mx = fmaxf(mx, fmaxf(s[a][4 * n + 2 * h], s[a][4 * n + 2 * h + 1]));
        }
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float new_max = fmaxf(row_max[a][h], mx * scale_log2);
        // A row that has seen only masked keys keeps max -inf; subtract 0 so exp2 gives 0.
        const float base = new_max == -INFINITY ? 0.0f : new_max;
        const float correction = arch::fast_exp2(row_max[a][h] - base);
        row_max[a][h] = new_max;
        float sum = 0.0f;
#pragma unroll
        for (int n = 0; n < kNS; ++n) {
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            float& v = s[a][4 * n + 2 * h + e];
            v = arch::fast_exp2(fmaf(v, scale_log2, -base));
            sum += v;
          }
        }
        row_sum[a][h] = row_sum[a][h] * correction + sum;
#pragma unroll
        for (int n = 0; n < kNO; ++n) {
          o[a][4 * n + 2 * h] *= correction;
          o[a][4 * n + 2 * h + 1] *= correction;
        }
      }
    }
  }

  /// O += P V, P rounded to T straight from the S registers (the policy packs it).
  __device__ __forceinline__ void pv(const T* smem_v, int warp, int lane) {
    Mma::template pv<Traits>(o, s, smem_v, warp, lane);
  }

  /// Finishes the row sums across the quad and returns, per row, 1 / sum (0 for an empty row)
  /// and the natural-log LSE (-inf for an empty row).
  __device__ __forceinline__ void finish(float (&inv)[kM][2], float (&lse)[kM][2]) {
#pragma unroll
    for (int a = 0; a < kM; ++a) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        float sum = row_sum[a][h];
        sum += __shfl_xor_sync(0xffffffffu, sum, 1);
        sum += __shfl_xor_sync(0xffffffffu, sum, 2);
        inv[a][h] = sum > 0.0f ? 1.0f / sum : 0.0f;
        lse[a][h] = sum > 0.0f ? (row_max[a][h] + log2f(sum)) * 0.69314718055994531f : -INFINITY;
      }
    }
  }
};

}  // namespace compact::paged_flash
