/// @file reference_executor.hpp
/// @brief ReferenceExecutor: host attention over any BlockTables, accumulated in double.
#pragma once

#include <cuda_runtime_api.h>

#include "compact/core/policy_args.hpp"
#include "compact/core/space.hpp"
#include "compact/reference/attention.hpp"

namespace compact {

/// The truth for tests: each row attends, in double precision, to exactly the keys its table
/// selects (bottom-right causal). Host memory only; the stream is ignored.
struct ReferenceExecutor {
  static constexpr Space space = Space::host;  ///< Every pointer is host memory.
  /// Computes the attention of `a` into `a.out`.
  void run(const ExecArgs& a, cudaStream_t /*stream*/) const {
    reference::attention(a.config, a.batch, a.cache, a.out, &a.tables);
  }
};

}  // namespace compact
