// Device ExternalMask and XAttentionMask builds equal their host references bit for bit.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstddef>
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

}  // namespace

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
      // 33 rows x 512 sorted blocks: the selection's row weights past kSelectSharedWBytes stay
      // in the scratch (the others' fit in shared memory).
      {4, 1, 64, DType::fp16, 128, 16, 16, 4, 0.9f, 2, 300, 6000},
  };
  static_assert((128 / 4 + 1) * 512 * 4 > xattention::kSelectSharedWBytes,
                "the last case's row weights must not fit in shared memory");
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
