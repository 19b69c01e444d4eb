/// @file policy_hooks.hpp
/// @brief The optional hooks every policy may provide, and how the Engine calls them.
#pragma once

#include <concepts>
#include <cstddef>

#include "compact/core/block_tables.hpp"
#include "compact/core/config.hpp"
#include "compact/core/limits.hpp"

namespace compact {

/// A mask source or union strategy that needs scratch memory beyond its output.
template <class P>
concept HasWorkspaceBytes = requires(const P& p, const AttentionConfig& c, const PlanLimits& l) {
  { p.workspace_bytes(c, l) } -> std::convertible_to<std::size_t>;
};

/// A mask source or union strategy that validates or precomputes once, at Engine construction.
template <class P>
concept HasConfigure = requires(P& p, const AttentionConfig& c, const PlanLimits& l) {
  p.configure(c, l);
};

namespace detail {

template <class P>
std::size_t workspace_bytes_of(const P& p, const AttentionConfig& c, const PlanLimits& l) {
  if constexpr (HasWorkspaceBytes<P>) {
    return p.workspace_bytes(c, l);
  } else {
    return 0;
  }
}

template <class P>
void configure(P& p, const AttentionConfig& c, const PlanLimits& l) {
  if constexpr (HasConfigure<P>) p.configure(c, l);
}

}  // namespace detail
}  // namespace compact
