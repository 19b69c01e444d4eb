// Random chunked-prefill problems on the host: ragged batches, shuffled (and shared) pages,
// chunk offsets not aligned to blocks or pages, poison where nothing may be read.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "compact/core/block_mask.hpp"
#include "compact/core/chunk_batch.hpp"
#include "compact/core/config.hpp"
#include "compact/core/dtype.hpp"
#include "compact/core/limits.hpp"
#include "compact/core/paged_kv.hpp"

namespace compact::test {

/// What random problem to draw.
struct ProblemSpec {
  int num_seqs = 2;
  int max_chunk = 64;  ///< Chunk lengths in [min_chunk, max_chunk] when ragged.
  int min_chunk = 1;
  int max_kv = 512;  ///< KV lengths in [max(chunk, min_kv), max_kv] when ragged.
  int min_kv = 0;
  bool ragged = true;         ///< false: every sequence has max_chunk / max_kv exactly.
  bool share_prefix = false;  ///< Sequences 0 and 1 share their first full pages.
  int extra_pages = 3;        ///< Pool pages no sequence owns (filled with poison).
  float q_scale = 1.0f;       ///< Std-dev of Q entries.
  float k_scale = 1.5f;       ///< Std-dev of K entries (peakier softmax than q_scale alone).
};

/// A host-resident problem with owning storage and views onto it.
struct HostProblem {
  AttentionConfig config;
  PlanLimits limits;
  std::vector<std::int32_t> cu_seqlens, kv_lens, page_table, final_chunk;
  std::vector<std::uint16_t> q, k, v;  // raw bf16 / fp16 storage
  int num_pages = 0;
  int page_table_stride = 0;

  ChunkBatch batch() const {
    ChunkBatch b;
    b.q = q.data();
    b.cu_seqlens_q = cu_seqlens.data();
    b.kv_lens = kv_lens.data();
    b.final_chunk = final_chunk.data();
    b.num_seqs = static_cast<int>(kv_lens.size());
    b.total_q = cu_seqlens.back();
    return b;
  }
  PagedKV cache() const {
    PagedKV c;
    c.k_pages = const_cast<std::uint16_t*>(k.data());
    c.v_pages = const_cast<std::uint16_t*>(v.data());
    c.num_pages = num_pages;
    c.page_size = config.page_size;
    c.num_kv_heads = config.num_kv_heads;
    c.head_dim = config.head_dim;
    c.page_table = page_table.data();
    c.page_table_stride = page_table_stride;
    return c;
  }
  std::size_t out_elems() const {
    return static_cast<std::size_t>(cu_seqlens.back()) * config.num_q_heads * config.head_dim;
  }
};

inline void fill_normal(std::vector<std::uint16_t>& dst, DType t, std::size_t begin,
                        std::size_t end, float scale, std::mt19937_64& rng) {
  std::normal_distribution<float> dist(0.0f, scale);
  for (std::size_t i = begin; i < end; ++i) store_float(dst.data(), t, i, dist(rng));
}

/// Draws a problem for `config`. Limits are the spec's maxima (so tables are laid out for more
/// than the batch uses, like a real engine).
inline HostProblem make_problem(const AttentionConfig& config, const ProblemSpec& spec,
                                std::mt19937_64& rng) {
  HostProblem p;
  p.config = config;
  p.limits.max_batch = spec.num_seqs;
  p.limits.max_chunk = spec.max_chunk;
  p.limits.max_kv_len = spec.max_kv;
  const int ps = config.page_size;
  std::uniform_int_distribution<int> chunk_dist(spec.min_chunk, spec.max_chunk);
  p.cu_seqlens.push_back(0);
  for (int b = 0; b < spec.num_seqs; ++b) {
    const int n = spec.ragged ? chunk_dist(rng) : spec.max_chunk;
    const int kv =
        spec.ragged ? std::uniform_int_distribution<int>(std::max(n, spec.min_kv), spec.max_kv)(rng)
                    : spec.max_kv;
    p.cu_seqlens.push_back(p.cu_seqlens.back() + n);
    p.kv_lens.push_back(kv);
    p.final_chunk.push_back(static_cast<std::int32_t>(rng() % 2));
  }
  p.page_table_stride = ceil_div(spec.max_kv, ps);
  // Pages: every sequence gets fresh pages in a shuffled pool; optionally sequence 1 reuses the
  // full pages of sequence 0's common prefix.
  int shared = 0;
  if (spec.share_prefix && spec.num_seqs >= 2) {
    shared = std::min(p.kv_lens[0], p.kv_lens[1] - (p.cu_seqlens[2] - p.cu_seqlens[1])) / ps;
    shared = std::max(shared, 0);
  }
  int total = spec.extra_pages;
  for (int b = 0; b < spec.num_seqs; ++b)
    total += ceil_div(p.kv_lens[b], ps) - (b == 1 ? shared : 0);
  p.num_pages = total;
  std::vector<int> pool(total);
  std::iota(pool.begin(), pool.end(), 0);
  std::shuffle(pool.begin(), pool.end(), rng);
  p.page_table.assign(static_cast<std::size_t>(spec.num_seqs) * p.page_table_stride, -1);
  int next = 0;
  for (int b = 0; b < spec.num_seqs; ++b) {
    for (int i = 0; i < ceil_div(p.kv_lens[b], ps); ++i) {
      const bool reuse = b == 1 && i < shared;
      p.page_table[b * p.page_table_stride + i] = reuse ? p.page_table[i] : pool[next++];
    }
  }
  const std::size_t page_elems =
      static_cast<std::size_t>(ps) * config.num_kv_heads * config.head_dim;
  p.k.resize(page_elems * total);
  p.v.resize(page_elems * total);
  // Poison first (NaN): pages nobody owns and page tails past L_b must never reach an output.
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (std::size_t i = 0; i < p.k.size(); ++i) {
    store_float(p.k.data(), config.dtype, i, nan);
    store_float(p.v.data(), config.dtype, i, nan);
  }
  for (int b = 0; b < spec.num_seqs; ++b) {
    for (int pos = 0; pos < p.kv_lens[b]; ++pos) {
      const int page = p.page_table[b * p.page_table_stride + pos / ps];
      const std::size_t base = page * page_elems + static_cast<std::size_t>(pos % ps) *
                                                       config.num_kv_heads * config.head_dim;
      const std::size_t n = static_cast<std::size_t>(config.num_kv_heads) * config.head_dim;
      fill_normal(p.k, config.dtype, base, base + n, spec.k_scale, rng);
      fill_normal(p.v, config.dtype, base, base + n, 1.0f, rng);
    }
  }
  p.q.resize(p.out_elems());
  fill_normal(p.q, config.dtype, 0, p.q.size(), spec.q_scale, rng);
  return p;
}

/// A random bit-packed mask for a problem: every block kb < ceil(L_b / Bk) of every live row
/// (b, h, qb) is set with probability `density` (future blocks included: the union must keep
/// whatever the mask selects). Words no consumer may read hold garbage.
inline std::vector<std::uint32_t> random_mask_bits(const HostProblem& p, const BlockMask& shape,
                                                   double density, std::mt19937_64& rng) {
  std::vector<std::uint32_t> bits(shape.num_words(), 0xdeadbeefu);  // stale garbage elsewhere
  BlockMask m = shape;
  m.bits = bits.data();
  std::bernoulli_distribution pick(density);
  const ChunkBatch batch = p.batch();
  for (int b = 0; b < batch.num_seqs; ++b) {
    const SeqInfo s = seq_info(batch, b);
    const int n_kb = ceil_div(s.kv_len, p.config.block_k);
    for (int h = 0; h < p.config.num_q_heads; ++h) {
      for (int qb = 0; qb * p.config.block_q < s.q_len; ++qb) {
        std::uint32_t* row = m.row(b, h, qb);
        for (int w = 0; w < ceil_div(n_kb, 32); ++w) row[w] = 0;
        for (int kb = 0; kb < n_kb; ++kb) {
          if (pick(rng)) m.set(b, h, qb, kb);
        }
      }
    }
  }
  return bits;
}

}  // namespace compact::test
