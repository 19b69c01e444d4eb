/// @file params.cuh
/// @brief Params: the kernel-side view of one run(), built on the host, passed by value.
#pragma once

#include <cstdint>

namespace compact::paged_flash {

/// Everything the paged-flash kernels read, flattened to plain values and pointers so the
/// struct can travel as a __grid_constant__ parameter. Built by PagedFlashExecutor::run().
struct Params {
  // Queries and outputs: [total_q][Hq][D] with token strides.
  const void* q;
  void* o;
  float* lse;  // optional [total_q][Hq]
  std::int64_t q_stride;
  std::int64_t o_stride;
  const std::int32_t* cu_seqlens_q;
  const std::int32_t* kv_lens;
  int num_seqs;
  int num_q_heads;
  int gqa_group;  // Hq / Hkv

  // Paged cache.
  const void* k_pages;
  const void* v_pages;
  const std::int32_t* page_table;
  std::int64_t page_table_stride;
  std::int64_t page_stride;   // elements between pages
  std::int64_t token_stride;  // elements between tokens of a page (Hkv * D)
  int page_size;
  int page_shift;  // log2(page_size)

  // Block tables (CSR) and their shape.
  const std::int32_t* indptr;
  const std::int32_t* indices;
  const std::int32_t* last_block_tokens;
  int heads_per_table;
  int head_groups;
  int q_groups;
  int per_q_block;
  int block_q;
  int table_block_tokens;
  int tiles_per_entry_shift;  // log2(table_block_tokens / kBlockN)

  // Schedule.
  int m_tiles_per_table;
  int num_splits;
  float scale_log2;  // softmax scale * log2(e)

  // Split-KV partials (num_splits > 1): [split][total_q_bound][Hq][D] and [split][..][Hq].
  float* part_o;
  float* part_lse;
  std::int64_t part_rows;  // total_q bound of the limits
};

}  // namespace compact::paged_flash
