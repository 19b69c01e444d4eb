/// @file evaluate.hpp
/// @brief What a replay measures for one planned chunk: block density at each union stage, and
/// for the evaluated rows attention-mass recall, relative output error, block recall against the
/// oracle of the same density, the oracle density (95% of the mass) and needle hits.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "../accuracy/row_metrics.hpp"
#include "../common/parallel.hpp"
#include "../workload/rng.hpp"
#include "compact/core/block_mask.hpp"
#include "compact/core/block_tables.hpp"
#include "compact/core/config.hpp"
#include "compact/union/table_stats.hpp"
#include "layer.hpp"

namespace compact::tools {

/// K and V as floats, [Hkv][tokens][D]: the evaluator's truth.
struct KvFloat {
  int tokens = 0, num_kv_heads = 0, head_dim = 0;
  std::vector<float> k, v;

  static KvFloat of(const Layer& l) {
    KvFloat f;
    f.tokens = l.tokens;
    f.num_kv_heads = l.num_kv_heads;
    f.head_dim = l.head_dim;
    const std::size_t n = static_cast<std::size_t>(l.tokens) * l.num_kv_heads * l.head_dim;
    f.k.resize(n);
    f.v.resize(n);
    parallel_for(l.tokens, [&](long long j) {
      for (int g = 0; g < l.num_kv_heads; ++g) {
        for (int d = 0; d < l.head_dim; ++d) {
          const std::size_t src =
              (static_cast<std::size_t>(j) * l.num_kv_heads + g) * l.head_dim + d;
          const std::size_t dst = (static_cast<std::size_t>(g) * l.tokens + j) * l.head_dim + d;
          f.k[dst] = load_float(l.k.data(), l.dtype, src);
          f.v[dst] = load_float(l.v.data(), l.dtype, src);
        }
      }
    });
    return f;
  }
  const float* k_head(int g) const {
    return k.data() + static_cast<std::size_t>(g) * tokens * head_dim;
  }
  const float* v_head(int g) const {
    return v.data() + static_cast<std::size_t>(g) * tokens * head_dim;
  }
};

/// One planned chunk of the single replayed sequence, everything in host memory.
struct ChunkView {
  int index = 0;  ///< Chunk number.
  int pos0 = 0;   ///< Position of its first token.
  int n = 0;      ///< Tokens.
  bool final = false;
  const std::uint16_t* q = nullptr;  ///< [n][Hq][D].
  BlockMask mask{};                  ///< The mask source's output (sequence 0).
  BlockTables tables{};              ///< The union's output (sequence 0).
  int kv_len() const { return pos0 + n; }
};

/// Aggregates of one slice of the evaluation (a chunk, a role, or everything).
struct SliceStats {
  Samples recall;        ///< Mass recall of the executed selection, per (row, head).
  Samples recall_head;   ///< Mass recall of the head's own mask row (before any union).
  Samples error;         ///< Relative L2 output error of the executed selection.
  Samples block_recall;  ///< Head mask vs the best block set of the same size.
  Samples sink_share;    ///< Dense mass on KV block 0 (the attention sink).
  double oracle_blocks = 0, visible_blocks = 0;  ///< Sums over rows: oracle density weights.
  long long head_sel = 0, head_all = 0;          ///< Mask bits vs causal blocks per (h, qb).

  void merge(const SliceStats& o) {
    recall.merge(o.recall);
    recall_head.merge(o.recall_head);
    error.merge(o.error);
    block_recall.merge(o.block_recall);
    sink_share.merge(o.sink_share);
    oracle_blocks += o.oracle_blocks;
    visible_blocks += o.visible_blocks;
    head_sel += o.head_sel;
    head_all += o.head_all;
  }
  double oracle_density() const {
    return visible_blocks > 0 ? oracle_blocks / visible_blocks : std::nan("");
  }
  double head_density() const {
    return head_all > 0 ? static_cast<double>(head_sel) / head_all : std::nan("");
  }
};

/// Everything a replay reports.
struct Stats {
  SliceStats all;
  std::map<std::string, SliceStats> roles;
  long long qblock_sel = 0, qblock_all = 0;  ///< After the Q-block union, per head.
  long long group_sel = 0, group_all = 0;    ///< After both unions, per execution group.
  long long table_sel = 0, table_all = 0;    ///< The executed tables (table entries).
  /// Oracle sets of the evaluated rows unioned like the tables: per head over the rows (Q-block
  /// union) and per execution group over rows and heads. With sampled rows this is a lower bound
  /// of the union of every row's oracle set.
  long long oracle_qblock_sel = 0, oracle_qblock_all = 0, oracle_group_sel = 0,
            oracle_group_all = 0;
  Samples dev_recall, dev_error;  ///< Device path: every row, from LSE and outputs.
  double dev_host_gap = 0;        ///< Device path: max |R_host - R_device|.
  int needle_checks = 0, needle_hits = 0, needle_block_hits = 0, needle_argmax_hits = 0;
  std::map<int, std::pair<int, int>> per_needle;  ///< Needle -> (checks, hits).
  int chunks = 0, planned_chunks = 0;
  long long rows = 0;
  std::vector<std::string> needle_misses;  ///< Human-readable misses.

  void merge(const Stats& o) {
    all.merge(o.all);
    for (const auto& [k, v] : o.roles) roles[k].merge(v);
    qblock_sel += o.qblock_sel, qblock_all += o.qblock_all;
    group_sel += o.group_sel, group_all += o.group_all;
    table_sel += o.table_sel, table_all += o.table_all;
    oracle_qblock_sel += o.oracle_qblock_sel, oracle_qblock_all += o.oracle_qblock_all;
    oracle_group_sel += o.oracle_group_sel, oracle_group_all += o.oracle_group_all;
    dev_recall.merge(o.dev_recall);
    dev_error.merge(o.dev_error);
    dev_host_gap = std::max(dev_host_gap, o.dev_host_gap);
    needle_checks += o.needle_checks, needle_hits += o.needle_hits;
    needle_block_hits += o.needle_block_hits, needle_argmax_hits += o.needle_argmax_hits;
    chunks += o.chunks, planned_chunks += o.planned_chunks, rows += o.rows;
    needle_misses.insert(needle_misses.end(), o.needle_misses.begin(), o.needle_misses.end());
    for (const auto& [k, v] : o.per_needle) {
      per_needle[k].first += v.first;
      per_needle[k].second += v.second;
    }
  }
  /// Needles hit on every check / needles checked.
  std::pair<int, int> needles_hit() const {
    int all = 0, hit = 0;
    for (const auto& [k, v] : per_needle) ++all, hit += v.first == v.second;
    return {hit, all};
  }
  static double ratio(long long a, long long b) {
    return b > 0 ? static_cast<double>(a) / b : std::nan("");
  }
  double qblock_density() const { return ratio(qblock_sel, qblock_all); }
  double group_density() const { return ratio(group_sel, group_all); }
  double table_density() const { return ratio(table_sel, table_all); }
  double oracle_qblock_density() const { return ratio(oracle_qblock_sel, oracle_qblock_all); }
  double oracle_group_density() const { return ratio(oracle_group_sel, oracle_group_all); }
};

namespace eval_detail {

inline int popcount_range(const std::uint32_t* row, int nbits) {
  int c = 0;
  for (int w = 0; w * 32 < nbits; ++w) {
    std::uint32_t x = row[w];
    if (nbits - w * 32 < 32) x &= (1u << (nbits - w * 32)) - 1u;
    c += __builtin_popcount(x);
  }
  return c;
}

}  // namespace eval_detail

/// Block densities of a planned chunk at every stage (Bk-block units, the executed tables in
/// table entries): per head and query block, after the Q-block union per head, after both unions
/// per execution group.
inline void chunk_density(const AttentionConfig& c, const ChunkView& cv,
                          const std::vector<std::string>& labels, Stats& st) {
  const int Bq = c.block_q, Bk = c.block_k;
  const int n_qb = (cv.n + Bq - 1) / Bq;
  const int n_kb = (cv.kv_len() + Bk - 1) / Bk;
  const int words = (n_kb + 31) / 32;
  const int group = c.group_size();
  std::vector<std::uint32_t> head_or(words), group_or(words);
  for (int hg = 0; hg < c.num_q_heads / group; ++hg) {
    std::fill(group_or.begin(), group_or.end(), 0u);
    for (int h = hg * group; h < (hg + 1) * group; ++h) {
      std::fill(head_or.begin(), head_or.end(), 0u);
      for (int qb = 0; qb < n_qb; ++qb) {
        const int last_pos = cv.pos0 + std::min(cv.n, (qb + 1) * Bq) - 1;
        const int visible = last_pos / Bk + 1;
        const std::uint32_t* row = cv.mask.row(0, h, qb);
        const int sel = eval_detail::popcount_range(row, visible);
        st.all.head_sel += sel, st.all.head_all += visible;
        SliceStats& r = st.roles[labels[h]];
        r.head_sel += sel, r.head_all += visible;
        for (int w = 0; w < words; ++w) head_or[w] |= row[w];
      }
      st.qblock_sel += eval_detail::popcount_range(head_or.data(), n_kb);
      st.qblock_all += n_kb;
      for (int w = 0; w < words; ++w) group_or[w] |= head_or[w];
    }
    st.group_sel += eval_detail::popcount_range(group_or.data(), n_kb);
    st.group_all += n_kb;
  }
  ChunkBatch b;
  const std::int32_t cu[2] = {0, cv.n};
  const std::int32_t kv[1] = {cv.kv_len()};
  b.cu_seqlens_q = cu;
  b.kv_lens = kv;
  b.num_seqs = 1;
  b.total_q = cv.n;
  const TableDensity td = compact::table_density(c, b, cv.tables);
  st.table_sel += td.selected;
  st.table_all += td.dense;
}

/// Rows of a chunk to evaluate: `count` rows (0: all), one drawn in each of `count` equal strata,
/// plus every row of `forced` that falls in the chunk; ascending, deterministic from the seed.
inline std::vector<int> sample_rows(int n, int count, std::uint64_t seed, int chunk_index, int pos0,
                                    const std::set<int>& forced) {
  std::set<int> rows;
  if (count <= 0 || count >= n) {
    for (int t = 0; t < n; ++t) rows.insert(t);
  } else {
    Rng r(seed, Stream::sampling, {static_cast<std::uint64_t>(chunk_index)});
    for (int i = 0; i < count; ++i) {
      const int lo = static_cast<int>(static_cast<long long>(i) * n / count);
      const int hi = static_cast<int>(static_cast<long long>(i + 1) * n / count) - 1;
      rows.insert(r.uniform_int(lo, std::max(lo, hi)));
    }
  }
  for (int p : forced) {
    if (p >= pos0 && p < pos0 + n) rows.insert(p - pos0);
  }
  return {rows.begin(), rows.end()};
}

/// Chunks to plan and evaluate: `count` evenly spaced ones ending with the last (0: all), plus
/// the chunks that hold a forced row.
inline std::vector<char> sample_chunks(int num_chunks, int chunk, int count,
                                       const std::set<int>& forced) {
  std::vector<char> pick(num_chunks, count <= 0 || count >= num_chunks ? 1 : 0);
  for (int i = 0; i < count && count < num_chunks; ++i) {
    pick[static_cast<std::size_t>(static_cast<long long>(i + 1) * num_chunks / count) - 1] = 1;
  }
  for (int p : forced) pick[std::min(num_chunks - 1, p / chunk)] = 1;
  return pick;
}

/// Device recall of (chunk row t, head h), when the device path measured it.
using DeviceRecall = std::function<double(int, int)>;

/// Evaluates `rows` (chunk rows) of every head against the exact dense softmax: recall and
/// output error of the executed tables, recall of the head's own mask row, block recall, the
/// oracle, and the needle checks of question rows.
inline void evaluate_rows(const AttentionConfig& c, const Layer& layer, const KvFloat& kv,
                          const ChunkView& cv, const std::vector<int>& rows, double oracle_mass,
                          Stats& st, const DeviceRecall& device_recall = nullptr) {
  const int hq = c.num_q_heads, G = c.gqa_group(), D = c.head_dim, Bk = c.block_k, Bq = c.block_q;
  const double scale = c.scale();
  const TableShape& shape = cv.tables.shape;
  const int per_entry = shape.table_block_tokens / Bk;  // >= 1
  struct RowOut {
    double recall, recall_head, error, block_recall, oracle, visible, dev_gap, sink;
    int needle_checks, needle_hits, block_hits, argmax_hits;
    std::vector<std::string> misses;
    std::vector<std::pair<int, bool>> needles;  ///< (needle, hit) per check.
    std::vector<char> oracle_set;
  };
  std::vector<RowOut> out(rows.size() * hq);
  parallel_for(static_cast<long long>(rows.size()), [&](long long ri) {
    const int t = rows[ri];
    const int pos = cv.pos0 + t;
    const int L = pos + 1;
    const int nb = (L + Bk - 1) / Bk;
    std::vector<float> q(static_cast<std::size_t>(G) * D), logits;
    std::vector<RowReference> refs;
    std::vector<char> sel(nb), sel_head(nb);
    for (int g = 0; g < c.num_kv_heads; ++g) {
      for (int i = 0; i < G; ++i) {
        for (int d = 0; d < D; ++d) {
          q[static_cast<std::size_t>(i) * D + d] =
              load_float(cv.q, c.dtype, (static_cast<std::size_t>(t) * hq + g * G + i) * D + d);
        }
      }
      group_references(q.data(), G, kv.k_head(g), kv.v_head(g), D, L, D, scale, Bk, refs, logits);
      for (int i = 0; i < G; ++i) {
        const int h = g * G + i;
        const RowReference& ref = refs[i];
        // Executed selection: the row's table, entries widened to Bk blocks.
        std::fill(sel.begin(), sel.end(), 0);
        const int table = cv.tables.table_of(0, h, t);
        for (int e = cv.tables.indptr[table]; e < cv.tables.indptr[table + 1]; ++e) {
          for (int kb = cv.tables.indices[e] * per_entry;
               kb < (cv.tables.indices[e] + 1) * per_entry; ++kb) {
            if (kb < nb) sel[kb] = 1;
          }
        }
        const std::uint32_t* mrow = cv.mask.row(0, h, t / Bq);
        for (int kb = 0; kb < nb; ++kb) sel_head[kb] = (mrow[kb >> 5] >> (kb & 31)) & 1u;
        const RowSparse rs = row_sparse(ref, sel);
        const RowSparse rh = row_sparse(ref, sel_head);
        RowOut& o = out[ri * hq + h];
        o.recall = rs.recall;
        o.recall_head = rh.recall;
        o.error = rs.rel_error;
        o.block_recall = block_recall(ref, sel_head);
        o.oracle_set = oracle_set(ref, oracle_mass);
        o.oracle = static_cast<double>(std::count(o.oracle_set.begin(), o.oracle_set.end(), 1));
        o.visible = nb;
        o.sink = ref.mass[0];
        o.dev_gap = device_recall ? std::abs(device_recall(t, h) - rs.recall) : 0.0;
        o.needle_checks = o.needle_hits = o.block_hits = o.argmax_hits = 0;
        for (std::size_t ni = 0; ni < layer.needles.size(); ++ni) {
          const Needle& nd = layer.needles[ni];
          if (std::find(nd.question_rows.begin(), nd.question_rows.end(), pos) ==
              nd.question_rows.end())
            continue;
          if (!nd.heads.empty() && std::find(nd.heads.begin(), nd.heads.end(), h) == nd.heads.end())
            continue;
          bool blocks_in = true;
          for (int kb = nd.position / Bk; kb <= (nd.end() - 1) / Bk; ++kb)
            blocks_in = blocks_in && sel[kb];
          const bool argmax_ok = rs.argmax == ref.argmax;
          ++o.needle_checks;
          o.block_hits += blocks_in;
          o.argmax_hits += argmax_ok;
          o.needles.push_back({static_cast<int>(ni), blocks_in && argmax_ok});
          if (blocks_in && argmax_ok) {
            ++o.needle_hits;
          } else {
            o.misses.push_back(detail::cat(
                "needle ", ni, " (tokens [", nd.position, ", ", nd.end(), "), block ",
                nd.position / Bk, ") row ", pos, " head ", h, ": block ",
                blocks_in ? "selected" : "MISSED", ", argmax ", argmax_ok ? "kept" : "LOST",
                " (dense argmax key ", ref.argmax, ", mass recall ", rs.recall, ")"));
          }
        }
      }
    }
  });
  for (std::size_t ri = 0; ri < rows.size(); ++ri) {
    for (int h = 0; h < hq; ++h) {
      const RowOut& o = out[ri * hq + h];
      SliceStats& role = st.roles[layer.head_labels[h]];
      for (SliceStats* s : {&st.all, &role}) {
        s->recall.add(o.recall);
        s->recall_head.add(o.recall_head);
        s->error.add(o.error);
        s->block_recall.add(o.block_recall);
        s->sink_share.add(o.sink);
        s->oracle_blocks += o.oracle;
        s->visible_blocks += o.visible;
      }
      st.dev_host_gap = std::max(st.dev_host_gap, o.dev_gap);
      st.needle_checks += o.needle_checks;
      st.needle_hits += o.needle_hits;
      st.needle_block_hits += o.block_hits;
      st.needle_argmax_hits += o.argmax_hits;
      st.needle_misses.insert(st.needle_misses.end(), o.misses.begin(), o.misses.end());
      for (const auto& [ni, hit] : o.needles) {
        st.per_needle[ni].first += 1;
        st.per_needle[ni].second += hit;
      }
    }
  }
  // Unions of the rows' oracle sets, laid out like the tables (over the chunk's KV blocks).
  const int n_kb = (cv.kv_len() + Bk - 1) / Bk;
  const int group = c.group_size();
  std::vector<char> head_or(n_kb), group_or(n_kb);
  for (int hg = 0; hg < hq / group; ++hg) {
    std::fill(group_or.begin(), group_or.end(), 0);
    for (int h = hg * group; h < (hg + 1) * group; ++h) {
      std::fill(head_or.begin(), head_or.end(), 0);
      for (std::size_t ri = 0; ri < rows.size(); ++ri) {
        const std::vector<char>& os = out[ri * hq + h].oracle_set;
        for (std::size_t kb = 0; kb < os.size(); ++kb) head_or[kb] |= os[kb];
      }
      st.oracle_qblock_sel += std::count(head_or.begin(), head_or.end(), 1);
      st.oracle_qblock_all += n_kb;
      for (int kb = 0; kb < n_kb; ++kb) group_or[kb] |= head_or[kb];
    }
    st.oracle_group_sel += std::count(group_or.begin(), group_or.end(), 1);
    st.oracle_group_all += n_kb;
  }
  st.rows += static_cast<long long>(rows.size());
}

}  // namespace compact::tools
