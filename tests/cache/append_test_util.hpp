// Helpers for the append_kv tests: a prompt split into uneven chunks, appended step by step.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "../mask/mask_test_util.hpp"
#include "compact/cache/kv_chunk.hpp"

namespace compact::test {

/// A whole prompt per sequence (its K/V), the paged cache it is appended into, and summary
/// arrays poisoned with NaN. `problem` carries the config, limits, page table and pools; its
/// kv_lens are the full prompt lengths.
struct AppendScenario {
  HostProblem problem;
  std::vector<std::uint16_t> prompt_k, prompt_v;  // [B][max_kv][Hkv][D]
  std::vector<float> mean_k, min_k, max_k, mean_v;
  int max_kv = 0;

  std::size_t token_elems() const {
    return static_cast<std::size_t>(problem.config.num_kv_heads) * problem.config.head_dim;
  }
  KeySummaries summaries() {
    KeySummaries s;
    s.mean_k = mean_k.data();
    s.min_k = min_k.data();
    s.max_k = max_k.data();
    s.mean_v = mean_v.data();
    s.num_slots = static_cast<int>(problem.kv_lens.size());
    s.max_blocks = ceil_div(problem.limits.max_kv_len, problem.config.block_k);
    s.block_size = problem.config.block_k;
    return s;
  }
};

/// Draws prompts of length in [max_kv / 3, max_kv] with random K/V, over a shuffled page pool
/// whose pages start as NaN poison.
inline AppendScenario make_append_scenario(const AttentionConfig& c, int seqs, int max_chunk,
                                           int max_kv, std::mt19937_64& rng) {
  ProblemSpec spec;
  spec.num_seqs = seqs;
  spec.max_chunk = max_chunk;
  spec.max_kv = max_kv;
  spec.min_chunk = 1;
  AppendScenario a;
  a.problem = make_problem(c, spec, rng);
  a.max_kv = max_kv;
  std::uniform_int_distribution<int> len(std::max(1, max_kv / 3), max_kv);
  // Re-draw the lengths as full prompt lengths and give every sequence pages for all of it.
  HostProblem& p = a.problem;
  const int ps = c.page_size;
  p.page_table_stride = ceil_div(max_kv, ps);
  p.page_table.assign(static_cast<std::size_t>(seqs) * p.page_table_stride, -1);
  p.num_pages = seqs * p.page_table_stride + 2;
  std::vector<int> pool(p.num_pages);
  for (int i = 0; i < p.num_pages; ++i) pool[i] = i;
  std::shuffle(pool.begin(), pool.end(), rng);
  int next = 0;
  for (int b = 0; b < seqs; ++b) {
    p.kv_lens[b] = len(rng);
    for (int i = 0; i < p.page_table_stride; ++i)
      p.page_table[b * p.page_table_stride + i] = pool[next++];
  }
  const std::size_t page_elems = static_cast<std::size_t>(ps) * c.num_kv_heads * c.head_dim;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  p.k.assign(page_elems * p.num_pages, 0);
  p.v.assign(page_elems * p.num_pages, 0);
  for (std::size_t i = 0; i < p.k.size(); ++i) {
    store_float(p.k.data(), c.dtype, i, nan);
    store_float(p.v.data(), c.dtype, i, nan);
  }
  const std::size_t tok = static_cast<std::size_t>(c.num_kv_heads) * c.head_dim;
  a.prompt_k.resize(static_cast<std::size_t>(seqs) * max_kv * tok);
  a.prompt_v.resize(a.prompt_k.size());
  fill_normal(a.prompt_k, c.dtype, 0, a.prompt_k.size(), 1.5f, rng);
  fill_normal(a.prompt_v, c.dtype, 0, a.prompt_v.size(), 1.0f, rng);
  const std::size_t n =
      static_cast<std::size_t>(seqs) * ceil_div(p.limits.max_kv_len, c.block_k) * tok;
  a.mean_k.assign(n, nan);
  a.min_k.assign(n, nan);
  a.max_k.assign(n, nan);
  a.mean_v.assign(n, nan);
  return a;
}

/// Uneven chunk boundaries of every sequence: cuts[b] = 0 < ... < L_b, pieces of 1..max_chunk.
inline std::vector<std::vector<int>> uneven_cuts(const AppendScenario& a, std::mt19937_64& rng) {
  std::vector<std::vector<int>> cuts;
  const int max_chunk = a.problem.limits.max_chunk;
  for (int len : a.problem.kv_lens) {
    std::vector<int> c{0};
    std::uniform_int_distribution<int> piece(1, max_chunk);
    while (c.back() < len) {
      const int step =
          (rng() % 5 == 0) ? 1 + static_cast<int>(rng() % 3) : piece(rng);  // some tiny chunks
      c.push_back(std::min(len, c.back() + step));
    }
    cuts.push_back(c);
  }
  return cuts;
}

/// The step-th chunk of every sequence (empty once a sequence is done): packed K/V and lengths.
struct StepChunk {
  std::vector<std::int32_t> cu, kv_lens;
  std::vector<std::uint16_t> k, v;
  bool any = false;
};

inline StepChunk step_chunk(const AppendScenario& a, const std::vector<std::vector<int>>& cuts,
                            int step) {
  StepChunk s;
  const std::size_t tok = a.token_elems();
  s.cu.push_back(0);
  for (std::size_t b = 0; b < cuts.size(); ++b) {
    const std::vector<int>& c = cuts[b];
    const int lo = c[std::min<std::size_t>(step, c.size() - 1)];
    const int hi = c[std::min<std::size_t>(step + 1, c.size() - 1)];
    for (int pos = lo; pos < hi; ++pos) {
      const std::size_t at = (b * a.max_kv + pos) * tok;
      s.k.insert(s.k.end(), a.prompt_k.begin() + at, a.prompt_k.begin() + at + tok);
      s.v.insert(s.v.end(), a.prompt_v.begin() + at, a.prompt_v.begin() + at + tok);
    }
    s.cu.push_back(s.cu.back() + (hi - lo));
    s.kv_lens.push_back(hi);
    s.any = s.any || hi > lo;
  }
  if (s.k.empty()) {  // keep the pointers valid and aligned
    s.k.assign(8, 0);
    s.v.assign(8, 0);
  }
  return s;
}

/// The problem as it stands after some steps: current lengths, the given pools.
inline HostProblem snapshot(const AppendScenario& a, const std::vector<std::int32_t>& lens,
                            const std::vector<std::uint16_t>& k,
                            const std::vector<std::uint16_t>& v) {
  HostProblem p = a.problem;
  p.kv_lens = lens;
  p.k = k;
  p.v = v;
  return p;
}

/// Compares the summaries of every valid block with the from-scratch ones, bit for bit; returns
/// the number of differing floats.
inline long long compare_valid_summaries(const HostProblem& now, const float* mean_k,
                                         const float* min_k, const float* max_k,
                                         const float* mean_v) {
  const HostSummaries ref = summaries_from_scratch(now);
  const AttentionConfig& c = now.config;
  const int blocks = ceil_div(now.limits.max_kv_len, c.block_k);
  const std::size_t row = static_cast<std::size_t>(c.num_kv_heads) * c.head_dim;
  long long bad = 0;
  for (std::size_t b = 0; b < now.kv_lens.size(); ++b) {
    for (int kb = 0; kb < ceil_div(now.kv_lens[b], c.block_k); ++kb) {
      const std::size_t at = (b * blocks + kb) * row;
      bad += std::memcmp(mean_k + at, ref.mean_k.data() + at, row * 4) != 0;
      bad += std::memcmp(min_k + at, ref.min_k.data() + at, row * 4) != 0;
      bad += std::memcmp(max_k + at, ref.max_k.data() + at, row * 4) != 0;
      bad += std::memcmp(mean_v + at, ref.mean_v.data() + at, row * 4) != 0;
    }
  }
  return bad;
}

/// True when the pools hold every sequence's prompt tokens [0, lens[b]) at their positions.
inline bool pools_hold_prompts(const AppendScenario& a, const std::vector<std::int32_t>& lens,
                               const std::vector<std::uint16_t>& k,
                               const std::vector<std::uint16_t>& v) {
  const AttentionConfig& c = a.problem.config;
  const std::size_t tok = a.token_elems();
  const int ps = c.page_size;
  for (std::size_t b = 0; b < lens.size(); ++b) {
    for (int pos = 0; pos < lens[b]; ++pos) {
      const int page = a.problem.page_table[b * a.problem.page_table_stride + pos / ps];
      const std::size_t dst = (static_cast<std::size_t>(page) * ps + pos % ps) * tok;
      const std::size_t src = (b * a.max_kv + pos) * tok;
      if (std::memcmp(&k[dst], &a.prompt_k[src], tok * 2) != 0) return false;
      if (std::memcmp(&v[dst], &a.prompt_v[src], tok * 2) != 0) return false;
    }
  }
  return true;
}

}  // namespace compact::test
