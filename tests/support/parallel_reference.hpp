// The host reference attention in double, spread over sequences on all host cores.
#pragma once

#include <algorithm>
#include <thread>
#include <vector>

#include "compact/reference/attention.hpp"

namespace compact::test {

struct ReferenceResult {
  std::vector<double> o;    // [total_q][Hq][D]
  std::vector<double> lse;  // [total_q][Hq]
};

/// reference::attention_rows over every sequence, sequences dealt round-robin to threads
/// (host memory only; `tables` may be null for dense attention).
inline ReferenceResult parallel_reference(const AttentionConfig& c, const ChunkBatch& batch,
                                          const PagedKV& cache, const BlockTables* tables) {
  ReferenceResult r;
  r.o.assign(static_cast<std::size_t>(batch.total_q) * c.num_q_heads * c.head_dim, 0.0);
  r.lse.assign(static_cast<std::size_t>(batch.total_q) * c.num_q_heads, 0.0);
  const int threads = std::max(
      1, std::min<int>(batch.num_seqs, static_cast<int>(std::thread::hardware_concurrency())));
  std::vector<std::thread> pool;
  for (int w = 0; w < threads; ++w) {
    pool.emplace_back([&, w] {
      for (int b = w; b < batch.num_seqs; b += threads) {
        reference::attention_rows(
            c, batch, cache, tables,
            [&](std::int64_t row, int h, const double* o, double lse) {
              const std::size_t base = static_cast<std::size_t>(row) * c.num_q_heads + h;
              std::copy(o, o + c.head_dim, r.o.begin() + base * c.head_dim);
              r.lse[base] = lse;
            },
            b, b + 1);
      }
    });
  }
  for (std::thread& t : pool) t.join();
  return r;
}

}  // namespace compact::test
