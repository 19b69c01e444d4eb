/// @file config.hpp
/// @brief AttentionConfig: the static shape of one attention layer, validated once.
#pragma once

#include <cmath>

#include "compact/core/dtype.hpp"
#include "compact/core/error.hpp"
#include "compact/core/macros.hpp"

namespace compact {

/// The static description of one attention layer: head counts, head dim, element type, the
/// semantic block sizes of the sparse mask and the physical page size of the KV cache.
///
/// Everything here is fixed for the lifetime of an Engine; per-step values (lengths, pointers)
/// live in ChunkBatch and PagedKV. Call validate() (the Engine does) before use.
struct AttentionConfig {
  int num_q_heads = 32;       ///< Hq: query heads of this layer (on this GPU).
  int num_kv_heads = 8;       ///< Hkv: KV heads; Hq must be a multiple.
  int head_dim = 128;         ///< D: elements per head.
  DType dtype = DType::bf16;  ///< Element type of Q, K, V and O.
  int block_q = 128;   ///< Bq: query tokens per mask row (query block), relative to the chunk.
  int block_k = 128;   ///< Bk: KV tokens per mask column (KV block), from position 0.
  int page_size = 16;  ///< Tokens per page of the paged KV cache.
  /// Query heads that share one block table ("execution group"). 0 selects the GQA group
  /// (Hq / Hkv); a divisor of it trades K/V reuse in the executor for sparsity.
  int exec_group_size = 0;
  /// Softmax scale applied to q.k; 0 selects 1/sqrt(head_dim).
  float softmax_scale = 0.0f;

  /// Query heads per KV head (G).
  COMPACT_HOST_DEVICE constexpr int gqa_group() const { return num_q_heads / num_kv_heads; }
  /// Resolved execution group size (exec_group_size, or G when 0).
  COMPACT_HOST_DEVICE constexpr int group_size() const {
    return exec_group_size == 0 ? gqa_group() : exec_group_size;
  }
  /// Tokens covered by one block-table entry: the coarser of the KV block and the page. A KV block
  /// is Bk/page_size whole pages, or several KV blocks share one page and dedupe into it.
  COMPACT_HOST_DEVICE constexpr int table_block_tokens() const {
    return block_k > page_size ? block_k : page_size;
  }
  /// The effective softmax scale.
  float scale() const {
    return softmax_scale != 0.0f ? softmax_scale : 1.0f / std::sqrt(static_cast<float>(head_dim));
  }

  /// Throws compact::Error naming the first field that is out of range.
  void validate() const {
    require(num_kv_heads > 0, "config.num_kv_heads", num_kv_heads, "a positive head count");
    require(num_q_heads > 0 && num_q_heads % num_kv_heads == 0, "config.num_q_heads", num_q_heads,
            detail::cat("a positive multiple of config.num_kv_heads (", num_kv_heads, ")"));
    require(head_dim > 0 && head_dim % 8 == 0 && head_dim <= 256, "config.head_dim", head_dim,
            "a multiple of 8 in [8, 256] (device executors support 64 and 128)");
    require(dtype == DType::bf16 || dtype == DType::fp16, "config.dtype", static_cast<int>(dtype),
            "DType::bf16 or DType::fp16");
    require(is_pow2(block_q) && block_q >= 16 && block_q <= 256, "config.block_q", block_q,
            "a power of two in [16, 256]");
    require(is_pow2(block_k) && block_k >= 16 && block_k <= 256, "config.block_k", block_k,
            "a power of two in [16, 256]");
    require(is_pow2(page_size) && page_size <= 1024, "config.page_size", page_size,
            "a power of two in [1, 1024]");
    const int g = gqa_group();
    require(exec_group_size >= 0 && (exec_group_size == 0 || g % exec_group_size == 0),
            "config.exec_group_size", exec_group_size,
            detail::cat("0 (the GQA group) or a divisor of num_q_heads / num_kv_heads (", g, ")"));
    require(std::isfinite(softmax_scale) && softmax_scale >= 0.0f, "config.softmax_scale",
            softmax_scale, "0 (meaning 1/sqrt(head_dim)) or a positive finite scale");
  }
};

}  // namespace compact
