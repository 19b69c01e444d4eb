/// @file validate.hpp
/// @brief Host-side checks of one step's inputs against the config and limits (no sync).
#pragma once

#include <cstdint>

#include "compact/core/chunk_batch.hpp"
#include "compact/core/config.hpp"
#include "compact/core/error.hpp"
#include "compact/core/limits.hpp"
#include "compact/core/paged_kv.hpp"
#include "compact/core/space.hpp"

namespace compact {

/// Vector loads read 16 bytes at a time, so every tensor base and row stride is 16-byte aligned.
inline constexpr std::size_t kTensorAlignment = 16;

namespace detail {

inline void check_row_stride(std::int64_t stride, std::int64_t min, std::string_view arg) {
  require(stride == 0 || (stride >= min && stride % 8 == 0), arg, stride,
          cat("0 (dense rows) or a multiple of 8 elements that is >= ", min));
}

}  // namespace detail

/// Checks the shapes and pointers of a batch, and every length when they are readable on the host
/// (host batches, or device batches that carry host_cu_seqlens_q / host_kv_lens).
inline void validate_batch(const AttentionConfig& c, const PlanLimits& l, const ChunkBatch& batch,
                           Space space) {
  require(batch.num_seqs >= 1 && batch.num_seqs <= l.max_batch, "batch.num_seqs", batch.num_seqs,
          detail::cat("in [1, limits.max_batch = ", l.max_batch, "]"));
  require(batch.total_q >= 0 && batch.total_q <= l.total_q_bound(), "batch.total_q", batch.total_q,
          detail::cat("in [0, ", l.total_q_bound(), "] (the limits' query bound)"));
  if (batch.total_q > 0) require_aligned(batch.q, kTensorAlignment, "batch.q");
  require_not_null(batch.cu_seqlens_q, "batch.cu_seqlens_q");
  require_not_null(batch.kv_lens, "batch.kv_lens");
  detail::check_row_stride(batch.q_stride, std::int64_t{c.num_q_heads} * c.head_dim,
                           "batch.q_stride");

  const std::int32_t* cu = space == Space::host ? batch.cu_seqlens_q : batch.host_cu_seqlens_q;
  const std::int32_t* kv = space == Space::host ? batch.kv_lens : batch.host_kv_lens;
  if (cu != nullptr) {
    require(cu[0] == 0, "batch.cu_seqlens_q[0]", cu[0], "0");
    require(cu[batch.num_seqs] <= batch.total_q, "batch.cu_seqlens_q[num_seqs]", cu[batch.num_seqs],
            detail::cat("<= batch.total_q (", batch.total_q, ")"));
    for (int b = 0; b < batch.num_seqs; ++b) {
      const int n = cu[b + 1] - cu[b];
      require(n >= 0 && n <= l.max_chunk, detail::cat("chunk length n_b of sequence ", b), n,
              detail::cat("in [0, limits.max_chunk = ", l.max_chunk,
                          "] (cu_seqlens_q must be non-decreasing)"));
      if (kv == nullptr) continue;
      require(kv[b] >= n, detail::cat("batch.kv_lens[", b, "]"), kv[b],
              detail::cat(">= the chunk length n_b = ", n,
                          " (the KV length includes the chunk's own tokens)"));
    }
  }
  if (kv != nullptr) {
    for (int b = 0; b < batch.num_seqs; ++b) {
      require(kv[b] >= 0 && kv[b] <= l.max_kv_len, detail::cat("batch.kv_lens[", b, "]"), kv[b],
              detail::cat("in [0, limits.max_kv_len = ", l.max_kv_len, "]"));
    }
  }
}

/// Checks a cache against the config and limits, and every page id of every sequence when the
/// page table and lengths are readable on the host.
inline void validate_cache(const AttentionConfig& c, const PlanLimits& l, const ChunkBatch& batch,
                           const PagedKV& cache, Space space) {
  require(cache.page_size == c.page_size, "cache.page_size", cache.page_size,
          detail::cat("config.page_size (", c.page_size, ")"));
  require(cache.num_kv_heads == c.num_kv_heads, "cache.num_kv_heads", cache.num_kv_heads,
          detail::cat("config.num_kv_heads (", c.num_kv_heads, ")"));
  require(cache.head_dim == c.head_dim, "cache.head_dim", cache.head_dim,
          detail::cat("config.head_dim (", c.head_dim, ")"));
  require(cache.num_pages > 0, "cache.num_pages", cache.num_pages, "a positive page count");
  require_aligned(cache.k_pages, kTensorAlignment, "cache.k_pages");
  require_aligned(cache.v_pages, kTensorAlignment, "cache.v_pages");
  require_not_null(cache.page_table, "cache.page_table");
  detail::check_row_stride(cache.page_stride,
                           std::int64_t{c.page_size} * c.num_kv_heads * c.head_dim,
                           "cache.page_stride");
  const int pages_needed = ceil_div(l.max_kv_len, c.page_size);
  require(cache.page_table_stride >= pages_needed, "cache.page_table_stride",
          cache.page_table_stride,
          detail::cat(">= ceil(limits.max_kv_len / page_size) = ", pages_needed));

  const std::int32_t* table = space == Space::host ? cache.page_table : cache.host_page_table;
  const std::int32_t* kv = space == Space::host ? batch.kv_lens : batch.host_kv_lens;
  if (table == nullptr || kv == nullptr) return;
  for (int b = 0; b < batch.num_seqs; ++b) {
    const int pages = ceil_div(kv[b], c.page_size);
    const std::int32_t* row = table + static_cast<std::int64_t>(b) * cache.page_table_stride;
    for (int i = 0; i < pages; ++i) {
      require(row[i] >= 0 && row[i] < cache.num_pages,
              detail::cat("cache.page_table[", b, "][", i, "]"), row[i],
              detail::cat("a page id in [0, cache.num_pages = ", cache.num_pages, ")"));
    }
  }
}

/// Checks the output buffers.
inline void validate_output(const AttentionConfig& c, const ChunkBatch& batch,
                            const AttentionOutput& out) {
  if (batch.total_q > 0) require_aligned(out.o, kTensorAlignment, "out.o");
  detail::check_row_stride(out.o_stride, std::int64_t{c.num_q_heads} * c.head_dim, "out.o_stride");
}

}  // namespace compact
