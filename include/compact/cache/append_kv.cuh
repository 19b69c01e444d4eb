/// @file append_kv.cuh
/// @brief append_kv: writes a chunk's K/V into the paged cache and refreshes the per-block
/// summaries (mean key, optional min/max key and mean value) of every block the chunk touches.
///
/// Semantics (host and device give the same bits):
/// - Token t of sequence b in the chunk goes to position p = L_b - n_b + t of the cache, i.e. to
///   slot p % page_size of page page_table[b][p / page_size], for K and V (any page size).
/// - The blocks touched are kb = (L_b - n_b) / Bk ... (L_b - 1) / Bk (Bk = config.block_k): the
///   possibly partial block the chunk starts in, every block it fills, and the possibly partial
///   block it ends in. For each of them, each KV head h and channel d, the summaries are
///   recomputed from scratch over the block's valid tokens [kb * Bk, min((kb + 1) * Bk, L_b)):
///   tokens before the chunk are read from the cache (only those of the touched block: never the
///   rest of the cache), the chunk's own tokens from `chunk.k` / `chunk.v`. The mean is an fp32
///   sum in ascending token order divided (correctly rounded) by the token count; min and max
///   scan in the same order. Recomputing instead of updating incrementally makes the summary of
///   a block independent of how the prompt was chunked: it always equals the from-scratch mean.
/// - Summary arrays that are null are skipped; with no summary array at all only K/V are written.
/// - Blocks at or past ceil(L_b / Bk) are not touched (stale entries there are never read).
#pragma once

#include <cstdint>
#include <cstring>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include "compact/arch/widen.cuh"
#include "compact/cache/kv_chunk.hpp"
#include "compact/cache/summary_check.hpp"
#include "compact/core/config.hpp"
#include "compact/core/cuda_check.hpp"
#include "compact/core/dtype.hpp"
#include "compact/core/error.hpp"
#include "compact/core/limits.hpp"
#include "compact/core/paged_kv.hpp"
#include "compact/core/space.hpp"
#include "compact/core/validate.hpp"
#include "compact/mask/exact_math.hpp"

namespace compact {
namespace append_detail {

/// Host checks shared by both appends (compact::Error names the first bad argument).
inline void validate(const AttentionConfig& c, const PlanLimits& l, const KvChunk& chunk,
                     const PagedKV& cache, Space space) {
  using detail::cat;
  c.validate();
  l.validate();
  require(chunk.num_seqs >= 1 && chunk.num_seqs <= l.max_batch, "chunk.num_seqs", chunk.num_seqs,
          cat("in [1, limits.max_batch = ", l.max_batch, "]"));
  require(chunk.total >= 0 && chunk.total <= l.total_q_bound(), "chunk.total", chunk.total,
          cat("in [0, ", l.total_q_bound(), "] (the limits' token bound)"));
  if (chunk.total > 0) {
    require_aligned(chunk.k, kTensorAlignment, "chunk.k");
    require_aligned(chunk.v, kTensorAlignment, "chunk.v");
  }
  require_not_null(chunk.cu_seqlens, "chunk.cu_seqlens");
  require_not_null(chunk.kv_lens, "chunk.kv_lens");
  const std::int64_t row = std::int64_t{c.num_kv_heads} * c.head_dim;
  detail::check_row_stride(chunk.k_stride, row, "chunk.k_stride");
  detail::check_row_stride(chunk.v_stride, row, "chunk.v_stride");
  const std::int32_t* cu = space == Space::host ? chunk.cu_seqlens : chunk.host_cu_seqlens;
  const std::int32_t* kv = space == Space::host ? chunk.kv_lens : chunk.host_kv_lens;
  if (cu != nullptr) {
    require(cu[0] == 0, "chunk.cu_seqlens[0]", cu[0], "0");
    require(cu[chunk.num_seqs] <= chunk.total, "chunk.cu_seqlens[num_seqs]", cu[chunk.num_seqs],
            cat("<= chunk.total (", chunk.total, ")"));
    for (int b = 0; b < chunk.num_seqs; ++b) {
      const int n = cu[b + 1] - cu[b];
      require(n >= 0 && n <= l.max_chunk, cat("chunk length n_b of sequence ", b), n,
              cat("in [0, limits.max_chunk = ", l.max_chunk, "]"));
      if (kv != nullptr) {
        require(kv[b] >= n && kv[b] <= l.max_kv_len, cat("chunk.kv_lens[", b, "]"), kv[b],
                cat("in [n_b = ", n, ", limits.max_kv_len = ", l.max_kv_len,
                    "] (the length after the append includes the chunk)"));
      }
    }
  }
  ChunkBatch lens;  // validate_cache only reads the lengths
  lens.num_seqs = chunk.num_seqs;
  lens.kv_lens = chunk.kv_lens;
  lens.host_kv_lens = chunk.host_kv_lens;
  validate_cache(c, l, lens, cache, space);
  const KeySummaries& s = cache.summaries;
  if (s.mean_k || s.min_k || s.max_k || s.mean_v) {
    SummaryNeeds present;
    present.mean_k = s.mean_k != nullptr;
    present.min_max_k = s.min_k != nullptr || s.max_k != nullptr;
    present.mean_v = s.mean_v != nullptr;
    validate_summaries(c, l, chunk.num_seqs, s, space, present, "append_kv");
  }
}

/// The largest number of KV blocks one sequence's chunk can touch.
inline int max_touched_blocks(const AttentionConfig& c, const PlanLimits& l) {
  return min_of(ceil_div(l.max_chunk, c.block_k) + 1, ceil_div(l.max_kv_len, c.block_k));
}

/// Most pages one KV block can span (Bk <= 256 tokens, pages of at least one token).
inline constexpr int kMaxBlockPages = 257;

/// Threads per CTA of the append kernel; each owns one (tensor, 8 channels) column of a block.
inline constexpr int kAppendThreads = 64;

/// Tokens whose 16-byte loads one thread keeps in flight.
inline constexpr int kAppendBatch = 16;

/// One CTA per (touched block of sequence b, group of kAppendThreads columns): the block's page
/// offsets are staged in shared memory once; each thread then walks its column (K or V, 8
/// channels of one KV head) through the block's tokens in ascending order, kAppendBatch loads in
/// flight, copying the new tokens from the chunk into their pages and accumulating the summaries
/// from the block's valid tokens (old ones from the cache, new ones from the chunk), in the host
/// reference's order.
template <class T>
__global__ void __launch_bounds__(kAppendThreads)
    append_kv_kernel(AttentionConfig c, KvChunk chunk, PagedKV cache) {
  __shared__ std::int64_t page_base[kMaxBlockPages];
  const int b = blockIdx.y;
  if (b >= chunk.num_seqs) return;
  const int q_begin = chunk.cu_seqlens[b];
  const int n = chunk.cu_seqlens[b + 1] - q_begin;
  const int len = chunk.kv_lens[b];
  if (n <= 0) return;
  const int pos0 = len - n;
  const int kb = pos0 / c.block_k + static_cast<int>(blockIdx.x);
  if (kb > (len - 1) / c.block_k) return;
  const int blk_begin = kb * c.block_k;
  const int blk_end = min_of(blk_begin + c.block_k, len);
  const int ps_shift = __ffs(cache.page_size) - 1;  // page sizes are powers of two
  const int ps_mask = cache.page_size - 1;
  const int first_page = blk_begin >> ps_shift;
  const int n_pages = ((blk_end - 1) >> ps_shift) - first_page + 1;
  for (int i = threadIdx.x; i < n_pages; i += blockDim.x) {
    page_base[i] = static_cast<std::int64_t>(
                       cache.page_table[static_cast<std::int64_t>(b) * cache.page_table_stride +
                                        first_page + i]) *
                   cache.resolved_page_stride();
  }
  __syncthreads();

  const int vecs = c.num_kv_heads * c.head_dim / 8;  // 16-byte vectors per token
  const int task = static_cast<int>(blockIdx.z * blockDim.x + threadIdx.x);
  if (task >= 2 * vecs) return;
  const bool is_v = task >= vecs;
  const int e = (task % vecs) * 8;  // element offset within the token: head * D + channel
  const std::int64_t row = std::int64_t{vecs} * 8;
  const std::int64_t stride = is_v ? (chunk.v_stride != 0 ? chunk.v_stride : row)
                                   : (chunk.k_stride != 0 ? chunk.k_stride : row);
  const T* src = static_cast<const T*>(is_v ? chunk.v : chunk.k) + e;
  T* pool = static_cast<T*>(is_v ? cache.v_pages : cache.k_pages) + e;
  const std::int64_t token_elems = std::int64_t{c.num_kv_heads} * c.head_dim;
  auto pool_at = [&](int pos) {
    return page_base[(pos >> ps_shift) - first_page] + (pos & ps_mask) * token_elems;
  };

  const KeySummaries& s = cache.summaries;
  const int slot = s.slot(b);
  const bool slot_ok = slot >= 0 && slot < s.num_slots && kb < s.max_blocks;  // host mirrors
  const bool want =
      slot_ok && (is_v ? s.mean_v != nullptr
                       : (s.mean_k != nullptr || s.min_k != nullptr || s.max_k != nullptr));
  float sum[8], lo[8], hi[8];
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    sum[j] = 0.0f;
    lo[j] = INFINITY;
    hi[j] = -INFINITY;
  }
  // Without summaries only the new tokens are visited (copied).
  for (int p0 = want ? blk_begin : max_of(blk_begin, pos0); p0 < blk_end; p0 += kAppendBatch) {
    uint4 raw[kAppendBatch];
#pragma unroll
    for (int u = 0; u < kAppendBatch; ++u) {
      const int pos = p0 + u;
      if (pos < blk_end) {
        raw[u] = *reinterpret_cast<const uint4*>(
            pos < pos0 ? pool + pool_at(pos) : src + (q_begin + (pos - pos0)) * stride);
      }
    }
#pragma unroll
    for (int u = 0; u < kAppendBatch; ++u) {
      const int pos = p0 + u;
      if (pos >= blk_end) break;
      if (pos >= pos0) *reinterpret_cast<uint4*>(pool + pool_at(pos)) = raw[u];
      if (!want) continue;
      float x[8];
      arch::widen8<T>(raw[u], x);
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        sum[j] = exact::add(sum[j], x[j]);
        lo[j] = x[j] < lo[j] ? x[j] : lo[j];
        hi[j] = x[j] > hi[j] ? x[j] : hi[j];
      }
    }
  }
  if (!want) return;
  const float count = static_cast<float>(blk_end - blk_begin);
  const int h = e / c.head_dim;
  const std::int64_t at = s.offset(slot, kb, h, c.num_kv_heads, c.head_dim) + e % c.head_dim;
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    if (is_v) {
      s.mean_v[at + j] = exact::div(sum[j], count);
    } else {
      if (s.mean_k) s.mean_k[at + j] = exact::div(sum[j], count);
      if (s.min_k) s.min_k[at + j] = lo[j];
      if (s.max_k) s.max_k[at + j] = hi[j];
    }
  }
}

}  // namespace append_detail

/// Host reference of the append (every pointer host memory): writes chunk.k / chunk.v into the
/// pages and recomputes the summaries of every touched block (see the file comment). Throws
/// compact::Error naming the first bad argument.
inline void append_kv_host(const AttentionConfig& c, const PlanLimits& l, const KvChunk& chunk,
                           const PagedKV& cache) {
  append_detail::validate(c, l, chunk, cache, Space::host);
  const int row = c.num_kv_heads * c.head_dim;
  const std::int64_t ks = chunk.k_stride != 0 ? chunk.k_stride : row;
  const std::int64_t vs = chunk.v_stride != 0 ? chunk.v_stride : row;
  const std::size_t esz = size_of(c.dtype);
  const auto* src_k = static_cast<const std::byte*>(chunk.k);
  const auto* src_v = static_cast<const std::byte*>(chunk.v);
  auto* pool_k = static_cast<std::byte*>(cache.k_pages);
  auto* pool_v = static_cast<std::byte*>(cache.v_pages);
  const KeySummaries& s = cache.summaries;
  for (int b = 0; b < chunk.num_seqs; ++b) {
    const int q_begin = chunk.cu_seqlens[b];
    const int n = chunk.cu_seqlens[b + 1] - q_begin;
    const int len = chunk.kv_lens[b];
    if (n <= 0) continue;
    const int pos0 = len - n;
    for (int t = 0; t < n; ++t) {
      const std::int64_t dst = cache.offset(b, pos0 + t, 0);
      std::memcpy(pool_k + dst * esz, src_k + (q_begin + t) * ks * esz, row * esz);
      std::memcpy(pool_v + dst * esz, src_v + (q_begin + t) * vs * esz, row * esz);
    }
    if (!(s.mean_k || s.min_k || s.max_k || s.mean_v)) continue;
    const int slot = s.slot(b);
    for (int kb = pos0 / c.block_k; kb <= (len - 1) / c.block_k; ++kb) {
      const int begin = kb * c.block_k;
      const int end = min_of(begin + c.block_k, len);
      const float count = static_cast<float>(end - begin);
      for (int h = 0; h < c.num_kv_heads; ++h) {
        const std::int64_t at = s.offset(slot, kb, h, c.num_kv_heads, c.head_dim);
        for (int d = 0; d < c.head_dim; ++d) {
          float sk = 0.0f, sv = 0.0f, lo = INFINITY, hi = -INFINITY;
          for (int p = begin; p < end; ++p) {
            const std::int64_t e = cache.offset(b, p, h) + d;  // written above for p >= pos0
            const float x = load_float(cache.k_pages, c.dtype, static_cast<std::size_t>(e));
            sk = exact::add(sk, x);
            lo = x < lo ? x : lo;
            hi = x > hi ? x : hi;
            sv = exact::add(sv, load_float(cache.v_pages, c.dtype, static_cast<std::size_t>(e)));
          }
          if (s.mean_k) s.mean_k[at + d] = exact::div(sk, count);
          if (s.min_k) s.min_k[at + d] = lo;
          if (s.max_k) s.max_k[at + d] = hi;
          if (s.mean_v) s.mean_v[at + d] = exact::div(sv, count);
        }
      }
    }
  }
}

/// Device append (every pointer device memory): one kernel, grid fixed by the limits
/// (ceil(max_chunk / Bk) + 1 blocks per sequence of max_batch, times the column groups), no
/// allocation, no synchronization. Same results as append_kv_host, bit for bit. Slot ids and
/// lengths are checked on the host when the chunk / summaries carry host mirrors; on the device an
/// out-of-range slot skips the summary write instead of writing out of bounds.
inline void append_kv_device(const AttentionConfig& c, const PlanLimits& l, const KvChunk& chunk,
                             const PagedKV& cache, cudaStream_t stream = nullptr) {
  append_detail::validate(c, l, chunk, cache, Space::device);
  using append_detail::kAppendThreads;
  const int columns = 2 * c.num_kv_heads * c.head_dim / 8;  // (K or V, 8 channels) per token
  const dim3 grid(append_detail::max_touched_blocks(c, l), l.max_batch,
                  ceil_div(columns, kAppendThreads));
  if (c.dtype == DType::bf16) {
    append_detail::append_kv_kernel<__nv_bfloat16>
        <<<grid, kAppendThreads, 0, stream>>>(c, chunk, cache);
  } else {
    append_detail::append_kv_kernel<__half><<<grid, kAppendThreads, 0, stream>>>(c, chunk, cache);
  }
  COMPACT_CHECK_LAUNCH("append_kv_kernel");
}

}  // namespace compact
