/// @file block_tables.hpp
/// @brief TableShape and BlockTables: the CSR lists of KV table blocks each executor CTA walks.
#pragma once

#include <cstddef>
#include <cstdint>

#include "compact/core/config.hpp"
#include "compact/core/limits.hpp"
#include "compact/core/macros.hpp"

namespace compact {

/// A half-open range of query blocks, [first, last); empty when last <= first.
struct QBlockRange {
  int first = 0;  ///< First query block.
  int last = 0;   ///< One past the last query block.
  /// Query blocks in the range (0 when empty).
  COMPACT_HOST_DEVICE int size() const { return last > first ? last - first : 0; }
};

/// Which query rows share one block table, fixed by the union strategy.
///
/// Table (b, hg, qg) serves query heads [hg * heads_per_table, (hg + 1) * heads_per_table) of
/// sequence b and the chunk rows of the query blocks q_blocks(qg, ...) returns: query block qg
/// when per_q_block; otherwise every query block, or, with tail_split, the query blocks before
/// the sequence's split (qg 0) and from it on (qg 1). BlockUnion: heads_per_table = execution
/// group, per_q_block = false, tail_split = true.
///
/// Why a tail table: a mask source may mark the last query blocks of a chunk as attending far
/// more than the rest (FlashPrefill's final-chunk rows keep every block, BlockMask::tail_q_blocks).
/// Unioned with the other rows they would make the whole group's table dense; in a table of
/// their own they cost only their own rows. The same split keeps blocks that only the first
/// rows select (FlashPrefill's windows reaching before the chunk) out of the later rows' table.
/// Without a hint the split is the chunk's end and qg 1 is empty.
struct TableShape {
  int heads_per_table = 1;     ///< Query heads per table: 1 or the execution group.
  bool per_q_block = false;    ///< One table per query block (no Q-block union).
  bool tail_split = false;     ///< Two tables per head group: before and from the split.
  int num_heads = 0;           ///< Hq.
  int head_groups = 0;         ///< Hq / heads_per_table.
  int q_groups = 1;            ///< Query-block groups per (sequence, head group).
  int block_q = 0;             ///< Bq, to map a row to its query block.
  int max_batch = 0;           ///< Sequences the tables are laid out for.
  int table_block_tokens = 0;  ///< Tokens per entry (max of Bk and the page size).
  int max_entries = 0;         ///< Entries one table can hold.

  /// The shape for a config, limits and the union's grouping; `tail_split` only applies to
  /// tables that union query blocks (!per_q_block).
  static TableShape make(const AttentionConfig& c, const PlanLimits& l, int heads_per_table,
                         bool per_q_block, bool tail_split) {
    const Geometry g = Geometry::of(c, l);
    TableShape s;
    s.heads_per_table = heads_per_table;
    s.per_q_block = per_q_block;
    s.tail_split = tail_split && !per_q_block;
    s.num_heads = c.num_q_heads;
    s.head_groups = c.num_q_heads / heads_per_table;
    s.q_groups = per_q_block ? g.max_q_blocks : (s.tail_split ? 2 : 1);
    s.block_q = c.block_q;
    s.max_batch = l.max_batch;
    s.table_block_tokens = g.table_block_tokens;
    s.max_entries = g.max_table_blocks;
    return s;
  }
  /// The shape without a tail split: what a user-written union gets unless it asks for the
  /// split (and then writes BlockTables::q_split, which the executor reads).
  static TableShape make(const AttentionConfig& c, const PlanLimits& l, int heads_per_table,
                         bool per_q_block) {
    return make(c, l, heads_per_table, per_q_block, false);
  }
  /// Tables per sequence: head groups x query-block groups.
  COMPACT_HOST_DEVICE int tables_per_seq() const { return head_groups * q_groups; }
  /// Tables of the whole layout (max_batch sequences).
  COMPACT_HOST_DEVICE int num_tables() const { return max_batch * tables_per_seq(); }
  /// Entries of all tables together: the size of the indices buffer.
  COMPACT_HOST_DEVICE std::size_t capacity() const {
    return static_cast<std::size_t>(num_tables()) * max_entries;
  }
  /// Index of table (sequence b, head group hg, query-block group qg).
  COMPACT_HOST_DEVICE int table_index(int b, int hg, int qg) const {
    return (b * head_groups + hg) * q_groups + qg;
  }
  /// Table groups (heads x query-block groups) that hold rows: q_groups, except that a
  /// tail-split shape counts its pair once (for occupancy estimates).
  COMPACT_HOST_DEVICE int row_groups_per_seq() const {
    return head_groups * (tail_split ? 1 : q_groups);
  }
  /// Query blocks [first, last) of a sequence with n_qb query blocks that query-block group qg
  /// serves; `split` is the first query block of the tail table (ignored without tail_split).
  COMPACT_HOST_DEVICE QBlockRange q_blocks(int qg, int n_qb, int split) const {
    if (per_q_block) return {qg, min_of(qg + 1, n_qb)};
    if (!tail_split) return {0, n_qb};
    const int cut = max_of(0, min_of(split, n_qb));
    return qg == 0 ? QBlockRange{0, cut} : QBlockRange{cut, n_qb};
  }
  /// Table serving query head h of sequence b at chunk row t; `split` as in q_blocks().
  COMPACT_HOST_DEVICE int table_of(int b, int h, int t, int split) const {
    const int qb = t / block_q;
    const int qg = per_q_block ? qb : (tail_split && qb >= split ? 1 : 0);
    return table_index(b, h / heads_per_table, qg);
  }
};

/// CSR block tables: table i holds the ascending logical table-block ids
/// indices[indptr[i] .. indptr[i+1]); entry id covers tokens [id * T, (id + 1) * T) of its
/// sequence, T = shape.table_block_tokens, i.e. T / page_size consecutive logical pages (or one
/// page when T == page_size). last_block_tokens[i] counts the valid tokens of the table's last
/// entry (T unless it holds the sequence's end; 0 for an empty table).
///
/// indptr has shape.num_tables() + 1 entries; tables of sequences >= num_seqs are empty.
struct BlockTables {
  TableShape shape{};                         ///< Which rows share each table.
  std::int32_t* indptr = nullptr;             ///< [num_tables() + 1] CSR offsets.
  std::int32_t* indices = nullptr;            ///< [capacity()] logical table-block ids.
  std::int32_t* last_block_tokens = nullptr;  ///< [num_tables()] valid tokens of the last entry.
  /// [max_batch], tail-split shapes only: the first query block of each sequence's tail table
  /// (the chunk's query-block count when it has no tail), written by the union. Null: no split
  /// (every row in table qg 0; the union then ignores any tail hint).
  std::int32_t* q_split = nullptr;

  /// First tail query block of sequence b (host-readable q_split), for q_blocks()/table_of();
  /// a large value when there is no split.
  int split_of(int b) const {
    return shape.tail_split && q_split != nullptr ? q_split[b] : kNoSplit;
  }
  /// Table serving query head h of sequence b at chunk row t (host-readable q_split).
  int table_of(int b, int h, int t) const { return shape.table_of(b, h, t, split_of(b)); }

  /// split_of() when the tables have no tail split.
  static constexpr int kNoSplit = 1 << 30;
};

}  // namespace compact
