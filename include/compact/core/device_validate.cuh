/// @file device_validate.cuh
/// @brief Debug-only validation of lengths and page tables that live on the device.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

#include "compact/core/chunk_batch.hpp"
#include "compact/core/config.hpp"
#include "compact/core/cuda_check.hpp"
#include "compact/core/error.hpp"
#include "compact/core/limits.hpp"
#include "compact/core/paged_kv.hpp"

namespace compact {
namespace detail {

/// The first violation found on the device: what, where, and the offending value.
struct DeviceValidationRecord {
  int code;  // 0: none; see describe() for the others
  int seq;
  int index;
  int value;
};

enum : int {
  kBadCuSeqlens0 = 1,
  kBadChunkLength = 2,
  kKvShorterThanChunk = 3,
  kKvTooLong = 4,
  kBadPageId = 5,
  kBadTotal = 6,
};

__device__ inline void report(DeviceValidationRecord* r, int code, int seq, int index, int value) {
  if (atomicCAS(&r->code, 0, code) == 0) {
    r->seq = seq;
    r->index = index;
    r->value = value;
  }
}

/// One CTA per sequence of the limits; threads stride over the sequence's page-table row.
/// (A template so that a header-only kernel has one definition across translation units.)
template <int kUnused = 0>
__global__ void validate_step_kernel(AttentionConfig c, PlanLimits l, ChunkBatch batch,
                                     PagedKV cache, DeviceValidationRecord* record) {
  const int b = blockIdx.x;
  if (b >= batch.num_seqs) return;
  const int* cu = batch.cu_seqlens_q;
  if (threadIdx.x == 0) {
    if (b == 0 && cu[0] != 0) report(record, kBadCuSeqlens0, 0, 0, cu[0]);
    if (b == batch.num_seqs - 1 && cu[b + 1] > batch.total_q) {
      report(record, kBadTotal, b, b + 1, cu[b + 1]);
    }
  }
  const int n = cu[b + 1] - cu[b];
  const int kv = batch.kv_lens[b];
  if (n < 0 || n > l.max_chunk) {
    if (threadIdx.x == 0) report(record, kBadChunkLength, b, 0, n);
    return;
  }
  if (kv < n) {
    if (threadIdx.x == 0) report(record, kKvShorterThanChunk, b, 0, kv);
    return;
  }
  if (kv > l.max_kv_len) {
    if (threadIdx.x == 0) report(record, kKvTooLong, b, 0, kv);
    return;
  }
  const int pages = ceil_div(kv, c.page_size);
  const int* row = cache.page_table + static_cast<long long>(b) * cache.page_table_stride;
  for (int i = threadIdx.x; i < pages; i += blockDim.x) {
    if (row[i] < 0 || row[i] >= cache.num_pages) report(record, kBadPageId, b, i, row[i]);
  }
}

}  // namespace detail

/// Checks every length and page id on the device, then synchronizes `stream` and throws
/// compact::Error naming the first violation. Debug aid: it synchronizes, so keep it off the hot
/// path. `record` is 16 bytes of device memory (the Engine carves it from the workspace).
inline void validate_on_device(const AttentionConfig& c, const PlanLimits& l,
                               const ChunkBatch& batch, const PagedKV& cache, void* record,
                               cudaStream_t stream) {
  auto* r = static_cast<detail::DeviceValidationRecord*>(record);
  COMPACT_CUDA_CHECK(cudaMemsetAsync(r, 0, sizeof(*r), stream));
  detail::validate_step_kernel<><<<l.max_batch, 128, 0, stream>>>(c, l, batch, cache, r);
  COMPACT_CHECK_LAUNCH("validate_step_kernel");
  detail::DeviceValidationRecord h{};
  COMPACT_CUDA_CHECK(cudaMemcpyAsync(&h, r, sizeof(h), cudaMemcpyDeviceToHost, stream));
  COMPACT_CUDA_CHECK(cudaStreamSynchronize(stream));
  using detail::cat;
  switch (h.code) {
    case 0:
      return;
    case detail::kBadCuSeqlens0:
      fail("batch.cu_seqlens_q[0] (device)", h.value, "0");
    case detail::kBadTotal:
      fail("batch.cu_seqlens_q[num_seqs] (device)", h.value,
           cat("<= batch.total_q (", batch.total_q, ")"));
    case detail::kBadChunkLength:
      fail(cat("chunk length n_b of sequence ", h.seq, " (device)"), h.value,
           cat("in [0, limits.max_chunk = ", l.max_chunk, "]"));
    case detail::kKvShorterThanChunk:
      fail(cat("batch.kv_lens[", h.seq, "] (device)"), h.value,
           "at least the sequence's chunk length n_b");
    case detail::kKvTooLong:
      fail(cat("batch.kv_lens[", h.seq, "] (device)"), h.value,
           cat("at most limits.max_kv_len = ", l.max_kv_len));
    default:
      fail(cat("cache.page_table[", h.seq, "][", h.index, "] (device)"), h.value,
           cat("a page id in [0, cache.num_pages = ", cache.num_pages, ")"));
  }
}

}  // namespace compact
