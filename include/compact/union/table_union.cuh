/// @file table_union.cuh
/// @brief The union strategies: QBlockUnion, GroupUnion, BlockUnion, NoUnion (host and device).
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>

#include <cuda_runtime_api.h>

#include "compact/concepts/union_strategy.hpp"
#include "compact/core/error.hpp"
#include "compact/union/device/union_kernels.cuh"
#include "compact/union/device/union_params.hpp"
#include "compact/union/device/union_tuning.hpp"
#include "compact/union/device/union_workspace.hpp"
#include "compact/union/host_tables.hpp"

namespace compact {

/// One union strategy family: OR the mask over the query blocks of the chunk (kUnionQBlocks)
/// and/or over the heads of an execution group (kUnionHeads), then round to table blocks.
///
/// Unions over query blocks split off a tail: when the mask hints that its last query blocks
/// select differently from the rest (BlockMask::tail_q_blocks: FlashPrefill's final chunk, whose
/// last rows keep every block, or the rows past the ones whose window reaches before the chunk)
/// and the tables have a q_split array, those rows get a second table, so neither part's
/// blocks are executed for the other. Without a hint (or without q_split) the tail table is empty
/// and every row shares one table, as in the paper.
///
/// Every grouping runs the same host reference and the same device passes; only the TableShape
/// differs. The device build (build_device) enqueues three kernels (count, scan, emit; see
/// union/device/union_kernels.cuh) whose grids depend only on the limits, reads the lengths on
/// the device, never allocates and never synchronizes; it needs workspace_bytes() of scratch.
template <bool kUnionQBlocks, bool kUnionHeads, UnionTuningPolicy Tuning = UnionTuning>
struct TableUnion {
  /// Which rows share a table: the execution group (or one head), all query blocks of the chunk
  /// (or one).
  TableShape table_shape(const AttentionConfig& c, const PlanLimits& l) const {
    return TableShape::make(c, l, kUnionHeads ? c.group_size() : 1, !kUnionQBlocks,
                            /*tail_split=*/kUnionQBlocks);
  }

  /// Scratch bytes build_device needs (the per-table entry bitmaps), from the limits alone.
  std::size_t workspace_bytes(const AttentionConfig& c, const PlanLimits& l) const {
    return UnionWorkspace::carve(table_shape(c, l), Workspace{}).used;
  }

  /// Host build (host pointers): the reference every device build must equal.
  void build_host(const UnionArgs& a) const { reference::build_tables(a); }

  /// Device build (device pointers): a.tables from a.mask, equal to build_host's. Checks the
  /// arguments' layout on the host (compact::Error), then enqueues the passes on `stream`.
  void build_device(const UnionArgs& a, cudaStream_t stream) const {
    check_device_args(a);
    const UnionWorkspace ws = UnionWorkspace::carve(a.tables.shape, a.scratch);
    detail::launch_union_passes<Tuning>(
        UnionParams::make(a, ws.entry_bits, ws.entry_words_per_table), stream);
  }

 private:
  /// Host-side checks of what the kernels index with: layouts equal to those the limits fix,
  /// non-null buffers, a table capacity that int32 offsets can address.
  void check_device_args(const UnionArgs& a) const {
    const TableShape want = table_shape(a.config, a.limits);
    const TableShape& got = a.tables.shape;
    require(
        got.heads_per_table == want.heads_per_table && got.per_q_block == want.per_q_block &&
            got.tail_split == want.tail_split && got.num_heads == want.num_heads &&
            got.q_groups == want.q_groups && got.block_q == want.block_q &&
            got.max_batch == want.max_batch && got.table_block_tokens == want.table_block_tokens &&
            got.max_entries == want.max_entries,
        "union args.tables.shape",
        detail::cat("{heads_per_table ", got.heads_per_table, ", max_batch ", got.max_batch, "}"),
        "the union's table_shape(config, limits)");
    const BlockMask mask = BlockMask::shape_for(a.config, a.limits);
    require(a.mask.max_batch == mask.max_batch && a.mask.num_heads == mask.num_heads &&
                a.mask.max_q_blocks == mask.max_q_blocks &&
                a.mask.words_per_row == mask.words_per_row,
            "union args.mask layout", a.mask.words_per_row, "BlockMask::shape_for(config, limits)");
    require_not_null(a.mask.bits, "union args.mask.bits");
    require_not_null(a.tables.indptr, "union args.tables.indptr");
    require_not_null(a.tables.indices, "union args.tables.indices");
    require_not_null(a.tables.last_block_tokens, "union args.tables.last_block_tokens");
    require(a.batch.num_seqs >= 0 && a.batch.num_seqs <= a.limits.max_batch,
            "union args.batch.num_seqs", a.batch.num_seqs,
            detail::cat("in [0, limits.max_batch (", a.limits.max_batch, ")]"));
    if (a.batch.num_seqs > 0) {
      require_not_null(a.batch.cu_seqlens_q, "union args.batch.cu_seqlens_q");
      require_not_null(a.batch.kv_lens, "union args.batch.kv_lens");
    }
    require(got.capacity() <= static_cast<std::size_t>(std::numeric_limits<std::int32_t>::max()),
            "block table capacity (limits)", got.capacity(),
            "at most 2^31 - 1 entries (int32 indptr)");
    const int blocks_per_entry = got.table_block_tokens / a.config.block_k;
    require(blocks_per_entry >= 1 && Tuning::kStepWords % blocks_per_entry == 0,
            "table block tokens / config.block_k", blocks_per_entry,
            detail::cat("a divisor of the union tuning's kStepWords (", Tuning::kStepWords, ")"));
    if (workspace_bytes(a.config, a.limits) > 0) require_not_null(a.scratch.data, "union scratch");
  }
};

/// m[b][h][kb] = OR over query blocks: one table per (sequence, query head).
template <UnionTuningPolicy Tuning = UnionTuning>
using QBlockUnion = TableUnion<true, false, Tuning>;
/// OR over the heads of an execution group, per query block: one table per (sequence, group,
/// query block).
template <UnionTuningPolicy Tuning = UnionTuning>
using GroupUnion = TableUnion<false, true, Tuning>;
/// Both unions: one table per (sequence, execution group), the CompactAttention selection.
template <UnionTuningPolicy Tuning = UnionTuning>
using BlockUnion = TableUnion<true, true, Tuning>;
/// No union: one table per (sequence, query head, query block), for 2D block-sparse executors.
template <UnionTuningPolicy Tuning = UnionTuning>
using NoUnion = TableUnion<false, false, Tuning>;

}  // namespace compact
