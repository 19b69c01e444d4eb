// Shared by the examples: one chunked-prefill step of a ragged batch with a shuffled paged cache,
// owned on the host and, when a GPU is present, mirrored on the device.
#pragma once

#include <compact/compact.cuh>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <numeric>
#include <random>
#include <vector>

namespace example {

/// True when a CUDA device is usable; examples fall back to the host reference otherwise.
inline bool have_gpu() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

/// Owning host storage for one step: ragged queries and a paged cache with shuffled pages.
struct HostStep {
  compact::AttentionConfig config;
  compact::PlanLimits limits;
  std::vector<std::int32_t> cu_seqlens{0}, kv_lens, page_table;
  std::vector<__nv_bfloat16> q, k, v;
  int num_pages = 0, table_stride = 0;

  HostStep(const compact::AttentionConfig& c, const compact::PlanLimits& l,
           const std::vector<int>& chunks, const std::vector<int>& lens, unsigned seed)
      : config(c), limits(l) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (int n : chunks) cu_seqlens.push_back(cu_seqlens.back() + n);
    kv_lens.assign(lens.begin(), lens.end());
    table_stride = compact::ceil_div(l.max_kv_len, c.page_size);
    for (int len : lens) num_pages += compact::ceil_div(len, c.page_size);
    std::vector<int> pages(num_pages);
    std::iota(pages.begin(), pages.end(), 0);
    std::shuffle(pages.begin(), pages.end(), rng);  // pages need not be contiguous or ordered
    page_table.assign(lens.size() * table_stride, 0);
    int next = 0;
    for (std::size_t b = 0; b < lens.size(); ++b) {
      for (int i = 0; i < compact::ceil_div(lens[b], c.page_size); ++i) {
        page_table[b * table_stride + i] = pages[next++];
      }
    }
    const std::size_t kv_elems =
        static_cast<std::size_t>(num_pages) * c.page_size * c.num_kv_heads * c.head_dim;
    for (std::size_t i = 0; i < kv_elems; ++i) k.push_back(__float2bfloat16(1.5f * normal(rng)));
    for (std::size_t i = 0; i < kv_elems; ++i) v.push_back(__float2bfloat16(normal(rng)));
    for (std::size_t i = 0; i < out_elems(); ++i) q.push_back(__float2bfloat16(normal(rng)));
  }

  std::size_t out_elems() const {
    return static_cast<std::size_t>(cu_seqlens.back()) * config.num_q_heads * config.head_dim;
  }
  compact::ChunkBatch batch() const {
    compact::ChunkBatch b;
    b.q = q.data();
    b.cu_seqlens_q = cu_seqlens.data();
    b.kv_lens = kv_lens.data();
    b.num_seqs = static_cast<int>(kv_lens.size());
    b.total_q = cu_seqlens.back();
    return b;
  }
  compact::PagedKV cache() const {
    compact::PagedKV c;
    c.k_pages = const_cast<__nv_bfloat16*>(k.data());
    c.v_pages = const_cast<__nv_bfloat16*>(v.data());
    c.num_pages = num_pages;
    c.page_size = config.page_size;
    c.num_kv_heads = config.num_kv_heads;
    c.head_dim = config.head_dim;
    c.page_table = page_table.data();
    c.page_table_stride = table_stride;
    return c;
  }
};

/// cudaMalloc'd copy of a host vector, freed on destruction.
template <class T>
struct DeviceArray {
  T* ptr = nullptr;
  explicit DeviceArray(std::size_t n) { COMPACT_CUDA_CHECK(cudaMalloc(&ptr, n * sizeof(T))); }
  explicit DeviceArray(const std::vector<T>& h) : DeviceArray(h.size()) {
    COMPACT_CUDA_CHECK(cudaMemcpy(ptr, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice));
  }
  DeviceArray(const DeviceArray&) = delete;
  ~DeviceArray() { cudaFree(ptr); }
};

/// The step on the device, with host mirrors of the lengths so plan() validates them for free.
struct DeviceStep {
  const HostStep& host;
  DeviceArray<std::int32_t> cu_seqlens, kv_lens, page_table;
  DeviceArray<__nv_bfloat16> q, k, v;
  explicit DeviceStep(const HostStep& h)
      : host(h),
        cu_seqlens(h.cu_seqlens),
        kv_lens(h.kv_lens),
        page_table(h.page_table),
        q(h.q),
        k(h.k),
        v(h.v) {}
  compact::ChunkBatch batch() const {
    compact::ChunkBatch b = host.batch();
    b.q = q.ptr;
    b.cu_seqlens_q = cu_seqlens.ptr;
    b.kv_lens = kv_lens.ptr;
    b.host_cu_seqlens_q = host.cu_seqlens.data();
    b.host_kv_lens = host.kv_lens.data();
    return b;
  }
  compact::PagedKV cache() const {
    compact::PagedKV c = host.cache();
    c.k_pages = k.ptr;
    c.v_pages = v.ptr;
    c.page_table = page_table.ptr;
    c.host_page_table = host.page_table.data();
    return c;
  }
};

/// Runs one engine on the host (host pointers) and returns its output; `density` gets the
/// table density.
template <class Engine>
std::vector<__nv_bfloat16> run_on_host(const Engine& engine, const HostStep& step,
                                       double* density) {
  auto storage = std::make_unique<std::byte[]>(engine.workspace_bytes() + 256);
  void* base = storage.get();
  std::size_t space = engine.workspace_bytes() + 256;
  std::align(256, engine.workspace_bytes(), base, space);  // workspaces are 256-byte aligned
  const compact::Workspace ws{base, engine.workspace_bytes()};
  std::vector<__nv_bfloat16> out(step.out_elems());
  engine.plan(step.batch(), step.cache(), ws);
  engine.run(step.batch(), step.cache(), ws, compact::AttentionOutput{out.data()});
  *density = compact::table_density(step.config, step.batch(), engine.tables_view(ws)).ratio();
  return out;
}

/// Runs one engine on the device and returns its output (copied back); `ms` gets the time of
/// plan() + run() on the second call (the first warms up), `density` the table density.
template <class Engine>
std::vector<__nv_bfloat16> run_on_device(const Engine& engine, const DeviceStep& step,
                                         double* density, float* ms) {
  DeviceArray<std::byte> ws_mem(engine.workspace_bytes());  // cudaMalloc: 256-byte aligned
  const compact::Workspace ws{ws_mem.ptr, engine.workspace_bytes()};
  DeviceArray<__nv_bfloat16> out(step.host.out_elems());
  const compact::AttentionOutput o{out.ptr};
  cudaEvent_t start, stop;
  COMPACT_CUDA_CHECK(cudaEventCreate(&start));
  COMPACT_CUDA_CHECK(cudaEventCreate(&stop));
  for (int pass = 0; pass < 2; ++pass) {
    COMPACT_CUDA_CHECK(cudaEventRecord(start));
    engine.plan(step.batch(), step.cache(), ws);
    engine.run(step.batch(), step.cache(), ws, o);
    COMPACT_CUDA_CHECK(cudaEventRecord(stop));
  }
  COMPACT_CUDA_CHECK(cudaEventSynchronize(stop));
  COMPACT_CUDA_CHECK(cudaEventElapsedTime(ms, start, stop));
  COMPACT_CUDA_CHECK(cudaEventDestroy(start));
  COMPACT_CUDA_CHECK(cudaEventDestroy(stop));
  // Tables live in the workspace on the device: copy them back to count their density.
  *density = compact::table_density(step.host.config, step.host.batch(), engine.tables_view(ws),
                                    compact::Space::device)
                 .ratio();
  std::vector<__nv_bfloat16> host_out(step.host.out_elems());
  COMPACT_CUDA_CHECK(
      cudaMemcpy(host_out.data(), out.ptr, host_out.size() * 2, cudaMemcpyDeviceToHost));
  return host_out;
}

/// Largest |a - b| over two outputs.
inline double max_abs_diff(const std::vector<__nv_bfloat16>& a,
                           const std::vector<__nv_bfloat16>& b) {
  double m = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    m = std::max(m, std::abs(static_cast<double>(__bfloat162float(a[i])) - __bfloat162float(b[i])));
  }
  return m;
}

}  // namespace example
