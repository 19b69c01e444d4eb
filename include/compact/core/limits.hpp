/// @file limits.hpp
/// @brief PlanLimits: the largest step an Engine must serve; sizes every buffer and grid.
#pragma once

#include "compact/core/config.hpp"
#include "compact/core/error.hpp"
#include "compact/core/macros.hpp"

namespace compact {

/// Upper bounds for every step an Engine will see. Workspace sizes and kernel grids are derived
/// from these alone, so plan() and run() never allocate or synchronize and can be captured in a
/// CUDA graph; the actual lengths are read on the device.
struct PlanLimits {
  int max_batch = 1;        ///< Sequences per step.
  int max_chunk = 1024;     ///< New query tokens of one sequence per step (n_b).
  int max_kv_len = 131072;  ///< KV length of one sequence after the step (L_b).
  /// Query tokens of all sequences of one step; 0 means max_batch * max_chunk.
  int max_total_q = 0;

  /// Resolved bound on the packed query count.
  COMPACT_HOST_DEVICE constexpr long long total_q_bound() const {
    return max_total_q > 0 ? max_total_q : static_cast<long long>(max_batch) * max_chunk;
  }

  /// Throws compact::Error naming the first field that is out of range.
  void validate() const {
    require(max_batch > 0, "limits.max_batch", max_batch, "a positive sequence count");
    require(max_chunk > 0, "limits.max_chunk", max_chunk, "a positive token count");
    require(max_kv_len >= max_chunk, "limits.max_kv_len", max_kv_len,
            detail::cat(">= limits.max_chunk (", max_chunk, ")"));
    require(max_total_q >= 0 && static_cast<long long>(max_total_q) <=
                                    static_cast<long long>(max_batch) * max_chunk,
            "limits.max_total_q", max_total_q,
            detail::cat("0 or at most max_batch * max_chunk (",
                        static_cast<long long>(max_batch) * max_chunk, ")"));
    require(total_q_bound() < (1LL << 31), "limits.max_batch * limits.max_chunk", total_q_bound(),
            "fewer than 2^31 packed query tokens");
  }
};

/// Sizes derived from a config and limits that several components agree on.
struct Geometry {
  int max_q_blocks = 0;        ///< Query blocks of the longest chunk.
  int max_kv_blocks = 0;       ///< KV blocks of the longest sequence.
  int words_per_row = 0;       ///< 32-bit words of one bit-packed mask row.
  int table_block_tokens = 0;  ///< Tokens per block-table entry.
  int max_table_blocks = 0;    ///< Table entries a sequence of max_kv_len can have.

  /// The geometry of a config and limits.
  static Geometry of(const AttentionConfig& c, const PlanLimits& l) {
    Geometry g;
    g.max_q_blocks = ceil_div(l.max_chunk, c.block_q);
    g.max_kv_blocks = ceil_div(l.max_kv_len, c.block_k);
    g.words_per_row = ceil_div(g.max_kv_blocks, 32);
    g.table_block_tokens = c.table_block_tokens();
    g.max_table_blocks = ceil_div(l.max_kv_len, g.table_block_tokens);
    return g;
  }
};

}  // namespace compact
