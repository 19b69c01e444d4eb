// Engines composed from device policies: equal to the host engines, capturable in a CUDA graph.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <vector>

#include "../support/device_problem.cuh"
#include "../support/parallel_reference.hpp"
#include "../support/seed.hpp"
#include "compact/compact.cuh"

using namespace compact;
using doctest::Contains;

namespace {

AttentionConfig make_config(int hq, int hkv, int page) {
  AttentionConfig c;
  c.num_q_heads = hq;
  c.num_kv_heads = hkv;
  c.head_dim = 128;
  c.page_size = page;
  c.block_q = 64;
  c.block_k = 64;
  return c;
}

/// Host output of a host engine (reference policies) on the same problem.
template <class Mask, class Union>
std::vector<std::uint16_t> host_engine_output(const test::HostProblem& p, const Mask& mask,
                                              std::vector<std::int32_t>* indptr,
                                              std::vector<std::int32_t>* indices) {
  const Engine<Mask, Union, ReferenceExecutor> e(p.config, p.limits, mask);
  std::vector<std::byte> storage(e.workspace_bytes() + kWorkspaceAlignment);
  void* base = storage.data();
  std::size_t space = storage.size();
  std::align(kWorkspaceAlignment, e.workspace_bytes(), base, space);
  const Workspace ws{base, e.workspace_bytes()};
  std::vector<std::uint16_t> o(p.out_elems(), 0xffff);
  e.plan(p.batch(), p.cache(), ws);
  e.run(p.batch(), p.cache(), ws, AttentionOutput{o.data()});
  const BlockTables t = e.tables_view(ws);
  indptr->assign(t.indptr, t.indptr + t.shape.num_tables() + 1);
  indices->assign(t.indices, t.indices + indptr->back());
  return o;
}

/// Relative L2 distance, NaN counted separately.
double rel_l2(const std::vector<std::uint16_t>& got, const std::vector<std::uint16_t>& want,
              DType t, std::size_t* nan) {
  double e2 = 0, r2 = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double g = load_float(got.data(), t, i), r = load_float(want.data(), t, i);
    if (std::isnan(g)) {
      ++*nan;
      continue;
    }
    e2 += (g - r) * (g - r);
    r2 += r * r;
  }
  return std::sqrt(e2 / std::max(r2, 1e-30));
}

template <class Mask, class Union, class Exec>
void check_device_engine(const Mask& mask, int page, std::uint64_t salt) {
  auto rng = test::rng_for(salt);
  const AttentionConfig c = make_config(16, 4, page);
  test::ProblemSpec spec;
  spec.num_seqs = 5;
  spec.max_chunk = 300;
  spec.max_kv = 3000;
  const test::HostProblem p = test::make_problem(c, spec, rng);
  const test::DeviceProblem d(p);
  const Engine<Mask, Union, Exec> engine(c, p.limits, mask);
  test::DeviceBuffer<std::byte> ws(engine.workspace_bytes());
  test::DeviceBuffer<std::uint16_t> o(p.out_elems());
  o.fill_bytes(0xff);
  const Workspace w{ws.get(), ws.size()};
  engine.plan(d.batch(), d.cache(), w);
  engine.run(d.batch(), d.cache(), w, AttentionOutput{o.get()});
  COMPACT_CUDA_CHECK(cudaDeviceSynchronize());

  std::vector<std::int32_t> indptr, indices;
  const std::vector<std::uint16_t> want =
      host_engine_output<Mask, Union>(p, mask, &indptr, &indices);
  // Same tables, element for element.
  const BlockTables t = engine.tables_view(w);
  std::vector<std::int32_t> got_indptr(indptr.size()), got_indices(indices.size());
  COMPACT_CUDA_CHECK(
      cudaMemcpy(got_indptr.data(), t.indptr, indptr.size() * 4, cudaMemcpyDeviceToHost));
  COMPACT_CUDA_CHECK(
      cudaMemcpy(got_indices.data(), t.indices, indices.size() * 4, cudaMemcpyDeviceToHost));
  CHECK(got_indptr == indptr);
  CHECK(got_indices == indices);
  std::size_t nan = 0;
  const double rel = rel_l2(o.download(), want, c.dtype, &nan);
  MESSAGE("device engine vs host engine: rel L2 ", rel);
  CHECK(nan == 0);
  CHECK(rel < 1e-2);
}

}  // namespace

TEST_CASE("device engines equal the host reference engines, tables included") {
  check_device_engine<DenseMask, BlockUnion<>, PagedFlashExecutor<>>(DenseMask{}, 16, 9001);
  check_device_engine<SinkLocalMask, BlockUnion<>, PagedFlashExecutor<>>(SinkLocalMask(1, 3), 64,
                                                                         9002);
  check_device_engine<SinkLocalMask, QBlockUnion<>, PagedFlashExecutor<>>(SinkLocalMask(2, 2), 16,
                                                                          9003);
  check_device_engine<SinkLocalMask, GroupUnion<>, PagedFlashExecutor<>>(SinkLocalMask(1, 1), 256,
                                                                         9004);
  check_device_engine<SinkLocalMask, NoUnion<>, BlockSparseExecutor<>>(SinkLocalMask(1, 2), 16,
                                                                       9005);
}

TEST_CASE("plan + run captured in a CUDA graph replay correctly on a new step's lengths") {
  auto rng = test::rng_for(9100);
  const AttentionConfig c = make_config(8, 2, 16);
  test::ProblemSpec spec;
  spec.num_seqs = 3;
  spec.max_chunk = 200;
  spec.max_kv = 2500;
  spec.extra_pages = 0;
  const test::HostProblem p1 = test::make_problem(c, spec, rng);
  const test::HostProblem p2 = test::make_problem(c, spec, rng);
  // One set of buffers, sized for both steps; the graph bakes these pointers in.
  auto cap = [](const auto& a, const auto& b) { return std::max(a.size(), b.size()); };
  test::DeviceBuffer<std::int32_t> cu(4), kv(3), table(cap(p1.page_table, p2.page_table));
  test::DeviceBuffer<std::uint16_t> q(cap(p1.q, p2.q)), k(cap(p1.k, p2.k)), v(cap(p1.v, p2.v)),
      o(std::max(p1.out_elems(), p2.out_elems()));
  const Engine<DenseMask, BlockUnion<>, PagedFlashExecutor<>> engine(c, p1.limits);
  test::DeviceBuffer<std::byte> ws(engine.workspace_bytes());
  auto load = [&](const test::HostProblem& p) {
    cu.upload(p.cu_seqlens);
    kv.upload(p.kv_lens);
    table.upload(p.page_table);
    q.upload(p.q);
    k.upload(p.k);
    v.upload(p.v);
    o.fill_bytes(0xff);
  };
  auto views = [&](const test::HostProblem& p, ChunkBatch* b, PagedKV* cache) {
    *b = p.batch();
    b->q = q.get();
    b->cu_seqlens_q = cu.get();
    b->kv_lens = kv.get();
    b->final_chunk = nullptr;
    b->total_q = std::max(p1.cu_seqlens.back(), p2.cu_seqlens.back());  // a bound, as graphs need
    *cache = p.cache();
    cache->k_pages = k.get();
    cache->v_pages = v.get();
    cache->page_table = table.get();
    cache->num_pages = std::max(p1.num_pages, p2.num_pages);
  };
  cudaStream_t stream;
  COMPACT_CUDA_CHECK(cudaStreamCreate(&stream));
  load(p1);
  ChunkBatch batch;
  PagedKV cache;
  views(p1, &batch, &cache);
  cudaGraph_t graph;
  COMPACT_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
  engine.plan(batch, cache, Workspace{ws.get(), ws.size()}, stream);
  engine.run(batch, cache, Workspace{ws.get(), ws.size()}, AttentionOutput{o.get()}, stream);
  COMPACT_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
  cudaGraphExec_t exec;
  COMPACT_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
  for (const test::HostProblem* p : {&p1, &p2}) {
    load(*p);
    COMPACT_CUDA_CHECK(cudaGraphLaunch(exec, stream));
    COMPACT_CUDA_CHECK(cudaStreamSynchronize(stream));
    const test::ReferenceResult ref = test::parallel_reference(c, p->batch(), p->cache(), nullptr);
    const std::vector<std::uint16_t> got = o.download();
    double e2 = 0, r2 = 0;
    std::size_t nan = 0;
    for (std::size_t i = 0; i < p->out_elems(); ++i) {
      const double g = load_float(got.data(), c.dtype, i);
      if (std::isnan(g)) {
        ++nan;
        continue;
      }
      e2 += (g - ref.o[i]) * (g - ref.o[i]);
      r2 += ref.o[i] * ref.o[i];
    }
    MESSAGE("graph replay: rel L2 ", std::sqrt(e2 / r2));
    CHECK(nan == 0);
    CHECK(std::sqrt(e2 / r2) < 1e-2);
  }
  COMPACT_CUDA_CHECK(cudaGraphExecDestroy(exec));
  COMPACT_CUDA_CHECK(cudaGraphDestroy(graph));
  COMPACT_CUDA_CHECK(cudaStreamDestroy(stream));
}

TEST_CASE("EngineOptions::validate_on_device names a bad page id the host cannot see") {
  auto rng = test::rng_for(9200);
  const AttentionConfig c = make_config(8, 2, 16);
  test::ProblemSpec spec;
  spec.num_seqs = 2;
  spec.min_kv = 2 * c.page_size + 1;  // sequence 1 uses its page 1 (a short draw left it
                                      // unused: nothing to report, a failed check)
  test::HostProblem p = test::make_problem(c, spec, rng);
  p.page_table[p.page_table_stride + 1] = p.num_pages + 3;
  const test::DeviceProblem d(p);
  ChunkBatch batch = d.batch();
  PagedKV cache = d.cache();
  cache.host_page_table = nullptr;  // no host mirror: only the device can check
  const Engine<DenseMask, BlockUnion<>, PagedFlashExecutor<>> engine(
      c, p.limits, {}, {}, {}, EngineOptions{.validate_on_device = true});
  test::DeviceBuffer<std::byte> ws(engine.workspace_bytes());
  CHECK_THROWS_WITH_AS(engine.plan(batch, cache, Workspace{ws.get(), ws.size()}),
                       Contains("cache.page_table[1][1] (device)"), Error);
}
