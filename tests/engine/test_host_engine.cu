// The Engine composed from host reference policies, end to end on the host.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <vector>

#include "../support/naive.hpp"
#include "../support/seed.hpp"
#include "compact/compact.cuh"

using namespace compact;
using doctest::Contains;

namespace {

AttentionConfig make_config(int hq, int hkv, int page, DType dtype) {
  AttentionConfig c;
  c.num_q_heads = hq;
  c.num_kv_heads = hkv;
  c.head_dim = 32;
  c.dtype = dtype;
  c.page_size = page;
  c.block_q = 32;
  c.block_k = 64;
  return c;
}

template <class Engine>
struct HostRun {
  std::vector<std::byte> storage;
  Workspace ws;
  std::vector<std::uint16_t> o;
  std::vector<float> lse;

  HostRun(const Engine& e, const test::HostProblem& p) {
    storage.resize(e.workspace_bytes() + kWorkspaceAlignment);
    void* base = storage.data();
    std::size_t space = storage.size();
    std::align(kWorkspaceAlignment, e.workspace_bytes(), base, space);
    ws = Workspace{base, e.workspace_bytes()};
    o.assign(p.out_elems(), 0xffff);  // NaN poison: every element must be written
    lse.assign(static_cast<std::size_t>(p.cu_seqlens.back()) * p.config.num_q_heads, NAN);
    e.plan(p.batch(), p.cache(), ws);
    e.run(p.batch(), p.cache(), ws, AttentionOutput{o.data(), lse.data()});
  }
};

}  // namespace

TEST_CASE("Engine<DenseMask, BlockUnion, ReferenceExecutor> equals dense attention exactly") {
  struct Case {
    int hq, hkv, page;
    DType dtype;
  };
  const Case cases[] = {{4, 4, 16, DType::bf16},
                        {8, 2, 256, DType::fp16},
                        {8, 1, 16, DType::fp16},
                        {16, 2, 256, DType::bf16}};
  std::uint64_t salt = 4000;
  for (const Case& k : cases) {
    auto rng = test::rng_for(++salt);
    const AttentionConfig c = make_config(k.hq, k.hkv, k.page, k.dtype);
    test::ProblemSpec spec;
    spec.num_seqs = 3;
    spec.max_chunk = 70;
    spec.max_kv = 700;
    test::HostProblem p = test::make_problem(c, spec, rng);
    using E = Engine<DenseMask, BlockUnion<>, ReferenceExecutor>;
    const E engine(c, p.limits);
    HostRun<E> run(engine, p);
    std::vector<std::uint16_t> dense(p.out_elems(), 0xffff);
    std::vector<float> dense_lse(run.lse.size(), NAN);
    reference::attention(c, p.batch(), p.cache(), AttentionOutput{dense.data(), dense_lse.data()});
    CAPTURE(k.hq);
    CAPTURE(k.page);
    CHECK(run.o == dense);  // same keys in the same order: bit-identical
    CHECK(std::memcmp(run.lse.data(), dense_lse.data(), run.lse.size() * sizeof(float)) == 0);
    const TableDensity d = table_density(c, p.batch(), engine.tables_view(run.ws));
    CHECK(d.selected == d.dense);
  }
}

namespace {

// Attention restricted to the union of the mask, from the union's definition.
test::KeyFilter union_filter(const test::HostProblem& p, const BlockMask& mask,
                             const TableShape& s) {
  return [&p, mask, s](int b, int h, int t, int j) {
    const AttentionConfig& c = p.config;
    const int n = p.cu_seqlens[b + 1] - p.cu_seqlens[b];
    const int e = j / s.table_block_tokens;
    const int hg = h / s.heads_per_table;
    const int qb_lo = s.per_q_block ? t / c.block_q : 0;
    const int qb_hi = s.per_q_block ? qb_lo + 1 : ceil_div(n, c.block_q);
    const int kb_lo = e * s.table_block_tokens / c.block_k;
    const int kb_hi =
        std::min((e + 1) * s.table_block_tokens / c.block_k, ceil_div(p.kv_lens[b], c.block_k));
    for (int hh = hg * s.heads_per_table; hh < (hg + 1) * s.heads_per_table; ++hh) {
      for (int qb = qb_lo; qb < qb_hi; ++qb) {
        for (int kb = kb_lo; kb < kb_hi; ++kb) {
          if (mask.test(b, hh, qb, kb)) return true;
        }
      }
    }
    return false;
  };
}

template <class Union>
void check_sparse_engine(std::uint64_t salt, int page) {
  auto rng = test::rng_for(salt);
  AttentionConfig c = make_config(8, 2, page, DType::bf16);
  c.block_q = 16;
  c.block_k = 16;
  test::ProblemSpec spec;
  spec.num_seqs = 2;
  spec.max_chunk = 50;
  spec.min_chunk = 20;
  spec.min_kv = 600;  // long enough that sink + window + chunk cannot cover every block
  spec.max_kv = 900;
  test::HostProblem p = test::make_problem(c, spec, rng);
  using E = Engine<SinkLocalMask, Union, ReferenceExecutor>;
  const E engine(c, p.limits, SinkLocalMask(1, 2));
  HostRun<E> run(engine, p);
  const BlockMask mask = engine.mask_view(run.ws);
  // The mask is exactly sink + window + the chunk's causal blocks, nothing in the future.
  for (int b = 0; b < 2; ++b) {
    const SeqInfo s = seq_info(p.batch(), b);
    for (int h = 0; h < 8; ++h) {
      for (int qb = 0; qb * c.block_q < s.q_len; ++qb) {
        const int first = s.pos() + qb * c.block_q;
        const int last = std::min(first + c.block_q, s.kv_len) - 1;
        for (int kb = 0; kb < ceil_div(s.kv_len, c.block_k); ++kb) {
          const bool want = kb <= last / c.block_k &&
                            (kb < 1 || kb >= first / c.block_k - 2 || kb >= s.pos() / c.block_k);
          REQUIRE(mask.test(b, h, qb, kb) == want);
        }
      }
    }
  }
  const test::NaiveResult naive =
      test::naive_attention(p, union_filter(p, mask, engine.table_shape()));
  double worst = 0;
  for (std::size_t i = 0; i < run.o.size(); ++i) {
    const double got = load_float(run.o.data(), c.dtype, i);
    REQUIRE(!std::isnan(got));
    worst = std::max(worst, std::abs(got - naive.o[i]) / (1.0 + std::abs(naive.o[i])));
  }
  CHECK(worst < 8e-3);  // one bf16 rounding of the output
  for (std::size_t i = 0; i < run.lse.size(); ++i)
    REQUIRE(std::abs(run.lse[i] - naive.lse[i]) < 1e-4);
  const TableDensity d = table_density(c, p.batch(), engine.tables_view(run.ws));
  CHECK(d.selected < d.dense);  // sink + window over 900 tokens is sparse
}

}  // namespace

TEST_CASE("sparse engines equal attention restricted to the union of the mask") {
  check_sparse_engine<BlockUnion<>>(4101, 16);
  check_sparse_engine<BlockUnion<>>(4102, 64);
  check_sparse_engine<QBlockUnion<>>(4103, 16);
  check_sparse_engine<GroupUnion<>>(4104, 32);
  check_sparse_engine<NoUnion<>>(4105, 16);
}

TEST_CASE("engine errors: config, limits, workspace, batch") {
  auto rng = test::rng_for(4201);
  const AttentionConfig c = make_config(8, 2, 16, DType::bf16);
  test::ProblemSpec spec;
  test::HostProblem p = test::make_problem(c, spec, rng);
  using E = Engine<DenseMask, BlockUnion<>, ReferenceExecutor>;
  AttentionConfig bad = c;
  bad.num_q_heads = 7;
  CHECK_THROWS_WITH_AS(E(bad, p.limits), Contains("config.num_q_heads = 7"), Error);
  PlanLimits bad_limits = p.limits;
  bad_limits.max_batch = -1;
  CHECK_THROWS_WITH_AS(E(c, bad_limits), Contains("limits.max_batch = -1"), Error);
  CHECK_THROWS_WITH_AS(
      (Engine<SinkLocalMask, BlockUnion<>, ReferenceExecutor>(c, p.limits, SinkLocalMask(-1, 2))),
      Contains("SinkLocalMask sink_blocks = -1"), Error);

  const E engine(c, p.limits);
  std::vector<std::byte> storage(engine.workspace_bytes() + 2 * kWorkspaceAlignment);
  void* base = storage.data();
  std::size_t space = storage.size();
  std::align(kWorkspaceAlignment, engine.workspace_bytes() + kWorkspaceAlignment, base, space);
  const Workspace ws{base, engine.workspace_bytes()};
  CHECK_THROWS_WITH_AS(engine.plan(p.batch(), p.cache(), Workspace{base, ws.bytes - 1}),
                       Contains("expected at least"), Error);
  CHECK_THROWS_WITH_AS(
      engine.plan(p.batch(), p.cache(), Workspace{static_cast<char*>(base) + 8, ws.bytes}),
      Contains("workspace.data"), Error);
  ChunkBatch b = p.batch();
  b.num_seqs = p.limits.max_batch + 1;
  CHECK_THROWS_WITH_AS(engine.plan(b, p.cache(), ws), Contains("batch.num_seqs"), Error);
  CHECK_NOTHROW(engine.plan(p.batch(), p.cache(), ws));
  CHECK_THROWS_WITH_AS(engine.run(p.batch(), p.cache(), ws, AttentionOutput{}),
                       Contains("out.o = nullptr"), Error);
}

TEST_CASE("device executors reject what they cannot run before touching the GPU") {
  AttentionConfig c = make_config(8, 2, 16, DType::bf16);
  PlanLimits l;
  l.max_batch = 2;
  l.max_chunk = 256;
  l.max_kv_len = 4096;
  const TableShape group = BlockUnion<>{}.table_shape(c, l);
  CHECK_THROWS_WITH_AS(BlockSparseExecutor<>{}.configure(c, l, group),
                       Contains("NoUnion tables (one per head and query block)"), Error);
  c.block_k = 32;  // table block max(32, 16) = 32 tokens: not a whole KV tile
  const TableShape fine = NoUnion<>{}.table_shape(c, l);
  CHECK_THROWS_WITH_AS(PagedFlashExecutor<>{}.configure(c, l, fine),
                       Contains("config.block_k / config.page_size = 32"), Error);
  PagedFlashExecutor<> e;
  e.force_splits = 99;
  c.block_k = 128;
  CHECK_THROWS_WITH_AS(e.configure(c, l, group), Contains("PagedFlashExecutor::force_splits = 99"),
                       Error);
  CHECK_THROWS_WITH_AS(PagedFlashExecutor<>{}.run(ExecArgs{}, nullptr),
                       Contains("configure() before run()"), Error);
}
