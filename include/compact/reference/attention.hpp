/// @file attention.hpp
/// @brief Host reference of chunked-prefill attention over the paged cache: the truth for tests.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "compact/core/block_tables.hpp"
#include "compact/core/chunk_batch.hpp"
#include "compact/core/config.hpp"
#include "compact/core/dtype.hpp"
#include "compact/core/paged_kv.hpp"

namespace compact::reference {

/// Key positions [begin, end) of one sequence that a row may attend to.
struct KeyRange {
  int begin = 0;  ///< First key position.
  int end = 0;    ///< One past the last key position.
};

/// The key ranges row t of sequence b, head h attends to: [0, pos] when dense, else the entries
/// of its table clipped to [0, pos]. Appends to `ranges`.
inline void visible_keys(const SeqInfo& s, int b, int h, int t, int table_block_tokens,
                         const BlockTables* tables, std::vector<KeyRange>& ranges) {
  ranges.clear();
  const int qpos = s.pos() + t;
  if (tables == nullptr) {
    ranges.push_back({0, qpos + 1});
    return;
  }
  const int table = tables->table_of(b, h, t);
  for (int e = tables->indptr[table]; e < tables->indptr[table + 1]; ++e) {
    const int begin = tables->indices[e] * table_block_tokens;
    const int end = std::min(begin + table_block_tokens, qpos + 1);
    if (begin < end) ranges.push_back({begin, end});
  }
}

/// Dense (tables == nullptr) or table-restricted attention on the host, accumulated in double:
/// row (b, t, h) attends to the keys at positions <= L_b - n_b + t (bottom-right causal) that
/// its table selects, with query head h reading KV head h / (Hq / Hkv). Rows that see no key get
/// a zero output and an LSE of -inf. Every pointer must be host memory.
///
/// `emit(row, h, const double* o, double lse)` receives each finished (packed row, head), so
/// tests can compare in double and the executor can round to the output dtype. Sequences
/// [first_seq, last_seq) are computed (last_seq < 0: to the end), so callers may split the work
/// across threads.
template <class Emit>
void attention_rows(const AttentionConfig& c, const ChunkBatch& batch, const PagedKV& cache,
                    const BlockTables* tables, Emit&& emit, int first_seq = 0, int last_seq = -1) {
  const int d = c.head_dim;
  const int g = c.gqa_group();
  const double scale = c.scale();
  const std::int64_t q_stride = batch.q_stride ? batch.q_stride : std::int64_t{c.num_q_heads} * d;
  const int table_tokens = tables ? tables->shape.table_block_tokens : 0;
  std::vector<KeyRange> ranges;
  std::vector<double> q(d), acc(d), logits;
  if (last_seq < 0) last_seq = batch.num_seqs;
  for (int b = first_seq; b < last_seq; ++b) {
    const SeqInfo s = seq_info(batch, b);
    for (int t = 0; t < s.q_len; ++t) {
      const std::int64_t row = s.q_begin + t;
      for (int h = 0; h < c.num_q_heads; ++h) {
        const int kvh = h / g;
        for (int i = 0; i < d; ++i) q[i] = load_float(batch.q, c.dtype, row * q_stride + h * d + i);
        visible_keys(s, b, h, t, table_tokens, tables, ranges);
        logits.clear();
        double max_logit = -std::numeric_limits<double>::infinity();
        for (const KeyRange& r : ranges) {
          for (int j = r.begin; j < r.end; ++j) {
            const std::int64_t k_off = cache.offset(b, j, kvh);
            double dot = 0;
            for (int i = 0; i < d; ++i) dot += q[i] * load_float(cache.k_pages, c.dtype, k_off + i);
            logits.push_back(dot * scale);
            max_logit = std::max(max_logit, logits.back());
          }
        }
        std::fill(acc.begin(), acc.end(), 0.0);
        double sum = 0;
        std::size_t n = 0;
        for (const KeyRange& r : ranges) {
          for (int j = r.begin; j < r.end; ++j, ++n) {
            const double p = std::exp(logits[n] - max_logit);
            sum += p;
            const std::int64_t v_off = cache.offset(b, j, kvh);
            for (int i = 0; i < d; ++i) acc[i] += p * load_float(cache.v_pages, c.dtype, v_off + i);
          }
        }
        for (int i = 0; i < d; ++i) acc[i] = sum > 0 ? acc[i] / sum : 0.0;
        emit(row, h, acc.data(),
             sum > 0 ? max_logit + std::log(sum) : -std::numeric_limits<double>::infinity());
      }
    }
  }
}

/// attention_rows() written to an AttentionOutput (o rounded to the config's dtype).
inline void attention(const AttentionConfig& c, const ChunkBatch& batch, const PagedKV& cache,
                      const AttentionOutput& out, const BlockTables* tables = nullptr) {
  const int d = c.head_dim;
  const std::int64_t o_stride = out.o_stride ? out.o_stride : std::int64_t{c.num_q_heads} * d;
  attention_rows(
      c, batch, cache, tables, [&](std::int64_t row, int h, const double* o, double lse) {
        for (int i = 0; i < d; ++i) {
          store_float(out.o, c.dtype, row * o_stride + h * d + i, static_cast<float>(o[i]));
        }
        if (out.lse != nullptr) out.lse[row * c.num_q_heads + h] = static_cast<float>(lse);
      });
}

}  // namespace compact::reference
