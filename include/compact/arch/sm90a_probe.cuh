/// @file sm90a_probe.cuh
/// @brief Whether this binary carries sm_90a code for the current device (wgmma kernels run).
#pragma once

#include <array>
#include <atomic>

#include <cuda_runtime_api.h>

#include "compact/arch/wgmma.cuh"
#include "compact/core/cuda_check.hpp"

namespace compact::arch {
namespace detail {

/// Writes 1 when the code the driver picked for this device was compiled for sm_90a.
template <int kUnused = 0>
__global__ void sm90a_probe_kernel(int* out) {
  *out = COMPACT_WGMMA_ENABLED;
}

}  // namespace detail

/// True when the current device is compute capability 9.x and runs this binary's sm_90a code
/// (CMAKE_CUDA_ARCHITECTURES contains 90a). Probed once per device and cached; the probe
/// allocates 4 bytes and synchronizes, so call it at setup, never on a hot path.
inline bool sm90a_available() {
  static std::array<std::atomic<int>, 64> cache{};  // 0 unknown, 1 no, 2 yes
  int device = 0;
  COMPACT_CUDA_CHECK(cudaGetDevice(&device));
  if (device < 64 && cache[device].load() != 0) return cache[device].load() == 2;
  int major = 0;
  COMPACT_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  bool yes = false;
  if (major == 9) {
    int* flag = nullptr;
    COMPACT_CUDA_CHECK(cudaMalloc(&flag, sizeof(int)));
    int host = 0;
    detail::sm90a_probe_kernel<><<<1, 1>>>(flag);
    const cudaError_t launched = cudaGetLastError();
    if (launched == cudaSuccess) {
      COMPACT_CUDA_CHECK(cudaMemcpy(&host, flag, sizeof(int), cudaMemcpyDeviceToHost));
    }
    COMPACT_CUDA_CHECK(cudaFree(flag));
    yes = launched == cudaSuccess && host == 1;
  }
  if (device < 64) cache[device].store(yes ? 2 : 1);
  return yes;
}

}  // namespace compact::arch
