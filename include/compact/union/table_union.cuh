/// @file table_union.cuh
/// @brief The union strategies: QBlockUnion, GroupUnion, BlockUnion, NoUnion.
#pragma once

#include "compact/concepts/union_strategy.hpp"
#include "compact/union/host_tables.hpp"

namespace compact {

/// Tuning of the device union passes (threads per CTA).
struct UnionTuning {
  static constexpr int kThreads = 256;
};

/// One union strategy family: OR the mask over the query blocks of the chunk (kUnionQBlocks)
/// and/or over the heads of an execution group (kUnionHeads), then round to table blocks.
template <bool kUnionQBlocks, bool kUnionHeads, class Tuning = UnionTuning>
struct TableUnion {
  /// Which rows share a table: the execution group (or one head), all query blocks of the chunk
  /// (or one).
  TableShape table_shape(const AttentionConfig& c, const PlanLimits& l) const {
    return TableShape::make(c, l, kUnionHeads ? c.group_size() : 1, !kUnionQBlocks);
  }
  /// Host build (host pointers): the reference every device build must equal.
  void build_host(const UnionArgs& a) const { reference::build_tables(a); }
};

/// m[b][h][kb] = OR over query blocks: one table per (sequence, query head).
template <class Tuning = UnionTuning>
using QBlockUnion = TableUnion<true, false, Tuning>;
/// OR over the heads of an execution group, per query block: one table per (sequence, group,
/// query block).
template <class Tuning = UnionTuning>
using GroupUnion = TableUnion<false, true, Tuning>;
/// Both unions: one table per (sequence, execution group), the CompactAttention selection.
template <class Tuning = UnionTuning>
using BlockUnion = TableUnion<true, true, Tuning>;
/// No union: one table per (sequence, query head, query block), for 2D block-sparse executors.
template <class Tuning = UnionTuning>
using NoUnion = TableUnion<false, false, Tuning>;

}  // namespace compact
