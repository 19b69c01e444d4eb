// Helpers for the mask-source tests: from-scratch block summaries, planted structure, the mask
// contract's invariants and the region of a mask a source must write.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "../support/random_problem.hpp"
#include "compact/core/block_mask.hpp"
#include "compact/core/chunk_batch.hpp"
#include "compact/core/paged_kv.hpp"
#include "compact/mask/query_block_span.hpp"

namespace compact::test {

/// Owning fp32 summaries [slot][block][Hkv][D] with a KeySummaries view (slot b = sequence b).
struct HostSummaries {
  std::vector<float> mean_k, min_k, max_k, mean_v;
  KeySummaries view{};
};

/// Summaries computed from scratch from the pages: for every block below ceil(L_b / Bk), the fp32
/// sum of its valid tokens in ascending order divided by their count, and the running min / max.
/// Independent of append_kv (same definition, separate code). Stale entries hold `poison`.
inline HostSummaries summaries_from_scratch(
    const HostProblem& p, float poison = std::numeric_limits<float>::quiet_NaN()) {
  const AttentionConfig& c = p.config;
  HostSummaries s;
  const int slots = static_cast<int>(p.kv_lens.size());
  const int blocks = ceil_div(p.limits.max_kv_len, c.block_k);
  const std::size_t n = static_cast<std::size_t>(slots) * blocks * c.num_kv_heads * c.head_dim;
  s.mean_k.assign(n, poison);
  s.min_k.assign(n, poison);
  s.max_k.assign(n, poison);
  s.mean_v.assign(n, poison);
  const std::int32_t ps = c.page_size;
  for (int b = 0; b < slots; ++b) {
    const int len = p.kv_lens[b];
    for (int kb = 0; kb < ceil_div(len, c.block_k); ++kb) {
      const int begin = kb * c.block_k, end = std::min(begin + c.block_k, len);
      for (int h = 0; h < c.num_kv_heads; ++h) {
        for (int d = 0; d < c.head_dim; ++d) {
          float sk = 0.0f, sv = 0.0f, lo = INFINITY, hi = -INFINITY;
          for (int pos = begin; pos < end; ++pos) {
            const int page =
                p.page_table[static_cast<std::size_t>(b) * p.page_table_stride + pos / ps];
            const std::size_t at =
                ((static_cast<std::size_t>(page) * ps + pos % ps) * c.num_kv_heads + h) *
                    c.head_dim +
                d;
            const float k = load_float(p.k.data(), c.dtype, at);
            sk += k;
            sv += load_float(p.v.data(), c.dtype, at);
            lo = std::min(lo, k);
            hi = std::max(hi, k);
          }
          const std::size_t o =
              ((static_cast<std::size_t>(b) * blocks + kb) * c.num_kv_heads + h) * c.head_dim + d;
          s.mean_k[o] = sk / static_cast<float>(end - begin);
          s.mean_v[o] = sv / static_cast<float>(end - begin);
          s.min_k[o] = lo;
          s.max_k[o] = hi;
        }
      }
    }
  }
  s.view.mean_k = s.mean_k.data();
  s.view.min_k = s.min_k.data();
  s.view.max_k = s.max_k.data();
  s.view.mean_v = s.mean_v.data();
  s.view.num_slots = slots;
  s.view.max_blocks = blocks;
  s.view.block_size = c.block_k;
  return s;
}

/// Plants block structure so that scores are far from uniform: per KV head a random direction u
/// is added to every key of a random ~20% of the KV blocks (strength varying per block) and to
/// every query of the head's GQA group (strength varying per head, some heads get none).
inline void plant_hot_blocks(HostProblem& p, std::mt19937_64& rng, float strength = 2.0f) {
  const AttentionConfig& c = p.config;
  const int D = c.head_dim, ps = c.page_size, G = c.gqa_group();
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> unit(0.0f, 1.0f);
  std::vector<float> u(static_cast<std::size_t>(c.num_kv_heads) * D);
  for (auto& x : u) x = normal(rng) * strength / std::sqrt(static_cast<float>(D)) * 2.0f;
  for (std::size_t b = 0; b < p.kv_lens.size(); ++b) {
    const int len = p.kv_lens[b];
    for (int kb = 0; kb < ceil_div(len, c.block_k); ++kb) {
      for (int h = 0; h < c.num_kv_heads; ++h) {
        if (unit(rng) > 0.2f) continue;
        const float a = 0.5f + 2.0f * unit(rng);
        for (int pos = kb * c.block_k; pos < std::min((kb + 1) * c.block_k, len); ++pos) {
          const int page = p.page_table[b * p.page_table_stride + pos / ps];
          const std::size_t at =
              ((static_cast<std::size_t>(page) * ps + pos % ps) * c.num_kv_heads + h) * D;
          for (int d = 0; d < D; ++d) {
            store_float(p.k.data(), c.dtype, at + d,
                        load_float(p.k.data(), c.dtype, at + d) + a * u[h * D + d]);
          }
        }
      }
    }
  }
  const int total = p.cu_seqlens.back();
  for (int h = 0; h < c.num_q_heads; ++h) {
    const float a = (h % 3 == 2) ? 0.0f : 1.0f + unit(rng) * 2.0f;
    for (int t = 0; t < total; ++t) {
      const std::size_t at = (static_cast<std::size_t>(t) * c.num_q_heads + h) * D;
      for (int d = 0; d < D; ++d) {
        store_float(p.q.data(), c.dtype, at + d,
                    load_float(p.q.data(), c.dtype, at + d) + a * u[(h / G) * D + d]);
      }
    }
  }
}

/// Calls f(b, h, qb, w) for every word a mask source must write (rows qb < ceil(n_b / Bq), words
/// holding kb < ceil(L_b / Bk), sequences b < num_seqs).
template <class F>
void for_each_written_word(const HostProblem& p, F&& f) {
  const AttentionConfig& c = p.config;
  for (std::size_t b = 0; b < p.kv_lens.size(); ++b) {
    const int n = p.cu_seqlens[b + 1] - p.cu_seqlens[b];
    const int words = ceil_div(ceil_div(p.kv_lens[b], c.block_k), 32);
    for (int h = 0; h < c.num_q_heads; ++h) {
      for (int qb = 0; qb * c.block_q < n; ++qb) {
        for (int w = 0; w < words; ++w) f(static_cast<int>(b), h, qb, w);
      }
    }
  }
}

/// Span of row (b, qb) of a problem.
inline QueryBlockSpan span_of(const HostProblem& p, int b, int qb) {
  return query_block_span(seq_info(p.batch(), b), qb, p.config.block_q, p.config.block_k);
}

/// Counts of a mask over a problem: selected bits, causal bits, and contract violations (a chunk
/// block off or a block after last_kb on).
struct MaskCensus {
  long long selected = 0, causal = 0, violations = 0;
};

inline MaskCensus census(const HostProblem& p, const BlockMask& m) {
  MaskCensus r;
  const AttentionConfig& c = p.config;
  for (std::size_t b = 0; b < p.kv_lens.size(); ++b) {
    const int n = p.cu_seqlens[b + 1] - p.cu_seqlens[b];
    const int n_kb = ceil_div(p.kv_lens[b], c.block_k);
    for (int h = 0; h < c.num_q_heads; ++h) {
      for (int qb = 0; qb * c.block_q < n; ++qb) {
        const QueryBlockSpan span = span_of(p, static_cast<int>(b), qb);
        for (int kb = 0; kb < ceil_div(n_kb, 32) * 32; ++kb) {
          const bool on = m.test(static_cast<int>(b), h, qb, kb);
          if (kb <= span.last_kb) ++r.causal;
          if (on) ++r.selected;
          if ((kb > span.last_kb && on) || (kb >= span.chunk_first_kb && kb <= span.last_kb && !on))
            ++r.violations;
        }
      }
    }
  }
  return r;
}

/// FlashPrefill's tail hint from its definition: the final chunk's last-full rows; elsewhere the
/// rows from the first query block none of whose window blocks lies before the chunk, when the
/// first one's does.
inline int expected_tail_hint(int last_full_blocks, int window_blocks, const SeqInfo& si, int bq,
                              int bk, bool final_chunk) {
  const int n_qb = ceil_div(si.q_len, bq);
  if (final_chunk) return std::min(std::max(last_full_blocks, 0), n_qb);
  const int chunk_kb = si.pos() / bk;
  auto reaches_back = [&](int qb) {
    const int first_kb = (si.pos() + qb * bq) / bk;
    for (int kb = 0; kb < chunk_kb; ++kb) {
      if (kb > first_kb - window_blocks) return true;
    }
    return false;
  };
  if (!reaches_back(0)) return 0;
  for (int qb = 1; qb < n_qb; ++qb) {
    if (!reaches_back(qb)) return n_qb - qb;
  }
  return 0;
}

}  // namespace compact::test
