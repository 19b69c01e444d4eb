// A whole prompt prefilled chunk by chunk through CompactAttention: each chunk's K/V is appended
// to the paged cache (which keeps the per-block mean keys FlashPrefillMask reads), then the
// engine plans (mask + union) and runs. Per chunk it prints the time, the block density and, on
// sampled chunks, the error against dense attention. The prompt is a synthetic long-context
// layer (tools/workload: sinks, local windows, slashes, anchors, topics, needles).
//
// With a GPU: a 128K-token prompt, 16 query heads over 4 KV heads (LLaMA-3.1-8B at TP2), chunk
// 1,024. Without one: an 8K-token prompt through the host reference policies, which says so.
#include <compact/compact.cuh>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <numeric>
#include <vector>

#include "../common/example_step.hpp"
#include "workload/synthetic.hpp"

namespace {

/// Everything one layer's prefill needs, in the executor's memory space (host or device).
template <class Alloc>
struct Layer {
  compact::AttentionConfig config;
  compact::PlanLimits limits;
  Alloc alloc;
  std::vector<std::int32_t> cu{0, 0}, kv{0}, fin{0}, table;
  std::int32_t *d_cu, *d_kv, *d_fin, *d_table;
  void *q, *k_new, *v_new, *k_pool, *v_pool, *out, *out_dense;
  float* mean_k;

  Layer(const compact::AttentionConfig& c, const compact::PlanLimits& l) : config(c), limits(l) {
    const int pages = compact::ceil_div(l.max_kv_len, c.page_size);
    table.resize(pages);
    std::iota(table.begin(), table.end(), 0);
    std::reverse(table.begin(), table.end());  // pages in any order work
    const std::size_t row_q = std::size_t(c.num_q_heads) * c.head_dim;
    const std::size_t row_kv = std::size_t(c.num_kv_heads) * c.head_dim;
    d_cu = alloc.template make<std::int32_t>(2);
    d_kv = alloc.template make<std::int32_t>(1);
    d_fin = alloc.template make<std::int32_t>(1);
    d_table = alloc.template make<std::int32_t>(pages);
    alloc.copy(d_table, table.data(), pages);
    q = alloc.template make<std::uint16_t>(l.max_chunk * row_q);
    out = alloc.template make<std::uint16_t>(l.max_chunk * row_q);
    out_dense = alloc.template make<std::uint16_t>(l.max_chunk * row_q);
    k_new = alloc.template make<std::uint16_t>(l.max_chunk * row_kv);
    v_new = alloc.template make<std::uint16_t>(l.max_chunk * row_kv);
    k_pool = alloc.template make<std::uint16_t>(std::size_t(pages) * c.page_size * row_kv);
    v_pool = alloc.template make<std::uint16_t>(std::size_t(pages) * c.page_size * row_kv);
    mean_k = alloc.template make<float>(compact::ceil_div(l.max_kv_len, c.block_k) * row_kv);
  }
  compact::ChunkBatch batch() const {
    compact::ChunkBatch b;
    b.q = q;
    b.cu_seqlens_q = d_cu;
    b.kv_lens = d_kv;
    b.final_chunk = d_fin;
    b.num_seqs = 1;
    b.total_q = cu[1];
    b.host_cu_seqlens_q = cu.data();
    b.host_kv_lens = kv.data();
    return b;
  }
  compact::PagedKV cache() const {
    compact::PagedKV c;
    c.k_pages = k_pool;
    c.v_pages = v_pool;
    c.num_pages = static_cast<int>(table.size());
    c.page_size = config.page_size;
    c.num_kv_heads = config.num_kv_heads;
    c.head_dim = config.head_dim;
    c.page_table = d_table;
    c.page_table_stride = static_cast<int>(table.size());
    c.summaries.mean_k = mean_k;
    c.summaries.num_slots = 1;
    c.summaries.max_blocks = compact::ceil_div(limits.max_kv_len, config.block_k);
    return c;
  }
};

/// Host memory (the host reference policies read it directly).
struct HostAlloc {
  std::vector<std::unique_ptr<std::byte[]>> owned;
  template <class T>
  T* make(std::size_t n) {
    owned.emplace_back(new (std::align_val_t{256}) std::byte[n * sizeof(T) + 256]);
    return reinterpret_cast<T*>(owned.back().get());
  }
  template <class T>
  void copy(T* dst, const T* src, std::size_t n) {
    std::copy(src, src + n, dst);
  }
  template <class T>
  void fetch(T* dst, const T* src, std::size_t n) {
    std::copy(src, src + n, dst);
  }
};

/// Device memory.
struct DeviceAlloc {
  std::vector<void*> owned;
  ~DeviceAlloc() {
    for (void* p : owned) cudaFree(p);
  }
  template <class T>
  T* make(std::size_t n) {
    void* p = nullptr;
    COMPACT_CUDA_CHECK(cudaMalloc(&p, std::max<std::size_t>(n, 1) * sizeof(T)));
    owned.push_back(p);
    return static_cast<T*>(p);
  }
  template <class T>
  void copy(T* dst, const T* src, std::size_t n) {
    COMPACT_CUDA_CHECK(cudaMemcpy(dst, src, n * sizeof(T), cudaMemcpyHostToDevice));
  }
  template <class T>
  void fetch(T* dst, const T* src, std::size_t n) {
    COMPACT_CUDA_CHECK(cudaMemcpy(dst, src, n * sizeof(T), cudaMemcpyDeviceToHost));
  }
};

template <class Alloc, class Sparse, class Dense>
int prefill(const compact::tools::SyntheticWorkload& w, const compact::AttentionConfig& c,
            int chunk, int sample_every) {
  compact::PlanLimits l;
  l.max_batch = 1;
  l.max_chunk = chunk;
  l.max_kv_len = w.tokens();
  Layer<Alloc> layer(c, l);
  const Sparse sparse(c, l);
  const Dense dense(c, l);
  const std::size_t ws_bytes = std::max(sparse.workspace_bytes(), dense.workspace_bytes());
  const compact::Workspace ws{layer.alloc.template make<std::byte>(ws_bytes), ws_bytes};
  const std::size_t row_q = std::size_t(c.num_q_heads) * c.head_dim;
  const std::size_t row_kv = std::size_t(c.num_kv_heads) * c.head_dim;
  const int chunks = w.tokens() / chunk;
  double total_ms = 0, sum_density = 0;
  std::printf("%6s %8s %9s %8s %12s\n", "chunk", "kv_len", "ms", "density", "err vs dense");
  for (int i = 0; i < chunks; ++i) {
    const bool last = i == chunks - 1;
    layer.cu = {0, chunk};
    layer.kv = {(i + 1) * chunk};
    layer.fin = {last};
    layer.alloc.copy(layer.d_cu, layer.cu.data(), 2);
    layer.alloc.copy(layer.d_kv, layer.kv.data(), 1);
    layer.alloc.copy(layer.d_fin, layer.fin.data(), 1);
    const std::vector<std::uint16_t> q = w.queries(i * chunk, (i + 1) * chunk);
    layer.alloc.copy(static_cast<std::uint16_t*>(layer.q), q.data(), q.size());
    layer.alloc.copy(static_cast<std::uint16_t*>(layer.k_new), w.k().data() + i * chunk * row_kv,
                     chunk * row_kv);
    layer.alloc.copy(static_cast<std::uint16_t*>(layer.v_new), w.v().data() + i * chunk * row_kv,
                     chunk * row_kv);
    const compact::ChunkBatch batch = layer.batch();
    const compact::PagedKV cache = layer.cache();
    const auto t0 = std::chrono::steady_clock::now();
    if constexpr (Sparse::space == compact::Space::device) {
      compact::append_kv_device(c, l, compact::KvChunk::of(batch, layer.k_new, layer.v_new), cache);
    } else {
      compact::append_kv_host(c, l, compact::KvChunk::of(batch, layer.k_new, layer.v_new), cache);
    }
    sparse.plan(batch, cache, ws);
    sparse.run(batch, cache, ws, compact::AttentionOutput{layer.out});
    if constexpr (Sparse::space == compact::Space::device) cudaDeviceSynchronize();
    const double ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    total_ms += ms;
    // Density of this chunk's tables.
    compact::ChunkBatch hb = batch;
    hb.cu_seqlens_q = layer.cu.data();
    hb.kv_lens = layer.kv.data();
    const double density =
        compact::table_density(c, hb, sparse.tables_view(ws), Sparse::space).ratio();
    sum_density += density;
    if (i % sample_every == 0 || last) {
      dense.plan(batch, cache, ws);
      dense.run(batch, cache, ws, compact::AttentionOutput{layer.out_dense});
      std::vector<std::uint16_t> a(chunk * row_q), b(chunk * row_q);
      layer.alloc.fetch(a.data(), static_cast<std::uint16_t*>(layer.out), a.size());
      layer.alloc.fetch(b.data(), static_cast<std::uint16_t*>(layer.out_dense), b.size());
      double e2 = 0, r2 = 0;
      for (std::size_t e = 0; e < a.size(); ++e) {
        const double x = compact::load_float(a.data(), c.dtype, e);
        const double y = compact::load_float(b.data(), c.dtype, e);
        e2 += (x - y) * (x - y);
        r2 += y * y;
      }
      std::printf("%6d %8d %9.3f %8.3f %12.4f\n", i, (i + 1) * chunk, ms, density,
                  std::sqrt(e2 / r2));
    }
  }
  std::printf("%d chunks: %.1f ms in all (append + plan + run, host clock), mean density %.3f\n",
              chunks, total_ms, sum_density / chunks);
  return 0;
}

}  // namespace

int main() {
  compact::tools::SyntheticSettings s;
  compact::AttentionConfig c;
  c.block_q = c.block_k = 128;
  c.page_size = 16;
  if (example::have_gpu()) {
    s.tokens = 131072;
    s.num_q_heads = c.num_q_heads = 16;
    s.num_kv_heads = c.num_kv_heads = 4;
    s.head_dim = c.head_dim = 128;
    s.chunk = 1024;
    std::printf("Generating a %d-token synthetic layer...\n", s.tokens);
    const compact::tools::SyntheticWorkload w(s);
    std::printf(
        "Prefilling it on the GPU in chunks of %d: FlashPrefillMask + BlockUnion + "
        "PagedFlashExecutor (sampled chunks also run dense).\n",
        s.chunk);
    return prefill<
        DeviceAlloc,
        compact::Engine<compact::FlashPrefillMask<>, compact::BlockUnion<>,
                        compact::PagedFlashExecutor<>>,
        compact::Engine<compact::DenseMask, compact::BlockUnion<>, compact::PagedFlashExecutor<>>>(
        w, c, s.chunk, 16);
  }
  s.tokens = 8192;
  c.block_q = c.block_k = 64;  // finer blocks, so that a short prompt still has some to drop
  s.num_q_heads = c.num_q_heads = 2;
  s.num_kv_heads = c.num_kv_heads = 2;
  s.head_dim = c.head_dim = 64;
  s.chunk = 256;
  std::printf(
      "No GPU here: prefilling a small %d-token synthetic layer through the host "
      "reference policies (FlashPrefillMask + BlockUnion + ReferenceExecutor).\n",
      s.tokens);
  const compact::tools::SyntheticWorkload w(s);
  return prefill<
      HostAlloc,
      compact::Engine<compact::FlashPrefillMask<>, compact::BlockUnion<>,
                      compact::ReferenceExecutor>,
      compact::Engine<compact::DenseMask, compact::BlockUnion<>, compact::ReferenceExecutor>>(
      w, c, s.chunk, 8);
}
