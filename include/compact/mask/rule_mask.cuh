/// @file rule_mask.cuh
/// @brief RuleMask: a mask source from a per-block predicate, with host and device builds.
#pragma once

#include <concepts>
#include <cstdint>

#include <cuda_runtime_api.h>

#include "compact/concepts/mask_source.hpp"
#include "compact/core/cuda_check.hpp"
#include "compact/core/macros.hpp"
#include "compact/mask/query_block_span.hpp"

namespace compact {

/// A predicate over KV blocks of one mask row: `bool operator()(const MaskRowContext&, int kb)
/// const`, callable on host and device (mark it COMPACT_HOST_DEVICE).
template <class R>
concept MaskRule = std::copy_constructible<R> &&
    requires(const R& r, const MaskRowContext& ctx, int kb) {
  { r(ctx, kb) } -> std::convertible_to<bool>;
};

namespace detail {

/// Context of mask row (b, h, qb); the batch arrays must be readable where this runs.
COMPACT_HOST_DEVICE inline MaskRowContext mask_row_context(const MaskArgs& a, int b, int h,
                                                           int qb) {
  MaskRowContext ctx;
  ctx.b = b;
  ctx.h = h;
  ctx.qb = qb;
  ctx.seq = seq_info(a.batch, b);
  ctx.span = query_block_span(ctx.seq, qb, a.config.block_q, a.config.block_k);
  ctx.num_kv_blocks = ceil_div(ctx.seq.kv_len, a.config.block_k);
  ctx.final_chunk = a.batch.final_chunk != nullptr && a.batch.final_chunk[b] != 0;
  return ctx;
}

/// Word w of a rule-mask row: the rule, plus the chunk's causal blocks, minus the future.
template <class Rule>
COMPACT_HOST_DEVICE std::uint32_t rule_mask_word(const Rule& rule, const MaskRowContext& ctx,
                                                 int w) {
  std::uint32_t bits = 0;
  const int kb0 = w * 32;
  const int kb_end = min_of(kb0 + 32, ctx.span.last_kb + 1);
  for (int kb = kb0; kb < kb_end; ++kb) {
    if (kb >= ctx.span.chunk_first_kb || rule(ctx, kb)) bits |= 1u << (kb - kb0);
  }
  return bits;
}

/// One CTA per mask row of the limits' layout; rows outside the batch exit at once.
template <class Rule>
__global__ void rule_mask_kernel(MaskArgs a, Rule rule) {
  const int qb = blockIdx.x % a.mask.max_q_blocks;
  const int bh = blockIdx.x / a.mask.max_q_blocks;
  const int h = bh % a.mask.num_heads;
  const int b = bh / a.mask.num_heads;
  if (b >= a.batch.num_seqs) return;
  const SeqInfo s = seq_info(a.batch, b);
  if (qb * a.config.block_q >= s.q_len) return;
  const MaskRowContext ctx = mask_row_context(a, b, h, qb);
  std::uint32_t* row = a.mask.row(b, h, qb);
  for (int w = threadIdx.x; w < ceil_div(ctx.num_kv_blocks, 32); w += blockDim.x) {
    row[w] = rule_mask_word(rule, ctx, w);
  }
}

}  // namespace detail

/// A mask source defined by a per-block rule. Selected: the rule's blocks, plus the causal blocks
/// of the current chunk (always on); never the blocks in a query block's future. Host and device
/// builds evaluate the same rule, so they agree bit for bit.
template <MaskRule Rule>
struct RuleMask {
  Rule rule{};  ///< The per-block rule.

  /// Host build: every pointer in `a` is host memory.
  void build_host(const MaskArgs& a) const {
    for (int b = 0; b < a.batch.num_seqs; ++b) {
      const SeqInfo s = seq_info(a.batch, b);
      for (int h = 0; h < a.config.num_q_heads; ++h) {
        for (int qb = 0; qb * a.config.block_q < s.q_len; ++qb) {
          const MaskRowContext ctx = detail::mask_row_context(a, b, h, qb);
          std::uint32_t* row = a.mask.row(b, h, qb);
          for (int w = 0; w < ceil_div(ctx.num_kv_blocks, 32); ++w) {
            row[w] = detail::rule_mask_word(rule, ctx, w);
          }
        }
      }
    }
  }

  /// Device build: one launch, grid fixed by the limits.
  void build_device(const MaskArgs& a, cudaStream_t stream) const {
    const int rows = a.mask.max_batch * a.mask.num_heads * a.mask.max_q_blocks;
    detail::rule_mask_kernel<<<rows, 32, 0, stream>>>(a, rule);
    COMPACT_CHECK_LAUNCH("rule_mask_kernel");
  }
};

/// Rule of DenseMask: every block (the causal restriction is RuleMask's).
struct AllBlocksRule {
  /// Selects every block.
  COMPACT_HOST_DEVICE bool operator()(const MaskRowContext&, int) const { return true; }
};

/// Rule of SinkLocalMask: the first `sink_blocks` blocks and the `window_blocks` blocks before
/// the query block's diagonal (the static "A-shape").
struct SinkLocalRule {
  int sink_blocks = 2;    ///< Attention-sink blocks at the start of the sequence.
  int window_blocks = 4;  ///< Local-window blocks before the query block's first KV block.
  /// Whether block kb is a sink block or falls in the window.
  COMPACT_HOST_DEVICE bool operator()(const MaskRowContext& ctx, int kb) const {
    return kb < sink_blocks || kb >= ctx.span.first_kb - window_blocks;
  }
};

/// Every causal block: the exactness baseline (results equal dense attention).
struct DenseMask : RuleMask<AllBlocksRule> {};

/// Static sink + local window ("A-shape"), plus the chunk's own causal blocks.
struct SinkLocalMask : RuleMask<SinkLocalRule> {
  SinkLocalMask() = default;  ///< Default sink and window sizes (SinkLocalRule).
  /// A mask with `sink_blocks` sink blocks and a window of `window_blocks` blocks.
  SinkLocalMask(int sink_blocks, int window_blocks)
      : RuleMask<SinkLocalRule>{SinkLocalRule{sink_blocks, window_blocks}} {}
  /// Checks that both sizes are non-negative (compact::Error otherwise).
  void configure(const AttentionConfig&, const PlanLimits&) const {
    require(rule.sink_blocks >= 0, "SinkLocalMask sink_blocks", rule.sink_blocks, ">= 0");
    require(rule.window_blocks >= 0, "SinkLocalMask window_blocks", rule.window_blocks, ">= 0");
  }
};

}  // namespace compact
