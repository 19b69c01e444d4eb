/// @file paged_kv.hpp
/// @brief PagedKV: the paged K/V cache as the attention and the estimators see it.
#pragma once

#include <cstdint>

#include "compact/core/macros.hpp"

namespace compact {

/// Per-(sequence slot, KV block, KV head) summaries of the keys (and optionally values), kept up
/// to date by append_kv (compact/cache/append_kv.cuh) so that estimators never re-read the whole
/// K cache (DESIGN.md section 4). Every array is fp32 [num_slots][max_blocks][Hkv][D]; entry
/// (slot, kb, h) summarizes the tokens [kb * Bk, min((kb + 1) * Bk, L)) that the sequence in that
/// slot holds, Bk = AttentionConfig::block_k, L its current length: the partial last block is
/// summarized over its valid tokens so far. Entries of blocks at or past ceil(L / Bk) are stale.
///
/// Only mean_k is needed by FlashPrefillMask; QuestMask needs min_k and max_k; mean_v is for
/// executors that correct for dropped blocks. append_kv updates every array that is non-null.
struct KeySummaries {
  float* mean_k = nullptr;  ///< Mean key of each KV block (over its valid tokens).
  int num_slots = 0;        ///< Sequence slots the buffer holds.
  int max_blocks = 0;       ///< KV blocks per slot (>= ceil(max_kv_len / Bk)).
  /// Optional [num_seqs]: slot of batch sequence b (engines reorder batches between steps).
  /// Null: slot b.
  const std::int32_t* slot_of_seq = nullptr;
  float* min_k = nullptr;   ///< Optional: per-channel minimum key of each KV block.
  float* max_k = nullptr;   ///< Optional: per-channel maximum key of each KV block.
  float* mean_v = nullptr;  ///< Optional: mean value of each KV block.
  /// Tokens per summarized block as a check: 0 (unchecked) or AttentionConfig::block_k.
  int block_size = 0;
  /// Optional host copy of slot_of_seq for device caches: when given, every slot id is checked
  /// on the host before a kernel uses it. Ignored for host caches.
  const std::int32_t* host_slot_of_seq = nullptr;

  /// Summary slot of sequence b: slot_of_seq[b], or b when slot_of_seq is null.
  COMPACT_HOST_DEVICE int slot(int b) const { return slot_of_seq ? slot_of_seq[b] : b; }
  /// Element offset of (slot, block kb, KV head h, channel 0) in any of the arrays.
  COMPACT_HOST_DEVICE std::int64_t offset(int slot_id, int kb, int h, int num_kv_heads,
                                          int head_dim) const {
    return ((static_cast<std::int64_t>(slot_id) * max_blocks + kb) * num_kv_heads + h) * head_dim;
  }
};

/// A paged K/V cache in the "NHD" layout: pool[page][slot in page][kv head][head dim], one pool
/// for K and one for V (they may interleave through page_stride, as in vLLM and FlashInfer).
///
/// Sequence b owns logical pages page_table[b * page_table_stride + i] for
/// i < ceil(L_b / page_size), in order; pages may be shared between sequences.
struct PagedKV {
  void* k_pages = nullptr;       ///< K pool.
  void* v_pages = nullptr;       ///< V pool.
  int num_pages = 0;             ///< Pages in each pool; page ids are in [0, num_pages).
  int page_size = 0;             ///< Tokens per page; must equal AttentionConfig::page_size.
  int num_kv_heads = 0;          ///< Must equal AttentionConfig::num_kv_heads.
  int head_dim = 0;              ///< Must equal AttentionConfig::head_dim.
  std::int64_t page_stride = 0;  ///< Elements between pages; 0 means page_size * Hkv * D.
  const std::int32_t* page_table = nullptr;  ///< [num_seqs][page_table_stride].
  int page_table_stride = 0;  ///< Entries per page-table row (>= pages of the longest seq).
  /// Optional host copy of page_table for device caches: when given, plan() checks every page id
  /// of every sequence on the host. Ignored for host caches.
  const std::int32_t* host_page_table = nullptr;
  KeySummaries summaries{};  ///< Optional; required by summary-based mask sources.

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
