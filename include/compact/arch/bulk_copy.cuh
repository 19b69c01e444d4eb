/// @file bulk_copy.cuh
/// @brief Hopper bulk copies (sm90+): one thread moves a contiguous global block into shared
/// memory through the copy engine, its completion counted in bytes by an mbarrier.
#pragma once

#include <cstdint>

#include "compact/arch/smem.cuh"
#include "compact/core/macros.hpp"

// cp.async.bulk and the transaction-count mbarrier exist from sm_90 on; other targets compile
// these to traps so that templates stay instantiable everywhere (never launched there).
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
/// 1 when compiling device code for sm_90 or later (bulk copies available), else 0.
#define COMPACT_BULK_COPY_ENABLED 1
#else
/// 1 when compiling device code for sm_90 or later (bulk copies available), else 0.
#define COMPACT_BULK_COPY_ENABLED 0
#endif

namespace compact::arch {

/// Initializes the shared-memory mbarrier at `bar` for `arrivals` arrivals per phase; call from
/// one thread, then mbarrier_init_fence() and a CTA barrier before any other thread uses it.
COMPACT_DEVICE void mbarrier_init(std::uint64_t* bar, int arrivals) {
#if COMPACT_BULK_COPY_ENABLED
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_addr(bar)), "r"(arrivals)
               : "memory");
#else
  __trap();
#endif
}

/// Makes this thread's mbarrier initializations visible to the copy engine (the async proxy).
COMPACT_DEVICE void mbarrier_init_fence() {
#if COMPACT_BULK_COPY_ENABLED
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
#endif
}

/// Arrives on `bar` and adds `bytes` to the transactions its current phase waits for.
COMPACT_DEVICE void mbarrier_arrive_expect_tx(std::uint64_t* bar, std::uint32_t bytes) {
#if COMPACT_BULK_COPY_ENABLED
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_addr(bar)),
               "r"(bytes)
               : "memory");
#else
  __trap();
#endif
}

/// Blocks until the phase of `bar` with parity `parity` has completed (its arrivals and its
/// transactions); the data those transactions wrote is then visible to this thread and to the
/// wgmma it issues.
COMPACT_DEVICE void mbarrier_wait(std::uint64_t* bar, std::uint32_t parity) {
#if COMPACT_BULK_COPY_ENABLED
  asm volatile(
      "{\n"
      ".reg .pred done;\n"
      "wait_%=:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra wait_%=;\n"
      "}\n" ::"r"(smem_addr(bar)),
      "r"(parity)
      : "memory");
#else
  __trap();
#endif
}

/// Copies `bytes` (a multiple of 16, both addresses 16-byte aligned) from global `src` to this
/// CTA's shared `dst` through the copy engine; the bytes complete a transaction of `bar`.
COMPACT_DEVICE void bulk_copy_g2s(void* dst, const void* src, std::uint32_t bytes,
                                  std::uint64_t* bar) {
#if COMPACT_BULK_COPY_ENABLED
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::
          "r"(smem_addr(dst)),
      "l"(src), "r"(bytes), "r"(smem_addr(bar))
      : "memory");
#else
  __trap();
#endif
}

}  // namespace compact::arch
