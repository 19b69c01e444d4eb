// PagedFlashExecutor at the paper's shapes: dense tables and random tables holding 10/20/50% of
// the blocks (plus the chunk's own), BlockUnion layout, bf16, D = 128, chunk 1,024.
#include <cstdio>
#include <memory>
#include <random>
#include <string>

#include "common/bench_common.cuh"
#include "common/bench_problem.cuh"
#include "compact/executor/paged_flash_executor.cuh"
#include "compact/union/host_tables.hpp"
#include "compact/union/table_stats.hpp"
#include "compact/union/table_union.cuh"

namespace {

using namespace compact;
using namespace compact::bench;

struct Shape {
  Preset preset;
  int kv_len;
  int chunk;
  int page;
};

AttentionConfig config_for(const Shape& s) {
  AttentionConfig c;
  c.num_q_heads = s.preset.num_q_heads;
  c.num_kv_heads = s.preset.num_kv_heads;
  c.head_dim = s.preset.head_dim;
  c.dtype = DType::bf16;
  c.block_q = 128;
  c.block_k = 128;
  c.page_size = s.page;
  return c;
}

/// One problem alive at a time (the TP2 128K cache is 2 GiB); rebuilt when the shape changes.
DeviceStep& step_for(const Shape& s) {
  static std::unique_ptr<DeviceStep> step;
  static std::string key;
  const std::string want = std::string(s.preset.name) + "/" + std::to_string(s.kv_len) + "/" +
                           std::to_string(s.chunk) + "/" + std::to_string(s.page);
  if (key != want) {
    step.reset();
    step = std::make_unique<DeviceStep>(config_for(s), s.preset.batch, s.chunk, s.kv_len, 2026);
    key = want;
  }
  return *step;
}

/// BlockUnion tables in which every (sequence, group) keeps the chunk's own blocks plus
/// `fraction` of the earlier blocks, drawn at random (fraction 1: dense).
DeviceTables make_tables(const DeviceStep& st, double fraction, std::uint64_t seed) {
  const AttentionConfig& c = st.config;
  DeviceTables t;
  t.shape = BlockUnion<>{}.table_shape(c, st.limits);  // tail split, no hint: one live table
  BlockMask mask = BlockMask::shape_for(c, st.limits);
  std::vector<std::uint32_t> bits(mask.num_words(), 0);
  mask.bits = bits.data();
  std::mt19937_64 rng(seed);
  const ChunkBatch hb = st.host_batch();
  for (int b = 0; b < hb.num_seqs; ++b) {
    const SeqInfo s = seq_info(hb, b);
    const int n_kb = ceil_div(s.kv_len, c.block_k);
    const int chunk_kb = s.pos() / c.block_k;
    for (int g = 0; g < t.shape.head_groups; ++g) {
      std::vector<int> prefix(chunk_kb);
      std::iota(prefix.begin(), prefix.end(), 0);
      std::shuffle(prefix.begin(), prefix.end(), rng);
      prefix.resize(static_cast<std::size_t>(fraction * chunk_kb + 0.5));
      for (int h = g * t.shape.heads_per_table; h < (g + 1) * t.shape.heads_per_table; ++h) {
        for (int qb = 0; qb * c.block_q < s.q_len; ++qb) {
          for (int kb : prefix) mask.set(b, h, qb, kb);
          for (int kb = chunk_kb; kb < n_kb; ++kb) mask.set(b, h, qb, kb);
        }
      }
    }
  }
  t.indptr.resize(t.shape.num_tables() + 1);
  t.indices.resize(t.shape.capacity());
  t.last.resize(t.shape.num_tables());
  reference::build_tables(UnionArgs{c, st.limits, hb, mask, t.host(), {}});
  t.upload();
  return t;
}

void BM_PagedFlash(benchmark::State& state, Shape shape, double fraction, int arch) {
  DeviceStep& st = step_for(shape);
  DeviceTables tables = make_tables(st, fraction, 7);
  PagedFlashExecutor<> exec;
  exec.force_arch = arch;
  exec.configure(st.config, st.limits, tables.shape);
  test::DeviceBuffer<std::byte> ws(exec.workspace_bytes(st.config, st.limits, tables.shape) + 256);
  const ExecArgs args{st.config,
                      st.limits,
                      st.batch(),
                      st.cache(),
                      tables.device(),
                      st.out(),
                      Workspace{ws.get(), ws.size()}};
  double ms = 0;
  for (auto _ : state) ms = median_ms([&] { exec.run(args, nullptr); });
  report_ms(state, ms);
  const ChunkBatch hb = st.host_batch();
  const double flops =
      attention_flops(attended_pairs(st.config, hb, tables.host()), st.config.head_dim);
  const double dense_flops = attention_flops(
      dense_pairs(shape.kv_len, shape.chunk, st.config.num_q_heads) * shape.preset.batch,
      st.config.head_dim);
  state.counters["tflops"] = flops / (ms * 1e-3) / 1e12;
  state.counters["dense_equiv_tflops"] = dense_flops / (ms * 1e-3) / 1e12;
  state.counters["density"] = table_density(st.config, hb, tables.host()).ratio();
  state.counters["splits"] = exec.num_splits();
  state.counters["arch"] = exec.arch();
}

const int kRegistered = [] {
  for (const Preset& preset : {kTP2, kTP1}) {
    for (int kv : {32768, 65536, 131072}) {
      for (int page : {16, 64}) {
        for (double fraction : {1.0, 0.5, 0.2, 0.1}) {
          if (page != 16 && fraction != 1.0 && fraction != 0.1) continue;
          const std::string variant =
              fraction == 1.0 ? "dense" : "random:" + std::to_string(fraction).substr(0, 4);
          const std::string name = "BM_PagedFlash/" + variant + "/" + preset.name +
                                   "/kv:" + std::to_string(kv) +
                                   "/chunk:1024/page:" + std::to_string(page);
          for (int arch : {0, 80}) {
            // The mma.sync kernels (arch:80) for comparison, on dense and 10% tables at page 16.
            if (arch == 80 && (page != 16 || (fraction != 1.0 && fraction != 0.1))) continue;
            const std::string full = arch == 80 ? name + "/arch:80" : name;
            benchmark::RegisterBenchmark(full.c_str(), BM_PagedFlash, Shape{preset, kv, 1024, page},
                                         fraction, arch)
                ->UseManualTime()
                ->Iterations(1)
                ->Unit(benchmark::kMillisecond);
          }
        }
      }
    }
  }
  return 0;
}();

}  // namespace

COMPACT_BENCHMARK_MAIN()
