// The host reference attention against an independent naive computation.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "../support/naive.hpp"
#include "../support/seed.hpp"
#include "compact/reference/attention.hpp"

using namespace compact;

namespace {

struct Case {
  int hq, hkv, page_size;
  DType dtype;
};

// Max |ref - naive| over outputs and LSEs; both accumulate in double, so they agree to ~1e-12.
double compare_to_naive(const test::HostProblem& p) {
  const test::NaiveResult naive = test::naive_attention(p);
  double worst = 0;
  std::size_t rows = 0;
  reference::attention_rows(p.config, p.batch(), p.cache(), nullptr,
                            [&](std::int64_t row, int h, const double* o, double lse) {
                              ++rows;
                              const std::size_t base = (row * p.config.num_q_heads + h);
                              for (int i = 0; i < p.config.head_dim; ++i) {
                                const double e =
                                    std::abs(o[i] - naive.o[base * p.config.head_dim + i]);
                                worst = std::isnan(e) ? INFINITY : std::max(worst, e);
                              }
                              const double e = std::abs(lse - naive.lse[base]);
                              worst = std::isnan(e) ? INFINITY : std::max(worst, e);
                            });
  REQUIRE(rows == static_cast<std::size_t>(p.cu_seqlens.back()) * p.config.num_q_heads);
  return worst;
}

}  // namespace

TEST_CASE("reference attention equals naive O(n^2) attention on random ragged paged batches") {
  const Case cases[] = {{4, 4, 16, DType::bf16},  {8, 2, 16, DType::fp16},
                        {8, 1, 256, DType::bf16}, {16, 2, 256, DType::fp16},
                        {4, 4, 256, DType::fp16}, {8, 1, 16, DType::bf16}};
  std::uint64_t salt = 0;
  for (const Case& k : cases) {
    for (int rep = 0; rep < 2; ++rep) {
      auto rng = test::rng_for(++salt);
      AttentionConfig c;
      c.num_q_heads = k.hq;
      c.num_kv_heads = k.hkv;
      c.head_dim = rep == 0 ? 64 : 32;
      c.dtype = k.dtype;
      c.page_size = k.page_size;
      c.block_q = 32;
      c.block_k = 64;
      c.validate();
      test::ProblemSpec spec;
      spec.num_seqs = 3;
      spec.max_chunk = 70;  // not a multiple of any block or page
      spec.max_kv = 600;
      spec.share_prefix = rep == 1;
      const test::HostProblem p = test::make_problem(c, spec, rng);
      CAPTURE(k.hq);
      CAPTURE(k.hkv);
      CAPTURE(k.page_size);
      CAPTURE(c.head_dim);
      CHECK(compare_to_naive(p) < 1e-9);
    }
  }
}

TEST_CASE("reference attention honours a custom softmax scale and writes LSE in natural log") {
  auto rng = test::rng_for(1001);
  AttentionConfig c;
  c.num_q_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 32;
  c.page_size = 16;
  c.softmax_scale = 0.37f;
  test::ProblemSpec spec;
  spec.num_seqs = 2;
  spec.max_chunk = 20;
  spec.max_kv = 90;
  const test::HostProblem p = test::make_problem(c, spec, rng);
  CHECK(compare_to_naive(p) < 1e-9);
}

TEST_CASE("reference attention rounds into the output dtype and fills every row") {
  auto rng = test::rng_for(1002);
  AttentionConfig c;
  c.num_q_heads = 8;
  c.num_kv_heads = 2;
  c.head_dim = 64;
  c.page_size = 16;
  test::ProblemSpec spec;
  const test::HostProblem p = test::make_problem(c, spec, rng);
  std::vector<std::uint16_t> o(p.out_elems(), 0xffff);  // NaN poison in bf16 and fp16
  std::vector<float> lse(static_cast<std::size_t>(p.cu_seqlens.back()) * c.num_q_heads, NAN);
  reference::attention(c, p.batch(), p.cache(), AttentionOutput{o.data(), lse.data()});
  const test::NaiveResult naive = test::naive_attention(p);
  for (std::size_t i = 0; i < o.size(); ++i) {
    const double got = load_float(o.data(), c.dtype, i);
    REQUIRE(!std::isnan(got));
    REQUIRE(std::abs(got - naive.o[i]) <= 1e-2 * (1 + std::abs(naive.o[i])));  // bf16 rounding
  }
  for (std::size_t i = 0; i < lse.size(); ++i) REQUIRE(std::abs(lse[i] - naive.lse[i]) < 1e-4);
}
