/// @file cuda_check.hpp
/// @brief Turns CUDA runtime errors into compact::Error.
#pragma once

#include <cuda_runtime_api.h>

#include "compact/core/error.hpp"

namespace compact::detail {

inline void check_cuda(cudaError_t status, const char* what, const char* file, int line) {
  if (status != cudaSuccess) {
    throw Error(cat("compact: CUDA error ", cudaGetErrorName(status), " (",
                    cudaGetErrorString(status), ") from `", what, "` at ", file, ":", line));
  }
}

}  // namespace compact::detail

/// Checks the cudaError_t of a runtime call; throws compact::Error on failure.
#define COMPACT_CUDA_CHECK(call) ::compact::detail::check_cuda((call), #call, __FILE__, __LINE__)

/// Checks the launch that just happened (configuration errors, missing kernel image) without
/// synchronizing: asynchronous faults surface at the caller's next synchronizing call.
#define COMPACT_CHECK_LAUNCH(kernel_name) \
  ::compact::detail::check_cuda(cudaGetLastError(), "launch of " kernel_name, __FILE__, __LINE__)
