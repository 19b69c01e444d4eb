/// @file paged_kv.hpp
/// @brief PagedKV: the paged K/V cache as the attention and the estimators see it.
#pragma once

#include <cstdint>

#include "compact/core/macros.hpp"

namespace compact {

/// Per-(sequence slot, KV block, KV head) summaries of the keys, kept up to date by append_kv so
/// that estimators never re-read the whole K cache (DESIGN.md section 4). fp32.
struct KeySummaries {
  float* mean_k = nullptr;  ///< [num_slots][max_blocks][Hkv][D] mean key of each KV block.
  int num_slots = 0;        ///< Sequence slots the buffer holds.
  int max_blocks = 0;       ///< KV blocks per slot (>= ceil(max_kv_len / Bk)).
  /// Optional [num_seqs]: slot of batch sequence b (engines reorder batches between steps).
  /// Null: slot b.
  const std::int32_t* slot_of_seq = nullptr;

  COMPACT_HOST_DEVICE int slot(int b) const { return slot_of_seq ? slot_of_seq[b] : b; }
};

/// A paged K/V cache in the "NHD" layout: pool[page][slot in page][kv head][head dim], one pool
/// for K and one for V (they may interleave through page_stride, as in vLLM and FlashInfer).
///
/// Sequence b owns logical pages page_table[b * page_table_stride + i] for
/// i < ceil(L_b / page_size), in order; pages may be shared between sequences.
struct PagedKV {
  void* k_pages = nullptr;          ///< K pool.
  void* v_pages = nullptr;          ///< V pool.
  int num_pages = 0;                ///< Pages in each pool; page ids are in [0, num_pages).
  int page_size = 0;                ///< Tokens per page; must equal AttentionConfig::page_size.
  int num_kv_heads = 0;             ///< Must equal AttentionConfig::num_kv_heads.
  int head_dim = 0;                 ///< Must equal AttentionConfig::head_dim.
  std::int64_t page_stride = 0;     ///< Elements between pages; 0 means page_size * Hkv * D.
  const std::int32_t* page_table = nullptr;  ///< [num_seqs][page_table_stride].
  int page_table_stride = 0;        ///< Entries per page-table row (>= pages of the longest seq).
  /// Optional host copy of page_table for device caches: when given, plan() checks every page id
  /// of every sequence on the host. Ignored for host caches.
  const std::int32_t* host_page_table = nullptr;
  KeySummaries summaries{};         ///< Optional; required by summary-based mask sources.

  /// Resolved element stride between pages.
  COMPACT_HOST_DEVICE std::int64_t resolved_page_stride() const {
    return page_stride != 0 ? page_stride
                            : static_cast<std::int64_t>(page_size) * num_kv_heads * head_dim;
  }
  /// Element offset of token `pos` of sequence b, KV head `h`, within a pool.
  COMPACT_HOST_DEVICE std::int64_t offset(int b, int pos, int h) const {
    const int page = page_table[static_cast<std::int64_t>(b) * page_table_stride + pos / page_size];
    return page * resolved_page_stride() +
           (static_cast<std::int64_t>(pos % page_size) * num_kv_heads + h) * head_dim;
  }
};

}  // namespace compact
