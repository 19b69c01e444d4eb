// Mask sources and the K/V append at the paper's shapes: every device mask source at TP2 (and
// FlashPrefill over a prefix sweep), bf16, D = 128, Bq = Bk = 128, page 16, chunk 1,024, random
// Q/K; plus append_kv of one chunk. Counters: ms (median of CUDA-event timings), density
// (selected mask bits over causal bits) and, for the summary scores, the scoring GEMM's TFLOP/s.
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "common/bench_common.cuh"
#include "common/bench_problem.cuh"
#include "compact/cache/append_kv.cuh"
#include "compact/mask/external_mask.cuh"
#include "compact/mask/flash_prefill_mask.cuh"
#include "compact/mask/quest_mask.cuh"
#include "compact/mask/rule_mask.cuh"
#include "compact/mask/xattention_mask.cuh"

namespace {

using namespace compact;
using namespace compact::bench;

AttentionConfig config_for(const Preset& p) {
  AttentionConfig c;
  c.num_q_heads = p.num_q_heads;
  c.num_kv_heads = p.num_kv_heads;
  c.head_dim = p.head_dim;
  c.dtype = DType::bf16;
  c.block_q = 128;
  c.block_k = 128;
  c.page_size = 16;
  return c;
}

/// Block summaries (mean, min, max key) of every block of a cache, straight from the pages: one
/// thread per (sequence, block, KV head, channel).
__global__ void summarize_kernel(AttentionConfig c, PagedKV cache, int num_seqs, int kv_len) {
  const long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int blocks = ceil_div(kv_len, c.block_k);
  const long long total = static_cast<long long>(num_seqs) * blocks * c.num_kv_heads * c.head_dim;
  if (i >= total) return;
  const int d = static_cast<int>(i % c.head_dim);
  const int h = static_cast<int>((i / c.head_dim) % c.num_kv_heads);
  const int kb = static_cast<int>((i / (c.head_dim * c.num_kv_heads)) % blocks);
  const int b =
      static_cast<int>(i / (static_cast<long long>(c.head_dim) * c.num_kv_heads * blocks));
  const __nv_bfloat16* pool = static_cast<const __nv_bfloat16*>(cache.k_pages);
  float sum = 0.0f, lo = INFINITY, hi = -INFINITY;
  const int end = min_of((kb + 1) * c.block_k, kv_len);
  for (int pos = kb * c.block_k; pos < end; ++pos) {
    const float x = __bfloat162float(pool[cache.offset(b, pos, h) + d]);
    sum += x;
    lo = fminf(lo, x);
    hi = fmaxf(hi, x);
  }
  const KeySummaries& s = cache.summaries;
  const std::int64_t at = s.offset(b, kb, h, c.num_kv_heads, c.head_dim) + d;
  s.mean_k[at] = sum / static_cast<float>(end - kb * c.block_k);
  s.min_k[at] = lo;
  s.max_k[at] = hi;
}

/// A device step plus its block summaries; one alive at a time (the 128K cache is 2 GiB).
struct MaskProblem {
  std::unique_ptr<DeviceStep> step;
  test::DeviceBuffer<float> mean_k, min_k, max_k;
  KeySummaries summaries{};

  MaskProblem(const Preset& p, int kv_len, int chunk) {
    const AttentionConfig c = config_for(p);
    step = std::make_unique<DeviceStep>(c, p.batch, chunk, kv_len, 2026);
    const int blocks = ceil_div(kv_len, c.block_k);
    const std::size_t n = static_cast<std::size_t>(p.batch) * blocks * c.num_kv_heads * c.head_dim;
    mean_k = test::DeviceBuffer<float>(n);
    min_k = test::DeviceBuffer<float>(n);
    max_k = test::DeviceBuffer<float>(n);
    summaries.mean_k = mean_k.get();
    summaries.min_k = min_k.get();
    summaries.max_k = max_k.get();
    summaries.num_slots = p.batch;
    summaries.max_blocks = blocks;
    summaries.block_size = c.block_k;
    summarize_kernel<<<static_cast<int>(ceil_div<long long>(n, 256)), 256>>>(c, cache(), p.batch,
                                                                             kv_len);
    COMPACT_CHECK_LAUNCH("summarize_kernel");
    COMPACT_CUDA_CHECK(cudaDeviceSynchronize());
  }
  PagedKV cache() const {
    PagedKV c = step->cache();
    c.summaries = summaries;
    return c;
  }
};

MaskProblem& problem_for(const Preset& p, int kv_len, int chunk) {
  static std::unique_ptr<MaskProblem> prob;
  static std::string key;
  const std::string want =
      std::string(p.name) + "/" + std::to_string(kv_len) + "/" + std::to_string(chunk);
  if (key != want) {
    prob.reset();
    prob = std::make_unique<MaskProblem>(p, kv_len, chunk);
    key = want;
  }
  return *prob;
}

/// XAttentionMask timing only some of its launches (after one full build on the same buffers).
/// With `with_key_cache` (group quantization): a key cache of the problem's sequences, filled once
/// before timing as an engine's earlier chunks would have left it, so each timed build
/// re-quantizes only the groups its chunk touches.
struct XAttentionPhases : XAttentionMask {
  unsigned phases;
  bool with_key_cache;
  XAttentionPhases(const XAttentionParams& p, unsigned ph, bool cache = false)
      : XAttentionMask(p), phases(ph), with_key_cache(cache) {}
  void build_device(const MaskArgs& a, cudaStream_t s) const {
    xattention::build_device(a, params, s, phases, force_arch, key_cache);
  }
};

/// Selected mask bits over causal bits, over the rows the source wrote.
double mask_density(const DeviceStep& st, const BlockMask& dev_mask) {
  std::vector<std::uint32_t> bits(dev_mask.num_words());
  COMPACT_CUDA_CHECK(
      cudaMemcpy(bits.data(), dev_mask.bits, bits.size() * 4, cudaMemcpyDeviceToHost));
  BlockMask m = dev_mask;
  m.bits = bits.data();
  const AttentionConfig& c = st.config;
  const ChunkBatch hb = st.host_batch();
  double on = 0, causal = 0;
  for (int b = 0; b < hb.num_seqs; ++b) {
    const SeqInfo s = seq_info(hb, b);
    for (int h = 0; h < c.num_q_heads; ++h) {
      for (int qb = 0; qb * c.block_q < s.q_len; ++qb) {
        const int last_kb = query_block_span(s, qb, c.block_q, c.block_k).last_kb;
        for (int kb = 0; kb <= last_kb; ++kb) on += m.test(b, h, qb, kb);
        causal += last_kb + 1;
      }
    }
  }
  return on / causal;
}

template <class Mask>
void BM_Mask(benchmark::State& state, Preset preset, int kv_len, int chunk, Mask mask,
             double score_flops_per_pair) {
  MaskProblem& prob = problem_for(preset, kv_len, chunk);
  const DeviceStep& st = *prob.step;
  try {
    compact::detail::configure(mask, st.config, st.limits);
    if constexpr (std::is_base_of_v<XAttentionMask, Mask>) {
      if (mask.params.quant == XAttentionQuant::group)
        xattention::require_group_device(st.config, mask.force_arch);
    }
  } catch (const compact::Error& e) {  // e.g. a kernel this GPU or binary does not have
    state.SkipWithError(e.what());
    return;
  }
  BlockMask out = BlockMask::shape_for(st.config, st.limits);
  test::DeviceBuffer<std::uint32_t> bits(out.num_words());
  out.bits = bits.get();
  test::DeviceBuffer<std::byte> scratch(
      compact::detail::workspace_bytes_of(mask, st.config, st.limits) + 256);
  const MaskArgs args{st.config,    st.limits, st.batch(),
                      prob.cache(), out,       Workspace{scratch.get(), scratch.size()}};
  std::optional<test::DeviceBuffer<std::int8_t>> xa_keys;
  std::optional<test::DeviceBuffer<float>> xa_scales;
  if constexpr (std::is_same_v<Mask, XAttentionPhases>) {
    if (mask.with_key_cache) {
      const int S = mask.params.stride;
      xa_keys.emplace(XAttentionKeyCache::key_bytes(st.config, preset.batch, kv_len, S));
      xa_scales.emplace(XAttentionKeyCache::scale_count(st.config, preset.batch, kv_len, S));
      mask.key_cache.keys = xa_keys->get();
      mask.key_cache.scales = xa_scales->get();
      mask.key_cache.num_slots = preset.batch;
      mask.key_cache.max_groups = XAttentionKeyCache::groups_for(kv_len, S);
      mask.key_cache.stride = S;
      mask.refill_key_cache(args, nullptr);
    }
    // A partial build times its launches over what one full build left in the scratch.
    xattention::build_device(args, mask.params, nullptr, xattention::kAllPhases, mask.force_arch,
                             mask.key_cache);
  }
  double ms = 0;
  for (auto _ : state) ms = median_ms([&] { mask.build_device(args, nullptr); });
  report_ms(state, ms);
  state.counters["select_ms"] = ms;
  state.counters["density"] = mask_density(st, out);
  if (score_flops_per_pair > 0) {
    // Scoring GEMM: every (query row, head) against every earlier block's summary.
    const double pairs = static_cast<double>(preset.batch) * chunk * st.config.num_q_heads *
                         ceil_div(kv_len, st.config.block_k);
    state.counters["score_tflops"] =
        score_flops_per_pair * pairs * st.config.head_dim / (ms * 1e-3) / 1e12;
  }
}

/// The summary quantization pass of FlashPrefillMask / QuestMask alone (bytes: fp32 summaries
/// read, bf16 integers written).
template <bool kBound>
void BM_QuantizeSummaries(benchmark::State& state, Preset preset, int kv_len) {
  MaskProblem& prob = problem_for(preset, kv_len, 1024);
  const DeviceStep& st = *prob.step;
  const AttentionConfig& c = st.config;
  test::DeviceBuffer<std::byte> scratch(
      flash_prefill::Scratch::carve(c, st.limits, kBound, nullptr, 0).bytes + 256);
  const flash_prefill::Scratch scr =
      flash_prefill::Scratch::carve(c, st.limits, kBound, scratch.get(), scratch.size());
  const Geometry geo = Geometry::of(c, st.limits);
  const int blocks = static_cast<int>(
      ceil_div(static_cast<long long>(preset.batch) * geo.max_kv_blocks * c.num_kv_heads, 8LL));
  const PagedKV cache = prob.cache();
  double ms = 0;
  for (auto _ : state) {
    ms = median_ms([&] {
      flash_prefill::quantize_summaries_kernel<kBound, 128>
          <<<blocks, 256>>>(c, geo.max_kv_blocks, st.batch(), cache.summaries, scr, true);
    });
  }
  report_ms(state, ms);
  const double bytes = static_cast<double>(preset.batch) * geo.max_kv_blocks * c.num_kv_heads *
                       c.head_dim * (kBound ? 2 : 1) * (4 + 2);
  state.counters["gbps"] = bytes / (ms * 1e-3) / 1e9;
}

/// ExternalMask from a device-resident engine mask (every fourth block set).
void BM_External(benchmark::State& state, Preset preset, int kv_len, int chunk) {
  MaskProblem& prob = problem_for(preset, kv_len, chunk);
  const DeviceStep& st = *prob.step;
  ExternalMaskSource source{BlockMask::shape_for(st.config, st.limits), Space::device};
  test::DeviceBuffer<std::uint32_t> src(source.mask.num_words());
  COMPACT_CUDA_CHECK(cudaMemset(src.get(), 0x11, src.size() * 4));
  source.mask.bits = src.get();
  BM_Mask(state, preset, kv_len, chunk, ExternalMask(&source), 0.0);
}

void BM_AppendKV(benchmark::State& state, Preset preset, int kv_len, int chunk) {
  MaskProblem& prob = problem_for(preset, kv_len, chunk);
  const DeviceStep& st = *prob.step;
  const AttentionConfig& c = st.config;
  const std::size_t elems =
      static_cast<std::size_t>(preset.batch) * chunk * c.num_kv_heads * c.head_dim;
  test::DeviceBuffer<std::uint16_t> k(elems), v(elems);
  fill_random(k.get(), c.dtype, elems, 11);
  fill_random(v.get(), c.dtype, elems, 12);
  test::DeviceBuffer<float> mean_v(prob.mean_k.size());
  PagedKV cache = prob.cache();
  cache.summaries.mean_v = mean_v.get();
  const KvChunk kv = KvChunk::of(st.batch(), k.get(), v.get());
  double ms = 0;
  for (auto _ : state) ms = median_ms([&] { append_kv_device(c, st.limits, kv, cache, nullptr); });
  report_ms(state, ms);
  const double bytes =
      2.0 * elems * 2 /* write K, V */ + 2.0 * elems * 2 /* read back for summaries */;
  state.counters["gbps"] = bytes / (ms * 1e-3) / 1e9;
}

template <class Mask>
void add(const std::string& name, const Preset& p, int kv, Mask m, double flops_per_pair = 0) {
  const std::string full =
      "BM_Mask/" + name + "/" + p.name + "/kv:" + std::to_string(kv) + "/chunk:1024";
  benchmark::RegisterBenchmark(full.c_str(), BM_Mask<Mask>, p, kv, 1024, m, flops_per_pair)
      ->UseManualTime()
      ->Iterations(1)
      ->Unit(benchmark::kMillisecond);
}

const int kRegistered = [] {
  for (int kv : {32768, 65536, 131072}) add("flash_prefill", kTP2, kv, FlashPrefillMask<>{}, 2.0);
  add("flash_prefill", kTP1, 131072, FlashPrefillMask<>{}, 2.0);
  add("quest", kTP2, 131072, QuestMask{}, 4.0);
  add("quest:row_guarded", kTP2, 131072, QuestMask(FlashPrefillParams::row_guarded()), 4.0);
  // The mean's scoring (2 flops a pair) plus the bound's row-best pass (4).
  add("flash_prefill:bound_guarded", kTP2, 131072,
      FlashPrefillMask<>(FlashPrefillParams::bound_guarded()), 6.0);
  add("flash_prefill:row_threshold", kTP2, 131072, FlashPrefillMask<>(FlashPrefillParams::paper()),
      2.0);
  benchmark::RegisterBenchmark("BM_QuantizeSummaries/mean/tp2/kv:131072",
                               BM_QuantizeSummaries<false>, kTP2, 131072)
      ->UseManualTime()
      ->Iterations(1)
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("BM_QuantizeSummaries/minmax/tp2/kv:131072",
                               BM_QuantizeSummaries<true>, kTP2, 131072)
      ->UseManualTime()
      ->Iterations(1)
      ->Unit(benchmark::kMillisecond);
  add("xattention", kTP2, 131072, XAttentionMask{});
  XAttentionParams s16;
  s16.stride = 16;
  add("xattention:stride16", kTP2, 131072, XAttentionMask(s16));
  // The default rows use wgmma where there is sm_90a code (bf16 integer operands at the default
  // levels 255); the A/B against the mma.sync kernel, and int8 operands (levels 127; wgmma on
  // Hopper, else the mma.sync kernel at those levels).
  for (const XAttentionParams& xp : {XAttentionParams{}, s16}) {
    const std::string tag = xp.stride == 16 ? ":stride16" : "";
    XAttentionMask m(xp);
    m.force_arch = 80;
    add("xattention" + tag + ":mma_sync", kTP2, 131072, m);
    XAttentionParams int8 = xp;
    int8.levels = xattention::kInt8Levels;
    add("xattention" + tag + ":int8", kTP2, 131072, XAttentionMask(int8));
  }
  // Group quantization (levels 127, Hopper int8 scorer): keys quantized into the scratch every
  // call, and with a key cache (only the chunk's groups re-quantized), whole and by phase.
  for (const XAttentionParams& xp : {XAttentionParams{}, s16}) {
    const std::string tag = xp.stride == 16 ? ":stride16" : "";
    XAttentionParams g = xp;
    g.levels = xattention::kInt8Levels;
    g.quant = XAttentionQuant::group;
    add("xattention" + tag + ":group", kTP2, 131072, XAttentionMask(g));
    add("xattention" + tag + ":group_cache", kTP2, 131072,
        XAttentionPhases(g, xattention::kAllPhases, true));
    add("xattention" + tag + ":group_cache:quantize_only", kTP2, 131072,
        XAttentionPhases(g, xattention::kQuantizePhase, true));
    add("xattention" + tag + ":group_cache:score_only", kTP2, 131072,
        XAttentionPhases(g, xattention::kScorePhase, true));
  }
  // Launch by launch (each timed after a full build on the same buffers).
  for (const XAttentionParams& xp : {XAttentionParams{}, s16}) {
    const std::string tag = xp.stride == 16 ? ":stride16" : "";
    add("xattention" + tag + ":score_only", kTP2, 131072,
        XAttentionPhases(xp, xattention::kScorePhase));
    add("xattention" + tag + ":select_only", kTP2, 131072,
        XAttentionPhases(xp, xattention::kSelectPhase));
  }
  add("sink_local", kTP2, 131072, SinkLocalMask(2, 4));
  benchmark::RegisterBenchmark("BM_Mask/external/tp2/kv:131072/chunk:1024", BM_External, kTP2,
                               131072, 1024)
      ->UseManualTime()
      ->Iterations(1)
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("BM_AppendKV/tp2/kv:131072/chunk:1024", BM_AppendKV, kTP2, 131072,
                               1024)
      ->UseManualTime()
      ->Iterations(1)
      ->Unit(benchmark::kMillisecond);
  return 0;
}();

}  // namespace

COMPACT_BENCHMARK_MAIN()
