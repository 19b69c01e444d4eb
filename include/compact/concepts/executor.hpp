/// @file executor.hpp
/// @brief compact::Executor: what runs attention over block tables.
#pragma once

#include <concepts>
#include <cstddef>

#include <cuda_runtime_api.h>

#include "compact/core/policy_args.hpp"
#include "compact/core/space.hpp"

namespace compact {

/// Runs attention over the tables a union strategy built.
///
/// Required: `static constexpr Space space` (where every pointer it gets lives) and
/// `void run(const ExecArgs&, cudaStream_t) const`. Optional:
/// `void configure(const AttentionConfig&, const PlanLimits&, const TableShape&)`, called once
/// at Engine construction to validate support and fix the launch plan (throw compact::Error for
/// an unsupported configuration), and
/// `std::size_t workspace_bytes(const AttentionConfig&, const PlanLimits&, const TableShape&)
/// const` for scratch (split-KV partials).
template <class E>
concept Executor = std::copy_constructible<E> && requires(const E& e, const ExecArgs& a,
                                                          cudaStream_t s) {
  { E::space } -> std::convertible_to<Space>;
  e.run(a, s);
};

/// An executor with a configure hook.
template <class E>
concept HasExecutorConfigure =
    requires(E& e, const AttentionConfig& c, const PlanLimits& l, const TableShape& t) {
      e.configure(c, l, t);
    };

/// An executor that needs scratch memory.
template <class E>
concept HasExecutorWorkspace =
    requires(const E& e, const AttentionConfig& c, const PlanLimits& l, const TableShape& t) {
      { e.workspace_bytes(c, l, t) } -> std::convertible_to<std::size_t>;
    };

}  // namespace compact
