/// @file block_tables.hpp
/// @brief TableShape and BlockTables: the CSR lists of KV table blocks each executor CTA walks.
#pragma once

#include <cstddef>
#include <cstdint>

#include "compact/core/config.hpp"
#include "compact/core/limits.hpp"
#include "compact/core/macros.hpp"

namespace compact {

/// Which query rows share one block table, fixed by the union strategy.
///
/// Table (b, hg, qg) serves query heads [hg * heads_per_table, (hg + 1) * heads_per_table) of
/// sequence b and, when per_q_block, only the chunk rows of query block qg (otherwise every row
/// of the chunk). BlockUnion: heads_per_table = execution group, per_q_block = false.
struct TableShape {
  int heads_per_table = 1;     ///< Query heads per table: 1 or the execution group.
  bool per_q_block = false;    ///< One table per query block (no Q-block union).
  int num_heads = 0;           ///< Hq.
  int head_groups = 0;         ///< Hq / heads_per_table.
  int q_groups = 1;            ///< Query-block groups per (sequence, head group).
  int block_q = 0;             ///< Bq, to map a row to its query block.
  int max_batch = 0;           ///< Sequences the tables are laid out for.
  int table_block_tokens = 0;  ///< Tokens per entry (max of Bk and the page size).
  int max_entries = 0;         ///< Entries one table can hold.

  /// The shape for a config, limits and the union's grouping.
  static TableShape make(const AttentionConfig& c, const PlanLimits& l, int heads_per_table,
                         bool per_q_block) {
    const Geometry g = Geometry::of(c, l);
    TableShape s;
    s.heads_per_table = heads_per_table;
    s.per_q_block = per_q_block;
    s.num_heads = c.num_q_heads;
    s.head_groups = c.num_q_heads / heads_per_table;
    s.q_groups = per_q_block ? g.max_q_blocks : 1;
    s.block_q = c.block_q;
    s.max_batch = l.max_batch;
    s.table_block_tokens = g.table_block_tokens;
    s.max_entries = g.max_table_blocks;
    return s;
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
  /// Table serving query head h of sequence b at chunk row t.
  COMPACT_HOST_DEVICE int table_of(int b, int h, int t) const {
    return table_index(b, h / heads_per_table, per_q_block ? t / block_q : 0);
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
};

}  // namespace compact
