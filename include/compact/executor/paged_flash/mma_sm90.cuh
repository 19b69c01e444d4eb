/// @file mma_sm90.cuh
/// @brief Sm90Mma: the two GEMMs of a KV tile with warpgroup MMAs (sm90a).
#pragma once

#include <cstdint>

#include "compact/arch/wgmma.cuh"
#include "compact/executor/paged_flash/mainloop.cuh"

namespace compact::paged_flash {

/// Per-warpgroup GEMMs: warpgroup w owns rows [64 w, 64 w + 64) (one m16 atom per warp, the
/// wgmma accumulator layout being mma.sync's C layout per warp). S = Q K^T reads both operands
/// from shared memory (K-major); O += P V takes P from registers and V from shared memory as an
/// MN-major (transposed) operand, so no fragment of Q, K or V ever occupies registers.
struct Sm90Mma {
  /// cp.async writes, wgmma (async proxy) reads: fence.
  static constexpr bool kNeedsProxyFence = true;

  /// s = Q K^T for the warpgroup's 64 rows against the kBlockN keys of `smem_k`.
  template <class Traits>
  static __device__ __forceinline__ void qk(float (&s)[1][Traits::kNAtomsS * 4],
                                            const typename Traits::Element* smem_q,
                                            const typename Traits::Element* smem_k, int warp,
                                            int /*lane*/) {
    static_assert(Traits::kMAtoms == 1 && Traits::kRowsPerWarp == 16, "one m16 atom per warp");
    using T = typename Traits::Element;
    const int wg = warp / 4;
    arch::wgmma_fence();
#pragma unroll
    for (int ks = 0; ks < Traits::kD / 16; ++ks) {
      // K-major operands: column block ks / 4, 32 bytes per k16 step inside the 128-byte row.
      const T* a = smem_q + (ks / 4) * Traits::kBlockM * 64 + wg * 64 * 64 + (ks % 4) * 16;
      const T* b = smem_k + (ks / 4) * Traits::kBlockN * 64 + (ks % 4) * 16;
      arch::Wgmma<T, Traits::kBlockN>::ss(s[0], arch::smem_desc_sw128(a, 16, 1024),
                                          arch::smem_desc_sw128(b, 16, 1024), ks > 0);
    }
    arch::wgmma_commit();
    arch::wgmma_wait<0>();
  }

  /// o += P V: P packed from `s` into registers, V read from `smem_v` (MN-major).
  template <class Traits>
  static __device__ __forceinline__ void pv(float (&o)[1][Traits::kNAtomsO * 4],
                                            const float (&s)[1][Traits::kNAtomsS * 4],
                                            const typename Traits::Element* smem_v, int /*warp*/,
                                            int /*lane*/) {
    using T = typename Traits::Element;
    // All of P is packed first: the wgmmas are issued back to back and read it asynchronously.
    std::uint32_t pa[Traits::kBlockN / 16][4];
#pragma unroll
    for (int kk = 0; kk < Traits::kBlockN / 16; ++kk) pack_p<T>(pa[kk], s[0], kk);
    arch::wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < Traits::kBlockN / 16; ++kk) {
      // MN-major V: 64-column blocks kBlockN * 128 bytes apart, 8-key groups 1024 bytes apart.
      const T* b = smem_v + kk * 16 * 64;
      arch::Wgmma<T, Traits::kD>::rs_tnsp_b(o[0], pa[kk],
                                            arch::smem_desc_sw128(b, Traits::kBlockN * 128, 1024));
    }
    arch::wgmma_commit();
    arch::wgmma_wait<0>();
  }
};

}  // namespace compact::paged_flash
