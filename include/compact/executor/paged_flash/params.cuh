/// @file params.cuh
/// @brief Params: the kernel-side view of one run(), built on the host, passed by value.
#pragma once

#include <cstdint>

#include "compact/core/block_tables.hpp"

namespace compact::paged_flash {

/// Everything the paged-flash kernels read, flattened to plain values and pointers so the
/// struct can travel as a __grid_constant__ parameter. Built by PagedFlashExecutor::run().
struct Params {
  // Queries and outputs: [total_q][Hq][D] with token strides.
  const void* q;          ///< Queries (bf16 or fp16), [total_q][Hq][D].
  void* o;                ///< Output, same layout and type as q.
  float* lse;             ///< Optional log-sum-exp per (row, head), [total_q][Hq]; null to skip.
  std::int64_t q_stride;  ///< Elements between query tokens.
  std::int64_t o_stride;  ///< Elements between output tokens.
  const std::int32_t* cu_seqlens_q;  ///< Chunk row offsets per sequence, [num_seqs + 1].
  const std::int32_t* kv_lens;       ///< Cached tokens per sequence, chunk included.
  int num_seqs;                      ///< Sequences in the batch.
  int num_q_heads;                   ///< Hq.
  int gqa_group;                     ///< Hq / Hkv.

  // Paged cache.
  const void* k_pages;             ///< K page pool.
  const void* v_pages;             ///< V page pool.
  const std::int32_t* page_table;  ///< Logical-to-physical pages, [num_seqs][stride].
  std::int64_t page_table_stride;  ///< Entries per page-table row.
  std::int64_t page_stride;        ///< Elements between pages.
  std::int64_t token_stride;       ///< Elements between tokens of a page (Hkv * D).
  int page_size;                   ///< Tokens per page (a power of two).
  int page_shift;                  ///< log2(page_size).

  // Block tables (CSR) and their shape: the kernel maps tables to rows with the same
  // TableShape members the unions use to lay them out, so the two cannot disagree.
  const std::int32_t* indptr;             ///< CSR offsets of the block tables.
  const std::int32_t* indices;            ///< CSR logical table-block ids.
  const std::int32_t* last_block_tokens;  ///< Valid tokens of each table's last entry.
  const std::int32_t* q_split;            ///< BlockTables::q_split (null: no tail table).
  TableShape shape;                       ///< The tables' shape (BlockTables::shape).
  int tiles_per_entry_shift;              ///< log2(shape.table_block_tokens / kBlockN).

  // Schedule.
  /// Row tiles (kBlockM packed rows each) per table; read by TileScheduler::decode only (a tail
  /// split's decode_tail_split packs each pair's tiles by their real counts).
  int m_tiles_per_table;
  int num_splits;    ///< CTAs each table's KV tiles are split across (1: no split).
  float scale_log2;  ///< Softmax scale * log2(e).

  // Split-KV partials (num_splits > 1): [split][total_q_bound][Hq][D] and [split][..][Hq].
  float* part_o;           ///< Split partial outputs.
  float* part_lse;         ///< Split partial log-sum-exps.
  std::int64_t part_rows;  ///< Total_q bound of the limits (row extent of the partials).
};

}  // namespace compact::paged_flash
