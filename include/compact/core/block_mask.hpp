/// @file block_mask.hpp
/// @brief BlockMask: the bit-packed 2D block mask M[b][h][qb][kb] a mask source produces.
#pragma once

#include <cstddef>
#include <cstdint>

#include "compact/core/limits.hpp"
#include "compact/core/macros.hpp"

namespace compact {

/// Bit-packed block mask, one row of `words_per_row` 32-bit words per (sequence, query head,
/// query block); bit kb % 32 of word kb / 32 selects KV block kb (tokens [kb*Bk, (kb+1)*Bk)).
///
/// Query blocks are counted from the start of the chunk (rows [qb*Bq, (qb+1)*Bq) of the
/// sequence's new tokens). A mask source writes the rows qb < ceil(n_b/Bq) and the words that
/// hold blocks kb < ceil(L_b/Bk) of every sequence b < num_seqs; consumers ignore everything
/// else, so stale bits there are harmless.
struct BlockMask {
  std::uint32_t* bits = nullptr;  ///< num_words() words, rows laid out by row_offset().
  int max_batch = 0;              ///< Sequences the buffer holds.
  int num_heads = 0;              ///< Hq.
  int max_q_blocks = 0;           ///< Rows per (sequence, head).
  int words_per_row = 0;          ///< Words per row.
  /// Optional [max_batch] hint, written by mask sources that declare kWritesTailHint: how many
  /// of the chunk's last query blocks of sequence b select differently enough from the others
  /// to deserve a table of their own (FlashPrefill: the final chunk's rows, which keep every
  /// block; elsewhere the rows whose sliding window lies inside the chunk). Tail-split unions
  /// give those rows a table of their own. Any value is correct (it only moves rows between two
  /// tables); values are clamped to [0, query blocks]. Null: no hint.
  std::int32_t* tail_q_blocks = nullptr;

  /// The layout for a config and limits (bits left null).
  static BlockMask shape_for(const AttentionConfig& c, const PlanLimits& l) {
    const Geometry g = Geometry::of(c, l);
    BlockMask m;
    m.max_batch = l.max_batch;
    m.num_heads = c.num_q_heads;
    m.max_q_blocks = g.max_q_blocks;
    m.words_per_row = g.words_per_row;
    return m;
  }
  /// Words in the whole buffer.
  COMPACT_HOST_DEVICE std::size_t num_words() const {
    return static_cast<std::size_t>(max_batch) * num_heads * max_q_blocks * words_per_row;
  }
  /// Index of the first word of row (b, h, qb).
  COMPACT_HOST_DEVICE std::size_t row_offset(int b, int h, int qb) const {
    return ((static_cast<std::size_t>(b) * num_heads + h) * max_q_blocks + qb) * words_per_row;
  }
  /// First word of row (b, h, qb).
  COMPACT_HOST_DEVICE std::uint32_t* row(int b, int h, int qb) const {
    return bits + row_offset(b, h, qb);
  }
  /// Whether KV block kb of row (b, h, qb) is selected.
  COMPACT_HOST_DEVICE bool test(int b, int h, int qb, int kb) const {
    return (row(b, h, qb)[kb >> 5] >> (kb & 31)) & 1u;
  }
  /// First query block of sequence b's hinted tail: n_qb minus the hint clamped to [0, n_qb], or
  /// n_qb (no tail) without a hint. Reads tail_q_blocks where it lives.
  COMPACT_HOST_DEVICE int tail_begin(int b, int n_qb) const {
    if (tail_q_blocks == nullptr || n_qb <= 0) return n_qb;
    return n_qb - max_of(0, min_of(tail_q_blocks[b], n_qb));
  }
  /// Host-side convenience for building masks by hand (not thread-safe).
  void set(int b, int h, int qb, int kb) const { row(b, h, qb)[kb >> 5] |= 1u << (kb & 31); }
};

}  // namespace compact
