/// @file row_metrics.hpp
/// @brief Exact accuracy metrics of one query row against a block selection: attention-mass
/// recall, relative output error, argmax agreement, and the oracle (best possible) block set.
///
/// The dense reference of a row is computed once (logits in fp32 dot products of the rounded
/// q and k, softmax and output accumulated in double per block), so any number of selections of
/// the same row cost O(blocks * D) each.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <vector>

#include "../common/dot.hpp"

namespace compact::tools {

/// Dense softmax of one (query row, head) over keys [0, L), summarized per block of
/// `block_tokens` keys (the last block may be partial).
struct RowReference {
  int keys = 0;  ///< L: keys visible to the row.
  int block_tokens = 0;
  int head_dim = 0;
  double lse = 0;  ///< ln sum_j exp(logit_j).
  double max_logit = 0;
  int argmax = -1;                 ///< Key with the largest logit (the first on ties).
  std::vector<double> mass;        ///< [blocks] share of the softmax mass (sums to 1).
  std::vector<double> weighted_v;  ///< [blocks][D] sum_j p_j v_j over the block's keys.
  std::vector<double> block_max;   ///< [blocks] largest logit in the block.
  std::vector<int> block_argmax;   ///< [blocks] its key.
  std::vector<double> o;           ///< [D] dense output sum_j p_j v_j.

  int blocks() const { return static_cast<int>(mass.size()); }
};

/// The dense reference of query `q` (D floats, already rounded as the kernel sees it) against
/// keys k[j * stride .. + D) and values v[j * stride ..] for j < L; logit = scale * q.k.
/// `logits` is scratch of at least L floats.
inline void row_reference(const float* q, const float* k, const float* v, std::int64_t stride,
                          int L, int D, double scale, int block_tokens, RowReference& r,
                          std::vector<float>& logits) {
  r.keys = L;
  r.block_tokens = block_tokens;
  r.head_dim = D;
  const int nb = (L + block_tokens - 1) / block_tokens;
  r.mass.assign(nb, 0.0);
  r.weighted_v.assign(static_cast<std::size_t>(nb) * D, 0.0);
  r.block_max.assign(nb, -std::numeric_limits<double>::infinity());
  r.block_argmax.assign(nb, -1);
  r.o.assign(D, 0.0);
  if (logits.size() < static_cast<std::size_t>(L)) logits.resize(L);
  float m = -std::numeric_limits<float>::infinity();
  int arg = -1;
  const float fscale = static_cast<float>(scale);
  for (int j = 0; j < L; ++j) {
    const float l = dot(q, k + j * stride, D) * fscale;
    logits[j] = l;
    if (l > m) m = l, arg = j;
  }
  r.max_logit = m;
  r.argmax = arg;
  std::vector<float> acc(D);
  double z = 0;
  for (int b = 0; b < nb; ++b) {
    const int j0 = b * block_tokens, j1 = std::min(L, j0 + block_tokens);
    std::fill(acc.begin(), acc.end(), 0.0f);
    double zb = 0;
    float bm = -std::numeric_limits<float>::infinity();
    int ba = -1;
    for (int j = j0; j < j1; ++j) {
      const float p = std::exp(logits[j] - m);
      zb += p;
      axpy(p, v + j * stride, acc.data(), D);
      if (logits[j] > bm) bm = logits[j], ba = j;
    }
    r.mass[b] = zb;
    r.block_max[b] = bm;
    r.block_argmax[b] = ba;
    for (int d = 0; d < D; ++d) r.weighted_v[static_cast<std::size_t>(b) * D + d] = acc[d];
    z += zb;
  }
  r.lse = m + std::log(z);
  for (int b = 0; b < nb; ++b) {
    r.mass[b] /= z;
    for (int d = 0; d < D; ++d) {
      const double w = r.weighted_v[static_cast<std::size_t>(b) * D + d] / z;
      r.weighted_v[static_cast<std::size_t>(b) * D + d] = w;
      r.o[d] += w;
    }
  }
}

/// What a selection of blocks does to one row.
struct RowSparse {
  double recall = 0;     ///< Dense softmax mass inside the selected blocks.
  double rel_error = 0;  ///< ||o_sparse - o_dense|| / ||o_dense|| (1 when nothing is selected).
  int argmax = -1;       ///< Largest-logit key among the selected ones (-1: none).
  int selected = 0;      ///< Selected blocks (among the row's visible ones).
  double lse = 0;        ///< ln sum of exp(logit) over the selected keys (-inf: none).
};

/// Metrics of the selection `sel[b] != 0` (blocks of `r`; entries past r.blocks() ignored).
inline RowSparse row_sparse(const RowReference& r, const std::vector<char>& sel) {
  RowSparse s;
  const int D = r.head_dim;
  std::vector<double> o(D, 0.0);
  double best = -std::numeric_limits<double>::infinity();
  for (int b = 0; b < r.blocks() && b < static_cast<int>(sel.size()); ++b) {
    if (!sel[b]) continue;
    ++s.selected;
    s.recall += r.mass[b];
    for (int d = 0; d < D; ++d) o[d] += r.weighted_v[static_cast<std::size_t>(b) * D + d];
    if (r.block_max[b] > best) best = r.block_max[b], s.argmax = r.block_argmax[b];
  }
  double num = 0, den = 0;
  for (int d = 0; d < D; ++d) {
    const double os = s.recall > 0 ? o[d] / s.recall : 0.0;
    num += (os - r.o[d]) * (os - r.o[d]);
    den += r.o[d] * r.o[d];
  }
  s.rel_error = den > 0 ? std::sqrt(num / den) : 0.0;
  s.lse = s.recall > 0 ? r.lse + std::log(s.recall) : -std::numeric_limits<double>::infinity();
  return s;
}

/// Blocks the best possible selection needs to hold `mass_target` of the row's mass (blocks
/// taken in decreasing mass).
inline int oracle_blocks(const RowReference& r, double mass_target) {
  std::vector<double> m = r.mass;
  std::sort(m.begin(), m.end(), std::greater<>());
  double acc = 0;
  for (std::size_t i = 0; i < m.size(); ++i) {
    acc += m[i];
    if (acc >= mass_target - 1e-12) return static_cast<int>(i) + 1;
  }
  return static_cast<int>(m.size());
}

/// The best possible selection itself: the fewest blocks (taken in decreasing mass, ties to the
/// lower block) holding `mass_target` of the row's mass; sel[b] = 1 for those blocks.
inline std::vector<char> oracle_set(const RowReference& r, double mass_target) {
  std::vector<int> order(r.blocks());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return r.mass[a] > r.mass[b]; });
  std::vector<char> sel(r.blocks(), 0);
  double acc = 0;
  for (int b : order) {
    sel[b] = 1;
    acc += r.mass[b];
    if (acc >= mass_target - 1e-12) break;
  }
  return sel;
}

/// Share of the selected blocks that are among the `selected`-count best blocks of the row
/// (block recall against the best possible set of the same density). 1 when none selected.
inline double block_recall(const RowReference& r, const std::vector<char>& sel) {
  std::vector<int> order(r.blocks());
  std::iota(order.begin(), order.end(), 0);
  int k = 0;
  for (int b = 0; b < r.blocks() && b < static_cast<int>(sel.size()); ++b) k += sel[b] != 0;
  if (k == 0) return 1.0;
  std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int a, int b) {
    return r.mass[a] > r.mass[b] || (r.mass[a] == r.mass[b] && a < b);
  });
  int hit = 0;
  for (int i = 0; i < k; ++i) hit += sel[order[i]] != 0;
  return static_cast<double>(hit) / k;
}

/// A growing sample of one metric with the summaries the reports print.
class Samples {
 public:
  void add(double x) { v_.push_back(x), sorted_ = false; }
  void merge(const Samples& o) {
    v_.insert(v_.end(), o.v_.begin(), o.v_.end());
    sorted_ = false;
  }
  std::size_t size() const { return v_.size(); }
  bool empty() const { return v_.empty(); }
  double mean() const {
    return v_.empty() ? std::nan("") : std::accumulate(v_.begin(), v_.end(), 0.0) / v_.size();
  }
  /// Quantile q in [0, 1] (nearest rank on the sorted sample).
  double quantile(double q) {
    if (v_.empty()) return std::nan("");
    sort();
    const std::size_t i = static_cast<std::size_t>(std::ceil(q * v_.size()));
    return v_[std::min(v_.size() - 1, i == 0 ? 0 : i - 1)];
  }
  double min() {
    if (v_.empty()) return std::nan("");
    sort();
    return v_.front();
  }
  double max() {
    if (v_.empty()) return std::nan("");
    sort();
    return v_.back();
  }
  /// Share of the sample strictly below x.
  double share_below(double x) const {
    if (v_.empty()) return std::nan("");
    return static_cast<double>(
               std::count_if(v_.begin(), v_.end(), [&](double e) { return e < x; })) /
           v_.size();
  }

 private:
  void sort() {
    if (!sorted_) std::sort(v_.begin(), v_.end()), sorted_ = true;
  }
  std::vector<double> v_;
  bool sorted_ = true;
};

}  // namespace compact::tools

namespace compact::tools {

/// row_reference() for the G query heads that share one KV head: each key and value is read
/// once for all of them (the evaluator's hot loop). `q` holds G rows of D floats; `refs` gets G
/// references; `logits` is scratch.
inline void group_references(const float* q, int G, const float* k, const float* v,
                             std::int64_t stride, int L, int D, double scale, int block_tokens,
                             std::vector<RowReference>& refs, std::vector<float>& logits) {
  refs.resize(G);
  if (logits.size() < static_cast<std::size_t>(G) * L)
    logits.resize(static_cast<std::size_t>(G) * L);
  const int nb = (L + block_tokens - 1) / block_tokens;
  const float fscale = static_cast<float>(scale);
  std::vector<float> m(G, -std::numeric_limits<float>::infinity());
  std::vector<int> arg(G, -1);
  for (int j = 0; j < L; ++j) {
    const float* kj = k + j * stride;
    for (int h = 0; h < G; ++h) {
      const float l = dot(q + h * D, kj, D) * fscale;
      logits[static_cast<std::size_t>(h) * L + j] = l;
      if (l > m[h]) m[h] = l, arg[h] = j;
    }
  }
  for (int h = 0; h < G; ++h) {
    RowReference& r = refs[h];
    r.keys = L;
    r.block_tokens = block_tokens;
    r.head_dim = D;
    r.max_logit = m[h];
    r.argmax = arg[h];
    r.mass.assign(nb, 0.0);
    r.weighted_v.assign(static_cast<std::size_t>(nb) * D, 0.0);
    r.block_max.assign(nb, -std::numeric_limits<double>::infinity());
    r.block_argmax.assign(nb, -1);
    r.o.assign(D, 0.0);
  }
  std::vector<float> acc(static_cast<std::size_t>(G) * D), p(G);
  std::vector<double> z(G, 0.0);
  for (int b = 0; b < nb; ++b) {
    const int j0 = b * block_tokens, j1 = std::min(L, j0 + block_tokens);
    std::fill(acc.begin(), acc.end(), 0.0f);
    std::vector<double> zb(G, 0.0);
    for (int j = j0; j < j1; ++j) {
      const float* vj = v + j * stride;
      for (int h = 0; h < G; ++h) {
        const float l = logits[static_cast<std::size_t>(h) * L + j];
        p[h] = std::exp(l - m[h]);
        zb[h] += p[h];
        RowReference& r = refs[h];
        if (l > r.block_max[b]) r.block_max[b] = l, r.block_argmax[b] = j;
        axpy(p[h], vj, acc.data() + static_cast<std::size_t>(h) * D, D);
      }
    }
    for (int h = 0; h < G; ++h) {
      refs[h].mass[b] = zb[h];
      for (int d = 0; d < D; ++d) {
        refs[h].weighted_v[static_cast<std::size_t>(b) * D + d] =
            acc[static_cast<std::size_t>(h) * D + d];
      }
      z[h] += zb[h];
    }
  }
  for (int h = 0; h < G; ++h) {
    RowReference& r = refs[h];
    r.lse = m[h] + std::log(z[h]);
    for (int b = 0; b < nb; ++b) {
      r.mass[b] /= z[h];
      for (int d = 0; d < D; ++d) {
        const double w = r.weighted_v[static_cast<std::size_t>(b) * D + d] / z[h];
        r.weighted_v[static_cast<std::size_t>(b) * D + d] = w;
        r.o[d] += w;
      }
    }
  }
}

}  // namespace compact::tools
