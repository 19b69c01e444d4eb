// Device FlashPrefillMask and QuestMask builds equal their host references bit for bit, on fresh
// random problems: ragged batches, chunk offsets not aligned to blocks, GQA 1/4/8, head dims 64
// and 128, bf16 and fp16, block sizes 16-256, page sizes 16 and 256, several hyperparameters.
#include <doctest/doctest.h>

#include <cstddef>
#include <vector>

#include "../support/device_problem.cuh"
#include "../support/seed.hpp"
#include "compact/mask/flash_prefill_mask.cuh"
#include "compact/mask/quest_mask.cuh"
#include "mask_test_util.hpp"

using namespace compact;

namespace {

struct Case {
  int hq, hkv, d;
  DType dtype;
  int bq, bk, page;
  int seqs, max_chunk, max_kv;
};

const Case kCases[] = {
    {8, 8, 64, DType::bf16, 64, 64, 16, 3, 400, 3000},       // G = 1
    {16, 4, 128, DType::fp16, 128, 128, 256, 4, 700, 9000},  // G = 4: 512 packed rows
    {16, 2, 128, DType::bf16, 32, 64, 16, 3, 300, 4000},     // G = 8: 256 packed rows
    {8, 2, 64, DType::bf16, 16, 16, 16, 2, 100, 1200},       // tiny blocks: padded row tile
    {32, 4, 128, DType::bf16, 128, 256, 256, 2, 600, 8000},  // G = 8: two head chunks
    {4, 2, 64, DType::fp16, 256, 32, 16, 2, 600, 2500},      // Bq = 256
};

/// Runs host and device builds of `mask` on fresh problems of every case and compares the
/// written words; returns how many scored-but-unselected and selected-by-score blocks the host
/// masks held, so callers can check the comparison was not trivial.
template <class Mask>
test::MaskCensus run_cases(const Mask& mask, std::uint64_t salt) {
  test::MaskCensus total;
  for (const Case& k : kCases) {
    auto rng = test::rng_for(salt++);
    AttentionConfig c;
    c.num_q_heads = k.hq;
    c.num_kv_heads = k.hkv;
    c.head_dim = k.d;
    c.dtype = k.dtype;
    c.block_q = k.bq;
    c.block_k = k.bk;
    c.page_size = k.page;
    test::ProblemSpec spec;
    spec.num_seqs = k.seqs;
    spec.max_chunk = k.max_chunk;
    spec.max_kv = k.max_kv;
    spec.q_scale = 1.0f;
    spec.k_scale = 1.0f;
    test::HostProblem p = test::make_problem(c, spec, rng);
    test::plant_hot_blocks(p, rng);
    test::HostSummaries hs = test::summaries_from_scratch(p);
    const test::DeviceProblem d(p);
    test::DeviceBuffer<float> mean_k(hs.mean_k), min_k(hs.min_k), max_k(hs.max_k);

    PagedKV host_cache = p.cache();
    host_cache.summaries = hs.view;
    PagedKV dev_cache = d.cache();
    dev_cache.summaries = hs.view;
    dev_cache.summaries.mean_k = mean_k.get();
    dev_cache.summaries.min_k = min_k.get();
    dev_cache.summaries.max_k = max_k.get();
    dev_cache.summaries.mean_v = nullptr;

    mask.configure(c, p.limits);
    const BlockMask shape = BlockMask::shape_for(c, p.limits);
    std::vector<std::uint32_t> host_bits(shape.num_words(), 0xdeadbeefu);
    test::DeviceBuffer<std::uint32_t> dev_bits(shape.num_words());
    dev_bits.fill_bytes(0xab);  // poison: every compared word must be written
    test::DeviceBuffer<std::byte> scratch(mask.workspace_bytes(c, p.limits));
    scratch.fill_bytes(0xff);  // NaN-ish garbage: stale scratch must never matter
    BlockMask hm = shape, dm = shape;
    hm.bits = host_bits.data();
    dm.bits = dev_bits.get();
    mask.build_host(MaskArgs{c, p.limits, p.batch(), host_cache, hm, {}});
    mask.build_device(
        MaskArgs{c, p.limits, d.batch(), dev_cache, dm, Workspace{scratch.get(), scratch.size()}},
        nullptr);
    COMPACT_CUDA_CHECK(cudaDeviceSynchronize());
    const std::vector<std::uint32_t> got = dev_bits.download();
    long long mismatches = 0;
    test::for_each_written_word(p, [&](int b, int h, int qb, int w) {
      const std::size_t at = shape.row_offset(b, h, qb) + w;
      if (got[at] != host_bits[at] && mismatches++ < 5) {
        MESSAGE("mismatch b=", b, " h=", h, " qb=", qb, " word=", w, " host=", host_bits[at],
                " device=", got[at]);
      }
    });
    CAPTURE(k.hq);
    CAPTURE(k.hkv);
    CAPTURE(k.bq);
    CAPTURE(k.bk);
    CHECK(mismatches == 0);
    const test::MaskCensus m = test::census(p, hm);
    CHECK(m.violations == 0);
    total.selected += m.selected;
    total.causal += m.causal;
  }
  return total;
}

}  // namespace

TEST_CASE("FlashPrefillMask: device equals host bit for bit") {
  FlashPrefillMask<> defaults;  // alpha 0.18, sink 2, window 4, last 2 full
  const test::MaskCensus a = run_cases(defaults, 7001);
  FlashPrefillParams sharp;
  sharp.alpha = 0.6f;
  sharp.min_budget = 3;
  sharp.window_blocks = 1;
  sharp.sink_blocks = 1;
  const test::MaskCensus b = run_cases(FlashPrefillMask<>(sharp), 7101);
  FlashPrefillParams none;
  none.alpha = 1.0f;
  none.sink_blocks = 0;
  none.window_blocks = 0;
  none.last_full_blocks = 0;
  none.min_budget = 5;
  const test::MaskCensus c = run_cases(FlashPrefillMask<>(none), 7201);
  // The comparisons were not trivial: sparse and dense bits both occur.
  CHECK(b.selected < b.causal);
  CHECK(c.selected < c.causal);
  auto density = [](const test::MaskCensus& m) {
    return static_cast<double>(m.selected) / m.causal;
  };
  CHECK(density(a) > density(c));
  FlashPrefillParams all;
  all.alpha = 0.0f;
  const test::MaskCensus d = run_cases(FlashPrefillMask<>(all), 7301);
  CHECK(d.selected == d.causal);  // alpha = 0 keeps every causal block
}

TEST_CASE("QuestMask: device equals host bit for bit") {
  const test::MaskCensus a = run_cases(QuestMask{}, 7401);
  FlashPrefillParams sharp;
  sharp.alpha = 0.8f;
  sharp.min_budget = 2;
  sharp.sink_blocks = 0;
  sharp.window_blocks = 0;
  const test::MaskCensus b = run_cases(QuestMask(sharp), 7501);
  CHECK(b.selected < b.causal);
  CHECK(static_cast<double>(a.selected) / a.causal > static_cast<double>(b.selected) / b.causal);
}
