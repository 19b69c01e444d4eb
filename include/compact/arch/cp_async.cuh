/// @file cp_async.cuh
/// @brief cp.async (sm80+): asynchronous 16-byte global-to-shared copies with zero fill.
#pragma once

#include <cstdint>

#include "compact/arch/smem.cuh"

namespace compact::arch {

/// Copies 16 bytes from global `src` to shared `dst` asynchronously (L2-only caching). When
/// `valid` is false nothing is read and `dst` is zero-filled, so `src` may be any mapped address
/// (callers pass the tensor base) and out-of-range rows never fault or leak garbage.
COMPACT_DEVICE void cp_async_16(void* dst, const void* src, bool valid) {
  const int src_bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src),
               "r"(src_bytes));
}

/// Closes the current group of cp.async operations.
COMPACT_DEVICE void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::);
}

/// Waits until at most `kPending` committed groups are still in flight (this thread's copies).
template <int kPending>
COMPACT_DEVICE void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
}

}  // namespace compact::arch
