/// @file table_stats.hpp
/// @brief Density of block tables (host memory), for reports and benchmarks.
#pragma once

#include <cstdint>

#include "compact/core/block_tables.hpp"
#include "compact/core/chunk_batch.hpp"
#include "compact/core/config.hpp"

namespace compact {

/// Selected table entries against what dense causal tables of the same shape would hold.
struct TableDensity {
  std::int64_t selected = 0;  ///< Entries in the tables.
  std::int64_t dense = 0;     ///< Entries dense causal attention would visit.
  /// selected / dense (0 when dense is 0).
  double ratio() const { return dense > 0 ? static_cast<double>(selected) / dense : 0.0; }
};

/// Counts entries of host-resident tables (indptr, lengths readable on the host).
inline TableDensity table_density(const AttentionConfig& c, const ChunkBatch& batch,
                                  const BlockTables& t) {
  TableDensity d;
  const TableShape& s = t.shape;
  for (int b = 0; b < batch.num_seqs; ++b) {
    const SeqInfo si = seq_info(batch, b);
    if (si.q_len == 0) continue;
    for (int hg = 0; hg < s.head_groups; ++hg) {
      const int q_groups = s.per_q_block ? ceil_div(si.q_len, c.block_q) : 1;
      for (int qg = 0; qg < q_groups; ++qg) {
        const int table = s.table_index(b, hg, qg);
        d.selected += t.indptr[table + 1] - t.indptr[table];
        const int last_row =
            s.per_q_block ? min_of((qg + 1) * c.block_q, si.q_len) - 1 : si.q_len - 1;
        d.dense += (si.pos() + last_row) / s.table_block_tokens + 1;
      }
    }
  }
  return d;
}

}  // namespace compact
