// Minimal engine: one chunked-prefill step of a small ragged batch through
// Engine<SinkLocalMask, BlockUnion, ReferenceExecutor>, checked against dense attention.
//
// This build runs the host reference policies, so it needs no GPU; it reports the block density
// the union selected and the largest difference from dense attention.
#include <compact/compact.cuh>

#include <cmath>
#include <cstdio>
#include <memory>
#include <numeric>
#include <random>
#include <vector>

namespace {

/// Host-owned storage for one step: ragged queries and a shuffled paged cache.
struct Step {
  std::vector<std::int32_t> cu_seqlens{0}, kv_lens, page_table;
  std::vector<__nv_bfloat16> q, k, v;
  int num_pages = 0, table_stride = 0;
};

Step make_step(const compact::AttentionConfig& c, const std::vector<int>& chunks,
               const std::vector<int>& kv_lens, int max_kv, std::mt19937& rng) {
  Step s;
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (int n : chunks) s.cu_seqlens.push_back(s.cu_seqlens.back() + n);
  s.kv_lens.assign(kv_lens.begin(), kv_lens.end());
  s.table_stride = compact::ceil_div(max_kv, c.page_size);
  for (int len : kv_lens) s.num_pages += compact::ceil_div(len, c.page_size);
  std::vector<int> pages(s.num_pages);
  std::iota(pages.begin(), pages.end(), 0);
  std::shuffle(pages.begin(), pages.end(), rng);  // pages need not be contiguous or ordered
  s.page_table.assign(kv_lens.size() * s.table_stride, 0);
  int next = 0;
  for (std::size_t b = 0; b < kv_lens.size(); ++b) {
    for (int i = 0; i < compact::ceil_div(kv_lens[b], c.page_size); ++i) {
      s.page_table[b * s.table_stride + i] = pages[next++];
    }
  }
  const std::size_t kv_elems =
      static_cast<std::size_t>(s.num_pages) * c.page_size * c.num_kv_heads * c.head_dim;
  for (std::size_t i = 0; i < kv_elems; ++i) s.k.push_back(__float2bfloat16(1.5f * normal(rng)));
  for (std::size_t i = 0; i < kv_elems; ++i) s.v.push_back(__float2bfloat16(normal(rng)));
  const std::size_t q_elems =
      static_cast<std::size_t>(s.cu_seqlens.back()) * c.num_q_heads * c.head_dim;
  for (std::size_t i = 0; i < q_elems; ++i) s.q.push_back(__float2bfloat16(normal(rng)));
  return s;
}

/// Runs one engine on the host and returns its output.
template <class Engine>
std::vector<__nv_bfloat16> run(const Engine& engine, const compact::ChunkBatch& batch,
                               const compact::PagedKV& cache, double* density) {
  // Host engines take host workspace; it must be 256-byte aligned.
  auto storage = std::make_unique<std::byte[]>(engine.workspace_bytes() + 256);
  void* base = storage.get();
  std::size_t space = engine.workspace_bytes() + 256;
  std::align(256, engine.workspace_bytes(), base, space);
  const compact::Workspace ws{base, engine.workspace_bytes()};
  std::vector<__nv_bfloat16> out(static_cast<std::size_t>(batch.total_q) *
                                 engine.config().num_q_heads * engine.config().head_dim);
  engine.plan(batch, cache, ws);
  engine.run(batch, cache, ws, compact::AttentionOutput{out.data()});
  *density = compact::table_density(engine.config(), batch, engine.tables_view(ws)).ratio();
  return out;
}

}  // namespace

int main() {
  compact::AttentionConfig config;  // a small GQA layer: 8 query heads over 2 KV heads
  config.num_q_heads = 8;
  config.num_kv_heads = 2;
  config.head_dim = 64;
  config.dtype = compact::DType::bf16;
  config.block_q = 64;
  config.block_k = 64;
  config.page_size = 16;
  compact::PlanLimits limits;
  limits.max_batch = 3;
  limits.max_chunk = 256;
  limits.max_kv_len = 2048;

  std::mt19937 rng(2026);
  // Three sequences mid-prefill: chunk lengths and KV lengths (chunk included), unaligned.
  Step s = make_step(config, {256, 100, 37}, {2048, 1500, 777}, limits.max_kv_len, rng);
  compact::ChunkBatch batch;
  batch.q = s.q.data();
  batch.cu_seqlens_q = s.cu_seqlens.data();
  batch.kv_lens = s.kv_lens.data();
  batch.num_seqs = 3;
  batch.total_q = s.cu_seqlens.back();
  compact::PagedKV cache;
  cache.k_pages = s.k.data();
  cache.v_pages = s.v.data();
  cache.num_pages = s.num_pages;
  cache.page_size = config.page_size;
  cache.num_kv_heads = config.num_kv_heads;
  cache.head_dim = config.head_dim;
  cache.page_table = s.page_table.data();
  cache.page_table_stride = s.table_stride;

  std::printf("CompactAttention minimal example: no GPU path in this build, running the host "
              "reference policies on a small problem (3 sequences, %d query tokens).\n",
              batch.total_q);
  using Sparse = compact::Engine<compact::SinkLocalMask, compact::BlockUnion<>,
                                 compact::ReferenceExecutor>;
  using Dense = compact::Engine<compact::DenseMask, compact::BlockUnion<>,
                                compact::ReferenceExecutor>;
  double sparse_density = 0, dense_density = 0;
  const auto sparse = run(Sparse(config, limits, compact::SinkLocalMask(1, 4)), batch, cache,
                          &sparse_density);
  const auto dense = run(Dense(config, limits), batch, cache, &dense_density);
  double max_err = 0;
  for (std::size_t i = 0; i < dense.size(); ++i) {
    max_err = std::max(max_err, std::abs(static_cast<double>(__bfloat162float(sparse[i])) -
                                         __bfloat162float(dense[i])));
  }
  std::printf("dense  : DenseMask + BlockUnion, table density %.3f\n", dense_density);
  std::printf("sparse : SinkLocalMask(sink 1, window 4) + BlockUnion, table density %.3f "
              "(sparsity %.1f%%)\n",
              sparse_density, 100.0 * (1.0 - sparse_density));
  std::printf("max |sparse - dense| over %zu outputs: %.4f (random data has no locality, so the "
              "dropped blocks matter)\n",
              dense.size(), max_err);
  return 0;
}
