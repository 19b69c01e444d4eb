// Device ExternalMask and XAttentionMask builds equal their host references bit for bit.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstddef>
#include <functional>
#include <vector>

#include "../support/device_problem.cuh"
#include "../support/seed.hpp"
#include "compact/arch/sm90a_probe.cuh"
#include "compact/mask/external_mask.cuh"
#include "compact/mask/xattention_mask.cuh"
#include "mask_test_util.hpp"

using namespace compact;

namespace {

/// Compares the words a source must write; returns the number of differences (reports 5).
long long compare_written(const test::HostProblem& p, const BlockMask& shape,
                          const std::vector<std::uint32_t>& host,
                          const std::vector<std::uint32_t>& dev) {
  long long mismatches = 0;
  test::for_each_written_word(p, [&](int b, int h, int qb, int w) {
    const std::size_t at = shape.row_offset(b, h, qb) + w;
    if (dev[at] != host[at] && mismatches++ < 5) {
      MESSAGE("mismatch b=", b, " h=", h, " qb=", qb, " word=", w, " host=", host[at],
              " device=", dev[at]);
    }
  });
  return mismatches;
}

/// Builds `m` on the device into mask bits poisoned with 0xab, its scratch poisoned with 0xff,
/// and returns the bits.
template <class Mask>
std::vector<std::uint32_t> device_bits(const Mask& m, const AttentionConfig& c,
                                       const test::HostProblem& p, const test::DeviceProblem& d,
                                       const BlockMask& shape) {
  test::DeviceBuffer<std::uint32_t> bits(shape.num_words());
  bits.fill_bytes(0xab);
  test::DeviceBuffer<std::byte> scratch(m.workspace_bytes(c, p.limits));
  scratch.fill_bytes(0xff);
  BlockMask dm = shape;
  dm.bits = bits.get();
  m.build_device(
      MaskArgs{c, p.limits, d.batch(), d.cache(), dm, Workspace{scratch.get(), scratch.size()}},
      nullptr);
  COMPACT_CUDA_CHECK(cudaDeviceSynchronize());
  return bits.download();
}

/// One CTA of 256 threads: the keys into shared memory, then select_threshold() on them.
__global__ void select_threshold_kernel(const std::uint64_t* keys, int n, std::uint64_t forced,
                                        double req, std::uint64_t* out) {
  extern __shared__ std::uint64_t shared_keys[];
  __shared__ std::uint64_t warp_tot[8];
  for (int k = threadIdx.x; k < n; k += 256) shared_keys[k] = keys[k];
  __syncthreads();
  const std::uint64_t thr =
      xattention::select_threshold<256>(shared_keys, n, forced, req, warp_tot);
  if (threadIdx.x == 0) *out = thr;
}

/// The keys the selection keeps by its definition: walk the nonzero keys in descending order and
/// keep each while the forced mass plus the mass kept so far is below req.
std::vector<std::uint64_t> kept_by_walk(std::vector<std::uint64_t> keys, std::uint64_t forced,
                                        double req) {
  std::sort(keys.begin(), keys.end(), std::greater<>());
  std::vector<std::uint64_t> kept;
  std::uint64_t mass = forced;
  for (const std::uint64_t key : keys) {
    if (key == 0 || !(static_cast<double>(mass) < req)) break;
    kept.push_back(key);
    mass += key >> 20;
  }
  return kept;
}

}  // namespace

TEST_CASE("XAttention selection: the radix threshold keeps what the sorted walk keeps") {
  // Key sets the random problems rarely reach: masses spread over 36 bits, few distinct masses
  // (ties broken by the block index), many zero masses, one candidate, none, forced mass at or
  // over the requirement, thresholds 0 and 1.
  auto rng = test::rng_for(9200);
  test::DeviceBuffer<std::uint64_t> d_keys(12288), d_out(1);
  COMPACT_CUDA_CHECK(cudaFuncSetAttribute(select_threshold_kernel,
                                          cudaFuncAttributeMaxDynamicSharedMemorySize, 12288 * 8));
  int cases = 0, nonempty = 0, partial = 0;
  for (const int n : {32, 64, 1024, 4096, 12288}) {
    for (int mode = 0; mode < 6; ++mode) {
      for (int rep = 0; rep < 6; ++rep) {
        std::vector<std::uint64_t> keys(n, 0);
        const int n_cand = mode == 4 ? 1 : static_cast<int>(rng() % n) + 1;
        std::uint64_t total = 0;
        for (int kb = 0; kb < n_cand; ++kb) {
          if (mode != 4 && rng() % 5 == 0) continue;  // a forced or non-candidate block
          std::uint64_t a = 0;
          switch (mode) {
            case 0:  // masses spread over 36 bits
              a = (rng() & ((std::uint64_t{1} << 36) - 1)) >> (rng() % 36);
              break;
            case 1:  // four distinct masses
              a = std::uint64_t{1} << (rng() % 4 * 9);
              break;
            case 2:  // all equal
              a = 12345;
              break;
            case 3:  // mostly zero
              a = rng() % 3 == 0 ? rng() % 1000 : 0;
              break;
            case 4:  // one candidate
              a = rng() % 2 == 0 ? 0 : rng() % 100000;
              break;
            default:  // up to 2^34, half zero
              a = rng() % 2 == 0 ? (rng() >> 30) : 0;
              break;
          }
          if (mode == 5 && rep == 0) continue;  // no candidate at all
          keys[kb] = (a << 20) | (0xfffffu - static_cast<std::uint32_t>(kb));
          total += a;
        }
        std::shuffle(keys.begin(), keys.end(), rng);
        const std::uint64_t forced = rep == 1 ? 0 : rep == 2 ? total + 1 : rng() % (total / 4 + 1);
        const float thresholds[] = {0.9f, 0.0f, 1.0f, 0.5f, 0.99f, 0.3f};
        const double req = xattention::required_mass(thresholds[rep], total + forced);
        d_keys.upload(keys);
        select_threshold_kernel<<<1, 256, n * sizeof(std::uint64_t)>>>(d_keys.get(), n, forced, req,
                                                                       d_out.get());
        COMPACT_CUDA_CHECK(cudaGetLastError());
        const std::uint64_t thr = d_out.download()[0];
        std::vector<std::uint64_t> got;
        for (const std::uint64_t key : keys) {
          if (key != 0 && key >= thr) got.push_back(key);
        }
        std::sort(got.begin(), got.end(), std::greater<>());
        const std::vector<std::uint64_t> want = kept_by_walk(keys, forced, req);
        CAPTURE(n);
        CAPTURE(mode);
        CAPTURE(rep);
        CHECK(got == want);
        ++cases;
        nonempty += !want.empty();
        partial += !want.empty() &&
                   want.size() < static_cast<std::size_t>(std::count_if(
                                     keys.begin(), keys.end(), [](auto k) { return k != 0; }));
      }
    }
  }
  MESSAGE(cases, " key sets, ", nonempty, " keeping some keys, ", partial, " keeping a part");
  CHECK(partial > cases / 4);  // most sets cut inside the candidates: the test is not trivial
}

TEST_CASE("ExternalMask: device equals host, from device and from host sources") {
  auto rng = test::rng_for(9001);
  for (int rep = 0; rep < 4; ++rep) {
    AttentionConfig c;
    c.num_q_heads = rep % 2 ? 16 : 8;
    c.num_kv_heads = rep % 2 ? 4 : 8;
    c.head_dim = 16;
    c.block_q = rep < 2 ? 64 : 128;
    c.block_k = rep < 2 ? 32 : 128;
    test::ProblemSpec spec;
    spec.num_seqs = 1 + rep * 2;
    spec.max_chunk = 700;
    spec.max_kv = 9000;
    const test::HostProblem p = test::make_problem(c, spec, rng);
    const test::DeviceProblem d(p);
    const BlockMask shape = BlockMask::shape_for(c, p.limits);
    std::vector<std::uint32_t> src_bits = test::random_mask_bits(p, shape, 0.3, rng);
    // Future bits and garbage in the source must be ignored: set some past last_kb.
    for (auto& w : src_bits) w |= (rng() % 7 == 0) ? 0x80000000u : 0u;
    test::DeviceBuffer<std::uint32_t> dev_src(src_bits);
    ExternalMaskSource host_source{shape, Space::host};
    host_source.mask.bits = src_bits.data();
    ExternalMaskSource dev_source{shape, Space::device};
    dev_source.mask.bits = dev_src.get();

    std::vector<std::uint32_t> host_bits(shape.num_words(), 0xdeadbeefu);
    BlockMask hm = shape;
    hm.bits = host_bits.data();
    ExternalMask(&host_source).build_host(MaskArgs{c, p.limits, p.batch(), p.cache(), hm, {}});
    CHECK(test::census(p, hm).violations == 0);

    for (const ExternalMaskSource* src : {&dev_source, &host_source}) {
      const ExternalMask m(src);
      CAPTURE(rep);
      CHECK(compare_written(p, shape, host_bits, device_bits(m, c, p, d, shape)) == 0);
    }
  }
}

TEST_CASE("XAttentionMask: device equals host bit for bit") {
  struct Case {
    int hq, hkv, d;
    DType dtype;
    int bq, bk, page, stride;
    float threshold;
    int seqs, max_chunk, max_kv;
  };
  const Case cases[] = {
      {8, 2, 64, DType::bf16, 64, 64, 16, 8, 0.9f, 3, 300, 6000},      // G = 4
      {4, 4, 128, DType::fp16, 128, 128, 256, 8, 0.8f, 2, 400, 2500},  // G = 1, page 256
      {16, 2, 64, DType::bf16, 32, 128, 16, 4, 0.95f, 2, 200, 1500},   // G = 8, stride 4
      {4, 1, 128, DType::bf16, 64, 32, 64, 16, 0.5f, 2, 250, 1800},    // stride 16, Bk / S = 2
      {8, 2, 128, DType::bf16, 128, 64, 16, 16, 0.9f, 2, 300, 5000},   // Bk / S = 4, long KV
      {4, 2, 64, DType::fp16, 32, 16, 16, 16, 0.85f, 2, 200, 3000},    // Bk / S = 1
      {8, 2, 128, DType::bf16, 64, 128, 16, 8, 0.9f, 2, 600, 4000},    // G * rows = 300: row tiles
      // The group scorer's Bk / S specializations (16: above; 8 here) and its runtime path at 32.
      {8, 2, 128, DType::fp16, 64, 128, 32, 16, 0.9f, 2, 500, 4000},  // Bk / S = 8
      {4, 2, 128, DType::bf16, 128, 128, 16, 4, 0.9f, 2, 300, 3000},  // Bk / S = 32
      // Four row tiles per (b, kvh) at the TP2 shape's chunk (G * 128 rows), ragged chunks.
      {8, 2, 128, DType::bf16, 128, 128, 16, 8, 0.9f, 3, 1024, 3000},
      // KV 17,000-20,000 at block_k 16: up to 1,250 candidate blocks a row, past the
      // 32 * kSelectRegW the selection keeps in registers, so it reads such rows twice.
      {4, 1, 64, DType::fp16, 128, 16, 16, 4, 0.9f, 2, 300, 20000},
  };
  constexpr int kLongKV = 17000;  // the least KV length of that case
  static_assert(kLongKV / 16 > 32 * xattention::kSelectRegW,
                "the last case's rows must not fit in the selection's registers");
  std::uint64_t salt = 9100;
  long long selected = 0, causal = 0;
  for (const Case& k : cases) {
    auto rng = test::rng_for(++salt);
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
    if (k.max_kv > kLongKV) spec.min_kv = kLongKV;
    spec.q_scale = 1.0f;
    spec.k_scale = 1.0f;
    test::HostProblem p = test::make_problem(c, spec, rng);
    test::plant_hot_blocks(p, rng, 3.0f);
    const test::DeviceProblem d(p);
    XAttentionParams xp;
    xp.stride = k.stride;
    xp.threshold = k.threshold;
    const BlockMask shape = BlockMask::shape_for(c, p.limits);
    std::vector<std::uint32_t> host_bits(shape.num_words(), 0xdeadbeefu);
    BlockMask hm = shape;
    hm.bits = host_bits.data();
    // The default levels and the int8 ones (127: int8 operands in the wgmma kernel at D = 128).
    for (const int levels : {255, 127}) {
      xp.levels = levels;
      XAttentionMask m(xp);
      m.configure(c, p.limits);
      std::fill(host_bits.begin(), host_bits.end(), 0xdeadbeefu);
      m.build_host(MaskArgs{c, p.limits, p.batch(), p.cache(), hm, {}});
      // Both scoring kernels: mma.sync (any GPU) and, where this binary and GPU have it, wgmma.
      for (const int arch : {80, 90}) {
        if (arch == 90 && !arch::sm90a_available()) {
          MESSAGE("XAttentionMask's wgmma scorer not tested: no sm_90a code for this GPU");
          continue;
        }
        m.force_arch = arch;
        m.configure(c, p.limits);
        CAPTURE(k.hq);
        CAPTURE(k.d);
        CAPTURE(k.stride);
        CAPTURE(levels);
        CAPTURE(arch);
        CHECK(compare_written(p, shape, host_bits, device_bits(m, c, p, d, shape)) == 0);
      }
    }
    // Group quantization (int8 scorer: Hopper with sm_90a code, D = 128): keys in the scratch,
    // and in a key cache whose groups before each chunk were left by an earlier pass over the
    // prefix (refill_key_cache() on a batch of zero-length chunks), under a permuted slot map.
    if (k.d == 128 && arch::sm90a_available()) {
      XAttentionParams gp = xp;
      gp.levels = xattention::kInt8Levels;
      gp.quant = XAttentionQuant::group;
      XAttentionMask gm(gp);
      gm.configure(c, p.limits);
      std::fill(host_bits.begin(), host_bits.end(), 0xdeadbeefu);
      gm.build_host(MaskArgs{c, p.limits, p.batch(), p.cache(), hm, {}});
      CAPTURE(k.hq);
      CAPTURE(k.stride);
      CHECK(compare_written(p, shape, host_bits, device_bits(gm, c, p, d, shape)) == 0);

      const int slots = k.seqs + 1;
      std::vector<std::int32_t> slot_of(k.seqs), prefix(k.seqs);
      std::vector<std::int32_t> no_rows(k.seqs + 1, 0);
      for (int b = 0; b < k.seqs; ++b) {
        slot_of[b] = slots - 1 - b;
        prefix[b] = p.kv_lens[b] - (p.cu_seqlens[b + 1] - p.cu_seqlens[b]);
      }
      test::DeviceBuffer<std::int32_t> d_slot_of(slot_of), d_prefix(prefix), d_no_rows(no_rows);
      test::DeviceBuffer<std::int8_t> keys(
          XAttentionKeyCache::key_bytes(c, slots, p.limits.max_kv_len, gp.stride));
      test::DeviceBuffer<float> scales(
          XAttentionKeyCache::scale_count(c, slots, p.limits.max_kv_len, gp.stride));
      keys.fill_bytes(0x7f);
      scales.fill_bytes(0xff);  // NaN: a group read before it was written poisons its logits
      gm.key_cache.keys = keys.get();
      gm.key_cache.scales = scales.get();
      gm.key_cache.num_slots = slots;
      gm.key_cache.max_groups = XAttentionKeyCache::groups_for(p.limits.max_kv_len, gp.stride);
      gm.key_cache.stride = gp.stride;
      gm.key_cache.slot_of_seq = d_slot_of.get();
      gm.key_cache.host_slot_of_seq = slot_of.data();
      ChunkBatch before = d.batch();
      before.cu_seqlens_q = d_no_rows.get();
      before.kv_lens = d_prefix.get();
      before.host_cu_seqlens_q = no_rows.data();
      before.host_kv_lens = prefix.data();
      before.total_q = 0;
      gm.refill_key_cache(MaskArgs{c, p.limits, before, d.cache(), BlockMask{}, {}}, nullptr);
      CHECK(compare_written(p, shape, host_bits, device_bits(gm, c, p, d, shape)) == 0);
    } else if (k.d == 128) {
      MESSAGE("XAttentionMask's group quantization not tested: no sm_90a code for this GPU");
    }
    const test::MaskCensus cs = test::census(p, hm);
    CHECK(cs.violations == 0);
    selected += cs.selected;
    causal += cs.causal;
  }
  CHECK(selected < causal);  // the thresholds dropped blocks: the comparison was not trivial
}
