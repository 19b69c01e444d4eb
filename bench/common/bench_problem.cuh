// Device-resident chunked-prefill problems for benchmarks: random Q and a paged K/V cache with
// shuffled pages, filled on the device (gigabytes in milliseconds), plus tables uploaded from the
// host union.
#pragma once

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "../../tests/support/device_buffer.cuh"
#include "compact/core/block_tables.hpp"
#include "compact/core/chunk_batch.hpp"
#include "compact/core/config.hpp"
#include "compact/core/cuda_check.hpp"
#include "compact/core/limits.hpp"
#include "compact/core/paged_kv.hpp"

namespace compact::bench {

namespace detail {

__device__ __forceinline__ std::uint32_t hash32(std::uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return static_cast<std::uint32_t>(x);
}

/// Approximately normal values (sum of four uniforms, unit variance) scaled by `scale`.
template <class T>
__global__ void fill_random_kernel(T* dst, std::size_t n, std::uint64_t seed, float scale) {
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    float u = 0.0f;
#pragma unroll
    for (int k = 0; k < 4; ++k)
      u += hash32(seed * 0x9e3779b97f4a7c15ULL + i * 4 + k) * 2.3283064e-10f;
    const float v = (u - 2.0f) * 1.7320508f * scale;
    if constexpr (std::is_same_v<T, __nv_bfloat16>) {
      dst[i] = __float2bfloat16(v);
    } else {
      dst[i] = __float2half(v);
    }
  }
}

}  // namespace detail

/// Fills `n` elements of a dtype-erased device array with random values.
inline void fill_random(void* dst, DType t, std::size_t n, std::uint64_t seed, float scale = 1.0f) {
  if (t == DType::bf16) {
    detail::fill_random_kernel<<<1024, 256>>>(static_cast<__nv_bfloat16*>(dst), n, seed, scale);
  } else {
    detail::fill_random_kernel<<<1024, 256>>>(static_cast<__half*>(dst), n, seed, scale);
  }
  COMPACT_CHECK_LAUNCH("fill_random_kernel");
}

/// A batch of sequences mid-prefill with equal chunk and KV lengths, resident on the device.
struct DeviceStep {
  AttentionConfig config;
  PlanLimits limits;
  std::vector<std::int32_t> cu_seqlens, kv_lens, page_table;
  test::DeviceBuffer<std::int32_t> d_cu_seqlens, d_kv_lens, d_page_table;
  test::DeviceBuffer<std::uint16_t> q, k, v, o;
  test::DeviceBuffer<float> lse;
  int num_pages = 0;

  DeviceStep(const AttentionConfig& c, int batch, int chunk, int kv_len, std::uint64_t seed)
      : config(c) {
    limits.max_batch = batch;
    limits.max_chunk = chunk;
    limits.max_kv_len = kv_len;
    cu_seqlens.push_back(0);
    for (int b = 0; b < batch; ++b) {
      cu_seqlens.push_back(cu_seqlens.back() + chunk);
      kv_lens.push_back(kv_len);
    }
    const int pages_per_seq = ceil_div(kv_len, c.page_size);
    num_pages = pages_per_seq * batch;
    std::vector<std::int32_t> ids(num_pages);
    std::iota(ids.begin(), ids.end(), 0);
    std::mt19937_64 rng(seed);
    std::shuffle(ids.begin(), ids.end(), rng);  // pages scattered over the pool, as in a server
    page_table = ids;
    d_cu_seqlens = test::DeviceBuffer<std::int32_t>(cu_seqlens);
    d_kv_lens = test::DeviceBuffer<std::int32_t>(kv_lens);
    d_page_table = test::DeviceBuffer<std::int32_t>(page_table);
    const std::size_t kv_elems =
        static_cast<std::size_t>(num_pages) * c.page_size * c.num_kv_heads * c.head_dim;
    const std::size_t q_elems =
        static_cast<std::size_t>(batch) * chunk * c.num_q_heads * c.head_dim;
    k = test::DeviceBuffer<std::uint16_t>(kv_elems);
    v = test::DeviceBuffer<std::uint16_t>(kv_elems);
    q = test::DeviceBuffer<std::uint16_t>(q_elems);
    o = test::DeviceBuffer<std::uint16_t>(q_elems);
    lse = test::DeviceBuffer<float>(static_cast<std::size_t>(batch) * chunk * c.num_q_heads);
    fill_random(k.get(), c.dtype, kv_elems, seed + 1);
    fill_random(v.get(), c.dtype, kv_elems, seed + 2);
    fill_random(q.get(), c.dtype, q_elems, seed + 3);
    COMPACT_CUDA_CHECK(cudaDeviceSynchronize());
  }

  ChunkBatch batch() const {
    ChunkBatch b;
    b.q = q.get();
    b.cu_seqlens_q = d_cu_seqlens.get();
    b.kv_lens = d_kv_lens.get();
    b.num_seqs = static_cast<int>(kv_lens.size());
    b.total_q = cu_seqlens.back();
    b.host_cu_seqlens_q = cu_seqlens.data();
    b.host_kv_lens = kv_lens.data();
    return b;
  }
  /// The same batch with host pointers for lengths (for host-side union and FLOP counting).
  ChunkBatch host_batch() const {
    ChunkBatch b = batch();
    b.cu_seqlens_q = cu_seqlens.data();
    b.kv_lens = kv_lens.data();
    return b;
  }
  PagedKV cache() const {
    PagedKV c;
    c.k_pages = k.get();
    c.v_pages = v.get();
    c.num_pages = num_pages;
    c.page_size = config.page_size;
    c.num_kv_heads = config.num_kv_heads;
    c.head_dim = config.head_dim;
    c.page_table = d_page_table.get();
    c.page_table_stride = ceil_div(limits.max_kv_len, config.page_size);
    c.host_page_table = page_table.data();
    return c;
  }
  AttentionOutput out(bool with_lse = false) const {
    return AttentionOutput{o.get(), with_lse ? lse.get() : nullptr};
  }
};

/// Host block tables with their device copies.
struct DeviceTables {
  std::vector<std::int32_t> indptr, indices, last;
  test::DeviceBuffer<std::int32_t> d_indptr, d_indices, d_last;
  TableShape shape;

  BlockTables host() { return BlockTables{shape, indptr.data(), indices.data(), last.data()}; }
  BlockTables device() const {
    return BlockTables{shape, d_indptr.get(), d_indices.get(), d_last.get()};
  }
  void upload() {
    d_indptr = test::DeviceBuffer<std::int32_t>(indptr);
    d_indices = test::DeviceBuffer<std::int32_t>(indices);
    d_last = test::DeviceBuffer<std::int32_t>(last);
  }
};

/// (query, key) pairs the tables make a kernel attend to under bottom-right causality, over all
/// heads: the work actually done, for TFLOP/s.
inline double attended_pairs(const AttentionConfig& c, const ChunkBatch& host_batch,
                             const BlockTables& t) {
  double pairs = 0;
  const TableShape& s = t.shape;
  for (int b = 0; b < host_batch.num_seqs; ++b) {
    const SeqInfo si = seq_info(host_batch, b);
    const int n_qb = ceil_div(si.q_len, c.block_q);
    for (int hg = 0; hg < s.head_groups; ++hg) {
      for (int qg = 0; qg < s.q_groups; ++qg) {
        const int table = s.table_index(b, hg, qg);
        const QBlockRange qbs = s.q_blocks(qg, n_qb, t.split_of(b));
        if (qbs.size() == 0) continue;
        const int t0 = qbs.first * c.block_q;
        const int t1 = std::min(si.q_len, qbs.last * c.block_q);
        for (int e = t.indptr[table]; e < t.indptr[table + 1]; ++e) {
          const long long k0 = static_cast<long long>(t.indices[e]) * s.table_block_tokens;
          const long long k1 = std::min<long long>(k0 + s.table_block_tokens, si.kv_len);
          for (int tt = t0; tt < t1; ++tt) {
            const long long q = si.pos() + tt;
            pairs += static_cast<double>(std::max<long long>(0, std::min(k1, q + 1) - k0)) *
                     s.heads_per_table;
          }
        }
      }
    }
  }
  return pairs;
}

}  // namespace compact::bench
