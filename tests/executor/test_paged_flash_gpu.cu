// PagedFlashExecutor against the double-precision host reference, on fresh random problems.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "../support/device_problem.cuh"
#include "../support/parallel_reference.hpp"
#include "../support/seed.hpp"
#include "compact/arch/sm90a_probe.cuh"
#include "compact/executor/block_sparse_executor.cuh"
#include "compact/executor/paged_flash_executor.cuh"
#include "compact/union/host_tables.hpp"

using namespace compact;

namespace {

enum class Tables { block, qblock, group, none };

struct Case {
  DType dtype = DType::bf16;
  int head_dim = 128;
  int hq = 16, hkv = 4;
  int page = 16;
  int block_k = 128, block_q = 128;
  Tables tables = Tables::block;
  int exec_group = 0;
  int batch = 4;
  int max_chunk = 300;
  int max_kv = 2000;
  bool ragged = true;
  double density = 1.0;  // fraction of mask bits set (1: dense tables)
  int splits = 0;        // 0: heuristic
  bool lse = true;
  bool strides = false;      // padded q/o rows and K/V interleaved in one pool
  bool always_tail = false;  // tail-split tables always get the tail hint (else half the time)
};

// Worst figures over the suite, reported at the end for the closing note.
double g_worst_bf16 = 0, g_worst_fp16 = 0, g_worst_lse = 0;

template <class Exec = PagedFlashExecutor<>>
void run_case(const Case& k, std::uint64_t salt) {
  auto rng = test::rng_for(salt);
  AttentionConfig c;
  c.num_q_heads = k.hq;
  c.num_kv_heads = k.hkv;
  c.head_dim = k.head_dim;
  c.dtype = k.dtype;
  c.page_size = k.page;
  c.block_k = k.block_k;
  c.block_q = k.block_q;
  c.exec_group_size = k.exec_group;
  c.validate();
  test::ProblemSpec spec;
  spec.num_seqs = k.batch;
  spec.max_chunk = k.max_chunk;
  spec.max_kv = k.max_kv;
  spec.ragged = k.ragged;
  spec.share_prefix = k.batch >= 2;
  const test::HostProblem hp = test::make_problem(c, spec, rng);

  // Tables from a random mask through the host union.
  const BlockMask mask_shape = BlockMask::shape_for(c, hp.limits);
  std::vector<std::uint32_t> bits = test::random_mask_bits(hp, mask_shape, k.density, rng);
  BlockMask mask = mask_shape;
  mask.bits = bits.data();
  const bool union_q = k.tables == Tables::block || k.tables == Tables::qblock;
  const bool union_heads = k.tables == Tables::block || k.tables == Tables::group;
  const TableShape shape =
      TableShape::make(c, hp.limits, union_heads ? c.group_size() : 1, !union_q, union_q);
  std::vector<std::int32_t> indptr(shape.num_tables() + 1), indices(shape.capacity()),
      last(shape.num_tables()), split(shape.max_batch, 0);
  BlockTables host_tables{shape, indptr.data(), indices.data(), last.data()};
  // Tail-split tables (Q-block unions) get a random tail hint on half the cases, so rows run
  // from two tables per group.
  std::vector<std::int32_t> tail(hp.limits.max_batch);
  for (auto& v : tail) v = static_cast<int>(rng() % 4);
  if (shape.tail_split) host_tables.q_split = split.data();
  if (shape.tail_split && (k.always_tail || rng() % 2)) mask.tail_q_blocks = tail.data();
  CAPTURE(mask.tail_q_blocks != nullptr);
  reference::build_tables(UnionArgs{c, hp.limits, hp.batch(), mask, host_tables, {}});

  // Device copies; optionally padded rows and an interleaved K/V pool.
  const test::DeviceProblem dp(hp);
  ChunkBatch batch = dp.batch();
  PagedKV cache = dp.cache();
  const std::int64_t row = std::int64_t{c.num_q_heads} * c.head_dim;
  const std::int64_t q_stride = k.strides ? row + 64 : row, o_stride = k.strides ? row + 8 : row;
  test::DeviceBuffer<std::uint16_t> q_padded, kv_pool;
  if (k.strides) {
    std::vector<std::uint16_t> q(static_cast<std::size_t>(hp.cu_seqlens.back()) * q_stride, 0x7fc0);
    for (int t = 0; t < hp.cu_seqlens.back(); ++t) {
      std::copy_n(hp.q.begin() + t * row, row, q.begin() + t * q_stride);
    }
    q_padded = test::DeviceBuffer<std::uint16_t>(q);
    batch.q = q_padded.get();
    batch.q_stride = q_stride;
    const std::int64_t page = std::int64_t{c.page_size} * c.num_kv_heads * c.head_dim;
    std::vector<std::uint16_t> pool(2 * page * hp.num_pages);
    for (int pg = 0; pg < hp.num_pages; ++pg) {
      std::copy_n(hp.k.begin() + pg * page, page, pool.begin() + 2 * pg * page);
      std::copy_n(hp.v.begin() + pg * page, page, pool.begin() + (2 * pg + 1) * page);
    }
    kv_pool = test::DeviceBuffer<std::uint16_t>(pool);
    cache.k_pages = kv_pool.get();
    cache.v_pages = kv_pool.get() + page;
    cache.page_stride = 2 * page;
  }
  test::DeviceBuffer<std::int32_t> d_indptr(indptr), d_indices(indices), d_last(last),
      d_split(split);
  BlockTables tables{shape, d_indptr.get(), d_indices.get(), d_last.get()};
  if (shape.tail_split) tables.q_split = d_split.get();

  const test::ReferenceResult ref =
      test::parallel_reference(c, hp.batch(), hp.cache(), &host_tables);
  // Every kernel family this GPU and binary can run, against the same reference.
  std::vector<int> arches{80};
  if (arch::sm90a_available()) arches.push_back(90);
  for (int arch : arches) {
    Exec exec;
    exec.force_splits = k.splits;
    exec.force_arch = arch;
    exec.configure(c, hp.limits, shape);
    test::DeviceBuffer<std::byte> ws(exec.workspace_bytes(c, hp.limits, shape) +
                                     kWorkspaceAlignment);
    const std::size_t o_elems = static_cast<std::size_t>(hp.cu_seqlens.back()) * o_stride;
    test::DeviceBuffer<std::uint16_t> o(o_elems);
    test::DeviceBuffer<float> lse(static_cast<std::size_t>(hp.cu_seqlens.back()) * c.num_q_heads);
    o.fill_bytes(0xff);  // NaN in bf16 and fp16: every element must be overwritten
    lse.fill_bytes(0xff);
    const AttentionOutput out{o.get(), k.lse ? lse.get() : nullptr, o_stride};
    exec.run(ExecArgs{c, hp.limits, batch, cache, tables, out, Workspace{ws.get(), ws.size()}},
             nullptr);
    COMPACT_CUDA_CHECK(cudaDeviceSynchronize());
    const std::vector<std::uint16_t> got = o.download();
    double err2 = 0, ref2 = 0, max_abs = 0;
    std::size_t nan = 0, padding_touched = 0;
    for (int t = 0; t < hp.cu_seqlens.back(); ++t) {
      for (std::int64_t e = 0; e < o_stride; ++e) {
        const std::size_t i = t * o_stride + e;
        if (e >= row) {
          padding_touched += got[i] != 0xffff;
          continue;
        }
        const double g = load_float(got.data(), c.dtype, i);
        const double r = ref.o[t * row + e];
        if (std::isnan(g)) {
          ++nan;
          continue;
        }
        err2 += (g - r) * (g - r);
        ref2 += r * r;
        max_abs = std::max(max_abs, std::abs(g - r));
      }
    }
    const double rel = std::sqrt(err2 / std::max(ref2, 1e-30));
    double lse_err = 0;
    std::size_t lse_bad = 0;
    if (k.lse) {
      const std::vector<float> got_lse = lse.download();
      for (std::size_t i = 0; i < got_lse.size(); ++i) {
        if (std::isinf(ref.lse[i])) {
          lse_bad += !(std::isinf(got_lse[i]) && got_lse[i] < 0);
        } else if (std::isnan(got_lse[i])) {
          ++lse_bad;
        } else {
          lse_err = std::max(lse_err, std::abs(got_lse[i] - ref.lse[i]));
        }
      }
    }
    const double tol = k.dtype == DType::bf16 ? 1e-2 : 5e-3;
    (k.dtype == DType::bf16 ? g_worst_bf16 : g_worst_fp16) =
        std::max(k.dtype == DType::bf16 ? g_worst_bf16 : g_worst_fp16, rel);
    g_worst_lse = std::max(g_worst_lse, lse_err);
    INFO("sm", exec.arch(), " kernels, dtype ", to_string(k.dtype), " D ", k.head_dim, " Hq/Hkv ",
         k.hq, "/", k.hkv, " page ", k.page, " Bk ", k.block_k, " tables ",
         static_cast<int>(k.tables), " batch ", k.batch, " density ", k.density, " splits ",
         exec.num_splits(), " strides ", k.strides);
    MESSAGE("sm", exec.arch(), ": rel L2 error ", rel, " (max abs ", max_abs,
            "), LSE max abs error ", lse_err, ", splits ", exec.num_splits());
    CHECK(nan == 0);
    CHECK(padding_touched == 0);
    CHECK(lse_bad == 0);
    CHECK(rel < tol);
    CHECK(lse_err < 1e-3);
  }
}

}  // namespace

TEST_CASE("paged flash: dense tables, every dtype, head dim and page size") {
  std::uint64_t salt = 7000;
  for (DType dt : {DType::bf16, DType::fp16}) {
    for (int d : {64, 128}) {
      for (int page : {16, 32, 64, 128, 256}) {
        Case k;
        k.dtype = dt;
        k.head_dim = d;
        k.page = page;
        k.batch = 3;
        k.max_chunk = 200;
        k.max_kv = 1500;
        run_case(k, ++salt);
      }
    }
  }
}

TEST_CASE("paged flash: batch 1 with a long KV, split and not split") {
  Case k;
  k.batch = 1;
  k.ragged = false;
  k.max_chunk = 256;
  k.max_kv = 9000;
  for (int splits : {1, 3, 7}) {
    k.splits = splits;
    run_case(k, 7100 + splits);
  }
  k.splits = 0;  // the heuristic: one sequence, few row tiles -> splits
  k.max_chunk = 16;
  k.max_kv = 20000;
  run_case(k, 7110);
}

TEST_CASE("paged flash: random sparse tables for every union and execution group") {
  std::uint64_t salt = 7200;
  for (Tables t : {Tables::block, Tables::qblock, Tables::group, Tables::none}) {
    for (double density : {0.05, 0.3}) {
      Case k;
      k.tables = t;
      k.density = density;
      k.block_q = 64;
      k.max_chunk = 260;
      run_case(k, ++salt);
    }
  }
  Case k;
  k.exec_group = 2;  // half the GQA group of 4
  k.density = 0.2;
  run_case(k, ++salt);
  k.hq = 28;  // G = 7: rows of one tile span ragged head groups
  k.hkv = 4;
  k.exec_group = 0;
  run_case(k, ++salt);
  k.block_q = 64;  // 448 rows per query block: a tail split's two tables share a partial tile
  k.always_tail = true;
  run_case(k, ++salt);
  k.block_q = 128;
  k.always_tail = false;
  k.hq = 8;  // no GQA
  k.hkv = 8;
  run_case(k, ++salt);
  k.hq = 32;
  k.hkv = 4;  // G = 8
  k.dtype = DType::fp16;
  run_case(k, ++salt);
}

TEST_CASE("paged flash: ragged batch of 16, blocks finer and coarser than pages, strides") {
  Case k;
  k.batch = 16;
  k.max_chunk = 150;
  k.max_kv = 1200;
  k.block_k = 64;
  k.page = 16;  // table block 64 = one tile
  k.density = 0.5;
  run_case(k, 7300);
  k.block_k = 64;
  k.page = 256;  // four KV blocks share a page: table block 256 = four tiles
  run_case(k, 7301);
  k.strides = true;
  k.lse = false;
  k.head_dim = 64;
  run_case(k, 7302);
  k.splits = 2;
  k.lse = true;
  run_case(k, 7303);
}

TEST_CASE("paged flash: rows that see no key output zero and LSE -inf") {
  Case k;
  k.density = 0.0;  // random mask empty: tables hold nothing (no always-on rules here)
  k.batch = 2;
  run_case(k, 7400);
  k.splits = 2;
  run_case(k, 7401);
}

TEST_CASE("block-sparse executor: NoUnion tables at several densities") {
  Case k;
  k.tables = Tables::none;
  k.block_q = 128;
  for (double density : {1.0, 0.25}) {
    k.density = density;
    run_case<BlockSparseExecutor<>>(k, density == 1.0 ? 7500 : 7501);
  }
}

TEST_CASE("paged flash: worst errors over the suite") {
  MESSAGE("worst relative L2 error: bf16 ", g_worst_bf16, " (tolerance 1e-2), fp16 ", g_worst_fp16,
          " (tolerance 5e-3); worst LSE abs error ", g_worst_lse);
  CHECK(g_worst_bf16 < 1e-2);
}
