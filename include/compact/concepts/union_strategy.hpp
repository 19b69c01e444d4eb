/// @file union_strategy.hpp
/// @brief compact::UnionStrategy: what turns 2D block masks into block tables.
#pragma once

#include <concepts>

#include <cuda_runtime_api.h>

#include "compact/concepts/policy_hooks.hpp"
#include "compact/core/policy_args.hpp"

namespace compact {

/// A union strategy that runs on the host: `void build_host(const UnionArgs&) const`.
template <class U>
concept HostUnionStrategy = requires(const U& u, const UnionArgs& a) { u.build_host(a); };

/// A union strategy that runs on the device:
/// `void build_device(const UnionArgs&, cudaStream_t) const`, no allocation, no sync.
template <class U>
concept DeviceUnionStrategy = requires(const U& u, const UnionArgs& a, cudaStream_t s) {
  u.build_device(a, s);
};

/// Turns the bit-packed mask into CSR BlockTables.
///
/// Required: `TableShape table_shape(const AttentionConfig&, const PlanLimits&) const` (which
/// rows share a table) and build_host and/or build_device. Optional: workspace_bytes and
/// configure, as for MaskSource.
template <class U>
concept UnionStrategy =
    std::copy_constructible<U> &&
    requires(const U& u, const AttentionConfig& c, const PlanLimits& l) {
      { u.table_shape(c, l) } -> std::same_as<TableShape>;
    } && (HostUnionStrategy<U> || DeviceUnionStrategy<U>);

}  // namespace compact
