/// @file gather.cuh
/// @brief Global-to-shared loads: the packed Q tile, and K/V tiles gathered from pages in place.
#pragma once

#include <cstdint>

#include "compact/arch/cp_async.cuh"
#include "compact/executor/paged_flash/params.cuh"
#include "compact/executor/paged_flash/tile_scheduler.cuh"

namespace compact::paged_flash {

/// Issues the cp.async copies of the Q tile: row r holds q[token(m0 + r)][head(m0 + r)][:].
/// Rows past the table's end are zero-filled (they never reach an output).
template <class Traits>
__device__ __forceinline__ void load_q_tile(const Params& p, const RowMap& rows, int q_begin,
                                            int m0, typename Traits::Element* smem_q) {
  using T = typename Traits::Element;
  const int chunk = threadIdx.x % Traits::kChunksPerRow;
  const T* q = static_cast<const T*>(p.q);
#pragma unroll
  for (int pass = 0; pass < Traits::kQPasses; ++pass) {
    const int r = threadIdx.x / Traits::kChunksPerRow + pass * Traits::kRowsPerPass;
    const bool valid = m0 + r < rows.rows();
    const T* src = q;
    if (valid) {
      src = q + (q_begin + rows.token(m0 + r)) * p.q_stride +
            static_cast<std::int64_t>(rows.head(m0 + r)) * Traits::kD + chunk * 8;
    }
    arch::cp_async_16(smem_q + Traits::template swizzle<Traits::kBlockM>(r, chunk) * 8, src, valid);
  }
}

/// The page-table walk for K/V tiles, shared by the CTA. Each of a tile's kBlockN rows is
/// resolved once (one thread per row, instead of once per 16-byte chunk) to its element offset in
/// the pools, into a small shared-memory array, a tile ahead of its copies: the lookup latency
/// overlaps the math, costs no registers during it, and a copy is one shared load and an add.
/// K and V use the same offsets. Rows at or past L_b get -1: their copies zero-fill without a
/// read, so the unused tail of a sequence's last page (whatever it holds) never enters the
/// softmax.
template <class Traits>
struct KvGather {
  /// Offset of row threadIdx.x of the tile starting at pos0 (threads < kBlockN).
  static __device__ __forceinline__ std::int64_t lookup(const Params& p, int b, int kv_len,
                                                        int pos0) {
    const int pos = pos0 + static_cast<int>(threadIdx.x);
    if (threadIdx.x >= Traits::kBlockN || pos >= kv_len) return -1;
    const std::int32_t page = __ldg(p.page_table + b * p.page_table_stride + (pos >> p.page_shift));
    return page * p.page_stride +
           static_cast<std::int64_t>(pos & (p.page_size - 1)) * p.token_stride;
  }

  /// Publishes a lookup() result into the tile's offset array (visible after the next barrier).
  static __device__ __forceinline__ void publish(std::int64_t* offsets, std::int64_t offset) {
    if (threadIdx.x < Traits::kBlockN) offsets[threadIdx.x] = offset;
  }

  /// Issues this thread's cp.async copies of a tile (KV head kvh) from `pool` into `smem`.
  static __device__ __forceinline__ void issue(int kvh, const std::int64_t* offsets,
                                               const typename Traits::Element* pool,
                                               typename Traits::Element* smem) {
    const int chunk = threadIdx.x % Traits::kChunksPerRow;
    const int row0 = threadIdx.x / Traits::kChunksPerRow;
    const typename Traits::Element* head = pool + kvh * Traits::kD + chunk * 8;
#pragma unroll
    for (int i = 0; i < Traits::kKvPasses; ++i) {
      const int row = row0 + i * Traits::kRowsPerPass;
      const std::int64_t offset = offsets[row];
      arch::cp_async_16(smem + Traits::template swizzle<Traits::kBlockN>(row, chunk) * 8,
                        offset >= 0 ? head + offset : pool, offset >= 0);
    }
  }
};

}  // namespace compact::paged_flash
