/// @file block_sparse_executor.cuh
/// @brief BlockSparseExecutor: the conventional 2D block-sparse kernel over NoUnion tables.
#pragma once

#include "compact/executor/paged_flash_executor.cuh"

namespace compact {

/// The 2D block-sparse baseline: one table per (sequence, query head, query block), and one CTA
/// per table, iterating only that query block's own KV blocks, with no GQA packing (the layout of
/// FlashAttention's and FlexAttention's block-sparse kernels). It runs the PagedFlashExecutor
/// kernels unchanged, so a comparison against BlockUnion + PagedFlashExecutor measures what the
/// unions buy (fewer, fuller tiles that share each K/V load across a group) and nothing else.
///
/// Requires NoUnion<> tables (compact::Error otherwise) and Bq <= 128, so a query block is one
/// row tile.
template <class Tuning = PagedFlashTuning>
struct BlockSparseExecutor : PagedFlashExecutor<Tuning> {
  /// Checks the table shape and Bq, then configures the paged-flash executor.
  void configure(const AttentionConfig& c, const PlanLimits& l, const TableShape& shape) {
    require(shape.per_q_block && shape.heads_per_table == 1, "table_shape()",
            detail::cat("heads_per_table ", shape.heads_per_table,
                        shape.per_q_block ? ", per query block" : ", per chunk"),
            "NoUnion tables (one per head and query block) for BlockSparseExecutor");
    require(c.block_q <= 128, "config.block_q", c.block_q,
            "<= 128 for BlockSparseExecutor (one query block per row tile)");
    PagedFlashExecutor<Tuning>::configure(c, l, shape);
  }
};

}  // namespace compact
