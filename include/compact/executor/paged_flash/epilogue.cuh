/// @file epilogue.cuh
/// @brief Epilogues: normalize and write O (+ LSE), or write split-KV partials for the merge.
#pragma once

#include <cstdint>

#include "compact/arch/mma.cuh"
#include "compact/executor/paged_flash/mainloop.cuh"
#include "compact/executor/paged_flash/params.cuh"
#include "compact/executor/paged_flash/tile_scheduler.cuh"

namespace compact::paged_flash {

template <class Traits>
/// Writes a CTA's finished rows: final O (+ LSE), or split-KV partials for the merge.
struct Epilogue {
  using T = typename Traits::Element;         ///< Element type of O.
  using Acc = WarpAttention<Traits>;          ///< The mainloop's per-warp state.
  static constexpr int kM = Traits::kMAtoms;  ///< m16 row atoms per warp.

  /// Final output: normalized O rounded to T, staged through shared memory (the Q tile's space,
  /// free once the mainloop is done) so that global stores are whole 16-byte row chunks.
  static __device__ __forceinline__ void store(const Params& p, Acc& acc, const RowMap& rows,
                                               int q_begin, int m0, T* smem, int warp, int lane) {
    float inv[kM][2], lse[kM][2];
    acc.finish(inv, lse);
    const int rows_total = rows.rows();
    if (p.lse != nullptr && (lane & 3) == 0) {
#pragma unroll
      for (int a = 0; a < kM; ++a) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int r = m0 + Acc::atom_row(warp, a) + (lane >> 2) + 8 * h;
          if (r < rows_total) {
            p.lse[static_cast<std::int64_t>(q_begin + rows.token(r)) * p.num_q_heads +
                  rows.head(r)] = lse[a][h];
          }
        }
      }
    }
    __syncthreads();  // every warp is done reading the Q tile
#pragma unroll
    for (int a = 0; a < kM; ++a) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int r = Acc::atom_row(warp, a) + (lane >> 2) + 8 * h;
#pragma unroll
        for (int n = 0; n < Traits::kNAtomsO; ++n) {
          *reinterpret_cast<std::uint32_t*>(
              smem + Traits::template swizzle<Traits::kBlockM>(r, n) * 8 + (lane & 3) * 2) =
              arch::pack2<T>(acc.o[a][4 * n + 2 * h] * inv[a][h],
                             acc.o[a][4 * n + 2 * h + 1] * inv[a][h]);
        }
      }
    }
    __syncthreads();
    T* out = static_cast<T*>(p.o);
    const int chunk = threadIdx.x % Traits::kChunksPerRow;
#pragma unroll
    for (int pass = 0; pass < Traits::kQPasses; ++pass) {
      const int r = threadIdx.x / Traits::kChunksPerRow + pass * Traits::kRowsPerPass;
      if (m0 + r >= rows_total) continue;
      T* dst = out + (q_begin + rows.token(m0 + r)) * p.o_stride +
               static_cast<std::int64_t>(rows.head(m0 + r)) * Traits::kD + chunk * 8;
      *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(
          smem + Traits::template swizzle<Traits::kBlockM>(r, chunk) * 8);
    }
  }

  /// Split-KV partial: O normalized by this split's own sum (fp32) and its LSE, for the merge.
  static __device__ __forceinline__ void store_partial(const Params& p, Acc& acc,
                                                       const RowMap& rows, int q_begin, int m0,
                                                       int split, int warp, int lane) {
    float inv[kM][2], lse[kM][2];
    acc.finish(inv, lse);
    const int rows_total = rows.rows();
#pragma unroll
    for (int a = 0; a < kM; ++a) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int r = m0 + Acc::atom_row(warp, a) + (lane >> 2) + 8 * h;
        if (r >= rows_total) continue;
        const std::int64_t row =
            (split * p.part_rows + q_begin + rows.token(r)) * p.num_q_heads + rows.head(r);
        if ((lane & 3) == 0) p.part_lse[row] = lse[a][h];
        float* dst = p.part_o + row * Traits::kD + (lane & 3) * 2;
#pragma unroll
        for (int n = 0; n < Traits::kNAtomsO; ++n) {
          *reinterpret_cast<float2*>(dst + n * 8) = make_float2(
              acc.o[a][4 * n + 2 * h] * inv[a][h], acc.o[a][4 * n + 2 * h + 1] * inv[a][h]);
        }
      }
    }
  }
};

}  // namespace compact::paged_flash
