// The debug-only device validation finds bad lengths and page ids that live on the device.
#include <doctest/doctest.h>

#include "../support/device_problem.cuh"
#include "../support/seed.hpp"
#include "compact/core/device_validate.cuh"

using namespace compact;
using doctest::Contains;

TEST_CASE("validate_on_device names the first bad page id or length") {
  auto rng = test::rng_for(6001);
  AttentionConfig c;
  c.num_q_heads = 8;
  c.num_kv_heads = 2;
  c.head_dim = 16;
  test::ProblemSpec spec;
  spec.num_seqs = 3;
  spec.min_kv = 3 * c.page_size + 1;  // sequence 1 uses its page 2 (a short draw left it unused:
                                      // nothing to report, a failed check)
  test::HostProblem p = test::make_problem(c, spec, rng);
  test::DeviceBuffer<int> record(4);
  {
    const test::DeviceProblem d(p);
    CHECK_NOTHROW(validate_on_device(c, p.limits, d.batch(), d.cache(), record.get(), nullptr));
  }
  p.page_table[p.page_table_stride * 1 + 2] = p.num_pages + 5;
  {
    const test::DeviceProblem d(p);
    CHECK_THROWS_WITH_AS(
        validate_on_device(c, p.limits, d.batch(), d.cache(), record.get(), nullptr),
        Contains("cache.page_table[1][2] (device)"), Error);
  }
  p.page_table[p.page_table_stride * 1 + 2] = 0;
  p.kv_lens[2] = p.cu_seqlens[3] - p.cu_seqlens[2] - 1;
  {
    const test::DeviceProblem d(p);
    CHECK_THROWS_WITH_AS(
        validate_on_device(c, p.limits, d.batch(), d.cache(), record.get(), nullptr),
        Contains("batch.kv_lens[2] (device)"), Error);
  }
}
