/// @file dispatch.cuh
/// @brief The one place where runtime (dtype, head dim) becomes compile-time template arguments.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "compact/core/config.hpp"
#include "compact/core/error.hpp"

namespace compact::paged_flash {

/// Calls `f.template operator()<T, kHeadDim>()` for the config's dtype and head dim, among the
/// instantiations `Tuning` enables (disable some to bound compile time); throws compact::Error
/// naming the field otherwise.
template <class Tuning, class F>
decltype(auto) dispatch(const AttentionConfig& c, F&& f) {
  if (c.head_dim == 128) {
    if (c.dtype == DType::bf16) return f.template operator()<__nv_bfloat16, 128>();
    if constexpr (Tuning::kEnableFp16) {
      if (c.dtype == DType::fp16) return f.template operator()<__half, 128>();
    }
  }
  if constexpr (Tuning::kEnableHeadDim64) {
    if (c.head_dim == 64) {
      if (c.dtype == DType::bf16) return f.template operator()<__nv_bfloat16, 64>();
      if constexpr (Tuning::kEnableFp16) {
        if (c.dtype == DType::fp16) return f.template operator()<__half, 64>();
      }
    }
  }
  require(c.head_dim == 64 || c.head_dim == 128, "config.head_dim", c.head_dim,
          "64 or 128 for the paged-flash executors");
  require(!(c.head_dim == 64 && !Tuning::kEnableHeadDim64), "config.head_dim", c.head_dim,
          "128 (head dim 64 is compiled out by this executor's Tuning::kEnableHeadDim64)");
  fail("config.dtype", c.dtype, "bf16 (fp16 is compiled out by this executor's Tuning)");
}

}  // namespace compact::paged_flash
