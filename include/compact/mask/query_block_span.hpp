/// @file query_block_span.hpp
/// @brief Where a query block sits against the KV blocks: the always-on and never-on ranges.
#pragma once

#include "compact/core/chunk_batch.hpp"
#include "compact/core/macros.hpp"

namespace compact {

/// The KV-block geometry of query block qb of one sequence's chunk.
///
/// Always on for every mask source: the causal blocks of the current chunk, i.e. the blocks
/// [chunk_first_kb, last_kb] that hold new tokens this query block can see. Never on: blocks after
/// last_kb (the future of every row of the block).
struct QueryBlockSpan {
  int first_pos = 0;       ///< Absolute position of the block's first query row.
  int last_pos = 0;        ///< Absolute position of its last query row.
  int chunk_first_kb = 0;  ///< KV block of the chunk's first new token.
  int first_kb = 0;        ///< KV block of first_pos (the diagonal starts here).
  int last_kb = 0;         ///< KV block of last_pos; no later block may be selected.
};

/// Span of query block qb (0 <= qb < ceil(n_b / Bq)) of a sequence.
COMPACT_HOST_DEVICE inline QueryBlockSpan query_block_span(const SeqInfo& s, int qb, int block_q,
                                                           int block_k) {
  QueryBlockSpan span;
  const int pos0 = s.pos();
  span.first_pos = pos0 + qb * block_q;
  const int rows = min_of(block_q, s.q_len - qb * block_q);
  span.last_pos = span.first_pos + rows - 1;
  span.chunk_first_kb = pos0 / block_k;
  span.first_kb = span.first_pos / block_k;
  span.last_kb = span.last_pos / block_k;
  return span;
}

/// Everything a mask rule may look at for one mask row (b, h, qb).
struct MaskRowContext {
  int b = 0;                 ///< Sequence.
  int h = 0;                 ///< Query head.
  int qb = 0;                ///< Query block within the chunk.
  SeqInfo seq{};             ///< Lengths of sequence b.
  QueryBlockSpan span{};     ///< Positions and KV blocks of query block qb.
  int num_kv_blocks = 0;     ///< ceil(L_b / Bk).
  bool final_chunk = false;  ///< The caller marked this chunk as the prompt's last.
};

}  // namespace compact
