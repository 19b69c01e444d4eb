/// @file xattention_mask.cuh
/// @brief XAttentionMask: strided antidiagonal block scores with a cumulative-probability
/// threshold (XAttention), host reference and device kernels that agree bit for bit.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>
#include <type_traits>
#include <vector>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include "compact/arch/bulk_copy.cuh"
#include "compact/arch/cp_async.cuh"
#include "compact/arch/ldmatrix.cuh"
#include "compact/arch/mma.cuh"
#include "compact/arch/sm90a_probe.cuh"
#include "compact/arch/smem.cuh"
#include "compact/arch/swizzle.hpp"
#include "compact/arch/wgmma.cuh"
#include "compact/arch/widen.cuh"
#include "compact/concepts/mask_source.hpp"
#include "compact/core/cuda_check.hpp"
#include "compact/core/dtype.hpp"
#include "compact/core/error.hpp"
#include "compact/core/policy_args.hpp"
#include "compact/core/workspace.hpp"
#include "compact/mask/exact_math.hpp"
#include "compact/mask/query_block_span.hpp"
#include "compact/mask/xattention_key_cache.hpp"

namespace compact {

/// How XAttentionMask quantizes queries and keys before its exact integer products.
enum class XAttentionQuant {
  /// One absmax scale per token (the default): the S segments of an antidiagonal are summed in
  /// fp32 after scaling. Every GPU and head dim 64 or 128.
  token,
  /// One absmax scale per antidiagonal group (S tokens x D): the tensor cores accumulate the
  /// whole antidiagonal sum in integers and it is scaled once. Needs levels <= 127; the device
  /// build needs the Hopper int8 scorer (sm_90a, D = 128) and, to stay under the per-chunk cost
  /// of re-quantizing every key, an XAttentionKeyCache.
  group,
};

/// Hyperparameters of XAttentionMask (defaults: the XAttention paper's code).
struct XAttentionParams {
  /// Antidiagonal stride S: a power of two that divides config.block_q and config.block_k, with
  /// block_k / S <= 32 (so S >= 4 at Bk = 128). The paper uses 8 (and 16).
  int stride = 8;
  /// Keep the fewest best blocks whose estimated attention mass reaches this share of the row's
  /// total, in (0, 1]. The paper uses 0.9 (0.8 to 0.95).
  float threshold = 0.9f;
  /// KV blocks [0, sink_blocks) are always kept (XAttention always keeps block 0).
  int sink_blocks = 1;
  /// Quantization levels L: queries and keys become per-token integers in [-L, L], in [1, 255]
  /// (D * 255^2 < 2^24 keeps every product sum exact in fp32). 255 keeps the most precision;
  /// 127 fits int8, which lets the Hopper scorer (D = 128) multiply int8 operands (H100, TP2
  /// 128K chunk 1,024, stride 8: 3.68 against 4.40 ms). Every kernel and the host reference
  /// give the same bits for a given L.
  int levels = 255;
  /// Quantization granularity (XAttentionQuant::group: levels <= 127).
  XAttentionQuant quant = XAttentionQuant::token;

  /// Throws compact::Error naming `XAttentionMask params.<field>` when out of range.
  void validate(const AttentionConfig& c) const {
    using detail::cat;
    require(is_pow2(stride) && c.block_q % stride == 0 && c.block_k % stride == 0 &&
                c.block_k / stride <= 32,
            "XAttentionMask params.stride", stride,
            cat("a power of two dividing config.block_q (", c.block_q, ") and config.block_k (",
                c.block_k, ") with block_k / stride <= 32"));
    require(threshold > 0.0f && threshold <= 1.0f, "XAttentionMask params.threshold", threshold,
            "a share of the attention mass in (0, 1]");
    require(sink_blocks >= 0, "XAttentionMask params.sink_blocks", sink_blocks, ">= 0");
    require(levels >= 1 && levels <= 255, "XAttentionMask params.levels", levels,
            "quantization levels in [1, 255] (127 for int8 operands)");
    require(quant == XAttentionQuant::token || quant == XAttentionQuant::group,
            "XAttentionMask params.quant", static_cast<int>(quant), "token (0) or group (1)");
    require(quant != XAttentionQuant::group || levels <= 127, "XAttentionMask params.levels",
            levels, "at most 127 with params.quant = group (int8 operands)");
  }
};

namespace xattention {

/// The largest quantization level whose integers fit int8 (the int8 wgmma scorer).
inline constexpr int kInt8Levels = 127;
/// Key groups per CTA tile of the scoring kernel (a multiple of block_k / stride).
inline constexpr int kTileGroups = XAttentionKeyCache::kTileGroups;
/// Reshaped rows of the group scorer's query tiles (GroupScoreTraits<>::kM).
inline constexpr int kQueryTileRows = 128;

/// Absolute position of the last query row of reshaped row (antidiagonal group) i of a chunk.
COMPACT_HOST_DEVICE inline int group_last_pos(const SeqInfo& s, int i, int stride) {
  return s.pos() + min_of(i * stride + stride - 1, s.q_len - 1);
}

/// Key group j is visible to query group i when it starts at or before the group's last row.
COMPACT_HOST_DEVICE inline bool group_visible(const SeqInfo& s, int i, int j, int stride) {
  return j * stride <= group_last_pos(s, i, stride);
}

/// One antidiagonal term: (I_t * a_t) * b_t with I_t the exact integer q . k of segment t and
/// a_t, b_t the per-token scales (I + 0 turns -0 into +0).
COMPACT_HOST_DEVICE inline float term(float dot, float a, float b) {
  return exact::mul(exact::mul(exact::add(dot, 0.0f), a), b);
}

/// The antidiagonal of group quantization: (float(I) * a) * b with I the exact integer over all
/// S segments (|I| <= S * D * 127^2 < 2^31, rounded to float once) and a, b the group scales.
COMPACT_HOST_DEVICE inline float group_term(int whole, float a, float b) {
  return exact::mul(exact::mul(static_cast<float>(whole), a), b);
}

/// Mass of block kb for one row in fixed point: W = trunc(sigma * 2^(mu - m_row)).
COMPACT_HOST_DEVICE inline std::uint32_t row_block_weight(float mu, std::uint32_t sigma,
                                                          float m_row) {
  if (exact::ordered_key(mu) == exact::kOrderedMinusInf) return 0u;
  return exact::to_u32(exact::mul(exact::from_u32(sigma), exact::det_exp2(exact::sub(mu, m_row))));
}

/// The forced blocks of a row: sink and the chunk's own causal blocks (kb <= last_kb).
COMPACT_HOST_DEVICE inline bool forced_on(const XAttentionParams& p, const QueryBlockSpan& span,
                                          int kb) {
  return kb < p.sink_blocks || kb >= span.chunk_first_kb;
}

/// threshold * total in double (the comparison runs in exact integers below 2^53).
COMPACT_HOST_DEVICE inline double required_mass(float threshold, std::uint64_t total) {
#if defined(__CUDA_ARCH__)
  return __dmul_rn(static_cast<double>(threshold), static_cast<double>(total));
#else
  volatile double r = static_cast<double>(threshold) * static_cast<double>(total);
  return r;
#endif
}

/// Quantized vectors of one head: integers per token and scales per token (or per group).
struct TokenQuant {
  std::vector<int> ints;     ///< Quantized elements, [tokens][D].
  std::vector<float> scale;  ///< Scales, [tokens] (XAttentionQuant::group: [groups]).
};

/// Block scores of every query block of (b, h): A[qb][kb] for kb < last_kb(qb) + 1, the
/// fixed-point (2^32 per row) sum over the block's antidiagonal groups of the softmax mass each
/// group puts on block kb. Host reference of the device kernels' arithmetic; exposed for tests
/// and tools. `a` must hold host pointers.
inline std::vector<std::vector<std::uint64_t>> block_scores(const MaskArgs& a,
                                                            const XAttentionParams& p, int b,
                                                            int h) {
  const AttentionConfig& c = a.config;
  const int D = c.head_dim, S = p.stride, Bq = c.block_q, Bk = c.block_k;
  const int G = c.gqa_group(), kvh = h / G;
  const SeqInfo s = seq_info(a.batch, b);
  const int n_qb = ceil_div(s.q_len, Bq);
  std::vector<std::vector<std::uint64_t>> out(n_qb);
  if (s.q_len <= 0) return out;
  const float cx = exact::mul(exact::mul(c.scale(), exact::kLog2e), 1.0f / static_cast<float>(S));
  const std::int64_t q_stride =
      a.batch.q_stride != 0 ? a.batch.q_stride : std::int64_t{c.num_q_heads} * D;
  auto quant_row = [&](auto&& load, std::vector<int>& ints, float& scale) {
    float amax = 0.0f;
    for (int d = 0; d < D; ++d) amax = std::max(amax, exact::abs(load(d)));
    const exact::Quant qt = exact::quant_of(amax, static_cast<float>(p.levels));
    for (int d = 0; d < D; ++d) ints.push_back(exact::quantize(load(d), qt.inv, p.levels));
    scale = qt.scale;
  };
  auto key_at = [&](int pos, int d) {
    return load_float(a.cache.k_pages, c.dtype,
                      static_cast<std::size_t>(a.cache.offset(b, pos, kvh) + d));
  };
  auto query_at = [&](int t, int d) {
    return load_float(
        a.batch.q, c.dtype,
        static_cast<std::size_t>((s.q_begin + t) * q_stride) + static_cast<std::size_t>(h) * D + d);
  };
  const bool grouped = p.quant == XAttentionQuant::group;
  // Per token: one scale per vector. Per group: one scale per S tokens (tokens [g*S, g*S + S)
  // that exist), the integers still stored per token.
  auto quantize_all = [&](auto&& at, int tokens, TokenQuant& out) {
    if (!grouped) {
      out.scale.resize(tokens);
      for (int t = 0; t < tokens; ++t)
        quant_row([&](int d) { return at(t, d); }, out.ints, out.scale[t]);
      return;
    }
    out.scale.resize(ceil_div(tokens, S));
    for (int g = 0; g * S < tokens; ++g) {
      const int end = min_of(g * S + S, tokens);
      float amax = 0.0f;
      for (int t = g * S; t < end; ++t)
        for (int d = 0; d < D; ++d) amax = std::max(amax, exact::abs(at(t, d)));
      const exact::Quant qt = exact::quant_of(amax, static_cast<float>(p.levels));
      for (int t = g * S; t < end; ++t)
        for (int d = 0; d < D; ++d) out.ints.push_back(exact::quantize(at(t, d), qt.inv, p.levels));
      out.scale[g] = qt.scale;
    }
  };
  TokenQuant keys, queries;
  quantize_all(key_at, s.kv_len, keys);
  quantize_all(query_at, s.q_len, queries);
  const int gpb = Bk / S;  // key groups per KV block
  std::vector<float> x, mu;
  std::vector<std::uint32_t> sigma, w;
  for (int qb = 0; qb < n_qb; ++qb) {
    const QueryBlockSpan span = query_block_span(s, qb, Bq, Bk);
    const int n_cand = span.last_kb + 1;
    std::vector<std::uint64_t>& acc = out[qb];
    acc.assign(n_cand, 0);
    const int i_end = min_of((qb + 1) * Bq / S, ceil_div(s.q_len, S));
    for (int i = qb * Bq / S; i < i_end; ++i) {
      mu.assign(n_cand, -INFINITY);
      sigma.assign(n_cand, 0);
      x.assign(static_cast<std::size_t>(n_cand) * gpb, -INFINITY);
      for (int j = 0; j < n_cand * gpb; ++j) {
        if (!group_visible(s, i, j, S)) continue;
        float y = 0.0f;
        std::int64_t whole = 0;  // group quantization: the antidiagonal's integer
        for (int t = 0; t < S; ++t) {
          const int r = i * S + S - 1 - t, pos = j * S + t;
          if (r >= s.q_len || pos >= s.kv_len) continue;  // zero terms (+0 leaves y unchanged)
          const int* qi = &queries.ints[static_cast<std::size_t>(r) * D];
          const int* ki = &keys.ints[static_cast<std::size_t>(pos) * D];
          int dot = 0;
          for (int d = 0; d < D; ++d) dot += qi[d] * ki[d];
          if (grouped) {
            whole += dot;
          } else {
            y = exact::add(y, term(static_cast<float>(dot), queries.scale[r], keys.scale[pos]));
          }
        }
        if (grouped) y = group_term(static_cast<int>(whole), queries.scale[i], keys.scale[j]);
        x[j] = exact::mul(y, cx);
      }
      std::uint32_t row_key = exact::kOrderedMinusInf;
      for (int kb = 0; kb < n_cand; ++kb) {
        std::uint32_t k = exact::kOrderedMinusInf;
        for (int g = 0; g < gpb; ++g) k = std::max(k, exact::ordered_key(x[kb * gpb + g]));
        const float mk = exact::from_ordered_key(k);
        mu[kb] = mk == 0.0f ? 0.0f : mk;  // a zero maximum is +0 (the device uses fmaxf)
        if (k != exact::kOrderedMinusInf) {
          for (int g = 0; g < gpb; ++g) {
            const float v = x[kb * gpb + g];
            if (v != -INFINITY) sigma[kb] += exact::fix_exp2(exact::sub(v, mu[kb]));
          }
        }
        row_key = std::max(row_key, exact::ordered_key(mu[kb]));
      }
      const float m_row = exact::from_ordered_key(row_key);
      std::uint64_t z = 0;
      w.assign(n_cand, 0);
      for (int kb = 0; kb < n_cand; ++kb) {
        w[kb] = row_block_weight(mu[kb], sigma[kb], m_row);
        z += w[kb];
      }
      if (z == 0) continue;
      for (int kb = 0; kb < n_cand; ++kb) acc[kb] += (std::uint64_t{w[kb]} << 32) / z;
    }
  }
  return out;
}

/// The selection of one row from its block scores: forced blocks, then the others by
/// (score desc, kb asc) while the mass kept so far is below threshold * total.
inline void select_row(const XAttentionParams& p, const QueryBlockSpan& span,
                       const std::vector<std::uint64_t>& score, int n_kb, std::uint32_t* row) {
  const int n_cand = span.last_kb + 1;
  std::uint64_t total = 0, kept = 0;
  std::vector<std::pair<std::uint64_t, int>> others;
  std::vector<char> on(n_cand, 0);
  for (int kb = 0; kb < n_cand; ++kb) {
    total += score[kb];
    if (forced_on(p, span, kb)) {
      on[kb] = 1;
      kept += score[kb];
    } else {
      others.emplace_back(score[kb], kb);
    }
  }
  std::sort(others.begin(), others.end(), [](const auto& l, const auto& r) {
    return l.first != r.first ? l.first > r.first : l.second < r.second;
  });
  const double req = required_mass(p.threshold, total);
  for (const auto& [mass, kb] : others) {
    if (!(static_cast<double>(kept) < req)) break;
    on[kb] = 1;
    kept += mass;
  }
  for (int w = 0; w < ceil_div(n_kb, 32); ++w) {
    std::uint32_t word = 0;
    for (int bit = 0; bit < 32 && w * 32 + bit < n_cand; ++bit) {
      if (on[w * 32 + bit]) word |= 1u << bit;
    }
    row[w] = word;
  }
}

// ------------------------------------------------------------------------------------------------
// Device kernels.

/// Scratch of the device build, laid out from the config and limits alone.
struct Scratch {
  /// [total_q bound][Hq][D] quantized queries: bf16 integers, or int8 in the first half (the
  /// int8 scorer). Per-token quantization only.
  __nv_bfloat16* qq = nullptr;
  /// Group quantization: the quantized queries as the group scorer's shared-memory tiles,
  /// [max_batch][Hkv][q_tiles][S][kQueryTileRows * 128] int8 (query_tile_offset()), so that a
  /// scorer stage is one bulk copy.
  std::int8_t* qtiles = nullptr;
  /// [total_q bound][Hq] per-token scales (group quantization: a group's at its first token).
  float* qscale = nullptr;
  float* mu = nullptr;             ///< [max_batch][Hq][groups][kv_blocks] per-(group, block) max.
  std::uint32_t* sigma = nullptr;  ///< Same shape: fixed-point sums.
  /// [max_batch][Hq][groups] each reshaped row's maximum logit as an exact::ordered_key(): reset
  /// by the quantization launch, raised by the scoring kernel's tiles (atomicMax), read by the
  /// selection, which so reads each (row, block) cell once instead of twice.
  std::uint32_t* row_key = nullptr;
  /// Group quantization without an XAttentionKeyCache: every key group of the batch, laid out
  /// as a cache of max_batch slots (slot b).
  XAttentionKeyCache keys{};
  int groups = 0;         ///< ceil(max_chunk / stride): reshaped rows per (b, h).
  int q_tiles = 0;        ///< Group quantization: row tiles per (b, kvh), ceil(G * groups / 128).
  int kv_blocks = 0;      ///< ceil(max_kv_len / Bk).
  std::size_t bytes = 0;  ///< Bytes carved from the workspace.

  /// Lays the scratch out in [base, base + bytes) for antidiagonal stride `stride`: query tiles
  /// instead of per-token rows when `grouped` (group quantization), and room for the quantized
  /// key groups when `key_groups` (group quantization without a key cache).
  static Scratch carve(const AttentionConfig& c, const PlanLimits& l, int stride, bool grouped,
                       bool key_groups, void* base, std::size_t bytes) {
    const Geometry g = Geometry::of(c, l);
    Scratch s;
    s.groups = ceil_div(l.max_chunk, stride);
    s.kv_blocks = g.max_kv_blocks;
    const std::size_t rows = static_cast<std::size_t>(l.total_q_bound()) * c.num_q_heads;
    const std::size_t cells =
        static_cast<std::size_t>(l.max_batch) * c.num_q_heads * s.groups * s.kv_blocks;
    WorkspaceCarver carver(base, bytes);
    if (grouped) {
      s.q_tiles = ceil_div(c.gqa_group() * s.groups, kQueryTileRows);
      s.qtiles = carver.take<std::int8_t>(static_cast<std::size_t>(l.max_batch) * c.num_kv_heads *
                                          s.q_tiles * stride * kQueryTileRows * 128);
    } else {
      s.qq = carver.take<__nv_bfloat16>(rows * c.head_dim);
    }
    s.qscale = carver.take<float>(rows);
    s.mu = carver.take<float>(cells);
    s.sigma = carver.take<std::uint32_t>(cells);
    s.row_key = carver.take<std::uint32_t>(
        static_cast<std::size_t>(s.row_count(l.max_batch, c.num_q_heads)));
    if (key_groups) {
      s.keys.num_slots = l.max_batch;
      s.keys.max_groups = XAttentionKeyCache::groups_for(l.max_kv_len, stride);
      s.keys.stride = stride;
      s.keys.keys = carver.take<std::int8_t>(
          XAttentionKeyCache::key_bytes(c, l.max_batch, l.max_kv_len, stride));
      s.keys.scales =
          carver.take<float>(XAttentionKeyCache::scale_count(c, l.max_batch, l.max_kv_len, stride));
    }
    s.bytes = carver.used();
    return s;
  }
  /// Byte offset in qtiles of 16-byte chunk `chunk` of tile row `row` (reshaped row m = tile *
  /// kQueryTileRows + row of the GQA group's rows, m = g * groups + i) at segment t of the row
  /// tile `tile` of (b, kvh), stride S: the layout of XAttentionKeyCache's key tiles.
  COMPACT_HOST_DEVICE std::int64_t query_tile_offset(int b, int kvh, int tile, int t, int row,
                                                     int chunk, int S, int num_kv_heads) const {
    const std::int64_t block = ((std::int64_t{b} * num_kv_heads + kvh) * q_tiles + tile) * S + t;
    return block * (kQueryTileRows * 128) + arch::swizzle128(row, chunk) * 16;
  }
  /// Index of reshaped row i of (sequence b, head h) in row_key.
  COMPACT_HOST_DEVICE std::int64_t row(int b, int h, int i, int num_q_heads) const {
    return (static_cast<std::int64_t>(b) * num_q_heads + h) * groups + i;
  }
  /// Index of cell (sequence b, head h, reshaped row i, KV block kb) in mu and sigma.
  COMPACT_HOST_DEVICE std::int64_t cell(int b, int h, int i, int kb, int num_q_heads) const {
    return row(b, h, i, num_q_heads) * kv_blocks + kb;
  }
  /// Number of entries of row_key.
  COMPACT_HOST_DEVICE std::int64_t row_count(int max_batch, int num_q_heads) const {
    return std::int64_t{max_batch} * num_q_heads * groups;
  }
};

/// Resets every row maximum of the scratch to -inf (a grid-stride loop over the calling grid,
/// whatever its shape): the quantization launches run it, before the scoring kernel raises them.
__device__ __forceinline__ void reset_row_keys(const Scratch& scr, std::int64_t count) {
  const std::int64_t threads =
      std::int64_t{gridDim.x} * gridDim.y * gridDim.z * blockDim.x * blockDim.y * blockDim.z;
  const std::int64_t block =
      (std::int64_t{blockIdx.z} * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
  const std::int64_t thread = block * blockDim.x * blockDim.y * blockDim.z +
                              (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
  for (std::int64_t k = thread; k < count; k += threads) scr.row_key[k] = exact::kOrderedMinusInf;
}

/// Per-(token, head) quantization of the queries to `levels`: one group of D/8 lanes per row,
/// written as bf16 integers or (kInt8, levels <= 127) as int8 into the first half of scr.qq.
/// Also resets the `row_keys` row maxima of the scratch for the scoring kernel.
template <class T, int kD, bool kInt8>
__global__ void __launch_bounds__(256)
    quantize_queries_kernel(AttentionConfig c, ChunkBatch batch, Scratch scr, float levels,
                            std::int64_t row_keys) {
  constexpr int kChunks = kD / 8;
  reset_row_keys(scr, row_keys);
  const long long row = (static_cast<long long>(blockIdx.x) * 256 + threadIdx.x) / kChunks;
  const int ch = threadIdx.x % kChunks;
  const int token = static_cast<int>(row / c.num_q_heads),
            h = static_cast<int>(row % c.num_q_heads);
  const bool valid = token < batch.cu_seqlens_q[batch.num_seqs];  // total_q may be a bound
  const std::int64_t q_stride =
      batch.q_stride != 0 ? batch.q_stride : std::int64_t{c.num_q_heads} * kD;
  float x[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  if (valid) {
    arch::widen8<T>(
        *reinterpret_cast<const uint4*>(static_cast<const T*>(batch.q) + token * q_stride +
                                        static_cast<std::int64_t>(h) * kD + ch * 8),
        x);
  }
  float amax = 0.0f;
#pragma unroll
  for (int i = 0; i < 8; ++i) amax = fmaxf(amax, exact::abs(x[i]));
#pragma unroll
  for (int o = kChunks / 2; o > 0; o >>= 1)
    amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
  if (!valid) return;
  const exact::Quant qt = exact::quant_of(amax, levels);
  if constexpr (kInt8) {
    *reinterpret_cast<uint2*>(reinterpret_cast<std::int8_t*>(scr.qq) + row * kD + ch * 8) =
        exact::quantize8_s8(x, qt.inv);
  } else {
    *reinterpret_cast<uint4*>(scr.qq + row * kD + ch * 8) = exact::quantize8_bf16(x, qt.inv);
  }
  if (ch == 0) scr.qscale[row] = qt.scale;
}

/// Warps per CTA of the group quantization kernels (one warp per group).
inline constexpr int kQuantWarps = 8;

/// Absmax over a warp's share of `n` 16-byte chunks (`load(k, x)` widens chunk k into x),
/// reduced over the warp.
template <class Load>
__device__ __forceinline__ float warp_absmax(int n, Load&& load) {
  float amax = 0.0f;
  for (int k = threadIdx.x % 32; k < n; k += 32) {
    float x[8];
    load(k, x);
#pragma unroll
    for (int i = 0; i < 8; ++i) amax = fmaxf(amax, exact::abs(x[i]));
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
  return amax;
}

/// A warp's share of `total` 8-element chunks quantized to int8 with 1 / scale `inv` (`load(k,
/// x)` widens chunk k; chunks from `n` on are zeros), each handed to `store(k, bits)`.
template <class Load, class Store>
__device__ __forceinline__ void warp_quantize_chunks(int n, int total, float inv, Load&& load,
                                                     Store&& store) {
  for (int k = threadIdx.x % 32; k < total; k += 32) {
    uint2 q = make_uint2(0u, 0u);
    if (k < n) {
      float x[8];
      load(k, x);
      q = exact::quantize8_s8(x, inv);
    }
    store(k, q);
  }
}

/// Group quantization of the queries to `levels` (int8, into the scorer's query tiles
/// scr.qtiles): one warp per (reshaped row i, head h) of sequence blockIdx.y, one scale for its
/// S tokens, at the group's first token in scr.qscale. Row i reads token i*S + S-1-t at segment
/// t; the segments past the chunk's last token are written as zeros. Tile rows that hold no
/// reshaped row of the sequence are left as they are: their accumulators are never read. Also
/// resets the `row_keys` row maxima of the scratch for the scoring kernel.
template <class T, int kD>
__global__ void __launch_bounds__(kQuantWarps * 32)
    quantize_query_groups_kernel(AttentionConfig c, ChunkBatch batch, Scratch scr, int S,
                                 float levels, std::int64_t row_keys) {
  constexpr int kChunks = kD / 8;
  reset_row_keys(scr, row_keys);
  const int b = blockIdx.y;
  if (b >= batch.num_seqs) return;
  const SeqInfo s = seq_info(batch, b);
  const long long w = static_cast<long long>(blockIdx.x) * kQuantWarps + threadIdx.x / 32;
  const int i = static_cast<int>(w / c.num_q_heads), h = static_cast<int>(w % c.num_q_heads);
  if (i * S >= s.q_len) return;  // the whole warp
  const std::int64_t q_stride =
      batch.q_stride != 0 ? batch.q_stride : std::int64_t{c.num_q_heads} * kD;
  const int first = s.q_begin + i * S;
  const int n = min_of(S, s.q_len - i * S) * kChunks;  // chunks of the group's tokens
  auto load = [&](int k, float(&x)[8]) {
    arch::widen8<T>(*reinterpret_cast<const uint4*>(static_cast<const T*>(batch.q) +
                                                    (first + k / kChunks) * q_stride +
                                                    std::int64_t{h} * kD + (k % kChunks) * 8),
                    x);
  };
  const exact::Quant qt = exact::quant_of(warp_absmax(n, load), levels);
  const int G = c.gqa_group(), kvh = h / G;
  const int m = (h % G) * scr.groups + i;  // the row among (b, kvh)'s
  const int tile = m / kQueryTileRows, row = m % kQueryTileRows;
  warp_quantize_chunks(n, S * kChunks, qt.inv, load, [&](int k, uint2 q) {
    const int t = S - 1 - k / kChunks, piece = k % kChunks;  // 8-byte pieces of a 128-byte row
    *reinterpret_cast<uint2*>(
        scr.qtiles + scr.query_tile_offset(b, kvh, tile, t, row, piece / 2, S, c.num_kv_heads) +
        (piece % 2) * 8) = q;
  });
  if (threadIdx.x % 32 == 0) scr.qscale[std::int64_t{first} * c.num_q_heads + h] = qt.scale;
}

/// Group quantization of the keys into `kc`: one warp per group j of (sequence b, KV head kvh) =
/// blockIdx.y, positions [j*S, j*S + S) from the pages (past the sequence: 0), one scale. Groups
/// from the one holding the chunk's first position (the chunk's new keys and the partial group
/// before them) or, when `whole_sequence`, from 0; to ceil(kv_len / S).
template <class T, int kD>
__global__ void __launch_bounds__(kQuantWarps * 32)
    quantize_key_groups_kernel(AttentionConfig c, ChunkBatch batch, PagedKV cache,
                               XAttentionKeyCache kc, int S, float levels, bool whole_sequence) {
  constexpr int kChunks = kD / 8;
  const int kvh = blockIdx.y % c.num_kv_heads, b = blockIdx.y / c.num_kv_heads;
  if (b >= batch.num_seqs) return;
  const SeqInfo s = seq_info(batch, b);
  if (!whole_sequence && s.q_len <= 0) return;
  const int j = (whole_sequence ? 0 : s.pos() / S) + static_cast<int>(blockIdx.x) * kQuantWarps +
                static_cast<int>(threadIdx.x / 32);
  if (j * S >= s.kv_len) return;  // the whole warp
  const T* pool = static_cast<const T*>(cache.k_pages);
  const int n = min_of(S, s.kv_len - j * S) * kChunks;  // chunks of the group's keys
  auto load = [&](int k, float(&x)[8]) {
    arch::widen8<T>(*reinterpret_cast<const uint4*>(
                        pool + cache.offset(b, j * S + k / kChunks, kvh) + (k % kChunks) * 8),
                    x);
  };
  const exact::Quant qt = exact::quant_of(warp_absmax(n, load), levels);
  static_assert(kD == XAttentionKeyCache::kD, "the key cache's tiles hold 128-byte rows");
  const std::int64_t at = kc.index(kc.slot(b), kvh, j, c.num_kv_heads);
  warp_quantize_chunks(n, S * kChunks, qt.inv, load, [&](int k, uint2 q) {
    const int piece = k % kChunks;  // 8-byte pieces of position k / kChunks
    *reinterpret_cast<uint2*>(
        kc.keys + XAttentionKeyCache::key_offset(at, k / kChunks, piece / 2, S) + (piece % 2) * 8) =
        q;
  });
  if (threadIdx.x % 32 == 0) kc.scales[at] = qt.scale;
}

/// Copies 4 bytes from global `src` to shared `dst` asynchronously (zero-filled when `valid` is
/// false; `src` must then still be a mapped address).
__device__ __forceinline__ void cp_async_4(void* dst, const void* src, bool valid) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(arch::smem_addr(dst)),
               "l"(src), "r"(valid ? 4 : 0));
}

/// Compile-time geometry of the scoring kernel: a kM-row x 128-group tile, kWarps warps stacked
/// along the rows (16 * kRowAtoms rows x 128 groups each, 64 * kRowAtoms fp32 logit
/// accumulators per thread). A stage holds the query slice (A, quantized: kQuantBytes per
/// element), the key slice as gathered (B, quantized in place for bf16 integers) and, for int8
/// operands, the quantized key slice apart (Bq). kBaseAlign above 128 (the alignment of dynamic
/// shared memory) adds that much slack for the kernel to align the stages.
template <class T, int kD_, int kWarps_, int kRowAtoms_, int kQuantBytes_ = 2, int kBaseAlign_ = 16>
struct ScoreTraits {
  using Element = T;                                       ///< Query element type (bf16 or fp16).
  static constexpr bool kWgmma = false;                    ///< mma.sync from register fragments.
  static constexpr int kD = kD_;                           ///< Head dim.
  static constexpr int kWarps = kWarps_;                   ///< Warps per CTA.
  static constexpr int kRowAtoms = kRowAtoms_;             ///< m16 row atoms per warp.
  static constexpr int kWarpRows = 16 * kRowAtoms;         ///< Reshaped rows per warp.
  static constexpr int kThreads = kWarps * 32;             ///< Threads per CTA.
  static constexpr int kM = kWarps * kWarpRows;            ///< Reshaped rows per tile.
  static constexpr int kN = kTileGroups;                   ///< Key groups per tile.
  static constexpr int kNAtoms = kN / 8;                   ///< n8 column chunks of a tile.
  static constexpr int kChunks = kD / 8;                   ///< 16-byte chunks per gathered row.
  static constexpr int kKSteps = kD / 16;                  ///< k16 steps over the head dim.
  static constexpr bool kInt8 = kQuantBytes_ == 1;         ///< int8 operands (Bq apart), else bf16.
  static constexpr int kQChunks = kD * kQuantBytes_ / 16;  ///< 16-byte chunks per quantized row.
  static constexpr int kABytes = kM * kD * kQuantBytes_;   ///< Query (A) tile.
  static constexpr int kBBytes = kN * kD * 2;              ///< Key (B) tile as gathered.
  static constexpr int kBqBytes = kInt8 ? kN * kD : 0;     ///< Quantized key tile (int8 only).
  static constexpr int kStageBytes = kABytes + kBBytes + kBqBytes;  ///< One stage.
  static constexpr int kOffAScale = 2 * kStageBytes;                ///< [2][kM] f32
  static constexpr int kOffBScale = kOffAScale + 2 * kM * 4;        ///< [2][kN] f32
  static constexpr int kOffKBase = kOffBScale + 2 * kN * 4;         ///< [kN] i64: group's first key
  static constexpr int kOffQRow = kOffKBase + kN * 8;  ///< [kM] i32: token row at t = 0
  static constexpr int kOffQMin = kOffQRow + kM * 4;   ///< [kM] i32: first valid segment
  static constexpr int kBaseAlign = kBaseAlign_;       ///< Alignment of the stage buffers.
  /// Dynamic shared memory per CTA, with the alignment slack.
  static constexpr int kSmemBytes = kOffQMin + kM * 4 + (kBaseAlign > 128 ? kBaseAlign : 0);
  static constexpr int kKeyLanes = kChunks;  ///< Lanes that quantize one key (a chunk each).
  static_assert(kChunks % 8 == 0, "the swizzle permutes groups of 8 chunks");
  static_assert(kN == 128, "the block reduction assumes 16 n8 atoms per warp");
  static_assert(kQuantBytes_ == 1 || kQuantBytes_ == 2, "bf16 integers (2) or int8 (1)");
  /// 16-byte chunk index of (row, chunk) in a row-major tile of any row count: chunk ^ (row % 8)
  /// keeps the eight rows an ldmatrix reads in distinct banks.
  template <int kRows>
  static __device__ __forceinline__ int swizzle(int row, int chunk) {
    return row * kChunks + (chunk ^ (row & 7));
  }
};

/// Geometry of the sm90a scoring kernel: the same 256-row x 128-group tile and arithmetic as
/// ScoreTraits<T, D, 16, 1>, but each warpgroup's 64 rows multiply with wgmma straight from
/// shared memory (no A fragments or B ldmatrix in registers, one instruction per k16 step
/// instead of 16 mma.sync + 8 ldmatrix a warp), the tiles in the 128-byte-swizzle column-block
/// layout its descriptors address (the paged-flash kernel's), and four lanes per key quantizing
/// a quarter of it each (the two correctly rounded divisions of a key's scale run on 4 lanes,
/// not 16). kQuantBytes = 1 (levels <= 127, D = 128): int8 operands and m64n64k32 s8 wgmma, half
/// the tensor work and the query bytes; the keys are quantized from their gathered tile into Bq.
template <class T, int kD_, int kQuantBytes_ = 2>
struct ScoreTraitsSm90 : ScoreTraits<T, kD_, 16, 1, kQuantBytes_, 1024> {
  using Base = ScoreTraits<T, kD_, 16, 1, kQuantBytes_, 1024>;
  static constexpr bool kWgmma = true;  ///< wgmma from shared memory.
  static constexpr int kKeyLanes = 4;   ///< Lanes that quantize one key.
  static_assert(Base::kABytes % 1024 == 0 && Base::kBBytes % 1024 == 0 &&
                    Base::kBqBytes % 1024 == 0,
                "stage buffers must stay on swizzle atoms (1024 bytes)");
  static_assert(Base::kChunks % kKeyLanes == 0, "each lane quantizes whole chunks");
  static_assert(!Base::kInt8 || kD_ == 128, "int8 operands fill one 128-byte swizzle row: D = 128");
  /// 16-byte chunk index of (row, chunk) in a tile of kRows rows: column blocks of [kRows] rows
  /// of 128 bytes (8 chunks, whatever the element size), chunk ^ (row % 8) within each (as
  /// KernelTraits).
  template <int kRows>
  static __device__ __forceinline__ int swizzle(int row, int chunk) {
    return arch::swizzle128(row, chunk & 7, (chunk >> 3) * (kRows * 8));
  }
};

/// Parameters of the scoring kernel.
struct ScoreParams {
  AttentionConfig c;    ///< The attention config.
  ChunkBatch batch;     ///< The chunk batch being masked.
  PagedKV cache;        ///< The paged cache the keys are gathered from.
  Scratch scr;          ///< Quantized queries and score scratch.
  int stride = 8;       ///< Antidiagonal stride S.
  int m_tiles = 0;      ///< Row tiles per (b, kvh): ceil(G * groups / kM).
  int n_tiles = 0;      ///< Group tiles of the limits' longest sequence.
  float cx = 0.0f;      ///< softmax scale * log2(e) / stride.
  float levels = 0.0f;  ///< Quantization levels L of the keys (params.levels).
  /// Group quantization: the quantized key groups (the caller's cache or the scratch's).
  XAttentionKeyCache keys{};
};

/// The (row tile, group tile) of (b, kvh) a scoring CTA owns.
struct ScoreTile {
  SeqInfo s{};  ///< Sequence b's chunk.
  int b = 0;    ///< Sequence.
  int kvh = 0;  ///< KV head.
  int m0 = 0;   ///< First tile row: rows m are (local head m / groups, reshaped row m % groups).
  int j0 = 0;   ///< First key group.
  int R = 0;    ///< Reshaped rows of the chunk: ceil(q_len / S).
};

/// The tile of this CTA (blockIdx.x: row tiles side by side within a group tile, so that they
/// share its keys in L2; blockIdx.y: (b, kvh)); false when it holds no real row or key.
template <class Tr>
__device__ __forceinline__ bool score_tile(const ScoreParams& p, ScoreTile& tile) {
  const int S = p.stride, G = p.c.gqa_group();
  const int m_tile = static_cast<int>(blockIdx.x % p.m_tiles);
  const int n_tile = static_cast<int>(blockIdx.x / p.m_tiles);
  tile.kvh = blockIdx.y % p.c.num_kv_heads;
  tile.b = blockIdx.y / p.c.num_kv_heads;
  if (tile.b >= p.batch.num_seqs) return false;
  tile.s = seq_info(p.batch, tile.b);
  if (tile.s.q_len <= 0) return false;
  tile.R = ceil_div(tile.s.q_len, S);
  const int Rmax = p.scr.groups;
  tile.m0 = m_tile * Tr::kM;
  tile.j0 = n_tile * Tr::kN;
  if (tile.j0 * S > tile.s.kv_len - 1) return false;  // no key of the tile exists
  bool any = false;                                   // does the tile hold a real row?
  for (int g = tile.m0 / Rmax; g <= (tile.m0 + Tr::kM - 1) / Rmax && g < G; ++g) {
    const int lo = max_of(tile.m0 - g * Rmax, 0);
    any = any || lo < tile.R;
  }
  return any;
}

/// Raises the row maximum of scratch row `row` to the largest of this thread's `mu` (the row's
/// block maxima, -inf where nothing is visible, never -0), over its quad when `over_quad` (the
/// quad's lanes hold different blocks): lane 0 of the quad issues one atomicMax of the ordered
/// key, so the selection finds each row's maximum without reading the row.
template <int kN>
__device__ __forceinline__ void raise_row_key(const ScoreParams& p, bool row_ok, std::int64_t row,
                                              const float (&mu)[kN], bool over_quad) {
  float m = mu[0];
#pragma unroll
  for (int n = 1; n < kN; ++n) m = fmaxf(m, mu[n]);
  if (over_quad) {
    m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 1));
    m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 2));
  }
  const std::uint32_t key = exact::ordered_key(m == 0.0f ? 0.0f : m);  // +0, as on the host
  if (row_ok && (threadIdx.x & 3) == 0 && key != exact::kOrderedMinusInf)
    atomicMax(p.scr.row_key + row, key);
}

/// Epilogue of a scoring tile: logits x = y * cx (-inf where the group is not visible to the
/// row), then per (row, KV block) mu and sigma over the block's gpb groups, written to the
/// scratch: a thread's two columns of an atom, its quad (gpb >= 4) and neighbouring atoms
/// (gpb >= 16). y holds the tile's logits in the mma.sync C layout (warps stacked along rows).
template <class Tr, int kGpb = 0>
__device__ __forceinline__ void write_block_stats(const ScoreParams& p, const ScoreTile& tile,
                                                  float (&y)[Tr::kRowAtoms][Tr::kNAtoms][4]) {
  const AttentionConfig& c = p.c;
  const SeqInfo& s = tile.s;
  const int S = p.stride, G = c.gqa_group(), Rmax = p.scr.groups;
  const int b = tile.b, kvh = tile.kvh, j0 = tile.j0;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int q4 = lane & 3, r8 = lane >> 2;
  const int gpb = kGpb != 0 ? kGpb : c.block_k / S;
  // gpb and the block / lane counts below are powers of two (config.block_k and S are): shifts
  // and masks, not the integer divisions by a runtime value the compiler would emit (~20
  // instructions each, 96 of them a thread on the 16 x 128 tile).
  const int gpb_shift = __ffs(gpb) - 1;
  const int n_kb = ceil_div(s.kv_len, c.block_k);
  const bool all_visible =
      (j0 + Tr::kN - 1) * S <= s.pos() + min_of(S - 1, s.q_len - 1);  // row i = 0 sees them all
#pragma unroll
  for (int a = 0; a < Tr::kRowAtoms; ++a) {
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      const int m = tile.m0 + warp * Tr::kWarpRows + a * 16 + r8 + 8 * hh;
      const int g = m / Rmax, i = m % Rmax;
      const bool row_ok = g < G && i < tile.R;
      const int last_pos = group_last_pos(s, i, S);
      const std::int64_t row = p.scr.row(b, kvh * G + g, i, c.num_q_heads);
      const std::int64_t row_cell = row * p.scr.kv_blocks;
      float mu[Tr::kNAtoms];
#pragma unroll
      for (int n = 0; n < Tr::kNAtoms; ++n) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          float x = exact::mul(y[a][n][2 * hh + e], p.cx);
          if (!all_visible) {
            const int j = j0 + n * 8 + 2 * q4 + e;
            x = j * S <= last_pos ? x : -INFINITY;
          }
          y[a][n][2 * hh + e] = x;
        }
        mu[n] = fmaxf(y[a][n][2 * hh], y[a][n][2 * hh + 1]);  // gpb >= 2: one block
      }
      if (gpb == 1) {
        // Every group is its own block.
#pragma unroll
        for (int n = 0; n < Tr::kNAtoms; ++n) {
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const float x = y[a][n][2 * hh + e];
            const float mz = x == 0.0f ? 0.0f : x;
            const int kb = j0 + n * 8 + 2 * q4 + e;
            if (row_ok && kb < n_kb) {
              p.scr.mu[row_cell + kb] = mz;
              p.scr.sigma[row_cell + kb] = exact::fix_exp2_nonpos(__fsub_rn(x, mz));
            }
          }
        }
        raise_row_key(p, row_ok, row, mu, true);
        continue;
      }
      // A block's atoms (gpb >= 16) are combined in the thread first, so that the quad shuffles
      // run once a block (on its first atom) rather than once an atom; the block's maximum is
      // then copied back to its other atoms for their exponentials. Maxima and fixed-point sums
      // do not depend on the order (a zero maximum is made +0 after).
      const int atom_mask = gpb >= 8 ? gpb / 8 - 1 : 0;  // atoms per block - 1
      const int lane_mask = gpb >= 8 ? 3 : gpb / 2 - 1;  // quad lanes per block - 1
      if (gpb >= 16) {
#pragma unroll
        for (int n = 0; n < Tr::kNAtoms; n += 2) mu[n] = fmaxf(mu[n], mu[n + 1]);
      }
      if (gpb >= 32) {
#pragma unroll
        for (int n = 0; n < Tr::kNAtoms; n += 4) mu[n] = fmaxf(mu[n], mu[n + 2]);
      }
#pragma unroll
      for (int n = 0; n < Tr::kNAtoms; ++n) {
        if ((n & atom_mask) != 0) continue;
        if (gpb >= 4) mu[n] = fmaxf(mu[n], __shfl_xor_sync(0xffffffffu, mu[n], 1));
        if (gpb >= 8) mu[n] = fmaxf(mu[n], __shfl_xor_sync(0xffffffffu, mu[n], 2));
        mu[n] = mu[n] == 0.0f ? 0.0f : mu[n];  // a zero maximum is +0, as on the host
      }
#pragma unroll
      for (int n = 0; n < Tr::kNAtoms; ++n) {
        if (gpb >= 32 && n % 4 != 0) {
          mu[n] = mu[n - n % 4];
        } else if (gpb >= 16 && n % 2 != 0) {
          mu[n] = mu[n - 1];
        }
      }
      raise_row_key(p, row_ok, row, mu, gpb < 8);
      std::uint32_t sg[Tr::kNAtoms];
#pragma unroll
      for (int n = 0; n < Tr::kNAtoms; ++n) {
        sg[n] = exact::fix_exp2_nonpos(__fsub_rn(y[a][n][2 * hh], mu[n])) +
                exact::fix_exp2_nonpos(__fsub_rn(y[a][n][2 * hh + 1], mu[n]));
      }
      if (gpb >= 16) {
#pragma unroll
        for (int n = 0; n < Tr::kNAtoms; n += 2) sg[n] += sg[n + 1];
      }
      if (gpb >= 32) {
#pragma unroll
        for (int n = 0; n < Tr::kNAtoms; n += 4) sg[n] += sg[n + 2];
      }
#pragma unroll
      for (int n = 0; n < Tr::kNAtoms; ++n) {
        if ((n & atom_mask) != 0) continue;
        if (gpb >= 4) sg[n] += __shfl_xor_sync(0xffffffffu, sg[n], 1);
        if (gpb >= 8) sg[n] += __shfl_xor_sync(0xffffffffu, sg[n], 2);
      }
      // The block of atom n, column 2 q4: written by the lane and atom that start it.
#pragma unroll
      for (int n = 0; n < Tr::kNAtoms; ++n) {
        const int kb = (j0 + n * 8 + 2 * q4) >> gpb_shift;
        if (row_ok && kb < n_kb && (n & atom_mask) == 0 && (q4 & lane_mask) == 0) {
          p.scr.mu[row_cell + kb] = mu[n];
          p.scr.sigma[row_cell + kb] = sg[n];
        }
      }
    }
  }
}

/// Logits of one (row tile, group tile) of (b, kvh): rows are (local head g, reshaped row i) =
/// (m / groups, m % groups); y = sum_t (I_t * a_t) * b_t in order t = 0..S-1, x = y * cx; then
/// per (row, KV block) the maximum mu and the fixed-point sum sigma of 2^(x - mu) over the
/// block's groups.
///
/// Per segment t (double-buffered cp.async of the query slice from the quantized scratch and the
/// key slice straight from the pages, keys quantized in shared memory) each warp keeps its
/// rows' query fragments for the whole of D in registers and walks the 128 groups 16 at a time:
/// 8 k-steps of exact integer MMAs into a small accumulator, then y += (I * a) * b. The host adds
/// +0 to I first; a zero term's sign never changes y (y starts at +0 and is never -0).
template <class Tr>
__global__ void __launch_bounds__(Tr::kThreads, 1) score_kernel(ScoreParams p) {
  static_assert(Tr::kWgmma || !Tr::kInt8, "int8 operands need the wgmma kernel");
  using T = typename Tr::Element;
  using bf16 = __nv_bfloat16;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  unsigned char* smem = smem_raw;
  if constexpr (Tr::kBaseAlign > 128) {
    const unsigned misalign = arch::smem_addr(smem_raw) % Tr::kBaseAlign;
    smem += misalign == 0 ? 0 : Tr::kBaseAlign - misalign;
  }
  // [2][A: kM x D quantized | B: kN x D as gathered (quantized in place) | Bq: int8 keys]
  auto stage_a = [&](int stage) { return smem + stage * Tr::kStageBytes; };
  auto stage_b = [&](int stage) {
    return reinterpret_cast<bf16*>(smem + stage * Tr::kStageBytes + Tr::kABytes);
  };
  auto stage_bq = [&](int stage) {
    return smem + stage * Tr::kStageBytes + Tr::kABytes + Tr::kBBytes;
  };
  float* sAScale = reinterpret_cast<float*>(smem + Tr::kOffAScale);
  float* sBScale = reinterpret_cast<float*>(smem + Tr::kOffBScale);
  std::int64_t* sKBase = reinterpret_cast<std::int64_t*>(smem + Tr::kOffKBase);
  int* sQRow = reinterpret_cast<int*>(smem + Tr::kOffQRow);
  int* sQMin = reinterpret_cast<int*>(smem + Tr::kOffQMin);

  // The tile as score_tile() finds it, and below the query rows' token table and their slices'
  // copies, kept inline: through score_tile() ptxas spilled 24 more bytes here, and through a
  // shared slice-copy helper the sm90 kernels compiled to other machine code than the one
  // verified and timed on the GPU (CUDA 13.0, sm_90a).
  const AttentionConfig& c = p.c;
  const int S = p.stride, G = c.gqa_group();
  const int m_tile = static_cast<int>(blockIdx.x % p.m_tiles);  // row tiles of a group tile
  const int n_tile = static_cast<int>(blockIdx.x / p.m_tiles);  // run side by side (K reuse)
  const int kvh = blockIdx.y % c.num_kv_heads;
  const int b = blockIdx.y / c.num_kv_heads;
  if (b >= p.batch.num_seqs) return;
  const SeqInfo s = seq_info(p.batch, b);
  if (s.q_len <= 0) return;
  const int R = ceil_div(s.q_len, S);  // reshaped rows of this chunk
  const int Rmax = p.scr.groups;
  const int m0 = m_tile * Tr::kM;
  const int j0 = n_tile * Tr::kN;
  if (j0 * S > s.kv_len - 1) return;  // no key of the tile exists
  {
    bool any = false;  // does the tile hold a real row?
    for (int g = m0 / Rmax; g <= (m0 + Tr::kM - 1) / Rmax && g < G; ++g) {
      const int lo = max_of(m0 - g * Rmax, 0);
      any = any || lo < R;
    }
    if (!any) return;
  }
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int q4 = lane & 3, r8 = lane >> 2;
  const T* pool = static_cast<const T*>(p.cache.k_pages);

  // Per-CTA address tables. Query row r = (g, i) reads chunk row i*S + S-1-t of head kvh*G + g at
  // segment t: packed row id sQRow[r] - t * Hq, valid for t >= sQMin[r] (S: never). Key group jj
  // reads positions (j0 + jj) * S + t: when a group never straddles a page (page_size >= S), its
  // element offset is sKBase[jj] + t * Hkv * D (-1: the group starts past the sequence).
  const int ps_shift = __ffs(p.cache.page_size) - 1;  // page sizes are powers of two
  const bool group_in_page = p.cache.page_size >= S;
  const int hq = c.num_q_heads;
  const std::int64_t key_step = std::int64_t{c.num_kv_heads} * Tr::kD;  // one token
  constexpr int kPer = Tr::kChunks / Tr::kKeyLanes;  // chunks of a key per quantizing lane
  static_assert(Tr::kN * Tr::kKeyLanes % Tr::kThreads == 0, "whole warps in the shuffles");
  for (int r = tid; r < Tr::kM; r += Tr::kThreads) {
    const int m = m0 + r, g = m / Rmax, i = m % Rmax;
    const bool ok = g < G && i < R;
    sQRow[r] = ok ? (s.q_begin + i * S + S - 1) * hq + kvh * G + g : 0;
    sQMin[r] = ok ? max_of(0, i * S + S - s.q_len) : S;
  }
  for (int jj = tid; jj < Tr::kN; jj += Tr::kThreads) {
    const int pos = (j0 + jj) * S;
    std::int64_t base = -1;
    if (group_in_page && pos < s.kv_len) {
      const int page = p.cache.page_table[static_cast<std::int64_t>(b) * p.cache.page_table_stride +
                                          (pos >> ps_shift)];
      base = page * p.cache.resolved_page_stride() +
             ((pos & (p.cache.page_size - 1)) * c.num_kv_heads + kvh) * std::int64_t{Tr::kD};
    }
    sKBase[jj] = base;
  }
  __syncthreads();

  auto issue = [&](int t, int stage) {
    unsigned char* sA = stage_a(stage);
    bf16* sB = stage_b(stage);
    // Query slice (16-byte chunk ch of row r; the chunk is the same for all of a thread's rows).
    const auto* qq = reinterpret_cast<const unsigned char*>(p.scr.qq);
    for (int k = tid; k < Tr::kM * Tr::kQChunks; k += Tr::kThreads) {
      const int r = k / Tr::kQChunks, ch = k % Tr::kQChunks;
      const bool ok = t >= sQMin[r];
      const std::int64_t row = static_cast<std::int64_t>(sQRow[r] - t * hq);
      arch::cp_async_16(sA + Tr::template swizzle<Tr::kM>(r, ch) * 16,
                        ok ? qq + (row * Tr::kQChunks + ch) * 16 : qq, ok);
    }
    for (int r = tid; r < Tr::kM; r += Tr::kThreads) {
      const bool ok = t >= sQMin[r];
      cp_async_4(sAScale + stage * Tr::kM + r,
                 ok ? p.scr.qscale + (sQRow[r] - t * hq) : p.scr.qscale, ok);
    }
    // Key slice: group j0 + jj, segment t -> key position (j0 + jj) * S + t, straight from pages.
    if constexpr (kPer == 1) {
      // One chunk a thread (mma.sync kernel). The general loop below maps the same chunks to the
      // same threads, but compiles to other machine code for this kernel; this loop is the one
      // verified and timed on the GPU.
      for (int k = tid; k < Tr::kN * Tr::kChunks; k += Tr::kThreads) {
        const int jj = k / Tr::kChunks, ch = k % Tr::kChunks;
        const int pos = (j0 + jj) * S + t;
        const bool ok = pos < s.kv_len;
        const T* src = pool;  // the page table is read only for keys that exist
        if (ok) {
          src = pool + ch * 8 +
                (group_in_page ? sKBase[jj] + t * key_step : p.cache.offset(b, pos, kvh));
        }
        arch::cp_async_16(sB + Tr::template swizzle<Tr::kN>(jj, ch) * 8, src, ok);
      }
    } else {
      // Several chunks a key lane (wgmma): each thread copies the kPer chunks it quantizes
      // (quantize_keys()), so that after its own cp.async wait it may quantize them unsynchronized.
      for (int k = tid; k < Tr::kN * Tr::kKeyLanes; k += Tr::kThreads) {
        const int jj = k / Tr::kKeyLanes, part = k % Tr::kKeyLanes;
        const int pos = (j0 + jj) * S + t;
        const bool ok = pos < s.kv_len;
        const T* src = pool;  // the page table is read only for keys that exist
        if (ok) src += group_in_page ? sKBase[jj] + t * key_step : p.cache.offset(b, pos, kvh);
#pragma unroll
        for (int c = 0; c < kPer; ++c) {
          const int ch = part * kPer + c;
          arch::cp_async_16(sB + Tr::template swizzle<Tr::kN>(jj, ch) * 8, ok ? src + ch * 8 : pool,
                            ok);
        }
      }
    }
    arch::cp_async_commit();
  };

  // Quantizes the key slice of `stage` in place (int8: into Bq): key jj by kKeyLanes lanes of
  // kPer chunks each (the chunks each thread copied), the chunks read once for the absmax and
  // again to quantize.
  auto quantize_keys = [&](int stage) {
    bf16* sB = stage_b(stage);
    for (int k = tid; k < Tr::kN * Tr::kKeyLanes; k += Tr::kThreads) {
      const int jj = k / Tr::kKeyLanes, part = k % Tr::kKeyLanes;
      // One chunk a lane (mma.sync kernel): its values stay in registers. Several (wgmma): each
      // chunk is read again to quantize, so only 8 values live next to the wgmma's accumulators.
      float x[kPer == 1 ? 8 : 1];
      float amax = 0.0f;
#pragma unroll
      for (int c = 0; c < kPer; ++c) {
        float v[8];
        arch::widen8<T>(*reinterpret_cast<const uint4*>(
                            sB + Tr::template swizzle<Tr::kN>(jj, part * kPer + c) * 8),
                        v);
#pragma unroll
        for (int i = 0; i < 8; ++i) amax = fmaxf(amax, exact::abs(v[i]));
        if constexpr (kPer == 1) {
#pragma unroll
          for (int i = 0; i < 8; ++i) x[i] = v[i];
        }
      }
#pragma unroll
      for (int o = Tr::kKeyLanes / 2; o > 0; o >>= 1)
        amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
      const exact::Quant qt = exact::quant_of(amax, p.levels);
      if constexpr (Tr::kInt8) {
        // Two gathered chunks (16 values) make one 16-byte int8 chunk of Bq.
        static_assert(kPer % 2 == 0, "int8 chunks pair the gathered ones");
#pragma unroll
        for (int c = 0; c < kPer; c += 2) {
          uint2 q[2];
#pragma unroll
          for (int h2 = 0; h2 < 2; ++h2) {
            float v[8];
            arch::widen8<T>(*reinterpret_cast<const uint4*>(
                                sB + Tr::template swizzle<Tr::kN>(jj, part * kPer + c + h2) * 8),
                            v);
            q[h2] = exact::quantize8_s8(v, qt.inv);
          }
          *reinterpret_cast<uint4*>(stage_bq(stage) +
                                    Tr::template swizzle<Tr::kN>(jj, (part * kPer + c) / 2) * 16) =
              make_uint4(q[0].x, q[0].y, q[1].x, q[1].y);
        }
      } else {
#pragma unroll
        for (int c = 0; c < kPer; ++c) {
          uint4* at =
              reinterpret_cast<uint4*>(sB + Tr::template swizzle<Tr::kN>(jj, part * kPer + c) * 8);
          if constexpr (kPer == 1) {
            *at = exact::quantize8_bf16(x, qt.inv);
          } else {
            float v[8];
            arch::widen8<T>(*at, v);
            *at = exact::quantize8_bf16(v, qt.inv);
          }
        }
      }
      if (part == 0) sBScale[stage * Tr::kN + jj] = qt.scale;
    }
  };

  float y[Tr::kRowAtoms][Tr::kNAtoms][4];
#pragma unroll
  for (int a = 0; a < Tr::kRowAtoms; ++a)
#pragma unroll
    for (int n = 0; n < Tr::kNAtoms; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) y[a][n][e] = 0.0f;

  if constexpr (Tr::kWgmma) {
    // Slice t's keys are quantized during iteration t - 1, while that iteration's first wgmma
    // runs (each thread quantizes the chunks it copied, after its own wait), so one barrier per
    // segment publishes slice t and frees slice t - 1's buffers.
    issue(0, 0);
    arch::cp_async_wait<0>();
    quantize_keys(0);
    if (S > 1) issue(1, 1);
    arch::fence_proxy_async_smem();  // generic writes (cp.async, quantization) -> wgmma reads
    __syncthreads();
    const int wg = warp / 4;
#pragma unroll 1
    for (int t = 0; t < S; ++t) {
      const int stage = t & 1;
      const unsigned char* sA = stage_a(stage);
      const unsigned char* sB =
          Tr::kInt8 ? stage_bq(stage) : reinterpret_cast<const unsigned char*>(stage_b(stage));
      const float as0 = sAScale[stage * Tr::kM + warp * 16 + r8];
      const float as1 = sAScale[stage * Tr::kM + warp * 16 + r8 + 8];
      const float* bscale = sBScale + stage * Tr::kN;
      // Warpgroup wg multiplies its 64 rows by the 128 groups in two n64 halves (32 accumulators
      // live next to the 64 of y), then adds y += (I_t * a_t) * b_t as the portable path does.
#pragma unroll
      for (int half = 0; half < Tr::kN / 64; ++half) {
        std::conditional_t<Tr::kInt8, int, float> acc[32];
        arch::wgmma_fence();
        // K-major operands: 32 bytes of K per instruction (k16 bf16, k32 int8), four of them per
        // 128-byte row of a column block of [rows][128 bytes].
        constexpr int kSteps = Tr::kQChunks / 2;
#pragma unroll
        for (int ks = 0; ks < kSteps; ++ks) {
          const unsigned char* pa = sA + (ks / 4) * Tr::kM * 128 + wg * 64 * 128 + (ks % 4) * 32;
          const unsigned char* pb = sB + (ks / 4) * Tr::kN * 128 + half * 64 * 128 + (ks % 4) * 32;
          const std::uint64_t da = arch::smem_desc_sw128(pa, 16, 1024);
          const std::uint64_t db = arch::smem_desc_sw128(pb, 16, 1024);
          if constexpr (Tr::kInt8) {
            arch::WgmmaS8<64>::ss(acc, da, db, ks > 0);
          } else {
            arch::Wgmma<bf16, 64>::ss(acc, da, db, ks > 0);
          }
        }
        arch::wgmma_commit();
        if (half == 0 && t + 1 < S) {
          arch::cp_async_wait<0>();  // this thread's part of slice t + 1 landed
          quantize_keys(stage ^ 1);
        }
        arch::wgmma_wait<0>();
#pragma unroll
        for (int c = 0; c < 8; ++c) {
          const int n = half * 8 + c;
          const float2 bs = *reinterpret_cast<const float2*>(bscale + n * 8 + 2 * q4);
#pragma unroll
          for (int hh = 0; hh < 2; ++hh) {
#pragma unroll
            for (int e = 0; e < 2; ++e) {
              float& yv = y[0][n][2 * hh + e];
              // An int8 dot product is an integer below 2^24: exact as a float.
              const float dot = static_cast<float>(acc[4 * c + 2 * hh + e]);
              yv = exact::add(yv, exact::mul(exact::mul(dot, hh ? as1 : as0), e ? bs.y : bs.x));
            }
          }
        }
      }
      arch::fence_proxy_async_smem();
      __syncthreads();  // slice t + 1 published; every warpgroup is done with slice t
      if (t + 2 < S) issue(t + 2, stage);
    }
  } else {
    issue(0, 0);
#pragma unroll 1
    for (int t = 0; t < S; ++t) {
      const int stage = t & 1;
      const bf16* sA = reinterpret_cast<const bf16*>(stage_a(stage));
      const bf16* sB = stage_b(stage);
      arch::cp_async_wait<0>();
      __syncthreads();  // slice t landed; every warp is done with slice t-1
      if (t + 1 < S) issue(t + 1, stage ^ 1);
      quantize_keys(stage);
      __syncthreads();
      // This warp's query rows over the whole of D (A fragments) and their scales a_t.
      std::uint32_t afr[Tr::kRowAtoms][Tr::kKSteps][4];
#pragma unroll
      for (int a = 0; a < Tr::kRowAtoms; ++a) {
#pragma unroll
        for (int ks = 0; ks < Tr::kKSteps; ++ks) {
          const int row = warp * Tr::kWarpRows + a * 16 + (lane & 7) + 8 * ((lane >> 3) & 1);
          arch::ldmatrix_x4(afr[a][ks],
                            sA + Tr::template swizzle<Tr::kM>(row, 2 * ks + (lane >> 4)) * 8);
        }
      }
      float as[Tr::kRowAtoms][2];
#pragma unroll
      for (int a = 0; a < Tr::kRowAtoms; ++a)
#pragma unroll
        for (int hh = 0; hh < 2; ++hh)
          as[a][hh] = sAScale[stage * Tr::kM + warp * Tr::kWarpRows + a * 16 + r8 + 8 * hh];
      const float* bscale = sBScale + stage * Tr::kN;

#pragma unroll
      for (int np = 0; np < Tr::kNAtoms / 2; ++np) {
        float acc[Tr::kRowAtoms][2][4];
#pragma unroll
        for (int a = 0; a < Tr::kRowAtoms; ++a)
#pragma unroll
          for (int nn = 0; nn < 2; ++nn)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[a][nn][e] = 0.0f;
#pragma unroll
        for (int ks = 0; ks < Tr::kKSteps; ++ks) {
          std::uint32_t r4[4];
          const int key = np * 16 + (lane & 7) + 8 * (lane >> 4);
          arch::ldmatrix_x4(r4,
                            sB + Tr::template swizzle<Tr::kN>(key, 2 * ks + ((lane >> 3) & 1)) * 8);
          const std::uint32_t b0[2] = {r4[0], r4[1]}, b1[2] = {r4[2], r4[3]};
#pragma unroll
          for (int a = 0; a < Tr::kRowAtoms; ++a) {
            arch::mma_16816<bf16>(acc[a][0], afr[a][ks], b0);
            arch::mma_16816<bf16>(acc[a][1], afr[a][ks], b1);
          }
        }
        // y += (I_t * a_t) * b_t in segment order.
#pragma unroll
        for (int nn = 0; nn < 2; ++nn) {
          const float2 bs = *reinterpret_cast<const float2*>(bscale + np * 16 + nn * 8 + 2 * q4);
#pragma unroll
          for (int a = 0; a < Tr::kRowAtoms; ++a) {
#pragma unroll
            for (int hh = 0; hh < 2; ++hh) {
#pragma unroll
              for (int e = 0; e < 2; ++e) {
                float& yv = y[a][2 * np + nn][2 * hh + e];
                yv = exact::add(
                    yv, exact::mul(exact::mul(acc[a][nn][2 * hh + e], as[a][hh]), e ? bs.y : bs.x));
              }
            }
          }
        }
      }
    }
  }

  ScoreTile tile;
  tile.s = s;
  tile.b = b;
  tile.kvh = kvh;
  tile.m0 = m0;
  tile.j0 = j0;
  tile.R = R;
  write_block_stats<Tr>(p, tile, y);
}

/// Geometry of the group-quantization scoring kernel: a kM = 16 * kWarps reshaped rows x 128
/// key groups tile at D = 128 in the sm90a 128-byte-swizzle layout (one m64n128 wgmma row block
/// per warpgroup, as ScoreTraitsSm90), but both operands arrive quantized and already laid out
/// as the stage's shared memory (the query tiles of the scratch, the key cache's tiles), so a
/// stage is two bulk copies, A and B. A kStages ring streams the S segments with kPrefetch of
/// them in flight ahead of the one multiplied; with kStages >= kPrefetch + 2 a stage is refilled
/// two segments after its last reader, so each warpgroup leaves one segment of MMAs running
/// across the next barrier and copy issue (kOverlapMma). kMinBlocks CTAs per SM share it.
///
/// The default, 8 warps (128 rows) x 3 stages with 2 segments in flight, runs two CTAs per SM, so
/// that one CTA's epilogue overlaps the other's segment loop: on an H100 (TP2 128K chunk 1,024,
/// 2026-12-07) 1.02 ms of scoring at stride 8 against 1.07 ms for 16 warps x 4 stages (one CTA
/// per SM), 0.457 against 0.478 ms at stride 16.
///
/// Both operands arrive as int8 and their scales as fp32, so the config's element type never
/// enters the kernel: one instantiation serves bf16 and fp16 (the base's Element is nominal).
template <int kWarps_ = 8, int kStages_ = 3, int kPrefetch_ = 2>
struct GroupScoreTraits : ScoreTraits<__nv_bfloat16, 128, kWarps_, 1, 1, 1024> {
  using Base = ScoreTraits<__nv_bfloat16, 128, kWarps_, 1, 1, 1024>;
  static constexpr bool kWgmma = true;          ///< wgmma from shared memory.
  static constexpr int kStages = kStages_;      ///< Stage ring depth.
  static constexpr int kPrefetch = kPrefetch_;  ///< Segments copied ahead of the multiplied one.
  /// One segment's MMAs stay in flight across the next segment's barrier.
  static constexpr bool kOverlapMma = kStages >= kPrefetch + 2;
  /// CTAs per SM in the launch bounds: as many as 128 registers a thread allow.
  static constexpr int kMinBlocks = 65536 / (128 * Base::kThreads);
  static constexpr int kABytes = Base::kM * 128;          ///< Query slice (int8).
  static constexpr int kBBytes = Base::kN * 128;          ///< Key slice (int8).
  static constexpr int kStageBytes = kABytes + kBBytes;   ///< One stage.
  static constexpr int kOffFull = kStages * kStageBytes;  ///< [kStages] u64: stage landed.
  /// Dynamic shared memory per CTA, with the 1024-byte alignment slack.
  static constexpr int kSmemBytes = kOffFull + kStages * 8 + 1024;
  static_assert(kWarps_ % 4 == 0, "whole warpgroups");
  static_assert(kPrefetch >= 1 && kStages >= kPrefetch + 1, "the ring holds the copies in flight");
  static_assert(kABytes % 1024 == 0 && kBBytes % 1024 == 0, "stages stay on swizzle atoms");
  static_assert(Base::kM == kQueryTileRows && Base::kN == kTileGroups,
                "a stage is one block of the query tiles and one of the key cache");
};

/// Scoring with group quantization (XAttentionQuant::group) on Hopper: the same tile, rows and
/// epilogue as score_kernel, but the int8 wgmma accumulators (int32, exact) run through all S
/// segments and the antidiagonal is scaled once, y = (float(I) * a_i) * b_j (group_term()).
/// Both operands of a segment are contiguous 16 KB blocks already in the stage's swizzled
/// layout (Scratch::qtiles, XAttentionKeyCache::keys), so one thread moves a stage with two bulk
/// copies and the others only wait on its mbarrier: no per-thread copy addressing, zero fill or
/// cp.async groups. Per segment each warpgroup issues one m64n128k32 wgmma per 32 bytes of K.
/// The first copies go out before any memory is read, and each thread's scales go straight to
/// registers, so the CTA's start waits on one latency instead of three in a row (on the H100,
/// TP2 128K stride 8: 0.896-0.898 ms of scoring against 0.927-0.933 ms with shared scale
/// tables loaded first).
template <class Tr, int kGpb = 0>
__global__ void __launch_bounds__(Tr::kThreads, Tr::kMinBlocks) score_group_kernel(ScoreParams p) {
  extern __shared__ __align__(128) unsigned char smem_raw[];
  unsigned char* smem = smem_raw;
  {
    const unsigned misalign = arch::smem_addr(smem_raw) % 1024;
    smem += misalign == 0 ? 0 : 1024 - misalign;
  }
  auto stage_a = [&](int st) { return smem + st * Tr::kStageBytes; };
  auto stage_b = [&](int st) { return smem + st * Tr::kStageBytes + Tr::kABytes; };
  auto* full = reinterpret_cast<std::uint64_t*>(smem + Tr::kOffFull);

  const AttentionConfig& c = p.c;
  const int S = p.stride, G = c.gqa_group(), Rmax = p.scr.groups;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int q4 = lane & 3, r8 = lane >> 2;
  // Segment t of the tile: the query block at a_src + t * kABytes (rows past the sequence hold
  // whatever an earlier call left: finite integers whose rows are never written out) and the key
  // block at b_src + t * kBBytes (groups past the sequence likewise, their scale 0 and their
  // logits masked). Both addresses follow from the launch alone (and the slot of sequence b), and
  // lie inside the scratch and the key cache for every tile of the grid, so thread 0 issues the
  // first segments before the sequence's lengths are read: the copies' latency and that of the
  // reads overlap. score_tile() below derives b, kvh and j0 again from the same launch indices;
  // a split of it into a launch-only part that both use compiled to other machine code than the
  // kernel verified on the GPU, so the two stay apart until the next device run.
  const int kvh = static_cast<int>(blockIdx.y) % c.num_kv_heads;
  const int b = static_cast<int>(blockIdx.y) / c.num_kv_heads;
  if (b >= p.batch.num_seqs) return;
  const XAttentionKeyCache& kc = p.keys;
  const int j0 = static_cast<int>(blockIdx.x) / p.m_tiles * Tr::kN;
  const std::int64_t g0 = kc.index(kc.slot(b), kvh, j0, c.num_kv_heads);
  const std::int8_t* a_src =
      p.scr.qtiles + p.scr.query_tile_offset(b, kvh, static_cast<int>(blockIdx.x) % p.m_tiles, 0, 0,
                                             0, S, c.num_kv_heads);
  const std::int8_t* b_src = kc.keys + XAttentionKeyCache::key_offset(g0, 0, 0, S);
  auto issue = [&](int t, int st) {
    arch::mbarrier_arrive_expect_tx(&full[st], Tr::kStageBytes);
    arch::bulk_copy_g2s(stage_a(st), a_src + std::int64_t{t} * Tr::kABytes, Tr::kABytes, &full[st]);
    arch::bulk_copy_g2s(stage_b(st), b_src + std::int64_t{t} * Tr::kBBytes, Tr::kBBytes, &full[st]);
  };
  if (tid == 0) {
#pragma unroll
    for (int st = 0; st < Tr::kStages; ++st) arch::mbarrier_init(&full[st], 1);
    arch::mbarrier_init_fence();
#pragma unroll
    for (int st = 0; st < Tr::kPrefetch; ++st) {
      if (st < S) issue(st, st);
    }
  }
  ScoreTile tile;
  if (!score_tile<Tr>(p, tile)) {
    // Nothing to score: the copies in flight land before the CTA's shared memory is released.
    if (tid == 0) {
      for (int st = 0; st < Tr::kPrefetch && st < S; ++st) arch::mbarrier_wait(&full[st], 0u);
    }
    return;
  }
  const int n_groups = ceil_div(tile.s.kv_len, S);
  // This thread's scales (0 past the chunk, the group or the sequence), loaded now and first
  // used after the segment loop, which hides their latency.
  float as[2];
#pragma unroll
  for (int hh = 0; hh < 2; ++hh) {
    const int m = tile.m0 + warp * 16 + r8 + 8 * hh, g = m / Rmax, i = m % Rmax;
    const std::int64_t row =
        std::int64_t{tile.s.q_begin + i * S} * c.num_q_heads + tile.kvh * G + g;
    as[hh] = g < G && i < tile.R ? p.scr.qscale[row] : 0.0f;
  }
  float bs[Tr::kNAtoms][2];
#pragma unroll
  for (int n = 0; n < Tr::kNAtoms; ++n) {
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const int jj = n * 8 + 2 * q4 + e;
      bs[n][e] = tile.j0 + jj < n_groups ? kc.scales[g0 + jj] : 0.0f;
    }
  }
  __syncthreads();  // the barriers are initialized

  int acc[64];  // the warpgroup's 64 rows x 128 groups
  const int wg = warp / 4;
  // The descriptors' address field (bits 0-13, bytes / 16) of stage t % kStages and k slice ks
  // is that of stage 0 plus the offset (every stage lies in the first 256 KB, so it never carries
  // into the next field): a 32-bit add on the low word, the high word fixed.
  const std::uint64_t desc_a0 = arch::smem_desc_sw128(stage_a(0) + wg * 64 * 128, 16, 1024);
  const std::uint64_t desc_b0 = arch::smem_desc_sw128(stage_b(0), 16, 1024);
  const auto a_lo = static_cast<std::uint32_t>(desc_a0), b_lo = static_cast<std::uint32_t>(desc_b0);
  const std::uint64_t a_hi = desc_a0 & ~std::uint64_t{0xffffffffu};
  const std::uint64_t b_hi = desc_b0 & ~std::uint64_t{0xffffffffu};
#pragma unroll 1
  for (int t = 0; t < S; ++t) {
    const int st = t % Tr::kStages;
    if (t + Tr::kPrefetch < S) {
      // The stage refilled now was last read by segment t + kPrefetch - kStages, whose MMAs
      // every warpgroup has retired before this barrier (wgmma_wait below).
      __syncthreads();
      if (tid == 0) issue(t + Tr::kPrefetch, (t + Tr::kPrefetch) % Tr::kStages);
    }
    arch::mbarrier_wait(&full[st], static_cast<std::uint32_t>(t / Tr::kStages) & 1u);
    const auto stage_off = static_cast<std::uint32_t>(st * Tr::kStageBytes);
    arch::wgmma_fence();
#pragma unroll
    for (int ks = 0; ks < 4; ++ks) {
      // K-major int8 operands: 32 bytes of K per instruction, four per 128-byte row.
      const std::uint32_t off = (stage_off + ks * 32) >> 4;
      arch::WgmmaS8<128>::ss(acc, a_hi | (a_lo + off), b_hi | (b_lo + off), t > 0 || ks > 0);
    }
    arch::wgmma_commit();
    if constexpr (Tr::kOverlapMma) {
      arch::wgmma_wait<1>();  // segment t - 1 retired; segment t runs on
    } else {
      arch::wgmma_wait<0>();
    }
  }
  arch::wgmma_wait<0>();

  float y[Tr::kRowAtoms][Tr::kNAtoms][4];
#pragma unroll
  for (int n = 0; n < Tr::kNAtoms; ++n) {
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        y[0][n][2 * hh + e] = group_term(acc[4 * n + 2 * hh + e], as[hh], bs[n][e]);
      }
    }
  }
  write_block_stats<Tr, kGpb>(p, tile, y);
}

/// Parameters of the selection kernel.
struct SelectParams {
  AttentionConfig c;    ///< The attention config.
  ChunkBatch batch;     ///< The chunk batch being masked.
  Scratch scr;          ///< Scores written by the scoring kernel.
  XAttentionParams xp;  ///< Mask hyperparameters.
  BlockMask mask;       ///< Output bitmap.
  int key_slots = 0;    ///< Block keys in shared memory: kv_blocks rounded up to 32.
};

/// floor(w * 2^32 / z) for w <= z, z > 0, given c = 2^32 / z rounded to double: the product is
/// within 2^-20 of the exact quotient (at most 2^32), so one integer correction makes it exact.
__device__ __forceinline__ std::uint64_t share_of(std::uint32_t w, std::uint64_t z, double c) {
  std::uint64_t q = __double2ull_rz(__dmul_rn(static_cast<double>(w), c));
  const std::int64_t rem = static_cast<std::int64_t>((std::uint64_t{w} << 32) - q * z);
  if (rem < 0) {
    --q;
  } else if (static_cast<std::uint64_t>(rem) >= z) {
    ++q;
  }
  return q;
}

/// Adds `v` to the 64-bit word at `at` in shared memory with 32-bit atomics (a 64-bit shared
/// atomic add compiles to a compare-and-swap loop, which spins under contention): the low word's
/// add returns the old value, which gives its carry into the high word exactly, in any order of
/// the adds. The sum must stay below 2^64.
__device__ __forceinline__ void shared_add_u64(std::uint64_t* at, std::uint64_t v) {
  auto* word = reinterpret_cast<std::uint32_t*>(at);  // little-endian: low word first
  const auto lo = static_cast<std::uint32_t>(v);
  const std::uint32_t old = atomicAdd(word, lo);
  const std::uint32_t hi = static_cast<std::uint32_t>(v >> 32) + (old + lo < old ? 1u : 0u);
  if (hi != 0) atomicAdd(word + 1, hi);
}

/// The 64-bit word at `at` in shared memory that shared_add_u64() summed into (after a barrier).
__device__ __forceinline__ std::uint64_t shared_u64(const std::uint64_t* at) {
  const auto* word = reinterpret_cast<const std::uint32_t*>(at);
  return (std::uint64_t{word[1]} << 32) | word[0];
}

/// Bits of a key that select_threshold() fixes per pass.
inline constexpr int kRadixBits = 8;
/// Bits of a histogram entry of select_threshold() that count its keys (N <= 12288 < 2^14);
/// the mass, at most 2^32 a row for at most 256 rows, is in the bits above.
inline constexpr int kRadixCountBits = 14;

/// `key` >> `n` for n in [0, 64] (0 at 64, where the plain shift is undefined).
__device__ __forceinline__ std::uint64_t shift_right(std::uint64_t key, int n) {
  return n >= 64 ? 0 : key >> n;
}

/// The smallest key the selection keeps, for a CTA of kThreads (one thread per digit): the
/// kept keys are the nonzero `keys[0, N)` (in shared memory, any order, unique, mass = key >>
/// 20) that are at least the threshold returned (~0 when none is kept). A key is kept when the
/// forced mass plus the mass of the larger keys is below `req`, the rule of a walk down the
/// sorted keys, with no sort. The bits above the highest one where the largest and the smallest
/// key differ are common to all; from there each pass histograms the keys that share the bits
/// fixed so far by their next kRadixBits bits (mass and count, shared atomics), and the
/// threshold's next digit is the lowest one whose larger digits' mass, added to the mass above
/// them, is still below `req` (a block scan and a barrier count). A digit holding one key ends
/// the search with it. `warp_tot` is [kThreads / 32] words of shared scratch; every thread
/// calls this.
template <int kThreads>
__device__ std::uint64_t select_threshold(const std::uint64_t* keys, int N, std::uint64_t forced,
                                          double req, std::uint64_t* warp_tot) {
  static_assert(kThreads == 1 << kRadixBits, "one thread per digit");
  constexpr int kWarps = kThreads / 32;
  constexpr std::uint64_t kNone = ~std::uint64_t{0};
  constexpr std::uint64_t kCountMask = (std::uint64_t{1} << kRadixCountBits) - 1;
  __shared__ std::uint64_t hist[2][kThreads];  // one zeroed while the other fills
  __shared__ std::uint64_t warp_min[kWarps];
  __shared__ std::uint64_t pick_above, pick_hist, only_key;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  if (!(static_cast<double>(forced) < req)) return kNone;  // the forced blocks are enough
  std::uint64_t mx = 0, mn = kNone;
  for (int k = tid; k < N; k += kThreads) {
    const std::uint64_t key = keys[k];
    mx = max(mx, key);
    if (key != 0) mn = min(mn, key);
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    mx = max(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    mn = min(mn, __shfl_xor_sync(0xffffffffu, mn, o));
  }
  if (lane == 0) {
    warp_tot[warp] = mx;
    warp_min[warp] = mn;
  }
  hist[0][tid] = 0;
  __syncthreads();
#pragma unroll
  for (int w = 0; w < kWarps; ++w) {
    mx = max(mx, warp_tot[w]);
    mn = min(mn, warp_min[w]);
  }
  if (mx == 0) return kNone;  // no unforced candidate
  if (mx == mn) return mx;    // one, and the forced mass is below req
  // Bits [hi, 64) are the same in every key (mx and mn bound them); digits fill [lo, hi).
  int hi = 64 - __clzll(static_cast<long long>(mx ^ mn));
  std::uint64_t prefix = shift_right(mx, hi);
  std::uint64_t above = forced;  // the forced mass and that of the keys above the prefix's range
  for (int pass = 0;; ++pass) {
    const int lo = max(hi - kRadixBits, 0);
    std::uint64_t* h_now = hist[pass & 1];
    for (int k = tid; k < N; k += kThreads) {
      const std::uint64_t key = keys[k];
      if (key != 0 && shift_right(key, hi) == prefix) {
        shared_add_u64(&h_now[(key >> lo) & ((1u << (hi - lo)) - 1)],
                       ((key >> 20) << kRadixCountBits) + 1);
      }
    }
    hist[(pass + 1) & 1][tid] = 0;  // last read before the previous pass's second barrier
    __syncthreads();
    // Thread t holds digit 255 - t, so an inclusive scan over t sums the digits >= its own.
    const std::uint64_t hd = shared_u64(&h_now[kThreads - 1 - tid]);
    const std::uint64_t mass = hd >> kRadixCountBits;
    std::uint64_t incl = mass;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const std::uint64_t v = __shfl_up_sync(0xffffffffu, incl, o);
      if (lane >= o) incl += v;
    }
    if (lane == 31) warp_tot[warp] = incl;
    __syncthreads();
    std::uint64_t a = above + incl - mass;  // forced + the keys above this digit
    for (int w = 0; w < warp; ++w) a += warp_tot[w];
    // True for t < cnt (a grows with t); t = 0 holds, since `above` is below req.
    const int cnt = __syncthreads_count(static_cast<double>(a) < req);
    if (tid == cnt - 1) {
      pick_above = a;
      pick_hist = hd;
    }
    __syncthreads();
    prefix = (prefix << (hi - lo)) | static_cast<std::uint64_t>(kThreads - cnt);
    above = pick_above;
    const std::uint64_t count = pick_hist & kCountMask;
    // An empty digit (only digit 0 can be the lowest below req and empty) or the last one.
    if (count == 0 || lo == 0) return prefix << lo;
    if (count == 1) {
      for (int k = tid; k < N; k += kThreads) {
        const std::uint64_t key = keys[k];
        if (key != 0 && (key >> lo) == prefix) only_key = key;
      }
      __syncthreads();
      return only_key;
    }
    hi = lo;
  }
}

/// Candidate blocks per row whose weights a selection warp keeps in registers (kSelectRegW per
/// lane): rows of up to 1,024 candidates (128K tokens at block_k 128) read each cell once.
inline constexpr int kSelectRegW = 32;

/// Row normalization, block sums and cumulative-threshold selection for one (b, h, qb).
///
/// 1. One warp per reshaped row: W = trunc(sigma * 2^(mu - m)) with m the row maximum the
///    scoring kernel left in Scratch::row_key, Z = sum W, and each block's share floor(W * 2^32
///    / Z) (exact) added into its sum A[kb] in shared memory. A row of at most 32 * kSelectRegW
///    candidates keeps its W in registers, so each (row, block) cell is read once (8 bytes) and
///    nothing is written back; a longer row is read twice (Z, then the shares).
/// 2. One thread per KV block: the ordering keys (A << 20 | (2^20 - 1 - kb)) of the unforced
///    candidates, and the total and forced masses (block reductions).
/// 3. select_threshold(): the smallest key kept, then the row's words.
///
/// Launched with kMinBlocks CTAs per SM in the launch bounds (a register cap of 65536 / (kThreads
/// * kMinBlocks)).
template <int kThreads, int kMinBlocks>
__global__ void __launch_bounds__(kThreads, kMinBlocks) select_kernel(SelectParams p) {
  extern __shared__ __align__(128) unsigned char smem[];
  // [key_slots]: each block's mass A (shared_add_u64), then its ordering key in place.
  std::uint64_t* keys = reinterpret_cast<std::uint64_t*>(smem);
  constexpr int kWarps = kThreads / 32;
  __shared__ std::uint64_t warp_a[kWarps], warp_b[kWarps];

  const AttentionConfig& c = p.c;
  const int S = p.xp.stride;
  const int qb = blockIdx.x;
  const int h = blockIdx.y % c.num_q_heads;
  const int b = blockIdx.y / c.num_q_heads;
  if (b >= p.batch.num_seqs) return;
  const SeqInfo s = seq_info(p.batch, b);
  if (qb * c.block_q >= s.q_len) return;
  const QueryBlockSpan span = query_block_span(s, qb, c.block_q, c.block_k);
  const int n_cand = span.last_kb + 1;
  const int n_kb = ceil_div(s.kv_len, c.block_k);
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int N = p.key_slots;
  const int i0 = qb * c.block_q / S;
  const int rows = min_of((qb + 1) * c.block_q / S, ceil_div(s.q_len, S)) - i0;

  auto warp_sum = [](std::uint64_t v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
  };
  // Sum over the block of u64 values (every thread gets it); `scratch` is one of the warp arrays.
  auto block_sum = [&](std::uint64_t v, std::uint64_t* scratch) {
    v = warp_sum(v);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    std::uint64_t t = 0;
    for (int w = 0; w < kWarps; ++w) t += scratch[w];
    __syncthreads();
    return t;
  };

  for (int kb = tid; kb < N; kb += kThreads) keys[kb] = 0;
  __syncthreads();

  // 1. Per reshaped row: W, Z and the shares, added into A.
  for (int r = warp; r < rows; r += kWarps) {
    const std::int64_t row = p.scr.row(b, h, i0 + r, c.num_q_heads);
    const float* mu = p.scr.mu + row * p.scr.kv_blocks;
    const std::uint32_t* sigma = p.scr.sigma + row * p.scr.kv_blocks;
    const float m_row = exact::from_ordered_key(p.scr.row_key[row]);
    if (n_cand <= 32 * kSelectRegW) {
      // Every load of the row is issued before any is used: 8 KB in flight a warp.
      float mu_u[kSelectRegW];
      std::uint32_t sigma_u[kSelectRegW];
#pragma unroll
      for (int u = 0; u < kSelectRegW; ++u) {
        const int kb = lane + 32 * u;
        mu_u[u] = kb < n_cand ? mu[kb] : -INFINITY;  // W = 0
        sigma_u[u] = kb < n_cand ? sigma[kb] : 0u;
      }
      std::uint32_t w[kSelectRegW];
      std::uint64_t z = 0;
#pragma unroll
      for (int u = 0; u < kSelectRegW; ++u) {
        w[u] = row_block_weight(mu_u[u], sigma_u[u], m_row);
        z += w[u];
      }
      z = warp_sum(z);
      if (z == 0) continue;
      const double cz = __ddiv_rn(4294967296.0, static_cast<double>(z));
#pragma unroll
      for (int u = 0; u < kSelectRegW; ++u) {
        if (w[u] != 0) shared_add_u64(&keys[lane + 32 * u], share_of(w[u], z, cz));
      }
    } else {
      std::uint64_t z = 0;
#pragma unroll 4
      for (int kb = lane; kb < n_cand; kb += 32) z += row_block_weight(mu[kb], sigma[kb], m_row);
      z = warp_sum(z);
      if (z == 0) continue;
      const double cz = __ddiv_rn(4294967296.0, static_cast<double>(z));
#pragma unroll 4
      for (int kb = lane; kb < n_cand; kb += 32) {
        const std::uint32_t w = row_block_weight(mu[kb], sigma[kb], m_row);
        if (w != 0) shared_add_u64(&keys[kb], share_of(w, z, cz));
      }
    }
  }
  __syncthreads();

  // 2. Ordering keys (A << 20 | (2^20 - 1 - kb)) for the unforced candidates, 0 for the others.
  std::uint64_t tot = 0, frc = 0;
  for (int kb = tid; kb < N; kb += kThreads) {
    const bool cand = kb < n_cand;
    const std::uint64_t a = cand ? shared_u64(&keys[kb]) : 0;  // 0 past n_cand
    const bool forced = cand && forced_on(p.xp, span, kb);
    tot += a;
    if (forced) frc += a;
    keys[kb] =
        cand && !forced
            ? (a << 20) | static_cast<std::uint64_t>(0xfffffu - static_cast<std::uint32_t>(kb))
            : 0;
  }
  const std::uint64_t total = block_sum(tot, warp_a);  // its barriers also publish keys[]
  const std::uint64_t forced_mass = block_sum(frc, warp_b);

  // 3. The chosen blocks are the unforced candidates of largest key, taken while the forced mass
  //    plus the mass of the larger keys is below threshold * total: every key from a threshold.
  const std::uint64_t thr = select_threshold<kThreads>(
      keys, N, forced_mass, required_mass(p.xp.threshold, total), warp_a);
  std::uint32_t* out = p.mask.row(b, h, qb);
  for (int w = warp; w < ceil_div(n_kb, 32); w += kWarps) {
    const int kb = w * 32 + lane;
    const bool on =
        kb < n_cand && (forced_on(p.xp, span, kb) || (keys[kb] != 0 && keys[kb] >= thr));
    const std::uint32_t word = __ballot_sync(0xffffffffu, on);
    if (lane == 0) out[w] = word;
  }
}

/// Block keys a selection CTA holds in shared memory: the limits' KV blocks rounded up to 32.
inline int select_key_slots(const Geometry& g) {
  return ceil_div(g.max_kv_blocks, 32) * 32;
}

}  // namespace xattention

namespace xattention {

/// Launches of the device build, as bits (benchmarks time them one by one). Each phase reads what
/// the earlier ones wrote, and the row maxima in particular are reset only by the quantization
/// launch: scoring again without it raises the previous maxima (harmless when timing the same
/// inputs again, wrong for new ones), so a build of a new mask runs kAllPhases.
inline constexpr unsigned kQuantizePhase = 1, kScorePhase = 2, kSelectPhase = 4, kAllPhases = 7;
/// @var kScorePhase
/// The scoring kernel.
/// @var kSelectPhase
/// The selection kernel.
/// @var kAllPhases
/// Every launch: quantization, scoring and selection.

/// Throws compact::Error unless `force_arch` is 0 (the fastest scoring kernel available), 80
/// (mma.sync, any sm80+ GPU) or 90 (wgmma; needs compute capability 9.x and sm_90a code). Probes
/// the current device for sm_90a code once (the probe allocates and synchronizes, so it belongs
/// to setup: configure() calls this), and not at all on a machine without a CUDA device.
inline void validate_force_arch(int force_arch) {
  require(force_arch == 0 || force_arch == 80 || force_arch == 90, "XAttentionMask::force_arch",
          force_arch, "0 (fastest available), 80 (mma.sync) or 90 (wgmma)");
  if (force_arch == 80) return;
  int devices = 0;
  if (force_arch == 0 && cudaGetDeviceCount(&devices) != cudaSuccess) {
    cudaGetLastError();  // no device here: the host reference needs none
    return;
  }
  const bool sm90a = (force_arch == 90 || devices > 0) && arch::sm90a_available();
  require(force_arch != 90 || sm90a, "XAttentionMask::force_arch", force_arch,
          "80 or 0 on this GPU/binary (the wgmma scorer needs compute capability 9.x and sm_90a "
          "code)");
}

/// Parameters of a scoring kernel of traits Tr (its grid: (m_tiles * n_tiles, max_batch * Hkv)).
template <class Tr>
ScoreParams score_params(const MaskArgs& a, const XAttentionParams& params, const Scratch& scr) {
  const AttentionConfig& c = a.config;
  ScoreParams sp;
  sp.c = c;
  sp.batch = a.batch;
  sp.cache = a.cache;
  sp.scr = scr;
  sp.stride = params.stride;
  sp.m_tiles = ceil_div(c.gqa_group() * scr.groups, Tr::kM);
  sp.n_tiles = ceil_div(ceil_div(a.limits.max_kv_len, params.stride), Tr::kN);
  sp.cx =
      exact::mul(exact::mul(c.scale(), exact::kLog2e), 1.0f / static_cast<float>(params.stride));
  sp.levels = static_cast<float>(params.levels);
  return sp;
}

/// Launches `kernel`, a scoring kernel of traits Tr, over the grid of score_params(). The caller
/// checks the launch (COMPACT_CHECK_LAUNCH) so that a launch error names the kernel.
template <class Tr>
void launch_score(void (*kernel)(ScoreParams), const ScoreParams& sp, int max_batch,
                  cudaStream_t stream) {
  const dim3 grid(sp.m_tiles * sp.n_tiles, max_batch * sp.c.num_kv_heads);
  COMPACT_CUDA_CHECK(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Tr::kSmemBytes));
  kernel<<<grid, Tr::kThreads, Tr::kSmemBytes, stream>>>(sp);
}

/// Launches the group quantization of the keys into `kc` (XAttentionQuant::group, D = 128): the
/// groups each sequence's chunk touches, or (`whole_sequence`) all of each sequence's groups.
inline void launch_key_groups(const MaskArgs& a, const XAttentionParams& params,
                              const XAttentionKeyCache& kc, bool whole_sequence,
                              cudaStream_t stream) {
  const AttentionConfig& c = a.config;
  const int S = params.stride;
  // Touched groups: from floor(pos / S) to ceil(kv_len / S), at most ceil(n_b / S) + 1.
  const int groups =
      whole_sequence ? ceil_div(a.limits.max_kv_len, S) : ceil_div(a.limits.max_chunk, S) + 1;
  const dim3 grid(ceil_div(groups, kQuantWarps), a.limits.max_batch * c.num_kv_heads);
  const auto kernel = c.dtype == DType::bf16 ? quantize_key_groups_kernel<__nv_bfloat16, 128>
                                             : quantize_key_groups_kernel<__half, 128>;
  kernel<<<grid, kQuantWarps * 32, 0, stream>>>(c, a.batch, a.cache, kc, S,
                                                static_cast<float>(params.levels), whole_sequence);
  COMPACT_CHECK_LAUNCH("xattention::quantize_key_groups_kernel");
}

/// Throws compact::Error unless group quantization can run on the device: head dim 128 and the
/// Hopper int8 scorer (sm_90a code on a 9.x GPU, force_arch 0 or 90).
inline void require_group_device(const AttentionConfig& c, int force_arch) {
  require(c.head_dim == 128, "config.head_dim", c.head_dim,
          "128 for XAttentionMask's device build with params.quant = group");
  require(force_arch != 80 && arch::sm90a_available(), "XAttentionMask params.quant", "group",
          "token, or a Hopper GPU with sm_90a code and force_arch 0 or 90 (group quantization "
          "runs on the int8 wgmma scorer only)");
}

/// Device build of XAttentionMask (arguments validated here): the phases selected in `phases`,
/// the scoring kernel chosen by `force_arch` (validate_force_arch()). Later phases read what
/// earlier ones left in the scratch, so a partial call is only meaningful after a full one on the
/// same arguments. Every scoring kernel gives the host reference's bits. With group quantization
/// the key groups are `key_cache` when it is present() (only the chunk's groups re-quantized),
/// else the scratch's (all of them, every call).
inline void build_device(const MaskArgs& a, const XAttentionParams& params, cudaStream_t stream,
                         unsigned phases, int force_arch = 0,
                         const XAttentionKeyCache& key_cache = {}) {
  const AttentionConfig& c = a.config;
  params.validate(c);
  validate_force_arch(force_arch);
  require_not_null(a.mask.bits, "mask.bits");
  require(c.head_dim == 64 || c.head_dim == 128, "config.head_dim", c.head_dim,
          "64 or 128 for XAttentionMask's device build");
  require_aligned(a.scratch.data, kWorkspaceAlignment, "mask scratch");
  const bool grouped = params.quant == XAttentionQuant::group;
  if (grouped) {
    require_group_device(c, force_arch);
    if (key_cache.present()) key_cache.validate(c, a.limits, params.stride, a.batch.num_seqs);
  } else {
    require(!key_cache.present(), "XAttentionMask key_cache.keys", "set",
            "nullptr unless params.quant = group (per-token quantization reads the pages)");
  }
  const Geometry geo = Geometry::of(c, a.limits);
  const Scratch scr =
      Scratch::carve(c, a.limits, params.stride, grouped, grouped && !key_cache.present(),
                     a.scratch.data, a.scratch.bytes);
  const int N = select_key_slots(geo);
  const std::size_t select_smem = static_cast<std::size_t>(N) * 8;
  require(select_smem <= 96 * 1024, "limits.max_kv_len", a.limits.max_kv_len,
          "at most 12288 KV blocks of config.block_k for XAttentionMask's device selection");
  int device = 0, smem_optin = 0;
  COMPACT_CUDA_CHECK(cudaGetDevice(&device));
  COMPACT_CUDA_CHECK(
      cudaDeviceGetAttribute(&smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  if (grouped) {
    using Tr = GroupScoreTraits<>;
    require(Tr::kSmemBytes <= smem_optin, "XAttentionMask params.quant", "group",
            detail::cat("token on this GPU (", smem_optin,
                        " bytes of shared memory per block; group "
                        "quantization needs ",
                        Tr::kSmemBytes, ")"));
    const XAttentionKeyCache kc = key_cache.present() ? key_cache : scr.keys;
    if (phases & kQuantizePhase) {
      const dim3 grid(ceil_div(scr.groups * c.num_q_heads, kQuantWarps), a.limits.max_batch);
      const auto kernel = c.dtype == DType::bf16 ? quantize_query_groups_kernel<__nv_bfloat16, 128>
                                                 : quantize_query_groups_kernel<__half, 128>;
      kernel<<<grid, kQuantWarps * 32, 0, stream>>>(
          c, a.batch, scr, params.stride, static_cast<float>(params.levels),
          scr.row_count(a.limits.max_batch, c.num_q_heads));
      COMPACT_CHECK_LAUNCH("xattention::quantize_query_groups_kernel");
      launch_key_groups(a, params, kc, !key_cache.present(), stream);
    }
    if (phases & kScorePhase) {
      // The block width in key groups is a template argument for the common block_k / stride
      // (16 and 8: stride 8 and 16 at block_k 128), runtime otherwise.
      ScoreParams sp = score_params<Tr>(a, params, scr);
      sp.keys = kc;
      const int gpb = c.block_k / params.stride;
      const auto kernel = gpb == 16  ? score_group_kernel<Tr, 16>
                          : gpb == 8 ? score_group_kernel<Tr, 8>
                                     : score_group_kernel<Tr, 0>;
      launch_score<Tr>(kernel, sp, a.limits.max_batch, stream);
      COMPACT_CHECK_LAUNCH("xattention::score_group_kernel");
    }
  }
  auto run = [&]<class T, int kD>() {
    // The scoring kernel, chosen before the queries are quantized for it. wgmma on Hopper with
    // sm_90a code unless force_arch = 80 (H100, TP2 128K chunk 1,024, stride 8: 4.40 against
    // 4.56 ms for mma.sync), with int8 operands when the levels fit (params.levels <= 127,
    // D = 128: 3.68 ms). Else 256 rows per CTA where shared memory allows: 16 warps of one m16
    // atom each (128 registers, 16 warps per SM to hide the latency of the segment loop; 8 warps
    // of two atoms, 255 registers, took 1.46x as long on an H100). Else 128 rows in 4 warps of
    // two atoms (not measured: no smaller-memory GPU here).
    using Sm90Int8 = ScoreTraitsSm90<T, kD, kD == 128 ? 1 : 2>;
    using Sm90 = ScoreTraitsSm90<T, kD>;
    const bool sm90 = force_arch != 80 && arch::sm90a_available();
    const bool int8 = sm90 && Sm90Int8::kInt8 && params.levels <= kInt8Levels &&
                      Sm90Int8::kSmemBytes <= smem_optin;
    if (phases & kQuantizePhase) {
      const long long rows = a.limits.total_q_bound() * c.num_q_heads;
      const int blocks = static_cast<int>(ceil_div(rows * (kD / 8), 256LL));
      const auto kernel =
          int8 ? quantize_queries_kernel<T, kD, true> : quantize_queries_kernel<T, kD, false>;
      kernel<<<blocks, 256, 0, stream>>>(c, a.batch, scr, static_cast<float>(params.levels),
                                         scr.row_count(a.limits.max_batch, c.num_q_heads));
      COMPACT_CHECK_LAUNCH("xattention::quantize_queries_kernel");
    }
    if (!(phases & kScorePhase)) return;
    auto launch = [&]<class Tr>() {
      launch_score<Tr>(score_kernel<Tr>, score_params<Tr>(a, params, scr), a.limits.max_batch,
                       stream);
      COMPACT_CHECK_LAUNCH("xattention::score_kernel");
    };
    if (int8) {
      launch.template operator()<Sm90Int8>();
    } else if (sm90 && Sm90::kSmemBytes <= smem_optin) {
      launch.template operator()<Sm90>();
    } else if (ScoreTraits<T, kD, 16, 1>::kSmemBytes <= smem_optin) {
      launch.template operator()<ScoreTraits<T, kD, 16, 1>>();
    } else {
      launch.template operator()<ScoreTraits<T, kD, 4, 2>>();
    }
  };
  if (grouped) {
    // quantization and scoring launched above
  } else if (c.dtype == DType::bf16) {
    if (c.head_dim == 128)
      run.template operator()<__nv_bfloat16, 128>();
    else
      run.template operator()<__nv_bfloat16, 64>();
  } else {
    if (c.head_dim == 128)
      run.template operator()<__half, 128>();
    else
      run.template operator()<__half, 64>();
  }
  if (!(phases & kSelectPhase)) return;
  SelectParams sel;
  sel.c = c;
  sel.batch = a.batch;
  sel.scr = scr;
  sel.xp = params;
  sel.mask = a.mask;
  sel.key_slots = N;
  constexpr int kThreads = 256;
  // Three CTAs per SM (a cap of 85 registers; ptxas of CUDA 13.0 takes 80 and spills 20 bytes
  // outside the row loop), so that each warp holds its row's 64 loads in flight. On the H100
  // (TP2 128K, stride 8) 0.085-0.086 ms against 0.093-0.094 at four CTAs (64 registers, 88
  // bytes of spills) and 0.100-0.102 at two.
  const auto kernel = select_kernel<kThreads, 3>;
  COMPACT_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          static_cast<int>(select_smem)));
  const dim3 grid(geo.max_q_blocks, a.limits.max_batch * c.num_q_heads);
  kernel<<<grid, kThreads, select_smem, stream>>>(sel);
  COMPACT_CHECK_LAUNCH("xattention::select_kernel");
}

}  // namespace xattention

/// XAttention's block-sparse estimator (Xu et al., 2025) for chunked prefill.
///
/// For sequence b, query head h (KV head h / G), stride S and the chunk's n_b rows:
///
/// 1. Antidiagonal groups: query group i holds chunk rows [i*S, i*S + S) (counted from the chunk
///    start; S divides Bq, so groups nest in query blocks), key group j holds positions
///    [j*S, j*S + S) (from 0; groups nest in KV blocks). Group j is visible to group i when
///    j*S <= the absolute position of i's last row (as XAttention's reshaped causal mask; the
///    group on the diagonal is included whole).
/// 2. Logit (log2 domain) of (i, j): the antidiagonal sum over the S x S sub-block,
///    x = sum_{t=0}^{S-1} q[i*S + S-1-t] . k[j*S + t] * scale * log2(e) / S (XAttention's
///    "inverse" reshaping; terms whose query row is past the chunk or key past L_b are 0).
///    Queries and keys are quantized per token to integers in [-L, L] (L = params.levels, 255
///    by default) with absmax scales,
///    so each q . k is an exact integer (tensor cores and host alike) and the S terms are
///    summed in order t = 0..S-1 with explicitly rounded fp32 steps. With params.quant = group,
///    one scale per antidiagonal group instead (query group i: its S rows; key group j: its S
///    positions; L <= 127): the whole antidiagonal is one exact integer I (int32 on the tensor
///    cores) and x = ((float(I) * a_i) * b_j) * cx.
/// 3. Row softmax over all visible groups, summed per KV block: for each block kb,
///    mu = max x over its groups, sigma = sum 2^(x - mu) (fixed point, 2^20 units); with
///    m = max_kb mu, W[kb] = trunc(sigma * 2^(mu - m)), Z = sum_kb W, the row's mass on kb is
///    P[kb] = floor(W[kb] * 2^32 / Z).
/// 4. Block score A[qb][kb] = sum over the query block's groups of P[kb] (exact integers).
/// 5. Selection (XAttention's find_blocks_chunked): forced blocks (sink kb < sink_blocks and the
///    chunk's causal blocks [chunk_first_kb, last_kb]) are kept; the other blocks kb <= last_kb,
///    ordered by (A desc, kb asc), are kept one by one while forced mass + kept mass is below
///    threshold * (sum of A over all kb) (the block that crosses the threshold is kept). Never a
///    block after last_kb.
///
/// It inherently reads K: every key of every sequence is read from the pages (the estimate
/// costs about 1/S of the Q K^T work of dense attention; it does not use KeySummaries), except
/// with group quantization and an XAttentionKeyCache (`key_cache`), where a chunk quantizes
/// only the key groups it touches and reads the others as int8 (half the bytes of K).
///
/// Device build: per-token query quantization; a scoring kernel over (b, KV head, 256 reshaped
/// rows of the GQA group's heads (128 where shared memory is short), 128 key groups) tiles —
/// each key slice gathered from the pages with cp.async, quantized in shared memory and shared
/// by every head of the group, one tensor-core pass per segment t (wgmma on Hopper, with int8
/// operands when params.levels <= 127 at D = 128; mma.sync elsewhere or with `force_arch` = 80)
/// — writing (mu, sigma) per (row, block) and each row's maximum to the scratch. Group quantization
/// (Hopper, D = 128) quantizes the query groups and the touched key groups first, straight into the
/// scorer's shared-memory tile layout, and scores with int8 wgmma, each stage two bulk copies
/// (score_group_kernel). Then a selection kernel per mask row
/// (fixed-point normalization with the row maxima the scorer kept, the block sums in shared
/// memory, a radix selection of the cumulative threshold: no sort). Bit-identical
/// to build_host(). Head dims 64 and 128.
struct XAttentionMask {
  XAttentionParams params{};  ///< Hyperparameters, validated by configure().
  /// Scoring kernel: 0 (default) the fastest available, 80 mma.sync, 90 wgmma (Hopper with
  /// sm_90a code; an error where unavailable), with int8 operands when params.levels <= 127 and
  /// D = 128. Every kernel gives the same bits.
  int force_arch = 0;
  /// Group quantization's key groups, kept by the caller across chunks (see XAttentionKeyCache).
  /// Without one (the default) the device build quantizes every key of the batch into its
  /// scratch each call, which reads the whole K cache.
  XAttentionKeyCache key_cache{};

  XAttentionMask() = default;  ///< Default hyperparameters.
  /// A mask with hyperparameters `p`.
  explicit XAttentionMask(const XAttentionParams& p) : params(p) {}

  /// Validates the hyperparameters against the config, the key cache (if any) against the
  /// limits and the kernel choice against the device (probes the current device once for sm_90a
  /// code: call at setup, on the device that builds, as the engine does).
  void configure(const AttentionConfig& c, const PlanLimits& l) const {
    params.validate(c);
    xattention::validate_force_arch(force_arch);
    if (key_cache.present()) {
      require(params.quant == XAttentionQuant::group, "XAttentionMask key_cache.keys", "set",
              "nullptr unless params.quant = group (per-token quantization reads the pages)");
      // Slot b for every sequence the limits allow, or a map checked at each build.
      key_cache.validate(c, l, params.stride, key_cache.slot_of_seq ? 0 : l.max_batch);
    }
  }

  /// Scratch bytes of the device build for the config and limits.
  std::size_t workspace_bytes(const AttentionConfig& c, const PlanLimits& l) const {
    const bool grouped = params.quant == XAttentionQuant::group;
    return xattention::Scratch::carve(c, l, params.stride, grouped, grouped && !key_cache.present(),
                                      nullptr, 0)
        .bytes;
  }

  /// Host reference (every pointer host memory).
  void build_host(const MaskArgs& a) const {
    params.validate(a.config);
    require_not_null(a.mask.bits, "mask.bits");
    for (int b = 0; b < a.batch.num_seqs; ++b) {
      const SeqInfo s = seq_info(a.batch, b);
      if (s.q_len <= 0) continue;
      const int n_kb = ceil_div(s.kv_len, a.config.block_k);
      for (int h = 0; h < a.config.num_q_heads; ++h) {
        const auto scores = xattention::block_scores(a, params, b, h);
        for (int qb = 0; qb < static_cast<int>(scores.size()); ++qb) {
          const QueryBlockSpan span = query_block_span(s, qb, a.config.block_q, a.config.block_k);
          xattention::select_row(params, span, scores[qb], n_kb, a.mask.row(b, h, qb));
        }
      }
    }
  }

  /// Device build: three launches with grids fixed by the limits; no allocation, no sync.
  void build_device(const MaskArgs& a, cudaStream_t stream) const {
    xattention::build_device(a, params, stream, xattention::kAllPhases, force_arch, key_cache);
  }

  /// Re-quantizes every key group of the batch's sequences (positions [0, kv_len)) into
  /// key_cache: for slots whose groups are not current (see XAttentionKeyCache). Reads the whole
  /// of each sequence's keys; no allocation, no sync.
  void refill_key_cache(const MaskArgs& a, cudaStream_t stream) const {
    params.validate(a.config);
    require(params.quant == XAttentionQuant::group, "XAttentionMask params.quant", "token",
            "group (only group quantization keeps a key cache)");
    require_not_null(key_cache.keys, "XAttentionMask key_cache.keys");
    xattention::require_group_device(a.config, force_arch);
    key_cache.validate(a.config, a.limits, params.stride, a.batch.num_seqs);
    xattention::launch_key_groups(a, params, key_cache, true, stream);
  }
};

}  // namespace compact
