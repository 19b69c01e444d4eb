/// @file mma_sm80.cuh
/// @brief Sm80Mma: the two GEMMs of a KV tile with ldmatrix + mma.sync (sm80 and newer).
#pragma once

#include <cstdint>

#include "compact/arch/ldmatrix.cuh"
#include "compact/arch/mma.cuh"
#include "compact/executor/paged_flash/mainloop.cuh"

namespace compact::paged_flash {

/// Per-warp GEMMs: each warp owns kMAtoms m16 row atoms and loads its fragments with ldmatrix.
struct Sm80Mma {
  /// mma.sync reads shared memory through ldmatrix: no fence.
  static constexpr bool kNeedsProxyFence = false;

  /// s = Q K^T for the warp's rows against the kBlockN keys of `smem_k`.
  template <class Traits>
  static __device__ __forceinline__ void qk(float (&s)[Traits::kMAtoms][Traits::kNAtomsS * 4],
                                            const typename Traits::Element* smem_q,
                                            const typename Traits::Element* smem_k, int warp,
                                            int lane) {
    using T = typename Traits::Element;
    constexpr int kM = Traits::kMAtoms;
#pragma unroll
    for (int a = 0; a < kM; ++a) {
#pragma unroll
      for (int i = 0; i < Traits::kNAtomsS * 4; ++i) s[a][i] = 0.0f;
    }
    const int mi = lane & 7, mj = lane >> 3;
#pragma unroll
    for (int ks = 0; ks < Traits::kD / 16; ++ks) {
      std::uint32_t qa[kM][4];
#pragma unroll
      for (int a = 0; a < kM; ++a) {
        const int row = warp * Traits::kRowsPerWarp + a * 16 + mi + 8 * (mj & 1);
        arch::ldmatrix_x4(
            qa[a], smem_q + Traits::template swizzle<Traits::kBlockM>(row, 2 * ks + (mj >> 1)) * 8);
      }
#pragma unroll
      for (int np = 0; np < Traits::kNAtomsS / 2; ++np) {
        std::uint32_t kb[4];
        const int key = np * 16 + mi + 8 * (mj >> 1);
        arch::ldmatrix_x4(
            kb, smem_k + Traits::template swizzle<Traits::kBlockN>(key, 2 * ks + (mj & 1)) * 8);
        const std::uint32_t b0[2] = {kb[0], kb[1]}, b1[2] = {kb[2], kb[3]};
#pragma unroll
        for (int a = 0; a < kM; ++a) {
          arch::mma_16816<T>(&s[a][8 * np], qa[a], b0);
          arch::mma_16816<T>(&s[a][8 * np + 4], qa[a], b1);
        }
      }
    }
  }

  /// o += P V with P = s, packed one k16 step at a time (registers are scarce here).
  template <class Traits>
  static __device__ __forceinline__ void pv(float (&o)[Traits::kMAtoms][Traits::kNAtomsO * 4],
                                            const float (&s)[Traits::kMAtoms][Traits::kNAtomsS * 4],
                                            const typename Traits::Element* smem_v, int warp,
                                            int lane) {
    using T = typename Traits::Element;
    const int mi = lane & 7, mj = lane >> 3;
#pragma unroll
    for (int kk = 0; kk < Traits::kBlockN / 16; ++kk) {
      std::uint32_t pa[Traits::kMAtoms][4];
#pragma unroll
      for (int a = 0; a < Traits::kMAtoms; ++a) pack_p<T>(pa[a], s[a], kk);
#pragma unroll
      for (int dp = 0; dp < Traits::kNAtomsO / 2; ++dp) {
        std::uint32_t vb[4];
        const int key = kk * 16 + mi + 8 * (mj & 1);
        arch::ldmatrix_x4_trans(
            vb, smem_v + Traits::template swizzle<Traits::kBlockN>(key, 2 * dp + (mj >> 1)) * 8);
        const std::uint32_t b0[2] = {vb[0], vb[1]}, b1[2] = {vb[2], vb[3]};
#pragma unroll
        for (int a = 0; a < Traits::kMAtoms; ++a) {
          arch::mma_16816<T>(&o[a][8 * dp], pa[a], b0);
          arch::mma_16816<T>(&o[a][8 * dp + 4], pa[a], b1);
        }
      }
    }
  }
};

}  // namespace compact::paged_flash
