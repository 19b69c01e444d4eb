// Device union (mask -> block tables) at the paper's TP2 shape: B = 8, Hq = 16, Hkv = 4,
// chunk 1,024, Bq = Bk = 128. The mask is what an estimator produces: per (sequence, KV head) a
// base set of ~8.7% of the blocks, each (head, query block) row a random half of it plus the
// always-on sink, window and chunk blocks, so the BlockUnion tables hold ~10% of the causal
// blocks. Masks are drawn on the host once and uploaded; only build_device is timed.
#include <algorithm>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "../tests/support/device_buffer.cuh"
#include "../tests/union/union_masks.hpp"
#include "common/bench_common.cuh"
#include "compact/union/table_stats.hpp"
#include "compact/union/table_union.cuh"

namespace {

using namespace compact;
using namespace compact::bench;

/// Base-set density that puts the group union at about 10% of the causal blocks at 128K
/// (the always-on blocks add ~1.4%).
constexpr double kBaseDensity = 0.087;

struct Shape {
  Preset preset;
  int kv_len;
  int chunk;
  int page;
};

test::UnionStep step_for(const Shape& s) {
  test::UnionStep st;
  st.config.num_q_heads = s.preset.num_q_heads;
  st.config.num_kv_heads = s.preset.num_kv_heads;
  st.config.head_dim = s.preset.head_dim;
  st.config.block_q = 128;
  st.config.block_k = 128;
  st.config.page_size = s.page;
  st.limits.max_batch = s.preset.batch;
  st.limits.max_chunk = s.chunk;
  st.limits.max_kv_len = s.kv_len;
  for (int b = 0; b < s.preset.batch; ++b) st.add_seq(s.chunk, s.kv_len);
  st.config.validate();
  st.limits.validate();
  return st;
}

template <class U>
void BM_Union(benchmark::State& state, Shape shape) {
  const U u{};
  const test::UnionStep step = step_for(shape);
  const AttentionConfig& c = step.config;
  std::mt19937_64 rng(2026);
  const std::vector<std::uint32_t> bits =
      test::make_union_mask(step, test::MaskKind::structured, kBaseDensity, rng);
  const TableShape ts = u.table_shape(c, step.limits);
  test::DeviceBuffer<std::int32_t> cu(step.cu_seqlens), kv(step.kv_lens);
  test::DeviceBuffer<std::uint32_t> d_bits(bits);
  test::DeviceBuffer<std::int32_t> indptr(ts.num_tables() + 1), indices(ts.capacity()),
      last(ts.num_tables());
  const std::size_t ws_bytes = u.workspace_bytes(c, step.limits);
  test::DeviceBuffer<std::uint8_t> ws(ws_bytes);
  ChunkBatch batch = step.batch();
  batch.cu_seqlens_q = cu.get();
  batch.kv_lens = kv.get();
  BlockMask mask = BlockMask::shape_for(c, step.limits);
  mask.bits = d_bits.get();
  const UnionArgs args{c,
                       step.limits,
                       batch,
                       mask,
                       BlockTables{ts, indptr.get(), indices.get(), last.get()},
                       Workspace{ws.get(), ws_bytes}};
  cudaStream_t stream;
  COMPACT_CUDA_CHECK(cudaStreamCreate(&stream));

  // One checked build first: a benchmark of wrong tables is worthless.
  u.build_device(args, stream);
  COMPACT_CUDA_CHECK(cudaStreamSynchronize(stream));
  std::vector<std::int32_t> h_indptr = indptr.download(), h_indices = indices.download(),
                            h_last = last.download();
  std::vector<std::int32_t> r_indptr(h_indptr.size()), r_indices(h_indices.size()),
      r_last(h_last.size());
  std::vector<std::uint32_t> host_bits = bits;
  BlockMask host_mask = mask;
  host_mask.bits = host_bits.data();
  reference::build_tables(
      UnionArgs{c,
                step.limits,
                step.batch(),
                host_mask,
                BlockTables{ts, r_indptr.data(), r_indices.data(), r_last.data()},
                {}});
  const int total = r_indptr[ts.num_tables()];
  const bool same = h_indptr == r_indptr && h_last == r_last &&
                    std::equal(r_indices.begin(), r_indices.begin() + total, h_indices.begin());
  if (!same) {
    COMPACT_CUDA_CHECK(cudaStreamDestroy(stream));
    state.SkipWithError("device tables differ from the host reference");
    return;
  }

  double ms = 0;
  for (auto _ : state) ms = median_ms([&] { u.build_device(args, stream); }, stream, 10, 101);
  report_ms(state, ms);
  const BlockTables host_tables{ts, h_indptr.data(), h_indices.data(), h_last.data()};
  state.counters["density"] = table_density(c, step.batch(), host_tables).ratio();
  state.counters["tables"] = ts.num_tables();
  state.counters["entries"] = total;
  state.counters["mask_mib"] = static_cast<double>(bits.size() * sizeof(std::uint32_t)) / (1 << 20);
  COMPACT_CUDA_CHECK(cudaStreamDestroy(stream));
}

template <class U>
void register_union(const char* variant) {
  for (int kv : {32768, 131072}) {
    for (int page : {16, 64}) {
      const Shape shape{kTP2, kv, 1024, page};
      const std::string name = std::string("BM_Union/") + variant + "/" + kTP2.name +
                               "/kv:" + std::to_string(kv) +
                               "/chunk:1024/page:" + std::to_string(page);
      benchmark::RegisterBenchmark(name.c_str(), BM_Union<U>, shape)
          ->UseManualTime()
          ->Iterations(1)
          ->Unit(benchmark::kMicrosecond);
    }
  }
}

const int kRegistered = [] {
  register_union<BlockUnion<>>("block");
  register_union<QBlockUnion<>>("qblock");
  register_union<GroupUnion<>>("group");
  register_union<NoUnion<>>("none");
  return 0;
}();

}  // namespace

COMPACT_BENCHMARK_MAIN()
