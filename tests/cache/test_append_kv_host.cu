// append_kv_host: K/V land at their positions, and the summary cache equals a from-scratch
// computation after every chunk of a prompt appended in uneven chunks.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "../support/seed.hpp"
#include "append_test_util.hpp"
#include "compact/cache/append_kv.cuh"

using namespace compact;
using doctest::Contains;

namespace {

AttentionConfig config_for(int hkv, int d, DType dtype, int bk, int page) {
  AttentionConfig c;
  c.num_q_heads = hkv * 2;
  c.num_kv_heads = hkv;
  c.head_dim = d;
  c.dtype = dtype;
  c.block_k = bk;
  c.page_size = page;
  return c;
}

KvChunk chunk_of(const test::StepChunk& s) {
  KvChunk k;
  k.k = s.k.data();
  k.v = s.v.data();
  k.cu_seqlens = s.cu.data();
  k.kv_lens = s.kv_lens.data();
  k.num_seqs = static_cast<int>(s.kv_lens.size());
  k.total = s.cu.back();
  return k;
}

}  // namespace

TEST_CASE("append_kv_host: summaries equal a from-scratch mean after every uneven chunk") {
  struct Case {
    int hkv, d;
    DType dtype;
    int bk, page;
  };
  const Case cases[] = {
      {2, 32, DType::bf16, 64, 16}, {1, 64, DType::fp16, 16, 256}, {4, 16, DType::bf16, 128, 32}};
  std::uint64_t salt = 8000;
  for (const Case& k : cases) {
    auto rng = test::rng_for(++salt);
    const AttentionConfig c = config_for(k.hkv, k.d, k.dtype, k.bk, k.page);
    test::AppendScenario a = test::make_append_scenario(c, 3, 150, 900, rng);
    const auto cuts = test::uneven_cuts(a, rng);
    PagedKV cache = a.problem.cache();
    cache.summaries = a.summaries();
    std::vector<std::int32_t> lens(a.problem.kv_lens.size(), 0);
    int steps = 0;
    for (int step = 0;; ++step) {
      const test::StepChunk s = test::step_chunk(a, cuts, step);
      if (!s.any) break;
      ++steps;
      append_kv_host(c, a.problem.limits, chunk_of(s), cache);
      lens = s.kv_lens;
      const test::HostProblem now = test::snapshot(a, lens, a.problem.k, a.problem.v);
      REQUIRE(test::compare_valid_summaries(now, a.mean_k.data(), a.min_k.data(), a.max_k.data(),
                                            a.mean_v.data()) == 0);
      REQUIRE(test::pools_hold_prompts(a, lens, a.problem.k, a.problem.v));
    }
    CHECK(steps > 3);
    // Nothing was written past each sequence's end: those slots still hold NaN poison.
    const int ps = c.page_size;
    const std::size_t tok = a.token_elems();
    long long written_past_end = 0;
    for (std::size_t b = 0; b < lens.size(); ++b) {
      for (int pos = lens[b]; pos < a.problem.page_table_stride * ps; ++pos) {
        const int page = a.problem.page_table[b * a.problem.page_table_stride + pos / ps];
        const std::size_t at = (static_cast<std::size_t>(page) * ps + pos % ps) * tok;
        for (std::size_t e = 0; e < tok; ++e) {
          written_past_end += !std::isnan(load_float(a.problem.k.data(), c.dtype, at + e));
        }
      }
    }
    CHECK(written_past_end == 0);
  }
}

TEST_CASE("append_kv_host: a touched partial block is recomputed over its valid tokens") {
  auto rng = test::rng_for(8101);
  const AttentionConfig c = config_for(1, 8, DType::bf16, 16, 16);
  test::AppendScenario a = test::make_append_scenario(c, 1, 40, 100, rng);
  a.problem.kv_lens[0] = 37;
  PagedKV cache = a.problem.cache();
  cache.summaries = a.summaries();
  // Chunks [0, 5), [5, 37): block 0 is partial after the first, block 2 partial after the second.
  const std::vector<std::vector<int>> cuts{{0, 5, 37}};
  for (int step = 0; step < 2; ++step) {
    const test::StepChunk s = test::step_chunk(a, cuts, step);
    append_kv_host(c, a.problem.limits, chunk_of(s), cache);
  }
  // Block 2 holds tokens 32..36: its mean is over 5 tokens, in double close to the direct mean.
  for (int d = 0; d < 8; ++d) {
    double sum = 0;
    for (int pos = 32; pos < 37; ++pos)
      sum += load_float(a.prompt_k.data(), c.dtype, static_cast<std::size_t>(pos) * 8 + d);
    CHECK(std::abs(a.mean_k[2 * 8 + d] - sum / 5) < 1e-5);
  }
  CHECK(std::isnan(a.mean_k[3 * 8]));  // block 3 does not exist yet
}

TEST_CASE("append_kv: every bad argument names itself") {
  auto rng = test::rng_for(8201);
  const AttentionConfig c = config_for(2, 16, DType::bf16, 64, 16);
  test::AppendScenario a = test::make_append_scenario(c, 2, 50, 300, rng);
  const auto cuts = test::uneven_cuts(a, rng);
  const test::StepChunk s = test::step_chunk(a, cuts, 0);
  PagedKV cache = a.problem.cache();
  cache.summaries = a.summaries();
  const PlanLimits l = a.problem.limits;
  KvChunk ok = chunk_of(s);
  CHECK_NOTHROW(append_kv_host(c, l, ok, cache));
  KvChunk bad = ok;
  bad.num_seqs = 3;
  CHECK_THROWS_WITH_AS(append_kv_host(c, l, bad, cache), Contains("chunk.num_seqs = 3"), Error);
  bad = ok;
  bad.k_stride = 3;
  CHECK_THROWS_WITH_AS(append_kv_host(c, l, bad, cache), Contains("chunk.k_stride = 3"), Error);
  std::vector<std::int32_t> short_lens = s.kv_lens;
  short_lens[1] = s.cu[2] - s.cu[1] - 1;
  bad = ok;
  bad.kv_lens = short_lens.data();
  if (s.cu[2] - s.cu[1] > 0) {
    CHECK_THROWS_WITH_AS(append_kv_host(c, l, bad, cache), Contains("chunk.kv_lens[1]"), Error);
  }
  PagedKV bad_cache = cache;
  bad_cache.summaries.max_blocks = 1;
  CHECK_THROWS_WITH_AS(append_kv_host(c, l, ok, bad_cache),
                       Contains("cache.summaries.max_blocks = 1"), Error);
  bad_cache = cache;
  bad_cache.summaries.block_size = 32;
  CHECK_THROWS_WITH_AS(append_kv_host(c, l, ok, bad_cache),
                       Contains("cache.summaries.block_size = 32"), Error);
  std::vector<std::int32_t> slots{0, 7};
  bad_cache = cache;
  bad_cache.summaries.slot_of_seq = slots.data();
  CHECK_THROWS_WITH_AS(append_kv_host(c, l, ok, bad_cache),
                       Contains("cache.summaries.slot_of_seq[1] = 7"), Error);
  bad_cache = cache;
  bad_cache.page_table = nullptr;
  CHECK_THROWS_WITH_AS(append_kv_host(c, l, ok, bad_cache), Contains("cache.page_table"), Error);
  // Summaries are optional: without them only K/V are written.
  PagedKV no_summaries = a.problem.cache();
  CHECK_NOTHROW(append_kv_host(c, l, ok, no_summaries));
}

TEST_CASE("append_kv: slots map batch sequences to summary rows") {
  auto rng = test::rng_for(8301);
  const AttentionConfig c = config_for(1, 8, DType::fp16, 16, 16);
  test::AppendScenario a = test::make_append_scenario(c, 2, 64, 64, rng);
  const std::vector<std::vector<int>> cuts{{0, a.problem.kv_lens[0]}, {0, a.problem.kv_lens[1]}};
  const test::StepChunk s = test::step_chunk(a, cuts, 0);
  PagedKV cache = a.problem.cache();
  cache.summaries = a.summaries();
  const std::vector<std::int32_t> slots{1, 0};  // swapped
  cache.summaries.slot_of_seq = slots.data();
  append_kv_host(c, a.problem.limits, chunk_of(s), cache);
  // Sequence 0's block 0 is in slot 1.
  const int blocks = cache.summaries.max_blocks;
  double sum = 0;
  for (int pos = 0; pos < std::min(16, a.problem.kv_lens[0]); ++pos)
    sum += load_float(a.prompt_k.data(), c.dtype, static_cast<std::size_t>(pos) * 8);
  CHECK(std::abs(a.mean_k[static_cast<std::size_t>(blocks) * 8] -
                 sum / std::min(16, a.problem.kv_lens[0])) < 1e-4);
}
