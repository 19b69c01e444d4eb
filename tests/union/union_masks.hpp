// Random steps and block masks for the union tests and benchmark: ragged lengths without K/V
// (the union reads only lengths and the mask), and masks with garbage wherever a union must not
// look (rows past the chunk, sequences past the batch, words and bits past L_b).
#pragma once

#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

#include "compact/core/block_mask.hpp"
#include "compact/core/chunk_batch.hpp"
#include "compact/core/config.hpp"
#include "compact/core/limits.hpp"
#include "compact/mask/query_block_span.hpp"

namespace compact::test {

/// The lengths of one chunked-prefill step (host memory) with the config and limits it runs under.
struct UnionStep {
  AttentionConfig config;
  PlanLimits limits;
  std::vector<std::int32_t> cu_seqlens{0};
  std::vector<std::int32_t> kv_lens;

  int num_seqs() const { return static_cast<int>(kv_lens.size()); }
  /// Host view of the lengths (q is never read by a union).
  ChunkBatch batch() const {
    ChunkBatch b;
    b.cu_seqlens_q = cu_seqlens.data();
    b.kv_lens = kv_lens.data();
    b.num_seqs = num_seqs();
    b.total_q = cu_seqlens.back();
    return b;
  }
  void add_seq(int q_len, int kv_len) {
    cu_seqlens.push_back(cu_seqlens.back() + q_len);
    kv_lens.push_back(kv_len);
  }
};

/// 32 random bits, each set with probability threshold / 256 (0: none, 256: all).
inline std::uint32_t random_word(std::mt19937_64& rng, int threshold) {
  if (threshold <= 0) return 0u;
  if (threshold >= 256) return ~0u;
  std::uint32_t w = 0;
  for (int q = 0; q < 4; ++q) {
    const std::uint64_t x = rng();
    for (int k = 0; k < 8; ++k) {
      if (static_cast<int>((x >> (8 * k)) & 0xffu) < threshold) w |= 1u << (q * 8 + k);
    }
  }
  return w;
}

/// Sets bits [lo, hi] of a row of words, clipped to [0, n_bits).
inline void set_bit_range(std::vector<std::uint32_t>& words, int lo, int hi, int n_bits) {
  lo = std::max(lo, 0);
  hi = std::min(hi, n_bits - 1);
  for (int kb = lo; kb <= hi; ++kb) words[kb >> 5] |= 1u << (kb & 31);
}

/// How the live bits of a mask are drawn.
enum class MaskKind {
  /// Every block of every live row independently with probability `density`.
  random,
  /// What an estimator produces: per (sequence, KV head) a base set holding `density` of the
  /// blocks; each (head, query block) row keeps a random half of it, plus the always-on sink
  /// blocks, local window and chunk-causal blocks, and nothing in the query block's future.
  /// Density 0 leaves only the always-on blocks.
  structured,
};

/// A bit-packed mask for `step` in BlockMask::shape_for(config, limits) layout.
inline std::vector<std::uint32_t> make_union_mask(const UnionStep& step, MaskKind kind,
                                                  double density, std::mt19937_64& rng,
                                                  int sink_blocks = 2, int window_blocks = 4) {
  const AttentionConfig& c = step.config;
  BlockMask m = BlockMask::shape_for(c, step.limits);
  std::vector<std::uint32_t> bits(m.num_words());
  for (auto& w : bits) w = static_cast<std::uint32_t>(rng());  // garbage everywhere first
  m.bits = bits.data();
  const int threshold = static_cast<int>(density * 256.0 + 0.5);
  const ChunkBatch batch = step.batch();
  const int g = c.gqa_group();
  for (int b = 0; b < step.num_seqs(); ++b) {
    const SeqInfo s = seq_info(batch, b);
    const int n_kb = ceil_div(s.kv_len, c.block_k);
    const int n_words = ceil_div(n_kb, 32);
    const std::uint32_t tail = (n_kb & 31) == 0 ? ~0u : (1u << (n_kb & 31)) - 1u;
    std::vector<std::uint32_t> base(n_words), row(n_words);
    for (int h = 0; h < c.num_q_heads; ++h) {
      if (kind == MaskKind::structured && h % g == 0) {
        for (auto& w : base) w = random_word(rng, threshold);
      }
      for (int qb = 0; qb * c.block_q < s.q_len; ++qb) {
        if (kind == MaskKind::random) {
          for (auto& w : row) w = random_word(rng, threshold);
        } else {
          for (int w = 0; w < n_words; ++w) row[w] = base[w] & static_cast<std::uint32_t>(rng());
          const QueryBlockSpan span = query_block_span(s, qb, c.block_q, c.block_k);
          set_bit_range(row, 0, sink_blocks - 1, n_kb);
          set_bit_range(row, span.first_kb - window_blocks, span.first_kb - 1, n_kb);
          set_bit_range(row, span.chunk_first_kb, span.last_kb, n_kb);
          for (int kb = span.last_kb + 1; kb < n_kb; ++kb) row[kb >> 5] &= ~(1u << (kb & 31));
        }
        std::uint32_t* dst = m.row(b, h, qb);
        for (int w = 0; w < n_words; ++w) dst[w] = row[w];
        // Bits past L_b in the last word are garbage too.
        const std::uint32_t garbage = static_cast<std::uint32_t>(rng());
        if (n_words > 0) dst[n_words - 1] = (row[n_words - 1] & tail) | (garbage & ~tail);
      }
    }
  }
  return bits;
}

}  // namespace compact::test
