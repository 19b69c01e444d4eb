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
  AttentionConfig config{};  ///< The attention config.
  PlanLimits limits{};       ///< The plan's limits.
  ChunkBatch batch{};        ///< The chunk's queries and sequence lengths (in).
  PagedKV cache{};           ///< The paged KV cache, chunk appended (in).
  BlockMask mask{};          ///< The block mask to write (out).
  Workspace scratch{};       ///< The mask source's workspace share.
};

/// What a union strategy reads and writes: `mask` in, `tables` out.
struct UnionArgs {
  AttentionConfig config{};  ///< The attention config.
  PlanLimits limits{};       ///< The plan's limits.
  ChunkBatch batch{};        ///< The chunk's sequence lengths (in).
  BlockMask mask{};          ///< The block mask (in).
  BlockTables tables{};      ///< The block tables to write (out).
  Workspace scratch{};       ///< The union strategy's workspace share.
};

/// What an executor reads and writes: queries, cache and tables in, `out` written.
struct ExecArgs {
  AttentionConfig config{};  ///< The attention config.
  PlanLimits limits{};       ///< The plan's limits.
  ChunkBatch batch{};        ///< The chunk's queries and sequence lengths (in).
  PagedKV cache{};           ///< The paged KV cache, chunk appended (in).
  BlockTables tables{};      ///< The block tables to walk (in).
  AttentionOutput out{};     ///< Where the attention output goes (out).
  Workspace scratch{};       ///< The executor's workspace share.
};

}  // namespace compact
