/// @file union_kernels.cuh
/// @brief The device union passes: count (mask rows -> entry bitmap, counts, last-block tokens),
/// scan (counts -> indptr, in place) and emit (bitmap -> ascending ids).
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_runtime_api.h>

#include <cub/block/block_load.cuh>
#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>
#include <cub/block/block_store.cuh>

#include "compact/core/cuda_check.hpp"
#include "compact/core/macros.hpp"
#include "compact/union/device/block_emit_entries.cuh"
#include "compact/union/device/block_row_union.cuh"
#include "compact/union/device/entry_bits.hpp"
#include "compact/union/device/union_params.hpp"
#include "compact/union/device/union_tuning.hpp"

namespace compact::detail {

/// Larger of two ints, for cub::BlockReduce (CUB's own functors moved between CCCL releases).
struct MaxInt {
  COMPACT_DEVICE int operator()(int a, int b) const { return a < b ? b : a; }
};

/// Block prefix of a multi-tile BlockScan: hands each tile the sum of the tiles before it. CUB
/// calls it from the first warp and uses lane 0's result; lane 0 (thread 0) ends with the total.
struct RunningPrefix {
  int total = 0;
  COMPACT_DEVICE int operator()(int tile_aggregate) {
    const int before = total;
    total += tile_aggregate;
    return before;
  }
};

/// Pass 1, one CTA per table: ORs the table's mask rows window by window (BlockRowUnion), rounds
/// each window to table entries, stores the entry bitmap in the workspace, and writes the entry
/// count into indptr[table] and last_block_tokens[table]. Tables without rows write 0 and leave.
template <class Tuning>
__global__ void __launch_bounds__(Tuning::kThreads) union_count_kernel(UnionParams p) {
  using RowUnion = BlockRowUnion<Tuning::kThreads, Tuning::kStepWords, Tuning::kLoadBatch>;
  using Reduce = cub::BlockReduce<int, Tuning::kThreads>;
  __shared__ typename RowUnion::TempStorage rows_storage;
  __shared__ typename Reduce::TempStorage reduce_storage;

  const int table = static_cast<int>(blockIdx.x);
  const TableRows t = table_rows(p, table);
  // The first table of each sequence publishes its tail split for the executor.
  if (p.q_split != nullptr && threadIdx.x == 0 && table % p.shape.tables_per_seq() == 0) {
    p.q_split[t.b] = t.q_split;
  }
  if (t.empty()) {  // uniform over the CTA
    if (threadIdx.x == 0) {
      p.indptr[table] = 0;
      p.last_block_tokens[table] = 0;
    }
    return;
  }
  const auto row_of = [&](int j) -> const std::uint32_t* {
    return p.mask.bits + t.row_offset(p.mask, j);
  };
  const int log2_r = p.log2_blocks_per_entry;
  std::uint32_t* bitmap = p.entry_bits + static_cast<std::size_t>(table) * p.entry_words_per_table;
  int count = 0;
  int last_entry = -1;
  for (int w0 = 0; w0 < t.num_words; w0 += Tuning::kStepWords) {
    const int n = min_of(Tuning::kStepWords, t.num_words - w0);
    const std::uint32_t last_mask = w0 + n == t.num_words ? tail_word_mask(t.num_kv_blocks) : ~0u;
    RowUnion(rows_storage).run(row_of, t.rows(), w0, n, last_mask);
    // kStepWords is a multiple of every r, so window words [k*r, (k+1)*r) are entry word
    // w0/r + k; words past n are zero, so a partial last entry word is exact.
    const int ew0 = w0 >> log2_r;
    const int n_ew = (n + (1 << log2_r) - 1) >> log2_r;
    for (int k = static_cast<int>(threadIdx.x); k < n_ew; k += Tuning::kThreads) {
      const std::uint32_t e = entry_word(rows_storage.words + (k << log2_r), log2_r);
      bitmap[ew0 + k] = e;
      count += __popc(e);
      if (e != 0) last_entry = max_of(last_entry, (ew0 + k) * 32 + 31 - __clz(e));
    }
    __syncthreads();  // the next window overwrites rows_storage
  }
  const int total = Reduce(reduce_storage).Sum(count);
  __syncthreads();  // reduce_storage is reused
  const int last = Reduce(reduce_storage).Reduce(last_entry, MaxInt{});
  if (threadIdx.x == 0) {  // CUB's block reductions are valid in thread 0
    const int T = p.shape.table_block_tokens;
    p.indptr[table] = total;
    p.last_block_tokens[table] = total == 0 ? 0 : min_of(T, t.kv_len - last * T);
  }
}

/// Pass 2, one CTA: exclusive scan of the counts in indptr[0 .. num_tables), in place, tile by
/// tile with a running prefix, then indptr[num_tables] = the total. A single CTA needs no
/// temporary storage and no tile-state initialization, and tables number in the thousands.
template <class Tuning>
__global__ void __launch_bounds__(Tuning::kScanThreads)
    union_scan_kernel(std::int32_t* indptr, int num_tables) {
  constexpr int kTile = Tuning::kScanThreads * Tuning::kScanItems;
  using Scan = cub::BlockScan<int, Tuning::kScanThreads>;
  __shared__ typename Scan::TempStorage storage;
  RunningPrefix prefix;
  for (int tile = 0; tile < num_tables; tile += kTile) {
    const int valid = min_of(kTile, num_tables - tile);
    int items[Tuning::kScanItems];
    // Each thread reads and writes only its own items, and the scan's barriers separate every
    // read of the tile from every write, so scanning in place is safe.
    cub::LoadDirectBlocked(static_cast<int>(threadIdx.x), indptr + tile, items, valid, 0);
    Scan(storage).ExclusiveSum(items, items, prefix);
    cub::StoreDirectBlocked(static_cast<int>(threadIdx.x), indptr + tile, items, valid);
    __syncthreads();  // storage is reused by the next tile
  }
  if (threadIdx.x == 0) indptr[num_tables] = prefix.total;
}

/// Pass 3, one CTA per table: writes the table's entry ids at indices[indptr[table] ..) from its
/// bitmap (BlockEmitEntries). Empty tables (all tables past the batch) leave at once.
template <class Tuning>
__global__ void __launch_bounds__(Tuning::kThreads) union_emit_kernel(UnionParams p) {
  using Emit = BlockEmitEntries<Tuning::kThreads>;
  __shared__ typename Emit::TempStorage storage;
  const int table = static_cast<int>(blockIdx.x);
  const int begin = p.indptr[table];
  const int count = p.indptr[table + 1] - begin;
  if (count <= 0) return;  // uniform over the CTA
  const TableRows t = table_rows(p, table);
  Emit(storage).run(p.entry_bits + static_cast<std::size_t>(table) * p.entry_words_per_table,
                    t.num_entry_words, count, p.indices + begin);
}

/// Enqueues the three passes on `stream`. Grids depend only on the table shape (the limits), so
/// the sequence can be captured in a CUDA graph; nothing is allocated and nothing synchronizes.
template <class Tuning>
void launch_union_passes(const UnionParams& p, cudaStream_t stream) {
  const int tables = p.shape.num_tables();
  union_count_kernel<Tuning><<<tables, Tuning::kThreads, 0, stream>>>(p);
  COMPACT_CHECK_LAUNCH("union_count_kernel");
  union_scan_kernel<Tuning><<<1, Tuning::kScanThreads, 0, stream>>>(p.indptr, tables);
  COMPACT_CHECK_LAUNCH("union_scan_kernel");
  union_emit_kernel<Tuning><<<tables, Tuning::kThreads, 0, stream>>>(p);
  COMPACT_CHECK_LAUNCH("union_emit_kernel");
}

}  // namespace compact::detail
