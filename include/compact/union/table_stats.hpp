/// @file table_stats.hpp
/// @brief Density of block tables (host memory), for reports and benchmarks.
#pragma once

#include <cstdint>
#include <vector>

#include <cuda_runtime_api.h>

#include "compact/core/block_tables.hpp"
#include "compact/core/chunk_batch.hpp"
#include "compact/core/config.hpp"
#include "compact/core/cuda_check.hpp"
#include "compact/core/space.hpp"

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
    const int n_qb = ceil_div(si.q_len, c.block_q);
    for (int hg = 0; hg < s.head_groups; ++hg) {
      for (int qg = 0; qg < s.q_groups; ++qg) {
        const QBlockRange qbs = s.q_blocks(qg, n_qb, t.split_of(b));
        if (qbs.size() == 0) continue;
        const int table = s.table_index(b, hg, qg);
        d.selected += t.indptr[table + 1] - t.indptr[table];
        const int last_row = min_of(qbs.last * c.block_q, si.q_len) - 1;
        d.dense += (si.pos() + last_row) / s.table_block_tokens + 1;
      }
    }
  }
  return d;
}

/// table_density() of tables that live in `space` (lengths in host memory). Device tables'
/// indptr and q_split are copied back first: synchronizing copies, for reports, not hot paths.
inline TableDensity table_density(const AttentionConfig& c, const ChunkBatch& host_batch,
                                  const BlockTables& t, Space space) {
  if (space == Space::host) return table_density(c, host_batch, t);
  std::vector<std::int32_t> indptr(t.shape.num_tables() + 1), split(t.shape.max_batch);
  COMPACT_CUDA_CHECK(cudaMemcpy(indptr.data(), t.indptr, indptr.size() * sizeof(std::int32_t),
                                cudaMemcpyDeviceToHost));
  BlockTables host{t.shape, indptr.data(), nullptr, nullptr};
  if (t.q_split != nullptr) {
    COMPACT_CUDA_CHECK(cudaMemcpy(split.data(), t.q_split, split.size() * sizeof(std::int32_t),
                                  cudaMemcpyDeviceToHost));
    host.q_split = split.data();
  }
  return table_density(c, host_batch, host);
}

}  // namespace compact
