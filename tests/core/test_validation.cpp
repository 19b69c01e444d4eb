// Every bad input of DESIGN.md section 5 raises compact::Error naming argument, value, expectation.
#include <doctest/doctest.h>

#include <vector>

#include "../support/random_problem.hpp"
#include "../support/seed.hpp"
#include "compact/core/config.hpp"
#include "compact/core/limits.hpp"
#include "compact/core/validate.hpp"
#include "compact/core/workspace.hpp"

using namespace compact;
using doctest::Contains;

namespace {

AttentionConfig good_config() {
  AttentionConfig c;
  c.num_q_heads = 8;
  c.num_kv_heads = 2;
  c.head_dim = 64;
  c.page_size = 16;
  return c;
}

}  // namespace

TEST_CASE("config validation names the field, the value and the expectation") {
  CHECK_NOTHROW(good_config().validate());
  auto bad = [](auto edit) {
    AttentionConfig c = good_config();
    edit(c);
    return c;
  };
  CHECK_THROWS_WITH_AS(
      bad([](auto& c) { c.num_q_heads = 9; }).validate(),
      Contains("config.num_q_heads = 9: expected a positive multiple of config.num_kv_heads (2)"),
      Error);
  CHECK_THROWS_WITH_AS(bad([](auto& c) { c.num_kv_heads = 0; }).validate(),
                       Contains("config.num_kv_heads = 0"), Error);
  CHECK_THROWS_WITH_AS(bad([](auto& c) { c.head_dim = 100; }).validate(),
                       Contains("config.head_dim = 100: expected a multiple of 8"), Error);
  CHECK_THROWS_WITH_AS(bad([](auto& c) { c.dtype = static_cast<DType>(7); }).validate(),
                       Contains("config.dtype = 7: expected DType::bf16 or DType::fp16"), Error);
  CHECK_THROWS_WITH_AS(bad([](auto& c) { c.block_q = 96; }).validate(),
                       Contains("config.block_q = 96: expected a power of two"), Error);
  CHECK_THROWS_WITH_AS(bad([](auto& c) { c.block_k = 8; }).validate(),
                       Contains("config.block_k = 8"), Error);
  CHECK_THROWS_WITH_AS(bad([](auto& c) { c.page_size = 24; }).validate(),
                       Contains("config.page_size = 24: expected a power of two"), Error);
  CHECK_THROWS_WITH_AS(
      bad([](auto& c) { c.exec_group_size = 3; }).validate(),
      Contains("config.exec_group_size = 3: expected 0 (the GQA group) or a divisor"), Error);
  CHECK_THROWS_WITH_AS(bad([](auto& c) { c.softmax_scale = -1.0f; }).validate(),
                       Contains("config.softmax_scale = -1"), Error);
}

TEST_CASE("limits validation") {
  PlanLimits l;
  CHECK_NOTHROW(l.validate());
  l.max_batch = 0;
  CHECK_THROWS_WITH_AS(l.validate(), Contains("limits.max_batch = 0"), Error);
  l = PlanLimits{};
  l.max_kv_len = 10;
  CHECK_THROWS_WITH_AS(
      l.validate(), Contains("limits.max_kv_len = 10: expected >= limits.max_chunk (1024)"), Error);
  l = PlanLimits{};
  l.max_total_q = 5000;
  CHECK_THROWS_WITH_AS(l.validate(), Contains("limits.max_total_q = 5000"), Error);
}

TEST_CASE("batch, cache and output validation") {
  auto rng = test::rng_for(3001);
  const AttentionConfig c = good_config();
  test::ProblemSpec spec;
  spec.num_seqs = 3;
  spec.max_chunk = 40;
  spec.max_kv = 300;
  test::HostProblem p = test::make_problem(c, spec, rng);
  const PlanLimits l = p.limits;
  CHECK_NOTHROW(validate_batch(c, l, p.batch(), Space::host));
  CHECK_NOTHROW(validate_cache(c, l, p.batch(), p.cache(), Space::host));

  SUBCASE("batch") {
    ChunkBatch b = p.batch();
    b.num_seqs = 4;
    CHECK_THROWS_WITH_AS(validate_batch(c, l, b, Space::host),
                         Contains("batch.num_seqs = 4: expected in [1, limits.max_batch = 3]"),
                         Error);
    b = p.batch();
    b.q = nullptr;
    CHECK_THROWS_WITH_AS(validate_batch(c, l, b, Space::host),
                         Contains("batch.q = nullptr: expected a valid pointer"), Error);
    b = p.batch();
    b.q = static_cast<const char*>(b.q) + 2;
    CHECK_THROWS_WITH_AS(validate_batch(c, l, b, Space::host),
                         Contains("expected an address aligned to 16 bytes"), Error);
    b = p.batch();
    b.q_stride = 100;
    CHECK_THROWS_WITH_AS(validate_batch(c, l, b, Space::host), Contains("batch.q_stride = 100"),
                         Error);
    std::vector<std::int32_t> kv = p.kv_lens;
    kv[1] = p.cu_seqlens[2] - p.cu_seqlens[1] - 1;  // n_b > L_b
    b = p.batch();
    b.kv_lens = kv.data();
    CHECK_THROWS_WITH_AS(validate_batch(c, l, b, Space::host), Contains("batch.kv_lens[1]"), Error);
    CHECK_THROWS_WITH_AS(validate_batch(c, l, b, Space::host),
                         Contains("the KV length includes the chunk's own tokens"), Error);
    kv = p.kv_lens;
    kv[2] = l.max_kv_len + 1;
    b.kv_lens = kv.data();
    CHECK_THROWS_WITH_AS(validate_batch(c, l, b, Space::host),
                         Contains("expected in [0, limits.max_kv_len = 300]"), Error);
    std::vector<std::int32_t> cu = p.cu_seqlens;
    cu[0] = 1;
    b = p.batch();
    b.cu_seqlens_q = cu.data();
    CHECK_THROWS_WITH_AS(validate_batch(c, l, b, Space::host),
                         Contains("batch.cu_seqlens_q[0] = 1: expected 0"), Error);
    cu = p.cu_seqlens;
    b.cu_seqlens_q = cu.data();
    b.total_q = cu.back() + 5;  // a bound is fine (CUDA graphs serve several step sizes)
    CHECK_NOTHROW(validate_batch(c, l, b, Space::host));
    b.total_q = cu.back() - 1;
    CHECK_THROWS_WITH_AS(validate_batch(c, l, b, Space::host),
                         Contains("batch.cu_seqlens_q[num_seqs]"), Error);
    // Device batches are only checked through their host mirrors.
    b = p.batch();
    kv = p.kv_lens;
    kv[0] = 100000;
    b.kv_lens = kv.data();
    CHECK_NOTHROW(validate_batch(c, l, b, Space::device));
    b.host_kv_lens = kv.data();
    b.host_cu_seqlens_q = p.cu_seqlens.data();
    CHECK_THROWS_WITH_AS(validate_batch(c, l, b, Space::device),
                         Contains("batch.kv_lens[0] = 100000"), Error);
  }
  SUBCASE("cache") {
    PagedKV k = p.cache();
    k.page_size = 32;
    CHECK_THROWS_WITH_AS(validate_cache(c, l, p.batch(), k, Space::host),
                         Contains("cache.page_size = 32: expected config.page_size (16)"), Error);
    k = p.cache();
    k.num_kv_heads = 4;
    CHECK_THROWS_WITH_AS(validate_cache(c, l, p.batch(), k, Space::host),
                         Contains("cache.num_kv_heads = 4"), Error);
    k = p.cache();
    k.page_table = nullptr;
    CHECK_THROWS_WITH_AS(validate_cache(c, l, p.batch(), k, Space::host),
                         Contains("cache.page_table = nullptr"), Error);
    k = p.cache();
    k.v_pages = static_cast<char*>(k.v_pages) + 4;
    CHECK_THROWS_WITH_AS(validate_cache(c, l, p.batch(), k, Space::host), Contains("cache.v_pages"),
                         Error);
    k = p.cache();
    k.page_table_stride = 3;
    CHECK_THROWS_WITH_AS(
        validate_cache(c, l, p.batch(), k, Space::host),
        Contains(
            "cache.page_table_stride = 3: expected >= ceil(limits.max_kv_len / page_size) = 19"),
        Error);
    std::vector<std::int32_t> table = p.page_table;
    table[p.page_table_stride * 2 + 1] = p.num_pages;
    k = p.cache();
    k.page_table = table.data();
    CHECK_THROWS_WITH_AS(validate_cache(c, l, p.batch(), k, Space::host),
                         Contains("cache.page_table[2][1]"), Error);
    CHECK_THROWS_WITH_AS(validate_cache(c, l, p.batch(), k, Space::host),
                         Contains("expected a page id in [0, cache.num_pages"), Error);
    k = p.cache();
    k.page_stride = 8;
    CHECK_THROWS_WITH_AS(validate_cache(c, l, p.batch(), k, Space::host),
                         Contains("cache.page_stride = 8"), Error);
  }
  SUBCASE("output") {
    CHECK_THROWS_WITH_AS(validate_output(c, p.batch(), AttentionOutput{}),
                         Contains("out.o = nullptr: expected a valid pointer"), Error);
  }
}

TEST_CASE("workspace carver measures and carves the same layout, and rejects a short buffer") {
  WorkspaceCarver measure;
  measure.take<int>(10);
  measure.take<double>(3);
  CHECK(measure.used() == 2 * kWorkspaceAlignment);
  alignas(256) static std::byte buf[512];
  WorkspaceCarver carve(buf, sizeof(buf));
  CHECK(carve.take<int>(10) == reinterpret_cast<int*>(buf));
  CHECK(carve.take<double>(3) == reinterpret_cast<double*>(buf + 256));
  CHECK_THROWS_WITH_AS(carve.take<char>(1),
                       Contains("workspace.bytes = 512: expected at least 768 bytes"), Error);
}
