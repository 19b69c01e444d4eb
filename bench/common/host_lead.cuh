// Host lead: a short GPU spin enqueued before a timed region, so that the host's work of
// enqueuing the region (validation, kernel launches) overlaps the spin instead of being timed.
#pragma once

#include <cstdlib>

#include <cuda_runtime_api.h>

#include "compact/core/cuda_check.hpp"

namespace compact::bench {

/// Spins one thread for `cycles` SM clock cycles (the same idea as torch.cuda._sleep, which
/// bench/peers.py puts before each timed run).
static __global__ void host_lead_kernel(long long cycles) {
  const long long t0 = clock64();
  while (clock64() - t0 < cycles) {
  }
}

/// Cycles of the lead: COMPACT_HOST_LEAD_CYCLES, default 2,000,000 (about 1 ms on an H100, the
/// default of peers.py's --host-lead-cycles); 0 turns the lead off.
inline long long host_lead_cycles() {
  static const long long cycles = [] {
    const char* env = std::getenv("COMPACT_HOST_LEAD_CYCLES");
    return env != nullptr ? std::atoll(env) : 2'000'000LL;
  }();
  return cycles;
}

/// Enqueues the lead on `stream`. Record the start event after it: the GPU then times only
/// what runs after the lead, as long as the host enqueues the timed region within the lead
/// (without it, a region of short kernels after a synchronization measures the host's launch
/// latency, which a serving engine hides behind the GPU's previous work).
inline void host_lead(cudaStream_t stream = nullptr) {
  const long long cycles = host_lead_cycles();
  if (cycles <= 0) return;
  host_lead_kernel<<<1, 1, 0, stream>>>(cycles);
  COMPACT_CUDA_CHECK(cudaGetLastError());
}

}  // namespace compact::bench
