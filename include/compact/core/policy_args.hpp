/// @file policy_args.hpp
/// @brief The argument bundles the Engine hands to its three policies.
#pragma once

#include "compact/core/block_mask.hpp"
#include "compact/core/block_tables.hpp"
#include "compact/core/chunk_batch.hpp"
#include "compact/core/config.hpp"
#include "compact/core/limits.hpp"
#include "compact/core/paged_kv.hpp"
#include "compact/core/workspace.hpp"

namespace compact {

/// What a mask source reads and writes: the chunk's queries and the cache in, `mask` out.
/// `scratch` is the policy's own share of the workspace (its workspace_bytes()).
struct MaskArgs {
  AttentionConfig config{};
  PlanLimits limits{};
  ChunkBatch batch{};
  PagedKV cache{};
  BlockMask mask{};
  Workspace scratch{};
};

/// What a union strategy reads and writes: `mask` in, `tables` out.
struct UnionArgs {
  AttentionConfig config{};
  PlanLimits limits{};
  ChunkBatch batch{};
  BlockMask mask{};
  BlockTables tables{};
  Workspace scratch{};
};

/// What an executor reads and writes: queries, cache and tables in, `out` written.
struct ExecArgs {
  AttentionConfig config{};
  PlanLimits limits{};
  ChunkBatch batch{};
  PagedKV cache{};
  BlockTables tables{};
  AttentionOutput out{};
  Workspace scratch{};
};

}  // namespace compact
