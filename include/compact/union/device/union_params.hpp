/// @file union_params.hpp
/// @brief UnionParams (what the device union passes read and write) and TableRows (the mask rows
/// one table ORs), shared by host and device code.
#pragma once

#include <cstdint>

#include "compact/core/block_mask.hpp"
#include "compact/core/block_tables.hpp"
#include "compact/core/macros.hpp"
#include "compact/core/policy_args.hpp"
#include "compact/union/device/entry_bits.hpp"

namespace compact {

/// Kernel parameters of the device union passes: plain pointers and sizes, copied by value into
/// every launch. Everything here is fixed by the config, the limits and the workspace, except
/// num_seqs (a host int); the lengths themselves stay on the device.
struct UnionParams {
  BlockMask mask{};                            ///< The bit-packed mask (input).
  TableShape shape{};                          ///< Which rows share a table.
  const std::int32_t* cu_seqlens_q = nullptr;  ///< ChunkBatch::cu_seqlens_q (device).
  const std::int32_t* kv_lens = nullptr;       ///< ChunkBatch::kv_lens (device).
  int num_seqs = 0;                            ///< Live sequences; tables of later ones are empty.
  int block_k = 0;                             ///< Bk.
  int log2_blocks_per_entry = 0;               ///< log2(T / Bk): KV blocks per table entry.
  int max_kv_len = 0;               ///< Lengths are clamped to it, so no pass leaves its buffers.
  std::int32_t* indptr = nullptr;   ///< [num_tables + 1]: counts after the count pass, then CSR.
  std::int32_t* indices = nullptr;  ///< BlockTables::indices (out).
  std::int32_t* last_block_tokens = nullptr;  ///< BlockTables::last_block_tokens (out).
  /// BlockTables::q_split (out; null without a tail split). The count pass writes it.
  std::int32_t* q_split = nullptr;
  /// The tail split is live: shape.tail_split and both BlockMask::tail_q_blocks and q_split given.
  bool split_tail = false;
  /// Workspace: the entry bitmap of every table, entry_words_per_table words each.
  std::uint32_t* entry_bits = nullptr;
  int entry_words_per_table = 0;  ///< Words of one table's entry bitmap.

  /// Parameters for `a` with the entry bitmap carved from its scratch.
  static UnionParams make(const UnionArgs& a, std::uint32_t* entry_bits,
                          int entry_words_per_table) {
    UnionParams p;
    p.mask = a.mask;
    p.shape = a.tables.shape;
    p.cu_seqlens_q = a.batch.cu_seqlens_q;
    p.kv_lens = a.batch.kv_lens;
    p.num_seqs = a.batch.num_seqs;
    p.block_k = a.config.block_k;
    p.log2_blocks_per_entry =
        detail::log2_pow2(a.tables.shape.table_block_tokens / a.config.block_k);
    p.max_kv_len = a.limits.max_kv_len;
    p.indptr = a.tables.indptr;
    p.indices = a.tables.indices;
    p.last_block_tokens = a.tables.last_block_tokens;
    p.q_split = a.tables.shape.tail_split ? a.tables.q_split : nullptr;
    p.split_tail = p.q_split != nullptr && a.mask.tail_q_blocks != nullptr;
    p.entry_bits = entry_bits;
    p.entry_words_per_table = entry_words_per_table;
    return p;
  }
};

/// The mask rows table (b, hg, qg) ORs and the KV range they cover: heads
/// [first_head, first_head + num_heads) x query blocks [qb_begin, qb_begin + num_qb), words
/// [0, num_words) of each row. Tables of sequences past the batch, query groups past the chunk and
/// empty sequences have no rows.
struct TableRows {
  int b = 0;                ///< Sequence.
  int first_head = 0;       ///< First query head.
  int num_heads = 0;        ///< Query heads.
  int qb_begin = 0;         ///< First query block.
  int num_qb = 0;           ///< Query blocks.
  int kv_len = 0;           ///< L_b (clamped to the limits).
  int num_kv_blocks = 0;    ///< ceil(L_b / Bk): bits at or past it are garbage.
  int num_words = 0;        ///< Mask words holding those blocks.
  int num_entry_words = 0;  ///< Words of the table's entry bitmap: ceil(ceil(L_b / T) / 32).
  int q_split = 0;          ///< The sequence's first tail query block (BlockTables::q_split).

  /// Mask rows the table ORs.
  COMPACT_HOST_DEVICE int rows() const { return num_heads * num_qb; }
  /// True when the table gets no entries: no rows or no KV blocks.
  COMPACT_HOST_DEVICE bool empty() const { return rows() == 0 || num_kv_blocks == 0; }
  /// Word offset in the mask of the table's row j (0 <= j < rows()): heads outer, query blocks
  /// inner, so consecutive rows of one head are adjacent in memory.
  COMPACT_HOST_DEVICE std::size_t row_offset(const BlockMask& m, int j) const {
    const int i = j / num_qb;
    return m.row_offset(b, first_head + i, qb_begin + (j - i * num_qb));
  }
};

/// First query block of sequence b's tail table (see reference::tail_split_point); n_qb when the
/// split is not live.
COMPACT_HOST_DEVICE inline int split_point(const UnionParams& p, int b, int n_qb) {
  return p.split_tail ? p.mask.tail_begin(b, n_qb) : n_qb;
}

/// Decodes table index `table` (TableShape::table_index order) and reads its sequence's lengths,
/// only for sequences < num_seqs (the length arrays hold no more).
COMPACT_HOST_DEVICE inline TableRows table_rows(const UnionParams& p, int table) {
  const TableShape& s = p.shape;
  TableRows t;
  const int qg = table % s.q_groups;
  const int rest = table / s.q_groups;
  t.b = rest / s.head_groups;
  t.first_head = (rest % s.head_groups) * s.heads_per_table;
  t.qb_begin = s.per_q_block ? qg : 0;
  if (t.b >= p.num_seqs) return t;
  const int q_len = max_of(p.cu_seqlens_q[t.b + 1] - p.cu_seqlens_q[t.b], 0);
  const int n_qb = min_of(ceil_div(q_len, s.block_q), p.mask.max_q_blocks);
  t.q_split = split_point(p, t.b, n_qb);
  const QBlockRange qbs = s.q_blocks(qg, n_qb, t.q_split);
  t.num_heads = s.heads_per_table;
  t.qb_begin = qbs.first;
  t.num_qb = qbs.size();
  t.kv_len = min_of(max_of(p.kv_lens[t.b], 0), p.max_kv_len);
  t.num_kv_blocks = ceil_div(t.kv_len, p.block_k);
  t.num_words = ceil_div(t.num_kv_blocks, 32);
  t.num_entry_words = ceil_div(t.num_words, 1 << p.log2_blocks_per_entry);
  return t;
}

}  // namespace compact
