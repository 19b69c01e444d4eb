/// @file tile_scheduler.cuh
/// @brief Which (table, query-row tile, KV split) a CTA computes, and the rows it covers.
#pragma once

#include "compact/core/block_tables.hpp"
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
///
/// With a tail split the row tiles of the two tables of a pair are packed (decode_tail_split):
/// no CTA is spent on a table's rows that the other table of its pair holds, and the unused
/// slots (the grid is sized by the limits) are all at the end. Interleaved with the real CTAs,
/// the empty slots of a fixed per-table layout left the real ones unevenly placed on the SMs of
/// a single-wave grid (Nsight Compute at TP1 128K: the same instructions and mean active cycles
/// per SM as the 2D baseline's grid, up to 11% more elapsed cycles). Tail tables far longer than
/// their head tables (a final chunk's) start first: longest processing time first.
struct TileScheduler {
  /// CTAs of the grid: every row group of the limits' layout (a table, or a tail-split pair of
  /// tables, TableShape::row_groups_per_seq) x row-tile slots x splits.
  static long long grid_size(const TableShape& shape, int m_tiles_per_table, int num_splits) {
    return static_cast<long long>(shape.max_batch) * shape.row_groups_per_seq() * num_splits *
           m_tiles_per_table;
  }

  /// The work tile of CTA `block` without a tail split (row tile fastest, then split, then
  /// table).
  COMPACT_HOST_DEVICE static WorkTile decode(const Params& p, long long block) {
    WorkTile w;
    w.m_tile = static_cast<int>(block % p.m_tiles_per_table);
    const long long rest = block / p.m_tiles_per_table;
    w.split = static_cast<int>(rest % p.num_splits);
    w.table = static_cast<int>(rest / p.num_splits);
    // The inverse of TableShape::table_index.
    w.qg = w.table % p.shape.q_groups;
    const int bh = w.table / p.shape.q_groups;
    w.hg = bh % p.shape.head_groups;
    w.b = bh / p.shape.head_groups;
    return w;
  }

  /// The work tile of CTA `block` with a tail split (every thread of a warp calls it; each warp
  /// computes the same answer, scanning the (sequence, head group) pairs 32 at a time with
  /// shuffles). The grid holds two regions of packed row tiles, pairs in order within each:
  /// first the tail tables that lead their pair (at least twice the head table's entries: a
  /// final chunk's rows that keep every block), then every other table, a pair's tail tiles
  /// before its head tiles. Within a pair's run the row tile is fastest, then the split. CTAs
  /// past both regions get b = num_seqs (no work).
  template <int kBlockM>
  __device__ static WorkTile decode_tail_split(const Params& p, long long block) {
    const int lane = threadIdx.x % 32;
    const TableShape& s = p.shape;
    const int pairs = p.num_seqs * s.head_groups;
    WorkTile w;
    w.b = p.num_seqs;
    long long offset = block;  // CTA index within the current region
    for (int region = 0; region < 2; ++region) {
      for (int base = 0; base < pairs; base += 32) {
        const int u = base + lane;
        int tail = 0, head = 0;
        bool lead = false;
        if (u < pairs) {
          const int b = u / s.head_groups;
          const int len = p.cu_seqlens_q[b + 1] - p.cu_seqlens_q[b];
          WorkTile x;  // the pair's tables: qg 0 (head), qg 1 (tail)
          x.b = b;
          x.qg = 1;
          tail = ceil_div(rows(p, x, len).rows(), kBlockM);
          x.qg = 0;
          head = ceil_div(rows(p, x, len).rows(), kBlockM);
          // The head table (qg 0) and the tail table (qg 1) of pair u are adjacent.
          const int t0 = s.table_index(b, u % s.head_groups, 0);
          const int head_entries = p.indptr[t0 + 1] - p.indptr[t0];
          const int tail_entries = p.indptr[t0 + 2] - p.indptr[t0 + 1];
          lead = tail > 0 && tail_entries >= 2 * head_entries;
        }
        const int tiles = region == 0 ? (lead ? tail : 0) : head + (lead ? 0 : tail);
        const int tail_tiles = region == 0 ? tiles : (lead ? 0 : tail);  // they come first
        const long long count = static_cast<long long>(p.num_splits) * tiles;
        long long incl = count;  // inclusive scan over the lanes
#pragma unroll
        for (int d = 1; d < 32; d *= 2) {
          const long long up = __shfl_up_sync(0xffffffffu, incl, d);
          if (lane >= d) incl += up;
        }
        const unsigned hit = __ballot_sync(0xffffffffu, offset < incl && offset >= incl - count);
        if (hit != 0) {
          const int src = __ffs(hit) - 1;
          const long long r = offset - __shfl_sync(0xffffffffu, incl - count, src);
          const int t = __shfl_sync(0xffffffffu, tiles, src);
          const int t_tail = __shfl_sync(0xffffffffu, tail_tiles, src);
          const int m = static_cast<int>(r % t);
          const int pair = base + src;
          w.b = pair / s.head_groups;
          w.hg = pair % s.head_groups;
          w.split = static_cast<int>(r / t);
          w.qg = m < t_tail ? 1 : 0;
          w.m_tile = w.qg == 1 ? m : m - t_tail;
          w.table = s.table_index(w.b, w.hg, w.qg);
          return w;
        }
        offset -= __shfl_sync(0xffffffffu, incl, 31);
      }
    }
    return w;
  }

  /// The rows of the work tile's table, given the sequence's chunk length: the query blocks
  /// TableShape::q_blocks gives its group (the ranges the unions lay the tables out by), the
  /// tail split from BlockTables::q_split (none: every row in group 0).
  COMPACT_HOST_DEVICE static RowMap rows(const Params& p, const WorkTile& w, int chunk_len) {
    const int bq = p.shape.block_q;
    const int n_qb = ceil_div(chunk_len, bq);
    const QBlockRange q =
        p.shape.q_blocks(w.qg, n_qb, p.q_split != nullptr ? p.q_split[w.b] : n_qb);
    RowMap m;
    m.heads = p.shape.heads_per_table;
    m.head0 = w.hg * p.shape.heads_per_table;
    m.token_begin = min_of(q.first * bq, chunk_len);
    m.tokens = max_of(0, min_of(q.last * bq, chunk_len) - m.token_begin);
    return m;
  }
};

}  // namespace compact::paged_flash
