/// @file block_emit_entries.cuh
/// @brief BlockEmitEntries: a CTA turns one table's entry bitmap into its ascending entry ids.
#pragma once

#include <cstdint>

#include <cub/block/block_scan.cuh>

#include "compact/core/macros.hpp"

namespace compact {

/// Block-level bitmap-to-list compaction: thread t takes word w0 + t of the bitmap, a BlockScan of
/// the words' popcounts gives each thread where its ids go, and it writes them in bit order, so
/// the list is ascending by construction. The caller owns the TempStorage.
template <int kThreads>
class BlockEmitEntries {
  using Scan = cub::BlockScan<int, kThreads>;

 public:
  /// Shared memory of one CTA (the block scan's).
  using TempStorage = typename Scan::TempStorage;

  /// An emitter over shared storage `storage`.
  COMPACT_DEVICE explicit BlockEmitEntries(TempStorage& storage) : storage_(storage) {}

  /// Writes the ids (32 * word + bit) of the set bits of words[0 .. num_words) to out[0 .. count),
  /// ascending, where count is the bitmap's popcount (the caller knows it from the count pass and
  /// stops early once it is reached). Every thread must call it.
  COMPACT_DEVICE void run(const std::uint32_t* words, int num_words, int count, std::int32_t* out) {
    int written = 0;  // identical in every thread (from the scan's aggregate)
    for (int w0 = 0; w0 < num_words && written < count; w0 += kThreads) {
      const int w = w0 + static_cast<int>(threadIdx.x);
      std::uint32_t bits = w < num_words ? words[w] : 0u;
      int offset = 0, aggregate = 0;
      Scan(storage_).ExclusiveSum(__popc(bits), offset, aggregate);
      std::int32_t* dst = out + written + offset;
      for (; bits != 0; bits &= bits - 1) *dst++ = w * 32 + (__ffs(bits) - 1);
      written += aggregate;
      __syncthreads();  // the scan's storage is reused by the next word window
    }
  }

 private:
  TempStorage& storage_;
};

}  // namespace compact
