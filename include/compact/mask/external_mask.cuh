/// @file external_mask.cuh
/// @brief ExternalMask: a block mask the engine computes itself (a learned gate, a replayed mask),
/// copied into the workspace mask with the always-on and never-on rules enforced.
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_runtime_api.h>

#include "compact/concepts/mask_source.hpp"
#include "compact/core/cuda_check.hpp"
#include "compact/core/error.hpp"
#include "compact/core/policy_args.hpp"
#include "compact/core/space.hpp"
#include "compact/core/workspace.hpp"
#include "compact/mask/query_block_span.hpp"

namespace compact {

/// The engine's mask: a bit-packed BlockMask view (any layout with num_heads == Hq, enough
/// rows and words for the limits) and the memory space its bits live in. Only the rows
/// qb < ceil(n_b / Bq) and the words holding kb < ceil(L_b / Bk) of sequences b < num_seqs are
/// read; bits for blocks past a row's last causal block are ignored.
struct ExternalMaskSource {
  BlockMask mask{};             ///< The caller's mask (layout and bits).
  Space space = Space::device;  ///< Space::host bits may be pinned (asynchronous copy) or not.
};

namespace external_mask {

/// Bits of word w for the KV blocks [lo, hi] (inclusive; empty when hi < lo).
COMPACT_HOST_DEVICE inline std::uint32_t range_bits(int w, int lo, int hi) {
  const int a = max_of(lo - w * 32, 0);
  const int z = min_of(hi - w * 32, 31);
  if (z < a) return 0u;
  const std::uint32_t upto = z == 31 ? 0xffffffffu : ((1u << (z + 1)) - 1u);
  return upto & ~((1u << a) - 1u);
}

/// Word w of output row (b, h, qb): the source bits, plus the chunk's own causal blocks
/// [chunk_first_kb, last_kb], minus every block after last_kb.
COMPACT_HOST_DEVICE inline std::uint32_t enforce(std::uint32_t src, int w,
                                                 const QueryBlockSpan& span) {
  return (src | range_bits(w, span.chunk_first_kb, span.last_kb)) & range_bits(w, 0, span.last_kb);
}

/// One CTA per output row of the limits' layout.
template <int kUnused = 0>
__global__ void copy_kernel(MaskArgs a, BlockMask src) {
  const int qb = blockIdx.x % a.mask.max_q_blocks;
  const int bh = blockIdx.x / a.mask.max_q_blocks;
  const int h = bh % a.mask.num_heads;
  const int b = bh / a.mask.num_heads;
  if (b >= a.batch.num_seqs) return;
  const SeqInfo s = seq_info(a.batch, b);
  if (qb * a.config.block_q >= s.q_len) return;
  const QueryBlockSpan span = query_block_span(s, qb, a.config.block_q, a.config.block_k);
  const int words = ceil_div(ceil_div(s.kv_len, a.config.block_k), 32);
  const std::uint32_t* in = src.row(b, h, qb);
  std::uint32_t* out = a.mask.row(b, h, qb);
  for (int w = threadIdx.x; w < words; w += blockDim.x) out[w] = enforce(in[w], w, span);
}

}  // namespace external_mask

/// A mask source that takes the engine's own block mask.
///
/// `source` points to a caller-owned ExternalMaskSource that is read at every build, so the
/// engine may point it at a new buffer between steps (for CUDA graphs keep the buffer fixed and
/// rewrite its contents). The output row (b, h, qb) is
/// `(source row | the chunk's causal blocks [chunk_first_kb, last_kb]) & blocks <= last_kb`:
/// the always-on and never-on rules are enforced here, not trusted to the engine, so a
/// source may be written coarsely (e.g. per head for all query blocks, future bits included).
///
/// Host build: the source must be host memory. Device build: a device source (or any pointer
/// the device can read) is read directly by one kernel; a Space::host source is first copied
/// into the scratch with cudaMemcpyAsync (asynchronous for pinned memory; pageable memory makes
/// the call wait for the staging copy, never for the stream), which requires its layout to fit
/// the engine's own mask layout (BlockMask::shape_for(config, limits)).
struct ExternalMask {
  const ExternalMaskSource* source = nullptr;  ///< The caller-owned source, read at every build.

  ExternalMask() = default;  ///< No source: set `source` before the engine uses the mask.
  /// A mask that reads `src`.
  explicit ExternalMask(const ExternalMaskSource* src) : source(src) {}

  /// Staging room for host sources in device builds: one mask of the engine's layout.
  std::size_t workspace_bytes(const AttentionConfig& c, const PlanLimits& l) const {
    return BlockMask::shape_for(c, l).num_words() * sizeof(std::uint32_t);
  }

  /// Host build: copies the source rows, enforcing the chunk's causal blocks.
  void build_host(const MaskArgs& a) const {
    const BlockMask& src = check(a);
    require(source->space == Space::host, "ExternalMask source.space", to_string(source->space),
            "Space::host for a host build");
    for (int b = 0; b < a.batch.num_seqs; ++b) {
      const SeqInfo s = seq_info(a.batch, b);
      const int words = ceil_div(ceil_div(s.kv_len, a.config.block_k), 32);
      for (int h = 0; h < a.config.num_q_heads; ++h) {
        for (int qb = 0; qb * a.config.block_q < s.q_len; ++qb) {
          const QueryBlockSpan span = query_block_span(s, qb, a.config.block_q, a.config.block_k);
          const std::uint32_t* in = src.row(b, h, qb);
          std::uint32_t* out = a.mask.row(b, h, qb);
          for (int w = 0; w < words; ++w) out[w] = external_mask::enforce(in[w], w, span);
        }
      }
    }
  }

  /// Device build: stages a host source in the scratch if needed, then one enforcing kernel.
  void build_device(const MaskArgs& a, cudaStream_t stream) const {
    BlockMask src = check(a);
    if (source->space == Space::host) {
      const std::size_t bytes = src.num_words() * sizeof(std::uint32_t);
      require(bytes <= workspace_bytes(a.config, a.limits), "ExternalMask source.mask (host) size",
              bytes,
              detail::cat("at most the engine's own mask (", workspace_bytes(a.config, a.limits),
                          " bytes) to be staged on the device"));
      require(a.scratch.data != nullptr && a.scratch.bytes >= bytes, "mask scratch bytes",
              a.scratch.bytes, detail::cat(">= ", bytes, " (ExternalMask::workspace_bytes())"));
      COMPACT_CUDA_CHECK(
          cudaMemcpyAsync(a.scratch.data, src.bits, bytes, cudaMemcpyHostToDevice, stream));
      src.bits = static_cast<std::uint32_t*>(a.scratch.data);
    }
    const int rows = a.mask.max_batch * a.mask.num_heads * a.mask.max_q_blocks;
    external_mask::copy_kernel<><<<rows, 32, 0, stream>>>(a, src);
    COMPACT_CHECK_LAUNCH("external_mask::copy_kernel");
  }

 private:
  /// Validates the source against the config, limits and batch; returns its mask view.
  const BlockMask& check(const MaskArgs& a) const {
    using detail::cat;
    require(source != nullptr, "ExternalMask source", "nullptr",
            "a caller-owned ExternalMaskSource");
    const BlockMask& m = source->mask;
    const Geometry g = Geometry::of(a.config, a.limits);
    require_not_null(m.bits, "ExternalMask source.mask.bits");
    require(m.num_heads == a.config.num_q_heads, "ExternalMask source.mask.num_heads", m.num_heads,
            cat("config.num_q_heads (", a.config.num_q_heads, ")"));
    require(m.max_batch >= a.batch.num_seqs, "ExternalMask source.mask.max_batch", m.max_batch,
            cat(">= batch.num_seqs (", a.batch.num_seqs, ")"));
    require(m.max_q_blocks >= g.max_q_blocks, "ExternalMask source.mask.max_q_blocks",
            m.max_q_blocks, cat(">= ceil(limits.max_chunk / block_q) = ", g.max_q_blocks));
    require(m.words_per_row >= g.words_per_row, "ExternalMask source.mask.words_per_row",
            m.words_per_row,
            cat(">= ceil(ceil(limits.max_kv_len / block_k) / 32) = ", g.words_per_row));
    require_not_null(a.mask.bits, "mask.bits");
    return m;
  }
};

}  // namespace compact
