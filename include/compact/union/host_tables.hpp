/// @file host_tables.hpp
/// @brief Host reference of every union strategy: bit-packed mask to minimal CSR block tables.
#pragma once

#include <cstdint>
#include <vector>

#include "compact/core/policy_args.hpp"

namespace compact::reference {

/// First query block of sequence b's tail table: the mask's hinted tail (BlockMask::tail_begin)
/// when the shape splits and the tables have a q_split array, else n_qb (no tail).
inline int tail_split_point(const BlockMask& mask, const BlockTables& tables, int b, int n_qb) {
  const bool split = tables.shape.tail_split && tables.q_split != nullptr;
  return split ? mask.tail_begin(b, n_qb) : n_qb;
}

/// Builds a.tables from a.mask on the host (all pointers host memory), for the grouping in
/// a.tables.shape: table (b, hg, qg) is the OR of the mask rows of heads hg*H .. hg*H+H-1 and of
/// the query blocks TableShape::q_blocks(qg, ...) gives (query block qg, all query blocks of the
/// chunk, or those before / from the tail split), restricted to the sequence's KV blocks,
/// rounded to table blocks (entry kb / r with r = T / Bk when pages are coarser than KV blocks),
/// ascending, without duplicates. Tail-split tables also get q_split[b] for every b < max_batch.
inline void build_tables(const UnionArgs& a) {
  const AttentionConfig& c = a.config;
  const TableShape& shape = a.tables.shape;
  const int blocks_per_entry = shape.table_block_tokens / c.block_k;  // r >= 1
  std::vector<std::uint32_t> words;
  std::int32_t cursor = 0;
  for (int b = 0; b < shape.max_batch; ++b) {
    const bool live = b < a.batch.num_seqs;
    const SeqInfo s = live ? seq_info(a.batch, b) : SeqInfo{};
    const int n_qb = ceil_div(s.q_len, c.block_q);
    const int n_kb = ceil_div(s.kv_len, c.block_k);
    const int n_words = ceil_div(n_kb, 32);
    const int split = tail_split_point(a.mask, a.tables, b, n_qb);
    if (shape.tail_split && a.tables.q_split != nullptr) a.tables.q_split[b] = split;
    for (int hg = 0; hg < shape.head_groups; ++hg) {
      for (int qg = 0; qg < shape.q_groups; ++qg) {
        const int table = shape.table_index(b, hg, qg);
        a.tables.indptr[table] = cursor;
        words.assign(n_words, 0u);
        const QBlockRange qbs = shape.q_blocks(qg, n_qb, split);
        for (int h = hg * shape.heads_per_table; h < (hg + 1) * shape.heads_per_table; ++h) {
          for (int qb = qbs.first; qb < qbs.last; ++qb) {
            const std::uint32_t* row = a.mask.row(b, h, qb);
            for (int w = 0; w < n_words; ++w) words[w] |= row[w];
          }
        }
        if (n_kb % 32 != 0 && n_words > 0) words[n_words - 1] &= (1u << (n_kb % 32)) - 1u;
        int last = -1;
        for (int w = 0; w < n_words; ++w) {
          for (std::uint32_t bits = words[w]; bits != 0; bits &= bits - 1) {
            const int kb = w * 32 + __builtin_ctz(bits);
            const int entry = kb / blocks_per_entry;
            if (entry == last) continue;
            a.tables.indices[cursor++] = entry;
            last = entry;
          }
        }
        a.tables.last_block_tokens[table] =
            last < 0 ? 0
                     : min_of(shape.table_block_tokens, s.kv_len - last * shape.table_block_tokens);
      }
    }
  }
  a.tables.indptr[shape.num_tables()] = cursor;
}

}  // namespace compact::reference
