/// @file mainloop.cuh
/// @brief The per-warp math of one KV tile: S = Q K^T, masking, online softmax, O += P V.
#pragma once

#include <cmath>
#include <cstdint>

#include "compact/arch/ldmatrix.cuh"
#include "compact/arch/math.cuh"
#include "compact/arch/mma.cuh"

namespace compact::paged_flash {

/// Accumulators and softmax state of one warp: kMAtoms m16 tiles of rows, each thread holding
/// two rows per atom (lane / 4 and lane / 4 + 8) in the mma.sync C layout.
template <class Traits>
struct WarpAttention {
  using T = typename Traits::Element;
  static constexpr int kM = Traits::kMAtoms;
  static constexpr int kNS = Traits::kNAtomsS;
  static constexpr int kNO = Traits::kNAtomsO;

  float o[kM][kNO][4];
  float s[kM][kNS][4];
  float row_max[kM][2];  // running max of scaled logits, log2 domain
  float row_sum[kM][2];  // this thread's share of the running sum of exp2

  __device__ __forceinline__ void init() {
#pragma unroll
    for (int a = 0; a < kM; ++a) {
#pragma unroll
      for (int n = 0; n < kNO; ++n) {
#pragma unroll
        for (int e = 0; e < 4; ++e) o[a][n][e] = 0.0f;
      }
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

  /// S = Q K^T for the warp's rows against the kBlockN keys of `smem_k`.
  __device__ __forceinline__ void qk(const T* smem_q, const T* smem_k, int warp, int lane) {
#pragma unroll
    for (int a = 0; a < kM; ++a) {
#pragma unroll
      for (int n = 0; n < kNS; ++n) {
#pragma unroll
        for (int e = 0; e < 4; ++e) s[a][n][e] = 0.0f;
      }
    }
    const int mi = lane & 7, mj = lane >> 3;
#pragma unroll
    for (int ks = 0; ks < Traits::kKStepsS; ++ks) {
      std::uint32_t qa[kM][4];
#pragma unroll
      for (int a = 0; a < kM; ++a) {
        const int row = atom_row(warp, a) + mi + 8 * (mj & 1);
        arch::ldmatrix_x4(qa[a], smem_q + Traits::swizzle(row, 2 * ks + (mj >> 1)) * 8);
      }
#pragma unroll
      for (int np = 0; np < kNS / 2; ++np) {
        std::uint32_t kb[4];
        const int key = np * 16 + mi + 8 * (mj >> 1);
        arch::ldmatrix_x4(kb, smem_k + Traits::swizzle(key, 2 * ks + (mj & 1)) * 8);
        const std::uint32_t b0[2] = {kb[0], kb[1]}, b1[2] = {kb[2], kb[3]};
#pragma unroll
        for (int a = 0; a < kM; ++a) {
          arch::mma_16816<T>(s[a][2 * np], qa[a], b0);
          arch::mma_16816<T>(s[a][2 * np + 1], qa[a], b1);
        }
      }
    }
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
            if (key > qpos || key >= kv_len) s[a][n][2 * h + e] = -INFINITY;
          }
        }
      }
    }
  }

  /// Online softmax: scales S into the log2 domain, updates the running max, rescales O and
  /// the running sums, and leaves P = exp2(S - max) in s.
  __device__ __forceinline__ void softmax(float scale_log2) {
#pragma unroll
    for (int a = 0; a < kM; ++a) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        float mx = -INFINITY;
#pragma unroll
        for (int n = 0; n < kNS; ++n) {
#pragma unroll
          for (int e = 0; e < 2; ++e) mx = fmaxf(mx, s[a][n][2 * h + e]);
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
            const float p = arch::fast_exp2(fmaf(s[a][n][2 * h + e], scale_log2, -base));
            s[a][n][2 * h + e] = p;
            sum += p;
          }
        }
        row_sum[a][h] = row_sum[a][h] * correction + sum;
#pragma unroll
        for (int n = 0; n < kNO; ++n) {
          o[a][n][2 * h] *= correction;
          o[a][n][2 * h + 1] *= correction;
        }
      }
    }
  }

  /// O += P V for the kBlockN keys of `smem_v`; P comes straight from the S registers (the C
  /// layout of two n8 atoms is the A layout of one k16 step).
  __device__ __forceinline__ void pv(const T* smem_v, int lane) {
    const int mi = lane & 7, mj = lane >> 3;
#pragma unroll
    for (int kk = 0; kk < Traits::kKStepsO; ++kk) {
      std::uint32_t pa[kM][4];
#pragma unroll
      for (int a = 0; a < kM; ++a) {
        pa[a][0] = arch::pack2<T>(s[a][2 * kk][0], s[a][2 * kk][1]);
        pa[a][1] = arch::pack2<T>(s[a][2 * kk][2], s[a][2 * kk][3]);
        pa[a][2] = arch::pack2<T>(s[a][2 * kk + 1][0], s[a][2 * kk + 1][1]);
        pa[a][3] = arch::pack2<T>(s[a][2 * kk + 1][2], s[a][2 * kk + 1][3]);
      }
#pragma unroll
      for (int dp = 0; dp < kNO / 2; ++dp) {
        std::uint32_t vb[4];
        const int key = kk * 16 + mi + 8 * (mj & 1);
        arch::ldmatrix_x4_trans(vb, smem_v + Traits::swizzle(key, 2 * dp + (mj >> 1)) * 8);
        const std::uint32_t b0[2] = {vb[0], vb[1]}, b1[2] = {vb[2], vb[3]};
#pragma unroll
        for (int a = 0; a < kM; ++a) {
          arch::mma_16816<T>(o[a][2 * dp], pa[a], b0);
          arch::mma_16816<T>(o[a][2 * dp + 1], pa[a], b1);
        }
      }
    }
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
