// append_kv_device equals append_kv_host bit for bit (pools and every summary array, including
// what must stay untouched), and its summaries equal a from-scratch mean after every chunk of
// prompts appended in uneven chunks.
#include <doctest/doctest.h>

#include <cstring>
#include <vector>

#include "../support/device_buffer.cuh"
#include "../support/seed.hpp"
#include "append_test_util.hpp"
#include "compact/cache/append_kv.cuh"

using namespace compact;

namespace {

struct DeviceSummaries {
  test::DeviceBuffer<float> mean_k, min_k, max_k, mean_v;
  explicit DeviceSummaries(const test::AppendScenario& a)
      : mean_k(a.mean_k), min_k(a.min_k), max_k(a.max_k), mean_v(a.mean_v) {}
  /// Bitwise equality of all four arrays with the host's (NaN poison included).
  bool equal(const test::AppendScenario& a) const {
    auto same = [](const test::DeviceBuffer<float>& d, const std::vector<float>& h) {
      const std::vector<float> got = d.download();
      return got.size() == h.size() && std::memcmp(got.data(), h.data(), h.size() * 4) == 0;
    };
    return same(mean_k, a.mean_k) && same(min_k, a.min_k) && same(max_k, a.max_k) &&
           same(mean_v, a.mean_v);
  }
};

}  // namespace

TEST_CASE("append_kv_device equals append_kv_host and the from-scratch summaries, chunk by chunk") {
  struct Case {
    int hkv, d;
    DType dtype;
    int bk, page;
    bool strided;
  };
  const Case cases[] = {{8, 128, DType::bf16, 128, 16, false},
                        {4, 128, DType::fp16, 64, 256, true},
                        {1, 64, DType::bf16, 16, 16, false},
                        {2, 64, DType::fp16, 256, 64, false}};
  std::uint64_t salt = 8500;
  for (const Case& k : cases) {
    auto rng = test::rng_for(++salt);
    AttentionConfig c;
    c.num_kv_heads = k.hkv;
    c.num_q_heads = k.hkv * 4;
    c.head_dim = k.d;
    c.dtype = k.dtype;
    c.block_k = k.bk;
    c.page_size = k.page;
    test::AppendScenario a = test::make_append_scenario(c, 3, 300, 2000, rng);
    const auto cuts = test::uneven_cuts(a, rng);
    test::DeviceBuffer<std::uint16_t> dk(a.problem.k), dv(a.problem.v);
    test::DeviceBuffer<std::int32_t> table(a.problem.page_table);
    DeviceSummaries ds(a);
    PagedKV host_cache = a.problem.cache();
    host_cache.summaries = a.summaries();
    PagedKV dev_cache = host_cache;
    dev_cache.k_pages = dk.get();
    dev_cache.v_pages = dv.get();
    dev_cache.page_table = table.get();
    dev_cache.host_page_table = a.problem.page_table.data();
    dev_cache.summaries.mean_k = ds.mean_k.get();
    dev_cache.summaries.min_k = ds.min_k.get();
    dev_cache.summaries.max_k = ds.max_k.get();
    dev_cache.summaries.mean_v = ds.mean_v.get();
    const std::size_t tok = a.token_elems();
    int steps = 0;
    for (int step = 0;; ++step) {
      const test::StepChunk s = test::step_chunk(a, cuts, step);
      if (!s.any) break;
      ++steps;
      KvChunk hc;
      hc.k = s.k.data();
      hc.v = s.v.data();
      hc.cu_seqlens = s.cu.data();
      hc.kv_lens = s.kv_lens.data();
      hc.num_seqs = static_cast<int>(s.kv_lens.size());
      hc.total = s.cu.back();
      append_kv_host(c, a.problem.limits, hc, host_cache);
      // Device input: optionally with a token stride wider than Hkv * D (padding poisoned).
      const std::size_t stride = k.strided ? tok + 8 : tok;
      std::vector<std::uint16_t> pk(std::max<std::size_t>(hc.total, 1) * stride, 0x7fc1),
          pv(pk.size(), 0x7fc1);
      for (int t = 0; t < hc.total; ++t) {
        std::memcpy(&pk[t * stride], &s.k[t * tok], tok * 2);
        std::memcpy(&pv[t * stride], &s.v[t * tok], tok * 2);
      }
      test::DeviceBuffer<std::uint16_t> ck(pk), cv(pv);
      test::DeviceBuffer<std::int32_t> cu(s.cu), lens(s.kv_lens);
      KvChunk dc = hc;
      dc.k = ck.get();
      dc.v = cv.get();
      dc.cu_seqlens = cu.get();
      dc.kv_lens = lens.get();
      dc.k_stride = dc.v_stride = k.strided ? static_cast<std::int64_t>(stride) : 0;
      dc.host_cu_seqlens = s.cu.data();
      dc.host_kv_lens = s.kv_lens.data();
      append_kv_device(c, a.problem.limits, dc, dev_cache, nullptr);
      COMPACT_CUDA_CHECK(cudaDeviceSynchronize());
      REQUIRE(dk.download() == a.problem.k);
      REQUIRE(dv.download() == a.problem.v);
      REQUIRE(ds.equal(a));
      const test::HostProblem now = test::snapshot(a, s.kv_lens, a.problem.k, a.problem.v);
      REQUIRE(test::compare_valid_summaries(now, a.mean_k.data(), a.min_k.data(), a.max_k.data(),
                                            a.mean_v.data()) == 0);
    }
    CHECK(steps > 3);
  }
}
