/// @file tile_scheduler.cuh
/// @brief Which (table, query-row tile, KV split) a CTA computes, and the rows it covers.
#pragma once

#include "compact/core/macros.hpp"
#include "compact/executor/paged_flash/params.cuh"

namespace compact::paged_flash {

/// One CTA's work: rows [m0, m0 + kBlockM) of table `table`, KV tiles of split `split`.
///
/// The grid is laid out with the row tile fastest, so all row tiles of one table (and split)
/// run side by side and stream the same K/V pages through L2 together.
struct WorkTile {
  int table = 0;   ///< Table index (TableShape::table_index).
  int b = 0;       ///< Sequence.
  int hg = 0;      ///< Head group: heads [hg * heads_per_table, ... + heads_per_table).
  int qg = 0;      ///< Query-block group (0 unless tables are per query block).
  int m_tile = 0;  ///< Row tile within the table.
  int split = 0;   ///< KV split.
};

/// Row r of a table is (token token_begin + r / heads, head head0 + r % heads): the heads of a
/// token are adjacent, so one row tile holds whole tokens of every head of the group.
struct RowMap {
  int token_begin = 0;  ///< First chunk row of the table.
  int tokens = 0;       ///< Chunk rows of the table.
  int heads = 1;        ///< Heads per table.
  int head0 = 0;        ///< First head.
  /// Rows of the table: tokens x heads.
  COMPACT_HOST_DEVICE int rows() const { return tokens * heads; }
  /// Chunk row of table row r.
  COMPACT_HOST_DEVICE int token(int r) const { return token_begin + r / heads; }
  /// Query head of table row r.
  COMPACT_HOST_DEVICE int head(int r) const { return head0 + r % heads; }
};

/// Maps a linear CTA index to its WorkTile and a table to its RowMap.
struct TileScheduler {
  /// CTAs of the grid: every table of the limits' layout x row tiles x splits.
  static long long grid_size(int num_tables, int m_tiles_per_table, int num_splits) {
    return static_cast<long long>(num_tables) * num_splits * m_tiles_per_table;
  }

  /// The work tile of CTA `block` (row tile fastest, then split, then table).
  COMPACT_HOST_DEVICE static WorkTile decode(const Params& p, long long block) {
    WorkTile w;
    w.m_tile = static_cast<int>(block % p.m_tiles_per_table);
    const long long rest = block / p.m_tiles_per_table;
    w.split = static_cast<int>(rest % p.num_splits);
    const int slot = static_cast<int>(rest / p.num_splits);
    int bh = 0;
    if (p.tail_split) {
      // Every tail table before every head table: on a final chunk the tail rows attend to
      // everything and are the longest tiles, so they start first (longest processing time
      // first); elsewhere the tail tiles are empty and leave at once.
      const int pairs = p.num_tables / 2;
      w.qg = slot < pairs ? 1 : 0;
      bh = slot < pairs ? slot : slot - pairs;
      w.table = bh * 2 + w.qg;
    } else {
      w.table = slot;
      w.qg = w.table % p.q_groups;
      bh = w.table / p.q_groups;
    }
    w.hg = bh % p.head_groups;
    w.b = bh / p.head_groups;
    return w;
  }

  /// The rows of the work tile's table, given the sequence's chunk length.
  COMPACT_HOST_DEVICE static RowMap rows(const Params& p, const WorkTile& w, int chunk_len) {
    RowMap m;
    m.heads = p.heads_per_table;
    m.head0 = w.hg * p.heads_per_table;
    if (p.per_q_block) {
      m.token_begin = w.qg * p.block_q;
      m.tokens = max_of(0, min_of(p.block_q, chunk_len - m.token_begin));
    } else if (p.tail_split) {
      // Rows before the split in table qg 0, from it on in qg 1 (no q_split: all in qg 0).
      const int n_qb = ceil_div(chunk_len, p.block_q);
      const int cut = p.q_split != nullptr
                          ? min_of(min_of(max_of(p.q_split[w.b], 0), n_qb) * p.block_q, chunk_len)
                          : chunk_len;
      m.token_begin = w.qg == 0 ? 0 : cut;
      m.tokens = w.qg == 0 ? cut : chunk_len - cut;
    } else {
      m.token_begin = 0;
      m.tokens = chunk_len;
    }
    return m;
  }
};

}  // namespace compact::paged_flash
