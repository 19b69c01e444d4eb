// Device FlashPrefillMask and QuestMask builds equal their host references bit for bit, on fresh
// random problems: ragged batches, chunk offsets not aligned to blocks, GQA 1/4/8, head dims 64
// and 128, bf16 and fp16, block sizes 16-256, page sizes 16 and 256, both selections
// (row_threshold, group_mass) with several hyperparameters. BlockMassSelect equals select_host.
// The full-rate exact_math forms (quantize_in_range, fix_exp2_nonpos) equal their references.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <random>
#include <vector>

#include "../support/device_problem.cuh"
#include "../support/seed.hpp"
#include "compact/mask/flash_prefill_mask.cuh"
#include "compact/mask/group_mass_select.cuh"
#include "compact/mask/quest_mask.cuh"
#include "mask_test_util.hpp"

using namespace compact;

namespace {

/// Counts the float bit patterns x in [first, first + count) that are not above 0 where
/// fix_exp2_nonpos(x) != fix_exp2(x); keeps the smallest such pattern.
__global__ void fix_exp2_sweep(std::uint64_t first, std::uint64_t count,
                               unsigned long long* mismatches, unsigned int* first_bad) {
  const std::uint64_t stride = static_cast<std::uint64_t>(gridDim.x) * blockDim.x;
  unsigned long long bad = 0;
  for (std::uint64_t i = blockIdx.x * static_cast<std::uint64_t>(blockDim.x) + threadIdx.x;
       i < count; i += stride) {
    const std::uint32_t u = static_cast<std::uint32_t>(first + i);
    const float x = __uint_as_float(u);
    if (x > 0.0f) continue;
    if (exact::fix_exp2_nonpos(x) != exact::fix_exp2(x)) {
      ++bad;
      atomicMin(first_bad, u);
    }
  }
  if (bad != 0) atomicAdd(mismatches, bad);
}

struct Case {
  int hq, hkv, d;
  DType dtype;
  int bq, bk, page;
  int seqs, max_chunk, max_kv;
  int limits_kv = 0;  ///< When set, PlanLimits::max_kv_len (the sequences stay under max_kv).
};

const Case kCases[] = {
    {8, 8, 64, DType::bf16, 64, 64, 16, 3, 400, 3000},       // G = 1
    {16, 4, 128, DType::fp16, 128, 128, 256, 4, 700, 9000},  // G = 4: 512 packed rows
    {16, 2, 128, DType::bf16, 32, 64, 16, 3, 300, 4000},     // G = 8: 256 packed rows
    {8, 2, 64, DType::bf16, 16, 16, 16, 2, 100, 1200},       // tiny blocks: padded row tile
    {32, 4, 128, DType::bf16, 128, 256, 256, 2, 600, 8000},  // G = 8: two head chunks
    {4, 2, 64, DType::fp16, 256, 32, 16, 2, 600, 2500},      // Bq = 256
    // Limits of 6,250 KV blocks: the group_mass masses no longer fit group_select_kernel's
    // 48 KB of shared memory, so it reads them from global memory (GroupSelectSmem).
    {8, 2, 64, DType::bf16, 64, 128, 16, 2, 300, 3000, 800000},
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
    if (k.limits_kv > 0) p.limits.max_kv_len = k.limits_kv;
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
    // The tail hint too (poisoned: every live sequence's entry must be written).
    std::vector<std::int32_t> host_tail(p.limits.max_batch, -9);
    test::DeviceBuffer<std::int32_t> dev_tail(p.limits.max_batch);
    dev_tail.fill_bytes(0xab);
    hm.tail_q_blocks = host_tail.data();
    dm.tail_q_blocks = dev_tail.get();
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
    const std::vector<std::int32_t> got_tail = dev_tail.download();
    for (int b = 0; b < static_cast<int>(p.kv_lens.size()); ++b) {
      CHECK(host_tail[b] == test::expected_tail_hint(mask.params.last_full_blocks,
                                                     mask.params.window_blocks,
                                                     seq_info(p.batch(), b), c.block_q, c.block_k,
                                                     p.final_chunk[b] != 0));
      CHECK(got_tail[b] == host_tail[b]);
    }
    const test::MaskCensus m = test::census(p, hm);
    CHECK(m.violations == 0);
    total.selected += m.selected;
    total.causal += m.causal;
  }
  return total;
}

}  // namespace

/// quantize_in_range() of every entry of each D-vector (absmax and quant_of as the kernels do).
__global__ void quantize_vectors(const float* x, int n_vec, int d, float* out) {
  for (int v = blockIdx.x * blockDim.x + threadIdx.x; v < n_vec; v += gridDim.x * blockDim.x) {
    float amax = 0.0f;
    for (int i = 0; i < d; ++i) amax = fmaxf(amax, exact::abs(x[v * d + i]));
    const exact::Quant qt = exact::quant_of(amax, 255.0f);
    for (int i = 0; i < d; ++i) out[v * d + i] = exact::quantize_in_range(x[v * d + i], qt.inv);
  }
}

TEST_CASE("quantize_in_range equals quantize on absmax-quantized vectors") {
  auto rng = test::rng_for(7601);
  constexpr int kD = 128;
  std::vector<float> x;
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> level(-255, 255);
  std::uniform_real_distribution<float> unit(0.0f, 1.0f);
  const float scales[] = {1.0f, 3e-3f, 7e4f, 1e-29f, 2e-31f, 1e-38f, 3e38f};
  for (int rep = 0; rep < 20000; ++rep) {
    const float scale = scales[rep % 7];
    for (int i = 0; i < kD; ++i) {
      float v = normal(rng) * scale;
      if (rep % 5 == 1) v = scale * (static_cast<float>(level(rng)) + 0.5f) / 255.5f;  // ties
      if (rep % 5 == 2 && i % 7 == 0) v = 0.0f;
      if (rep % 5 == 3 && i % 11 == 0) v = -0.0f;
      if (rep % 5 == 4) v = scale * std::ldexp(unit(rng), -(rep % 40));
      x.push_back(std::isfinite(v) ? v : 0.0f);
    }
  }
  const int n_vec = static_cast<int>(x.size() / kD);
  test::DeviceBuffer<float> dx(x), dout(x.size());
  quantize_vectors<<<256, 128>>>(dx.get(), n_vec, kD, dout.get());
  COMPACT_CHECK_LAUNCH("quantize_vectors");
  COMPACT_CUDA_CHECK(cudaDeviceSynchronize());
  const std::vector<float> got = dout.download();
  long long bad = 0;
  for (int v = 0; v < n_vec; ++v) {
    float amax = 0.0f;
    for (int i = 0; i < kD; ++i) amax = std::max(amax, exact::abs(x[v * kD + i]));
    const exact::Quant qt = exact::quant_of(amax, 255.0f);
    for (int i = 0; i < kD; ++i) {
      const float want = static_cast<float>(exact::quantize(x[v * kD + i], qt.inv, 255));
      const float have = got[static_cast<std::size_t>(v) * kD + i];
      if (exact::bits_of(want) != exact::bits_of(have) && bad++ < 5) {
        MESSAGE("vector ", v, " entry ", i, " x=", x[v * kD + i], " host=", want, " device=", have);
      }
    }
  }
  CHECK(bad == 0);
}

TEST_CASE("FlashPrefillMask row_threshold: device equals host bit for bit") {
  const FlashPrefillParams paper = FlashPrefillParams::paper();  // alpha 0.18, sink 2, window 4
  const test::MaskCensus a = run_cases(FlashPrefillMask<>(paper), 7001);
  FlashPrefillParams sharp = paper;
  sharp.alpha = 0.6f;
  sharp.min_budget = 3;
  sharp.window_blocks = 1;
  sharp.sink_blocks = 1;
  sharp.sharpness = 3.0f;
  const test::MaskCensus b = run_cases(FlashPrefillMask<>(sharp), 7101);
  FlashPrefillParams none = paper;
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
  FlashPrefillParams all = paper;
  all.alpha = 0.0f;
  const test::MaskCensus d = run_cases(FlashPrefillMask<>(all), 7301);
  CHECK(d.selected == d.causal);  // alpha = 0 keeps every causal block
}

TEST_CASE("group_select_kernel stages the masses in shared memory only where they fit") {
  using flash_prefill::GroupSelectSmem;
  CHECK(GroupSelectSmem::of(1024).staged_blocks == 1024);  // 128K tokens at Bk = 128
  CHECK(GroupSelectSmem::of(1024).bytes == 1024 * 8 + 2 * 32 * 4);
  CHECK(GroupSelectSmem::of(6250).staged_blocks == 0);  // the last case of kCases
  CHECK(GroupSelectSmem::of(6250).bytes == 2 * 196 * 4);
  // The kernel's static shared memory counts against the same 48 KB (kStaticBytes kept for it).
  CHECK(GroupSelectSmem::of(5585).staged_blocks == 5585);  // 3072 + 5585 * 8 + 2 * 175 * 4
  CHECK(GroupSelectSmem::of(5586).staged_blocks == 0);     // 8 bytes past 48 KB
  // The longest limits the kernel launches for: the bitmaps alone fill what is left.
  constexpr int kMax = GroupSelectSmem::kMaxBlocks;
  CHECK(kMax == 184320);
  CHECK(GroupSelectSmem::of(kMax).bytes + GroupSelectSmem::kStaticBytes <= 48 * 1024);
  CHECK(GroupSelectSmem::of(kMax + 1).bytes + GroupSelectSmem::kStaticBytes > 48 * 1024);
}

TEST_CASE("FlashPrefillMask group_mass: device equals host bit for bit") {
  const test::MaskCensus a = run_cases(FlashPrefillMask<>{}, 7011);  // defaults: tau 0.9
  FlashPrefillParams tight;
  tight.group_mass = 0.5f;
  tight.sink_blocks = 0;
  tight.window_blocks = 1;
  tight.last_full_blocks = 0;
  tight.sharpness = 4.0f;
  const test::MaskCensus b = run_cases(FlashPrefillMask<>(tight), 7111);
  FlashPrefillParams budget = tight;
  budget.group_mass = 0.05f;
  budget.min_budget = 4;
  budget.sharpness = 1.0f;
  const test::MaskCensus c = run_cases(FlashPrefillMask<>(budget), 7211);
  // tau = 1 on the same problems as `a` (same salt): a superset of a's blocks by monotonicity.
  // Not every causal block: next to the planted hot blocks, a block under 2^-20 of its row's
  // maximum carries no mass even with flattened logits (the host test checks the all-blocks
  // case on problems where every block has mass).
  FlashPrefillParams all;
  all.group_mass = 1.0f;
  const test::MaskCensus d = run_cases(FlashPrefillMask<>(all), 7011);
  CHECK(a.selected < a.causal);
  CHECK(b.selected < b.causal);
  CHECK(c.selected < c.causal);
  CHECK(b.selected < a.selected);
  CHECK(d.causal == a.causal);
  CHECK(d.selected > a.selected);
  const test::MaskCensus q = run_cases(QuestMask{}, 7411);  // the bound score, group_mass
  CHECK(q.selected < q.causal);
}

TEST_CASE("exclude_forced and keep_row_best: device equals host bit for bit") {
  // The retrieval-safe preset on both scores, on the problems of the group_mass case above.
  const FlashPrefillParams guarded = FlashPrefillParams::row_guarded();
  const test::MaskCensus a = run_cases(QuestMask(guarded), 7611);
  const test::MaskCensus b = run_cases(FlashPrefillMask<>(guarded), 7011);
  // A budget so small that the rows' best blocks are most of the selection, with and without
  // them on the same problems (same salt): keeping them adds blocks.
  FlashPrefillParams tiny;
  tiny.group_mass = 0.05f;
  tiny.window_blocks = 1;
  tiny.sink_blocks = 1;
  FlashPrefillParams tiny_best = tiny;
  tiny_best.keep_row_best = true;
  const test::MaskCensus c0 = run_cases(QuestMask(tiny), 7711);
  const test::MaskCensus c1 = run_cases(QuestMask(tiny_best), 7711);
  // exclude_forced alone, under the row threshold (alpha against the best non-forced block).
  FlashPrefillParams paper_out = FlashPrefillParams::paper();
  paper_out.exclude_forced = true;
  paper_out.min_budget = 2;
  const test::MaskCensus d = run_cases(FlashPrefillMask<>(paper_out), 7811);
  const test::MaskCensus e = run_cases(QuestMask(paper_out), 7911);
  CHECK(a.selected < a.causal);
  CHECK(b.selected < b.causal);
  CHECK(c1.causal == c0.causal);
  CHECK(c1.selected > c0.selected);
  CHECK(c1.selected < c1.causal);
  CHECK(d.selected < d.causal);
  CHECK(e.selected < e.causal);
}

TEST_CASE("row_best_by_bound: device equals host bit for bit") {
  // FlashPrefillMask's retrieval guard on the problems of the group_mass case (same salt): the
  // rows' best blocks by the bound come from a scoring pass of their own, on top of the defaults.
  const test::MaskCensus base = run_cases(FlashPrefillMask<>{}, 7011);
  const test::MaskCensus a =
      run_cases(FlashPrefillMask<>(FlashPrefillParams::bound_guarded()), 7011);
  CHECK(a.causal == base.causal);
  CHECK(a.selected >= base.selected);
  CHECK(a.selected < a.causal);
  // A budget so small that the rows' best blocks are most of the selection: ranked by the mean
  // and by the bound on the same problems, both against the host.
  FlashPrefillParams tiny;
  tiny.group_mass = 0.05f;
  tiny.window_blocks = 1;
  tiny.sink_blocks = 1;
  tiny.keep_row_best = true;
  FlashPrefillParams tiny_bound = tiny;
  tiny_bound.row_best_by_bound = true;
  const test::MaskCensus m = run_cases(FlashPrefillMask<>(tiny), 8011);
  const test::MaskCensus b = run_cases(FlashPrefillMask<>(tiny_bound), 8011);
  CHECK(b.causal == m.causal);
  CHECK(b.selected != m.selected);  // the two scores pick different rows' best blocks
  CHECK(b.selected < b.causal);
  // Two best blocks a row (the quad's lists merged on the device), by the mean, by the bound and
  // in QuestMask, on the same problems: each keeps more than one a row.
  FlashPrefillParams two = tiny;
  two.row_best_count = 2;
  FlashPrefillParams two_bound = tiny_bound;
  two_bound.row_best_count = 2;
  const test::MaskCensus m2 = run_cases(FlashPrefillMask<>(two), 8011);
  const test::MaskCensus b2 = run_cases(FlashPrefillMask<>(two_bound), 8011);
  const test::MaskCensus q1 = run_cases(QuestMask(tiny), 8111);
  const test::MaskCensus q2 = run_cases(QuestMask(two), 8111);
  CHECK(m2.selected > m.selected);
  CHECK(b2.selected > b.selected);
  CHECK(q2.selected > q1.selected);
}

TEST_CASE("QuestMask row_threshold: device equals host bit for bit") {
  const test::MaskCensus a = run_cases(QuestMask(FlashPrefillParams::paper()), 7401);
  FlashPrefillParams sharp = FlashPrefillParams::paper();
  sharp.alpha = 0.8f;
  sharp.min_budget = 2;
  sharp.sink_blocks = 0;
  sharp.window_blocks = 0;
  const test::MaskCensus b = run_cases(QuestMask(sharp), 7501);
  CHECK(b.selected < b.causal);
  CHECK(static_cast<double>(a.selected) / a.causal > static_cast<double>(b.selected) / b.causal);
}

/// BlockMassSelect over one CTA per problem, against select_host().
__global__ void block_mass_select(const std::uint64_t* mass, const std::uint32_t* forced, int n,
                                  int stride, std::uint32_t tau_fix, int min_count,
                                  std::uint32_t* selected) {
  using Select = group_mass::BlockMassSelect<256>;
  __shared__ Select::TempStorage tmp;
  __shared__ std::uint32_t f[64], sel[64];
  for (int w = threadIdx.x; w < 64; w += 256) f[w] = forced[blockIdx.x * 64 + w];
  __syncthreads();
  Select(tmp).run(mass + blockIdx.x * stride, f, n, tau_fix, min_count, sel);
  for (int w = threadIdx.x; w < (n + 31) / 32; w += 256) selected[blockIdx.x * 64 + w] = sel[w];
}

TEST_CASE("BlockMassSelect equals select_host (ties, forced blocks, budgets, tau 0 to 1)") {
  auto rng = test::rng_for(7701);
  constexpr int kProblems = 64, kStride = 2048;
  std::uniform_int_distribution<int> len(1, kStride);
  std::uniform_int_distribution<int> coin(0, 9);
  // Masses up to 2^40 (the group_mass scale) and 2^52 (the top digits of the radix search;
  // 2048 of them still sum below 2^64).
  std::uniform_int_distribution<std::uint64_t> big(0, std::uint64_t{1} << 40);
  std::uniform_int_distribution<std::uint64_t> huge(0, std::uint64_t{1} << 52);
  std::uniform_int_distribution<std::uint64_t> small(0, 6);
  std::vector<std::uint64_t> mass(static_cast<std::size_t>(kProblems) * kStride, 0);
  std::vector<std::uint32_t> forced(kProblems * 64, 0);
  std::vector<int> ns(kProblems);
  for (int p = 0; p < kProblems; ++p) {
    ns[p] = p < 4 ? p + 1 : len(rng);
    for (int kb = 0; kb < ns[p]; ++kb) {
      // Half the problems draw from a few small values: many ties at the threshold.
      const std::uint64_t a =
          p % 2 ? small(rng) : (coin(rng) < 2 ? 0 : (p % 4 == 0 ? big(rng) : huge(rng)));
      mass[static_cast<std::size_t>(p) * kStride + kb] = a;
      if (coin(rng) == 0) forced[p * 64 + kb / 32] |= 1u << (kb % 32);
    }
  }
  test::DeviceBuffer<std::uint64_t> dmass(mass);
  test::DeviceBuffer<std::uint32_t> dforced(forced), dsel(forced.size());
  long long checked = 0, chosen = 0;
  for (const float tau : {0.0f, 0.3f, 0.9f, 0.999f, 1.0f}) {
    for (const int min_count : {0, 3}) {
      const std::uint32_t tau_fix = group_mass::tau_fixed(tau);
      // Problems share n only per launch: one launch per problem length class.
      for (int p = 0; p < kProblems; ++p) {
        dsel.fill_bytes(0xab);
        block_mass_select<<<1, 256>>>(dmass.get() + static_cast<std::size_t>(p) * kStride,
                                      dforced.get() + p * 64, ns[p], 0, tau_fix, min_count,
                                      dsel.get());
        COMPACT_CHECK_LAUNCH("block_mass_select");
        const std::vector<std::uint32_t> got = dsel.download();
        std::vector<std::uint8_t> fz(ns[p]), want(ns[p]);
        for (int kb = 0; kb < ns[p]; ++kb) fz[kb] = (forced[p * 64 + kb / 32] >> (kb % 32)) & 1u;
        chosen += group_mass::select_host(&mass[static_cast<std::size_t>(p) * kStride], fz.data(),
                                          ns[p], tau_fix, min_count, want.data());
        long long bad = 0;
        for (int kb = 0; kb < ns[p]; ++kb) {
          const bool have = (got[kb / 32] >> (kb % 32)) & 1u;
          if (have != (want[kb] != 0) && bad++ < 3) {
            MESSAGE("problem ", p, " tau ", tau, " min ", min_count, " kb ", kb, " host ",
                    int{want[kb]}, " device ", have);
          }
        }
        CHECK(bad == 0);
        ++checked;
      }
    }
  }
  CHECK(checked == 5 * 2 * kProblems);
  CHECK(chosen > 0);
}

TEST_CASE("fix_exp2_nonpos equals fix_exp2 on every float that is not above 0") {
  test::DeviceBuffer<unsigned long long> mismatches(1);
  test::DeviceBuffer<unsigned int> first_bad(1);
  mismatches.fill_bytes(0);
  first_bad.fill_bytes(0xff);
  // All 2^32 bit patterns: negatives, -0, +0, -inf, every NaN (positive values are skipped).
  fix_exp2_sweep<<<4096, 256>>>(0, std::uint64_t{1} << 32, mismatches.get(), first_bad.get());
  COMPACT_CHECK_LAUNCH("fix_exp2_sweep");
  COMPACT_CUDA_CHECK(cudaDeviceSynchronize());
  const unsigned long long bad = mismatches.download()[0];
  CAPTURE(first_bad.download()[0]);
  CHECK(bad == 0);
}
