// An independent O(n^2) attention for tests: gather each sequence's K/V contiguously, form the
// full score matrix of the chunk, then softmax row by row. Shares no code with the references.
#pragma once

#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <vector>

#include "random_problem.hpp"

namespace compact::test {

/// allowed(b, h, t, key_pos) -> bool restricts keys beyond causality (nullptr: dense).
using KeyFilter = std::function<bool(int, int, int, int)>;

/// Output [total_q][Hq][D] and lse [total_q][Hq] in double.
struct NaiveResult {
  std::vector<double> o, lse;
};

inline NaiveResult naive_attention(const HostProblem& p, const KeyFilter& allowed = nullptr) {
  const AttentionConfig& c = p.config;
  const int d = c.head_dim, hq = c.num_q_heads, hkv = c.num_kv_heads;
  const int ps = c.page_size;
  NaiveResult r;
  r.o.assign(p.out_elems(), 0.0);
  r.lse.assign(static_cast<std::size_t>(p.cu_seqlens.back()) * hq, 0.0);
  // The scale is a float parameter of the library (kernels multiply by it in fp32).
  const double scale_used =
      c.softmax_scale != 0 ? c.softmax_scale : 1.0f / std::sqrt(static_cast<float>(d));
  for (std::size_t b = 0; b < p.kv_lens.size(); ++b) {
    const int L = p.kv_lens[b];
    const int n = p.cu_seqlens[b + 1] - p.cu_seqlens[b];
    // Gather [L][Hkv][D] contiguously through the page table.
    std::vector<double> K(static_cast<std::size_t>(L) * hkv * d), V(K.size());
    for (int j = 0; j < L; ++j) {
      const int page = p.page_table[b * p.page_table_stride + j / ps];
      for (int e = 0; e < hkv * d; ++e) {
        const std::size_t src = (static_cast<std::size_t>(page) * ps + j % ps) * hkv * d + e;
        K[static_cast<std::size_t>(j) * hkv * d + e] = load_float(p.k.data(), c.dtype, src);
        V[static_cast<std::size_t>(j) * hkv * d + e] = load_float(p.v.data(), c.dtype, src);
      }
    }
    for (int h = 0; h < hq; ++h) {
      const int kvh = h / (hq / hkv);
      std::vector<double> S(static_cast<std::size_t>(n) * L);
      for (int t = 0; t < n; ++t) {
        const std::size_t row = p.cu_seqlens[b] + t;
        for (int j = 0; j < L; ++j) {
          double dot = 0;
          for (int i = 0; i < d; ++i) {
            dot += static_cast<double>(load_float(p.q.data(), c.dtype, (row * hq + h) * d + i)) *
                   K[(static_cast<std::size_t>(j) * hkv + kvh) * d + i];
          }
          S[static_cast<std::size_t>(t) * L + j] = dot * scale_used;
        }
      }
      for (int t = 0; t < n; ++t) {
        const std::size_t row = p.cu_seqlens[b] + t;
        const int qpos = L - n + t;
        auto visible = [&](int j) {
          return j <= qpos && (!allowed || allowed(static_cast<int>(b), h, t, j));
        };
        double m = -std::numeric_limits<double>::infinity();
        for (int j = 0; j < L; ++j) {
          if (visible(j)) m = std::max(m, S[static_cast<std::size_t>(t) * L + j]);
        }
        double sum = 0;
        std::vector<double> acc(d, 0.0);
        for (int j = 0; j < L; ++j) {
          if (!visible(j)) continue;
          const double w = std::exp(S[static_cast<std::size_t>(t) * L + j] - m);
          sum += w;
          for (int i = 0; i < d; ++i)
            acc[i] += w * V[(static_cast<std::size_t>(j) * hkv + kvh) * d + i];
        }
        for (int i = 0; i < d; ++i) r.o[(row * hq + h) * d + i] = sum > 0 ? acc[i] / sum : 0.0;
        r.lse[row * hq + h] =
            sum > 0 ? m + std::log(sum) : -std::numeric_limits<double>::infinity();
      }
    }
  }
  return r;
}

}  // namespace compact::test
