/// @file mask_source.hpp
/// @brief compact::MaskSource: what a block-sparse estimator must provide.
#pragma once

#include <concepts>

#include <cuda_runtime_api.h>

#include "compact/concepts/policy_hooks.hpp"
#include "compact/core/policy_args.hpp"

namespace compact {

/// A mask source that runs on the host: `void build_host(const MaskArgs&) const` writes
/// args.mask from host-resident inputs.
template <class M>
concept HostMaskSource = requires(const M& m, const MaskArgs& a) {
  m.build_host(a);
};

/// A mask source that runs on the device: `void build_device(const MaskArgs&, cudaStream_t)
/// const` enqueues the kernels that write args.mask, without allocating or synchronizing.
template <class M>
concept DeviceMaskSource = requires(const M& m, const MaskArgs& a, cudaStream_t s) {
  m.build_device(a, s);
};

namespace detail {
/// M::kWritesTailHint, or false where M does not declare it.
template <class M>
constexpr bool writes_tail_hint() {
  if constexpr (requires { M::kWritesTailHint; }) {
    return static_cast<bool>(M::kWritesTailHint);
  } else {
    return false;
  }
}
}  // namespace detail

/// A mask source with a host or a device build (or both).
template <class M>
concept BuildsMask = HostMaskSource<M> || DeviceMaskSource<M>;

/// A mask source that writes BlockMask::tail_q_blocks (`static constexpr bool kWritesTailHint =
/// true`): the Engine then gives it a hint array, and tail-split unions act on it.
template <class M>
concept MaskWritesTailHint = detail::writes_tail_hint<M>();

/// A block-sparse estimator: Q chunk + paged K cache -> 2D block mask per query head.
///
/// Required: build_host and/or build_device (see above). Optional:
/// `std::size_t workspace_bytes(const AttentionConfig&, const PlanLimits&) const` for scratch
/// (handed over as args.scratch) and `void configure(const AttentionConfig&, const PlanLimits&)`
/// to validate hyperparameters once. The always-on rules (the chunk's own causal blocks) and the
/// never-on rule (blocks in a query block's future) are the mask source's duty.
template <class M>
concept MaskSource = std::copy_constructible<M> && BuildsMask<M>;

}  // namespace compact
