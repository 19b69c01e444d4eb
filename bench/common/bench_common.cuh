// Shared benchmark harness: CUDA-event medians, the paper's presets, GPU context, FLOP counts.
#pragma once

#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>

#include "compact/core/cuda_check.hpp"
#include "host_lead.cuh"

namespace compact::bench {

/// Model shapes of the paper, per GPU: LLaMA-3.1-8B at tensor parallelism 1 and 2, D = 128.
struct Preset {
  const char* name;
  int batch;
  int num_q_heads;
  int num_kv_heads;
  int head_dim;
};
inline constexpr Preset kTP2{"tp2", 8, 16, 4, 128};
inline constexpr Preset kTP1{"tp1", 1, 32, 8, 128};

/// True when a CUDA device is usable (benchmarks skip otherwise).
inline bool have_gpu() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

/// Median milliseconds of `reps` timed runs of `fn` (each bracketed by CUDA events on `stream`,
/// after a host lead: host_lead.cuh) after `warmup` untimed runs.
template <class Fn>
double median_ms(Fn&& fn, cudaStream_t stream = nullptr, int warmup = 3, int reps = 10) {
  for (int i = 0; i < warmup; ++i) fn();
  cudaEvent_t start, stop;
  COMPACT_CUDA_CHECK(cudaEventCreate(&start));
  COMPACT_CUDA_CHECK(cudaEventCreate(&stop));
  std::vector<float> ms(reps);
  for (int i = 0; i < reps; ++i) {
    host_lead(stream);
    COMPACT_CUDA_CHECK(cudaEventRecord(start, stream));
    fn();
    COMPACT_CUDA_CHECK(cudaEventRecord(stop, stream));
    COMPACT_CUDA_CHECK(cudaEventSynchronize(stop));
    COMPACT_CUDA_CHECK(cudaEventElapsedTime(&ms[i], start, stop));
  }
  COMPACT_CUDA_CHECK(cudaEventDestroy(start));
  COMPACT_CUDA_CHECK(cudaEventDestroy(stop));
  std::sort(ms.begin(), ms.end());
  return reps % 2 ? ms[reps / 2] : 0.5 * (ms[reps / 2 - 1] + ms[reps / 2]);
}

/// Reports a median-of-events time through Google Benchmark's manual timing, plus the `ms`
/// counter that RESULTS.md asks for.
inline void report_ms(benchmark::State& state, double ms) {
  state.SetIterationTime(ms * 1e-3);
  state.counters["ms"] = ms;
}

/// Attention FLOPs actually needed: 4 * D per (query row, head, attended key) (QK^T and PV).
inline double attention_flops(double attended_pairs, int head_dim) {
  return 4.0 * head_dim * attended_pairs;
}

/// Dense causal (query, key) pairs of one chunk: sum over its n rows of (L - n + t + 1), per head.
inline double dense_pairs(long long kv_len, long long chunk, int num_q_heads) {
  const double first = static_cast<double>(kv_len - chunk + 1);
  const double last = static_cast<double>(kv_len);
  return (first + last) * 0.5 * static_cast<double>(chunk) * num_q_heads;
}

/// Adds the GPU's name, SM count and clocks to the benchmark JSON context.
inline void add_gpu_context() {
  if (!have_gpu()) return;
  int dev = 0;
  COMPACT_CUDA_CHECK(cudaGetDevice(&dev));
  cudaDeviceProp prop{};
  COMPACT_CUDA_CHECK(cudaGetDeviceProperties(&prop, dev));
  int sm_clock_khz = 0, mem_clock_khz = 0;
  cudaDeviceGetAttribute(&sm_clock_khz, cudaDevAttrClockRate, dev);
  cudaDeviceGetAttribute(&mem_clock_khz, cudaDevAttrMemoryClockRate, dev);
  benchmark::AddCustomContext("gpu", prop.name);
  benchmark::AddCustomContext("gpu_sm_count", std::to_string(prop.multiProcessorCount));
  benchmark::AddCustomContext("gpu_compute_capability",
                              std::to_string(prop.major) + "." + std::to_string(prop.minor));
  benchmark::AddCustomContext("gpu_max_sm_clock_mhz", std::to_string(sm_clock_khz / 1000));
  benchmark::AddCustomContext("gpu_max_mem_clock_mhz", std::to_string(mem_clock_khz / 1000));
}

}  // namespace compact::bench

/// main() for every benchmark binary: without a GPU it says so and runs nothing.
#define COMPACT_BENCHMARK_MAIN()                                                     \
  int main(int argc, char** argv) {                                                  \
    if (!::compact::bench::have_gpu()) {                                             \
      std::printf("SKIPPED: benchmarks need a CUDA device; none is usable here.\n"); \
      return 0;                                                                      \
    }                                                                                \
    ::compact::bench::add_gpu_context();                                             \
    ::benchmark::Initialize(&argc, argv);                                            \
    ::benchmark::RunSpecifiedBenchmarks();                                           \
    ::benchmark::Shutdown();                                                         \
    return 0;                                                                        \
  }
