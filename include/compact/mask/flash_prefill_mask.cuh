/// @file flash_prefill_mask.cuh
/// @brief FlashPrefillMask: block scores of every query block against the cached mean key of every
/// KV block (FlashPrefill), thresholded relative to the row's best block; host reference and
/// tensor-core device kernels that agree bit for bit. QuestMask (quest_mask.cuh) is the same
/// machinery over a per-channel min/max upper bound instead of the mean key.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string_view>
#include <type_traits>
#include <vector>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include "compact/arch/cp_async.cuh"
#include "compact/arch/ldmatrix.cuh"
#include "compact/arch/mma.cuh"
#include "compact/arch/widen.cuh"
#include "compact/cache/summary_check.hpp"
#include "compact/concepts/mask_source.hpp"
#include "compact/core/cuda_check.hpp"
#include "compact/core/dtype.hpp"
#include "compact/core/error.hpp"
#include "compact/core/policy_args.hpp"
#include "compact/core/workspace.hpp"
#include "compact/mask/exact_math.hpp"
#include "compact/mask/group_mass_select.cuh"
#include "compact/mask/query_block_span.hpp"

namespace compact {

/// How FlashPrefillMask turns block scores into a mask.
enum class FlashPrefillSelection : int {
  /// The paper's rule, per mask row: keep a block whose score is >= alpha * the row's best score.
  row_threshold = 0,
  /// Per (sequence, GQA group): normalize each row's scores to shares of the row, sum the shares
  /// over every query block of the chunk and every head of the group, and keep the fewest blocks,
  /// heaviest first, that carry `group_mass` of the group's total (forced blocks count first).
  /// Every row of the group then holds the same selected blocks (plus its own forced ones), so
  /// the union over the group is the budgeted selection itself.
  group_mass = 1,
};

/// Hyperparameters of FlashPrefillMask and QuestMask.
///
/// Defaults: the group_mass selection with tau 0.9 and sharpness 3 (see docs/accuracy.md for the
/// measurement that chose them); paper() gives FlashPrefill's own rule and defaults (its public
/// code, with config.block_q = config.block_k = 128): alpha 0.18 (the paper's RULER setting for
/// LLaMA; its useful range is 0.06-0.18), 2 sink blocks, a window of 4 blocks, the last 2 query
/// blocks of a prompt dense, no minimum budget.
struct FlashPrefillParams {
  /// row_threshold keeps what clears alpha in each row; group_mass keeps a mass budget per group.
  FlashPrefillSelection selection = FlashPrefillSelection::group_mass;
  /// row_threshold: keep a scored block whose score is >= alpha * the best score of its mask row.
  /// In [0, 1]: 0 keeps every block, 1 only the best ones. Unused by group_mass.
  float alpha = 0.18f;
  /// group_mass: the share of the group's total normalized score the kept blocks must carry, in
  /// (0, 1] (1 keeps every block with a nonzero fixed-point score). Unused by row_threshold.
  float group_mass = 0.9f;
  /// Multiplies every block logit before the softmax-style pooling (a temperature of 1/sharpness):
  /// > 1 concentrates each row's scores on its best blocks. 1 is FlashPrefill's scoring.
  float sharpness = 3.0f;
  int sink_blocks = 2;  ///< KV blocks [0, sink_blocks) are always kept.
  /// Local window: the window_blocks KV blocks ending at the query block's diagonal, i.e.
  /// kb > first_kb - window_blocks, are always kept (0: none).
  int window_blocks = 4;
  /// On the final chunk of a prompt (ChunkBatch::final_chunk[b] != 0), the last
  /// last_full_blocks query blocks of the chunk keep every causal block.
  int last_full_blocks = 2;
  /// Minimum budget: also keep the min_budget best-scoring blocks of each row (row_threshold) or
  /// of each group (group_mass) (0: off).
  int min_budget = 0;
  /// Leave each mask row's forced blocks (sink, window, the chunk's own, the final chunk's last
  /// query blocks) out of its scores: the row's maximum, alpha's scale and the row's shares then
  /// come from the blocks the rules do not keep anyway. Without it Quest's bound puts most of
  /// every row's score on the sink block (docs/accuracy.md).
  bool exclude_forced = false;
  /// group_mass only: also keep, for every query row of the chunk and every head of the group,
  /// the non-forced block with the row's largest logit (ties: the lowest block). A key that one
  /// row retrieves (a needle) then survives a budget that the group's summed shares decide.
  bool keep_row_best = false;
  /// keep_row_best only: rank each row's blocks by Quest's min/max bound (QuestBoundScore) rather
  /// than by the mask's own score, which needs KeySummaries::min_k and max_k besides the mask's
  /// summaries. For FlashPrefillMask: a mean key dilutes a single-token spike (a needle) 128-fold,
  /// so the needle's block is rarely a row's best mean-key block, while under the bound it is
  /// (docs/accuracy.md). QuestMask ranks by the bound anyway; there it changes nothing.
  bool row_best_by_bound = false;
  /// keep_row_best: how many of each row's best non-forced blocks it keeps, 1 or 2 (ties: the
  /// lower block first). The second catches a needle that one row's best block (a vertical
  /// head's anchor, say) outranks.
  int row_best_count = 1;

  /// FlashPrefill's own selection and defaults (alpha 0.18 per row, sharpness 1).
  static FlashPrefillParams paper() {
    FlashPrefillParams p;
    p.selection = FlashPrefillSelection::row_threshold;
    p.sharpness = 1.0f;
    return p;
  }

  /// The retrieval-safe selection measured in docs/accuracy.md (for QuestMask, whose bound does
  /// not dilute a single-token spike): group_mass with tau 0.97, forced blocks out of the row
  /// scores, and every query row's best block kept.
  static FlashPrefillParams row_guarded() {
    FlashPrefillParams p;
    p.group_mass = 0.97f;
    p.exclude_forced = true;
    p.keep_row_best = true;
    return p;
  }

  /// FlashPrefillMask's retrieval guard measured in docs/accuracy.md: group_mass selection over
  /// mean-key scores, plus every query row's two best blocks by Quest's bound (keep_row_best with
  /// row_best_by_bound; the summary cache must then hold min/max keys too). The rows' best blocks
  /// carry the retrieved mass the group budget used to, so its tau comes down from 0.9 to 0.85:
  /// the defaults' executed density with more recall and every needle on the generated workload.
  static FlashPrefillParams bound_guarded() {
    FlashPrefillParams p;
    p.group_mass = 0.85f;
    p.keep_row_best = true;
    p.row_best_by_bound = true;
    p.row_best_count = 2;
    return p;
  }

  /// Throws compact::Error naming `<who> params.<field>` when a field is out of range.
  void validate(std::string_view who) const {
    using detail::cat;
    require(selection == FlashPrefillSelection::row_threshold ||
                selection == FlashPrefillSelection::group_mass,
            cat(who, " params.selection"), static_cast<int>(selection),
            "row_threshold (0) or group_mass (1)");
    require(alpha >= 0.0f && alpha <= 1.0f, cat(who, " params.alpha"), alpha,
            "a threshold in [0, 1] (the paper uses 0.06 to 0.18)");
    require(group_mass > 0.0f && group_mass <= 1.0f, cat(who, " params.group_mass"), group_mass,
            "a mass fraction in (0, 1]");
    require(sharpness >= 0.0625f && sharpness <= 16.0f, cat(who, " params.sharpness"), sharpness,
            "a logit multiplier in [1/16, 16] (1: FlashPrefill's scoring)");
    require(sink_blocks >= 0, cat(who, " params.sink_blocks"), sink_blocks, ">= 0");
    require(window_blocks >= 0, cat(who, " params.window_blocks"), window_blocks, ">= 0");
    require(last_full_blocks >= 0, cat(who, " params.last_full_blocks"), last_full_blocks, ">= 0");
    require(min_budget >= 0, cat(who, " params.min_budget"), min_budget, ">= 0 (0: off)");
    require(
        !keep_row_best || selection == FlashPrefillSelection::group_mass,
        cat(who, " params.keep_row_best"), "true",
        "false unless params.selection is group_mass (the row threshold keeps per row already)");
    require(!row_best_by_bound || keep_row_best, cat(who, " params.row_best_by_bound"), "true",
            "false unless params.keep_row_best is set (it picks the score that ranks the rows' "
            "best blocks)");
    require(row_best_count == 1 || row_best_count == 2, cat(who, " params.row_best_count"),
            row_best_count, "1 or 2 (best blocks each row keeps under keep_row_best)");
  }

  /// Whether this mask needs the bound's summaries (min/max keys) besides its own score's.
  bool needs_bound_row_best(bool score_is_bound) const {
    return keep_row_best && row_best_by_bound && !score_is_bound;
  }

  /// Logit factor of the scoring: softmax scale * log2(e) * sharpness, rounded the same way on
  /// the host and the device.
  float logit_factor(float softmax_scale) const {
    return exact::mul(exact::mul(softmax_scale, exact::kLog2e), sharpness);
  }
};

/// Block logit of FlashPrefill: query row . mean key of the block (reads KeySummaries::mean_k).
struct MeanKeyScore {
  /// Scores against the mean key: one summary array.
  static constexpr bool kBound = false;
  /// Mask name used in error messages.
  static constexpr const char* kName = "FlashPrefillMask";
};

/// Block logit of Quest: the upper bound sum_d max(q_d * max_d, q_d * min_d) of q . k over the
/// keys of the block (reads KeySummaries::min_k and max_k). A single-token spike is never
/// diluted, unlike the mean.
struct QuestBoundScore {
  /// Scores against the min/max bound: two summary arrays.
  static constexpr bool kBound = true;
  /// Mask name used in error messages.
  static constexpr const char* kName = "QuestMask";
};

namespace flash_prefill {

/// Quantization levels of queries and summaries: |integer| <= 255, exact in bf16, and
/// D * 255^2 < 2^24 for every D <= 256, so every mma.sync partial sum is an exact integer.
inline constexpr int kLevels = 255;

/// Mean keys per tile of the device kernel; scratch rows are padded to a multiple of it.
inline constexpr int kTileKeys = 32;
static_assert(kTileKeys % 32 == 0, "Scratch::row_best packs a scratch row into whole words");

/// Most heads one CTA packs (the selection runs one warp per head).
inline constexpr int kMaxHeadsPerCta = 8;

/// Packed rows (heads x Bq) per CTA: all four heads of a TP2 group at Bq = 128 for the mean
/// score; the bound needs twice the key tile, so it packs at most 256 rows (shared memory of
/// sm80).
template <bool kBound>
inline constexpr int kMaxPackedRows = kBound ? 256 : 512;

/// True when KV block kb (callers restrict kb to <= the query block's last_kb) is scored by a row
/// at absolute position pos: the row sees the whole block, i.e. the block's last valid token
/// min((kb + 1) * Bk, L) - 1 is at or before pos. Rows with pos < 0 (padding) score nothing.
COMPACT_HOST_DEVICE inline bool scores_block(int kb, int pos, int block_k, int kv_len) {
  return min_of((kb + 1) * block_k, kv_len) - 1 <= pos;
}

/// The always-on blocks of a FlashPrefill row (callers restrict kb to <= span.last_kb): the
/// chunk's own causal blocks, the sink, the window, and everything on the final chunk's last
/// query blocks.
COMPACT_HOST_DEVICE inline bool forced_on(const FlashPrefillParams& p, const QueryBlockSpan& span,
                                          int kb, int qb, int num_q_blocks, bool final_chunk) {
  return kb >= span.chunk_first_kb || kb < p.sink_blocks ||
         (p.window_blocks > 0 && kb > span.first_kb - p.window_blocks) ||
         (final_chunk && qb >= num_q_blocks - p.last_full_blocks);
}

/// True when KV block kb is forced on in at least one query block of the sequence's chunk (and
/// so in the union of the group's rows whatever the selection): group_mass counts its mass as
/// already covered.
COMPACT_HOST_DEVICE inline bool group_forced(const FlashPrefillParams& p, const SeqInfo& s, int kb,
                                             int num_q_blocks, bool final_chunk, int block_q,
                                             int block_k) {
  for (int qb = 0; qb < num_q_blocks; ++qb) {
    const QueryBlockSpan span = query_block_span(s, qb, block_q, block_k);
    if (kb <= span.last_kb && forced_on(p, span, kb, qb, num_q_blocks, final_chunk)) return true;
  }
  return false;
}

/// BlockMask::tail_q_blocks of a sequence: how many of the chunk's last query blocks a tail-split
/// union tables apart from the others.
///
/// On the final chunk, the last_full_blocks rows, which keep every block. On any other chunk, the
/// rows from the first query block whose sliding window lies inside the chunk: the earlier rows'
/// windows reach up to window_blocks - 1 blocks before the chunk, and a single union would hand
/// those blocks to every row of the chunk (1-2% more executed blocks than the rows' own masks at
/// 128K). 0 (no tail) when no row's window reaches before the chunk, or every row's does.
COMPACT_HOST_DEVICE inline int tail_hint(const FlashPrefillParams& p, const SeqInfo& s, int block_q,
                                         int block_k, bool final_chunk) {
  const int n_qb = ceil_div(s.q_len, block_q);
  if (final_chunk) return min_of(max_of(p.last_full_blocks, 0), n_qb);
  if (p.window_blocks <= 1) return 0;  // a window of the diagonal block alone is in the chunk
  for (int qb = 0; qb < n_qb; ++qb) {
    const QueryBlockSpan span = query_block_span(s, qb, block_q, block_k);
    // Earliest window block: first_kb - window_blocks + 1, clamped at block 0.
    if (max_of(span.first_kb - p.window_blocks + 1, 0) >= span.chunk_first_kb) {
      return qb == 0 ? 0 : n_qb - qb;
    }
  }
  return 0;
}

/// Score of a block from its row maximum m (log2 domain) and fixed-point sum F, relative to the
/// row's overall maximum M: F * 2^(m - M). -1 marks an unscored block (m = -inf).
COMPACT_HOST_DEVICE inline float block_score(float m, std::uint32_t f, float row_max) {
  if (exact::ordered_key(m) == exact::kOrderedMinusInf) return -1.0f;
  return exact::mul(exact::from_u32(f), exact::det_exp2(exact::sub(m, row_max)));
}

/// Logit (log2 domain) from an exact integer dot product: (I * row_scale) * key_scale, where
/// row_scale = query scale * softmax scale * log2(e). `I + 0` turns a -0 into +0.
COMPACT_HOST_DEVICE inline float logit(float dot, float row_scale, float key_scale) {
  return exact::mul(exact::mul(exact::add(dot, 0.0f), row_scale), key_scale);
}

/// Scratch of the device build, laid out from the config and limits alone.
struct Scratch {
  __nv_bfloat16* kq = nullptr;       ///< [arrays][max_batch][Hkv][kv_pad][D] quantized summaries.
  float* kscale = nullptr;           ///< [max_batch][Hkv][kv_pad] their scales.
  float* score_m = nullptr;          ///< [max_batch][Hq][max_q_blocks][kv_pad] row maxima.
  std::uint32_t* score_f = nullptr;  ///< Same shape: fixed-point sums, then the block scores.
  /// [max_batch][Hkv][kv_pad] group_mass selection: summed row shares of each KV block.
  std::uint64_t* group_mass = nullptr;
  /// [max_batch][Hkv][kv_pad / 32] keep_row_best: bitmap of the blocks some query row of the
  /// group scores best (forced blocks aside).
  std::uint32_t* row_best = nullptr;
  int kv_pad = 0;                   ///< KV blocks per scratch row (multiple of kTileKeys).
  std::int64_t kq_array_elems = 0;  ///< Elements of one quantized summary array.
  std::size_t bytes = 0;            ///< Bytes carved from the workspace.
  /// row_best_by_bound (mean-key masks): the bound's quantized summaries, [2][max_batch][Hkv]
  /// [kv_pad][D], and their scales; null otherwise.
  __nv_bfloat16* kq_best = nullptr;
  float* kscale_best = nullptr;  ///< [max_batch][Hkv][kv_pad] scales of kq_best.

  /// Lays the scratch out in [base, base + bytes); `bound`: two summary arrays (QuestBoundScore);
  /// `bound_best`: also the bound's arrays for the rows' best blocks (row_best_by_bound).
  static Scratch carve(const AttentionConfig& c, const PlanLimits& l, bool bound, void* base,
                       std::size_t bytes, bool bound_best = false) {
    const Geometry g = Geometry::of(c, l);
    Scratch s;
    s.kv_pad = ceil_div(g.max_kv_blocks, kTileKeys) * kTileKeys;
    const std::size_t rows_k = static_cast<std::size_t>(l.max_batch) * c.num_kv_heads * s.kv_pad;
    const std::size_t rows_q =
        static_cast<std::size_t>(l.max_batch) * c.num_q_heads * g.max_q_blocks * s.kv_pad;
    s.kq_array_elems = static_cast<std::int64_t>(rows_k) * c.head_dim;
    WorkspaceCarver carver(base, bytes);
    s.kq = carver.take<__nv_bfloat16>((bound ? 2 : 1) * rows_k * c.head_dim);
    s.kscale = carver.take<float>(rows_k);
    s.score_m = carver.take<float>(rows_q);
    s.score_f = carver.take<std::uint32_t>(rows_q);
    s.group_mass = carver.take<std::uint64_t>(rows_k);
    s.row_best = carver.take<std::uint32_t>(rows_k / 32);  // kv_pad is a multiple of 32
    if (bound_best) {
      s.kq_best = carver.take<__nv_bfloat16>(2 * rows_k * c.head_dim);
      s.kscale_best = carver.take<float>(rows_k);
    }
    s.bytes = carver.used();
    return s;
  }

  /// The scratch as the row-best pass of row_best_by_bound sees it: the bound's summaries in
  /// place of the mask's own (the rest shared).
  Scratch bound_best_view() const {
    Scratch v = *this;
    v.kq = kq_best;
    v.kscale = kscale_best;
    return v;
  }
};

/// Writes the words of a host mask row that hold blocks [0, n_kb): bit kb is on(kb) for
/// kb <= last_kb and 0 past it (the query block's future).
template <class On>
void write_row(std::uint32_t* row, int n_kb, int last_kb, On&& on) {
  for (int w = 0; w < ceil_div(n_kb, 32); ++w) {
    std::uint32_t word = 0;
    for (int bit = 0; bit < 32 && w * 32 + bit <= last_kb; ++bit) {
      if (on(w * 32 + bit)) word |= 1u << bit;
    }
    row[w] = word;
  }
}

/// Host reference of FlashPrefillMask / QuestMask (every pointer host memory). The arithmetic is
/// that of the device kernels (see exact_math.hpp); loops run in a natural order because every
/// order-sensitive reduction is integer or an ordered maximum.
template <bool kBound>
void build_host(const MaskArgs& a, const FlashPrefillParams& p) {
  const AttentionConfig& c = a.config;
  const int D = c.head_dim, hkv = c.num_kv_heads, G = c.gqa_group();
  const int Bq = c.block_q, Bk = c.block_k;
  const float cexp = p.logit_factor(c.scale());
  const bool group_mode = p.selection == FlashPrefillSelection::group_mass;
  const KeySummaries& sum = a.cache.summaries;
  const std::int64_t q_stride =
      a.batch.q_stride != 0 ? a.batch.q_stride : std::int64_t{c.num_q_heads} * D;
  constexpr int kArrays = kBound ? 2 : 1;
  std::vector<int> kq, qi;
  std::vector<float> kscale, row_t, svals;
  std::vector<int> row_pos;
  std::vector<float> m_row, s_row;
  std::vector<std::uint32_t> f_row;
  std::vector<std::uint64_t> keys;
  std::vector<std::uint64_t> mass;  // group_mode: [kvh][kb]
  std::vector<std::uint8_t> forced, selected, group_forced_rb;
  std::vector<std::uint8_t> row_best;  // keep_row_best: [kvh][kb]
  std::vector<float> best_logit;       // keep_row_best: [row of a query block][row_best_count]
  std::vector<int> best_kb;
  // row_best_by_bound (mean-key masks): the bound's quantized summaries rank the rows' best.
  const bool bound_best = p.needs_bound_row_best(kBound);
  std::vector<int> kq_best;
  std::vector<float> kscale_best;
  // Quantizes every block's summaries of sequence slot `slot`: [kb][kvh][array][D] integers and
  // one scale per (kb, kvh) over all arrays (the device's quantize_summaries_kernel).
  const auto quantize_blocks = [&](bool bound, int slot, int n_kb, std::vector<int>& q,
                                   std::vector<float>& scale) {
    const int arrays = bound ? 2 : 1;
    q.assign(static_cast<std::size_t>(n_kb) * hkv * arrays * D, 0);
    scale.assign(static_cast<std::size_t>(n_kb) * hkv, 0.0f);
    for (int kb = 0; kb < n_kb; ++kb) {
      for (int h = 0; h < hkv; ++h) {
        const std::int64_t at = sum.offset(slot, kb, h, hkv, D);
        const float* src[2] = {bound ? sum.max_k + at : sum.mean_k + at,
                               bound ? sum.min_k + at : nullptr};
        float amax = 0.0f;
        for (int arr = 0; arr < arrays; ++arr) {
          for (int d = 0; d < D; ++d) amax = std::max(amax, exact::abs(src[arr][d]));
        }
        const exact::Quant qt = exact::quant_of(amax, static_cast<float>(kLevels));
        const std::size_t kh = static_cast<std::size_t>(kb) * hkv + h;
        scale[kh] = qt.scale;
        for (int arr = 0; arr < arrays; ++arr) {
          for (int d = 0; d < D; ++d) {
            q[(kh * arrays + arr) * D + d] = exact::quantize(src[arr][d], qt.inv, kLevels);
          }
        }
      }
    }
  };
  // The exact integer q . k of a quantized query row against block summaries (the bound: the
  // max where q_d >= 0, else the min).
  const auto summary_dot = [&](bool bound, const int* q, const int* k) {
    int dot = 0;
    for (int d = 0; d < D; ++d) {
      if (bound) {
        dot += q[d] >= 0 ? q[d] * k[d] : q[d] * k[D + d];
      } else {
        dot += q[d] * k[d];
      }
    }
    return dot;
  };
  for (int b = 0; b < a.batch.num_seqs; ++b) {
    const SeqInfo s = seq_info(a.batch, b);
    if (s.q_len <= 0) continue;
    const int n_kb = ceil_div(s.kv_len, Bk);
    const int n_qb = ceil_div(s.q_len, Bq);
    const bool final_chunk = a.batch.final_chunk != nullptr && a.batch.final_chunk[b] != 0;
    const int slot = sum.slot(b);
    if (group_mode) mass.assign(static_cast<std::size_t>(hkv) * n_kb, 0);
    row_best.assign(static_cast<std::size_t>(hkv) * n_kb, 0);
    quantize_blocks(kBound, slot, n_kb, kq, kscale);
    if (bound_best) quantize_blocks(true, slot, n_kb, kq_best, kscale_best);
    for (int h = 0; h < c.num_q_heads; ++h) {
      const int kvh = h / G;
      for (int qb = 0; qb < n_qb; ++qb) {
        const QueryBlockSpan span = query_block_span(s, qb, Bq, Bk);
        const int rows = min_of(Bq, s.q_len - qb * Bq);
        const int n_cand = span.last_kb + 1;
        // Quantized query rows.
        qi.assign(static_cast<std::size_t>(rows) * D, 0);
        row_t.assign(rows, 0.0f);
        row_pos.assign(rows, 0);
        for (int t = 0; t < rows; ++t) {
          const std::size_t base = static_cast<std::size_t>((s.q_begin + qb * Bq + t) * q_stride) +
                                   static_cast<std::size_t>(h) * D;
          float amax = 0.0f;
          for (int d = 0; d < D; ++d)
            amax = std::max(amax, exact::abs(load_float(a.batch.q, c.dtype, base + d)));
          const exact::Quant qt = exact::quant_of(amax, static_cast<float>(kLevels));
          for (int d = 0; d < D; ++d) {
            qi[static_cast<std::size_t>(t) * D + d] =
                exact::quantize(load_float(a.batch.q, c.dtype, base + d), qt.inv, kLevels);
          }
          row_t[t] = exact::mul(qt.scale, cexp);
          row_pos[t] = span.first_pos + t;
        }
        // Per block: maximum logit over the rows that score it, then the fixed-point sum.
        m_row.assign(n_cand, 0.0f);
        f_row.assign(n_cand, 0u);
        svals.assign(rows, 0.0f);
        const int top = p.row_best_count;
        best_logit.assign(static_cast<std::size_t>(rows) * top, 0.0f);
        best_kb.assign(static_cast<std::size_t>(rows) * top, -1);
        // Blocks in increasing order, replaced only by a larger logit: ties keep the lowest block.
        const auto track_best = [&](int t, int kb) {
          if (!p.keep_row_best || forced_on(p, span, kb, qb, n_qb, final_chunk)) return;
          float v = svals[t];
          if (bound_best) {
            const std::size_t kh = static_cast<std::size_t>(kb) * hkv + kvh;
            const int dot =
                summary_dot(true, &qi[static_cast<std::size_t>(t) * D], &kq_best[kh * 2 * D]);
            v = logit(static_cast<float>(dot), row_t[t], kscale_best[kh]);
          }
          // Insertion into the row's (logit desc, kb asc) list: blocks come in increasing order
          // and only a larger logit moves ahead, so ties keep the lower block first.
          float* logits = &best_logit[static_cast<std::size_t>(t) * top];
          int* kbs = &best_kb[static_cast<std::size_t>(t) * top];
          for (int i = 0; i < top; ++i) {
            if (kbs[i] >= 0 && !(v > logits[i])) continue;
            for (int j = top - 1; j > i; --j) {
              logits[j] = logits[j - 1];
              kbs[j] = kbs[j - 1];
            }
            logits[i] = v;
            kbs[i] = kb;
            break;
          }
        };
        for (int kb = 0; kb < n_cand; ++kb) {
          const std::size_t kh = static_cast<std::size_t>(kb) * hkv + kvh;
          const int* kblock = &kq[kh * kArrays * D];
          std::uint32_t mkey = exact::kOrderedMinusInf;
          for (int t = 0; t < rows; ++t) {
            if (!scores_block(kb, row_pos[t], Bk, s.kv_len)) continue;
            const int dot = summary_dot(kBound, &qi[static_cast<std::size_t>(t) * D], kblock);
            svals[t] = logit(static_cast<float>(dot), row_t[t], kscale[kh]);
            mkey = std::max(mkey, exact::ordered_key(svals[t]));
            track_best(t, kb);
          }
          const float m = exact::from_ordered_key(mkey);
          std::uint32_t f = 0;
          if (mkey != exact::kOrderedMinusInf) {
            for (int t = 0; t < rows; ++t) {
              if (scores_block(kb, row_pos[t], Bk, s.kv_len))
                f += exact::fix_exp2(exact::sub(svals[t], m));
            }
          }
          m_row[kb] = m;
          f_row[kb] = f;
        }
        for (const int kb : best_kb) {
          if (kb >= 0) row_best[static_cast<std::size_t>(kvh) * n_kb + kb] = 1;
        }
        // Selection (exclude_forced: forced blocks are left unscored, out of the row maximum).
        const auto scored_here = [&](int kb) {
          return !(p.exclude_forced && forced_on(p, span, kb, qb, n_qb, final_chunk));
        };
        std::uint32_t row_key = exact::kOrderedMinusInf;
        for (int kb = 0; kb < n_cand; ++kb) {
          if (scored_here(kb)) row_key = std::max(row_key, exact::ordered_key(m_row[kb]));
        }
        const float row_max = exact::from_ordered_key(row_key);
        s_row.assign(n_cand, -1.0f);
        float best = -1.0f;
        keys.clear();
        for (int kb = 0; kb < n_cand; ++kb) {
          s_row[kb] = scored_here(kb) ? block_score(m_row[kb], f_row[kb], row_max) : -1.0f;
          best = std::max(best, s_row[kb]);
          if (s_row[kb] >= 0.0f) {
            keys.push_back((std::uint64_t{exact::bits_of(s_row[kb])} << 32) |
                           static_cast<std::uint32_t>(kb));
          }
        }
        if (group_mode) {
          std::uint64_t total = 0;
          for (int kb = 0; kb < n_cand; ++kb) total += group_mass::score_units(s_row[kb]);
          for (int kb = 0; kb < n_cand; ++kb) {
            mass[static_cast<std::size_t>(kvh) * n_kb + kb] +=
                group_mass::row_share(group_mass::score_units(s_row[kb]), total);
          }
          continue;  // rows are written per group below
        }
        const float thr = exact::mul(p.alpha, best);
        std::uint64_t topk_min = ~std::uint64_t{0};
        const int k = std::min<int>(p.min_budget, static_cast<int>(keys.size()));
        if (k > 0) {
          std::sort(keys.begin(), keys.end(), std::greater<>());
          topk_min = keys[k - 1];
        }
        write_row(a.mask.row(b, h, qb), n_kb, span.last_kb, [&](int kb) {
          if (forced_on(p, span, kb, qb, n_qb, final_chunk)) return true;
          if (!(s_row[kb] >= 0.0f)) return false;  // unscored (NaN included)
          const std::uint64_t key =
              (std::uint64_t{exact::bits_of(s_row[kb])} << 32) | static_cast<std::uint32_t>(kb);
          return s_row[kb] >= thr || (k > 0 && key >= topk_min);
        });
      }
    }
    if (!group_mode) continue;
    // group_mass: one budgeted selection per GQA group, written to every row of the group.
    forced.assign(n_kb, 0);
    selected.assign(n_kb, 0);
    for (int kb = 0; kb < n_kb; ++kb) {
      forced[kb] = group_forced(p, s, kb, n_qb, final_chunk, Bq, Bk) ? 1 : 0;
    }
    const std::uint32_t tau = group_mass::tau_fixed(p.group_mass);
    for (int kvh = 0; kvh < hkv; ++kvh) {
      // keep_row_best: the rows' best blocks are kept, so their mass counts as covered.
      const std::uint8_t* rb = &row_best[static_cast<std::size_t>(kvh) * n_kb];
      group_forced_rb.assign(forced.begin(), forced.end());
      for (int kb = 0; kb < n_kb; ++kb) group_forced_rb[kb] |= rb[kb];
      group_mass::select_host(&mass[static_cast<std::size_t>(kvh) * n_kb], group_forced_rb.data(),
                              n_kb, tau, p.min_budget, selected.data());
      for (int kb = 0; kb < n_kb; ++kb) selected[kb] |= rb[kb];
      for (int h = kvh * G; h < (kvh + 1) * G; ++h) {
        for (int qb = 0; qb < n_qb; ++qb) {
          const QueryBlockSpan span = query_block_span(s, qb, Bq, Bk);
          write_row(a.mask.row(b, h, qb), n_kb, span.last_kb, [&](int kb) {
            return selected[kb] || forced_on(p, span, kb, qb, n_qb, final_chunk);
          });
        }
      }
    }
  }
}

// ------------------------------------------------------------------------------------------------
// Device kernels.

/// Quantizes the summaries of every block of every sequence into bf16 integers plus one scale
/// per (sequence, KV head, block): one warp per (b, kb, kvh) of the limits' layout. With
/// `clear_stats` it also zeroes the block's group mass and row-best bit, which the scoring kernels
/// accumulate into (once per build: row_best_by_bound's second quantization pass leaves them).
template <bool kBound, int kD>
__global__ void __launch_bounds__(256)
    quantize_summaries_kernel(AttentionConfig c, int max_kv_blocks, ChunkBatch batch,
                              KeySummaries sum, Scratch scr, bool clear_stats) {
  const int lane = threadIdx.x & 31;
  const long long wid = static_cast<long long>(blockIdx.x) * 8 + (threadIdx.x >> 5);
  const int kvh = static_cast<int>(wid % c.num_kv_heads);
  const long long rest = wid / c.num_kv_heads;
  const int kb = static_cast<int>(rest % max_kv_blocks);
  const int b = static_cast<int>(rest / max_kv_blocks);
  if (b >= batch.num_seqs) return;
  if (kb >= ceil_div(batch.kv_lens[b], c.block_k)) return;
  constexpr int kPer = kD / 32;
  constexpr int kArrays = kBound ? 2 : 1;
  const int slot = sum.slot(b);
  const bool ok = slot >= 0 && slot < sum.num_slots;  // host mirrors check this
  const std::int64_t at = ok ? sum.offset(slot, kb, kvh, c.num_kv_heads, kD) : 0;
  float x[kArrays][kPer];
  float amax = 0.0f;
#pragma unroll
  for (int arr = 0; arr < kArrays; ++arr) {
    const float* src = kBound ? (arr == 0 ? sum.max_k : sum.min_k) : sum.mean_k;
#pragma unroll
    for (int j = 0; j < kPer; ++j) {
      x[arr][j] = ok ? src[at + lane + 32 * j] : 0.0f;
      amax = fmaxf(amax, exact::abs(x[arr][j]));
    }
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
  const exact::Quant qt = exact::quant_of(amax, static_cast<float>(kLevels));
  const std::int64_t row = (static_cast<std::int64_t>(b) * c.num_kv_heads + kvh) * scr.kv_pad + kb;
#pragma unroll
  for (int arr = 0; arr < kArrays; ++arr) {
#pragma unroll
    for (int j = 0; j < kPer; ++j) {
      scr.kq[arr * scr.kq_array_elems + row * kD + lane + 32 * j] =
          __float2bfloat16_rn(exact::quantize_in_range(x[arr][j], qt.inv));
    }
  }
  if (lane == 0) {
    scr.kscale[row] = qt.scale;
    if (clear_stats) {
      scr.group_mass[row] = 0;  // group_mass: the scoring kernel accumulates row shares here
      if (kb % 32 == 0) scr.row_best[row / 32] = 0u;  // keep_row_best: the scoring kernels OR here
    }
  }
}

/// Warps and m16 row atoms per warp of the scoring kernel.
template <int kWarps_, int kAtoms_>
struct CtaShape {
  static constexpr int kWarps = kWarps_;  ///< Warps per CTA.
  static constexpr int kAtoms = kAtoms_;  ///< m16 row atoms per warp.
};

/// Compile-time geometry of the scoring kernel.
template <class T, int kD_, class Shape, bool kBound_>
struct Traits {
  using Element = T;                                  ///< Query element type (bf16 or fp16).
  static constexpr bool kBound = kBound_;             ///< Score::kBound: min/max summaries.
  static constexpr int kD = kD_;                      ///< Head dim.
  static constexpr int kWarps = Shape::kWarps;        ///< Warps per CTA.
  static constexpr int kAtoms = Shape::kAtoms;        ///< m16 row atoms per warp.
  static constexpr int kThreads = kWarps * 32;        ///< Threads per CTA.
  static constexpr int kRows = kWarps * 16 * kAtoms;  ///< Packed (head, token) rows per CTA.
  static constexpr int kN = kTileKeys;                ///< KV blocks (summary rows) per key tile.
  static constexpr int kNAtoms = kN / 8;              ///< n8 column chunks of a tile.
  static constexpr int kKSteps = kD / 16;             ///< k16 steps over the head dim.
  static constexpr int kChunks = kD / 8;              ///< 16-byte chunks per row.
  static constexpr int kArrays = kBound ? 2 : 1;      ///< Summary arrays: mean, or min and max.
  static constexpr int kMaxHeads = kMaxHeadsPerCta;   ///< Most heads packed into one CTA.

  static constexpr int kQBytes = kRows * kD * 2;    ///< Shared bytes of the query tile.
  static constexpr int kKArrayBytes = kN * kD * 2;  ///< Shared bytes of one summary array tile.
  /// Shared bytes of one key stage.
  static constexpr int kKStageBytes = kArrays * kKArrayBytes;
  static constexpr int kOffK = kQBytes;  ///< Offset of the two key stages.
  /// Offset of the key scales, [2][kN] float.
  static constexpr int kOffScale = kOffK + 2 * kKStageBytes;
  /// Offset of the row scales, [kRows] float.
  static constexpr int kOffRowT = kOffScale + 2 * kN * 4;
  /// Offset of the max reduction, [2][kMaxHeads][kN] u32.
  static constexpr int kOffRedMax = kOffRowT + kRows * 4;
  /// Offset of the sum reduction, [2][kMaxHeads][kN] u32.
  static constexpr int kOffRedSum = kOffRedMax + 2 * kMaxHeads * kN * 4;
  /// Dynamic shared memory per CTA.
  static constexpr int kSmemBytes = kOffRedSum + 2 * kMaxHeads * kN * 4;

  static_assert(kChunks % 8 == 0, "the swizzle permutes groups of 8 chunks");
  static_assert(kThreads % kChunks == 0 && kRows % (kThreads / kChunks) == 0,
                "query loads must tile the packed rows exactly");
  static_assert(kN % 16 == 0, "ldmatrix reads keys in groups of 16");
  static_assert(kMaxHeads * kN <= kThreads, "one thread per (head, key) writes the tile results");

  /// 16-byte chunk index of (row, chunk) in a row-major tile: chunk ^ (row % 8) keeps the eight
  /// rows an ldmatrix reads in distinct banks.
  static __device__ __forceinline__ int swizzle(int row, int chunk) {
    return row * kChunks + (chunk ^ (row & 7));
  }
};

/// Everything the scoring kernel reads besides the traits.
struct ScoreParams {
  AttentionConfig c;      ///< The attention config.
  ChunkBatch batch;       ///< The chunk's queries and sequence lengths.
  FlashPrefillParams fp;  ///< Mask hyperparameters.
  Scratch scr;            ///< Summaries and score scratch.
  BlockMask mask;         ///< Output bitmap.
  float cexp = 0.0f;      ///< softmax scale * log2(e)
  int heads_per_cta = 1;  ///< hpc: heads of one GQA group packed into a CTA
  int head_chunks = 1;    ///< G / hpc
  int q_blocks = 0;       ///< Query blocks per (sequence, head) in the score scratch.
};

/// Mask of the sign bits of two packed bf16 (0xffff where negative).
__device__ __forceinline__ std::uint32_t neg_lanes(std::uint32_t x) {
  return ((x >> 15) & 0x00010001u) * 0xffffu;
}

/// Inserts (key, kb) into a list of the kTop best (ordered logit key, block) pairs, kept in
/// (key desc, block asc) order; kb < 0 (an empty entry) is not inserted. The order is total over
/// distinct blocks, so merging disjoint lists entry by entry in any order gives the same list.
template <int kTop>
__device__ __forceinline__ void insert_best(std::uint32_t (&keys)[kTop], int (&kbs)[kTop],
                                            std::uint32_t key, int kb) {
  if (kb < 0) return;
#pragma unroll
  for (int i = 0; i < kTop; ++i) {
    const bool ahead = kbs[i] < 0 || key > keys[i] || (key == keys[i] && kb < kbs[i]);
    const std::uint32_t k_out = keys[i];
    const int kb_out = kbs[i];
    keys[i] = ahead ? key : keys[i];
    kbs[i] = ahead ? kb : kbs[i];
    key = ahead ? k_out : key;  // the displaced entry moves on down the list
    kb = ahead ? kb_out : kb;
    if (kb < 0) return;
  }
}

/// insert_best() for a block that comes after every listed one (a thread's own scan, blocks in
/// increasing order): a tie stays behind, so only keys are compared. The list is sorted, so the
/// entries the new one passes are a suffix; each slot takes its upper neighbour, the new entry or
/// itself. With kTop = 1 this is the plain running maximum (no block comparison in the hot loop).
template <int kTop>
__device__ __forceinline__ void insert_later(std::uint32_t (&keys)[kTop], int (&kbs)[kTop],
                                             std::uint32_t key, int kb) {
#pragma unroll
  for (int i = kTop - 1; i >= 0; --i) {
    const int up = i > 0 ? i - 1 : 0;
    const bool ahead = kbs[i] < 0 || key > keys[i];
    const bool above = i > 0 && (kbs[up] < 0 || key > keys[up]);  // it passes slot i - 1 too
    if (above) {
      keys[i] = keys[up];
      kbs[i] = kbs[up];
    } else if (ahead) {
      keys[i] = key;
      kbs[i] = kb;
    }
  }
}

/// Scoring + selection for one (sequence, KV head, head chunk, query block): packed rows are
/// (local head g, token t) = (r / Bq, r % Bq). Every mean-key tile loaded into shared memory is
/// used by all packed heads (GQA packing); each head's scores and mask rows are its own, so the
/// result is exactly the per-head computation.
///
/// kRowBest is fp.keep_row_best at compile time, as the count of blocks each row keeps (0: off;
/// fp.row_best_count): its per-row best (key, block) registers live across the whole key loop,
/// and a runtime flag made every build pay for them (about 1.5% of the mask time at TP2 128K,
/// measured on the H100). kMass = false is the row-best pass of
/// row_best_by_bound: the bound's logits only rank each row's blocks (into Scratch::row_best);
/// no block statistics, no selection, no tail hint (the mask's own pass writes those).
template <class Tr, int kRowBest, bool kMass>
__device__ __forceinline__ void score_cta(const ScoreParams& p) {
  static_assert(kRowBest >= 0 && kRowBest <= 2, "keep_row_best keeps 1 or 2 blocks a row");
  static_assert(kMass || kRowBest > 0, "a pass without the block statistics only ranks rows' best");
  using T = typename Tr::Element;
  using bf16 = __nv_bfloat16;
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* sQ = reinterpret_cast<bf16*>(smem);
  bf16* sK = reinterpret_cast<bf16*>(smem + Tr::kOffK);
  float* sScale = reinterpret_cast<float*>(smem + Tr::kOffScale);
  float* sRowT = reinterpret_cast<float*>(smem + Tr::kOffRowT);
  std::uint32_t* sRedMax = reinterpret_cast<std::uint32_t*>(smem + Tr::kOffRedMax);
  std::uint32_t* sRedSum = reinterpret_cast<std::uint32_t*>(smem + Tr::kOffRedSum);

  const AttentionConfig& c = p.c;
  const int Bq = c.block_q, Bk = c.block_k;
  const int qb = blockIdx.x;
  int y = blockIdx.y;
  const int hc = y % p.head_chunks;
  y /= p.head_chunks;
  const int kvh = y % c.num_kv_heads;
  const int b = y / c.num_kv_heads;
  if (b >= p.batch.num_seqs) return;
  const SeqInfo s = seq_info(p.batch, b);
  if (kMass && p.mask.tail_q_blocks != nullptr && qb == 0 && hc == 0 && kvh == 0 &&
      threadIdx.x == 0) {
    p.mask.tail_q_blocks[b] =
        tail_hint(p.fp, s, c.block_q, c.block_k,
                  p.batch.final_chunk != nullptr && p.batch.final_chunk[b] != 0);
  }
  if (qb * Bq >= s.q_len) return;
  const QueryBlockSpan span = query_block_span(s, qb, Bq, Bk);
  const int rows = min_of(Bq, s.q_len - qb * Bq);
  const int n_kb = ceil_div(s.kv_len, Bk);
  const int n_cand = span.last_kb + 1;
  const int n_tiles = ceil_div(n_cand, Tr::kN);
  const int hpc = p.heads_per_cta;
  const int h0 = kvh * c.gqa_group() + hc * hpc;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const std::int64_t key_row0 =
      (static_cast<std::int64_t>(b) * c.num_kv_heads + kvh) * p.scr.kv_pad;

  for (int i = tid; i < 2 * Tr::kMaxHeads * Tr::kN; i += Tr::kThreads) {
    sRedMax[i] = exact::kOrderedMinusInf;
    sRedSum[i] = 0u;
  }

  // Issues the cp.async copies of mean-key tile `it` into stage `stage` (keys past the
  // sequence's blocks are zero-filled without a read).
  auto load_tile = [&](int it, int stage) {
    const int n0 = it * Tr::kN;
    constexpr int kTotal = Tr::kArrays * Tr::kN * Tr::kChunks;
#pragma unroll
    for (int j = 0; j < ceil_div(kTotal, Tr::kThreads); ++j) {
      const int i = tid + j * Tr::kThreads;
      if (kTotal % Tr::kThreads != 0 && i >= kTotal) break;
      const int arr = i / (Tr::kN * Tr::kChunks);
      const int key = (i / Tr::kChunks) % Tr::kN;
      const int ch = i % Tr::kChunks;
      const bool ok = n0 + key < n_kb;
      const bf16* src =
          p.scr.kq + arr * p.scr.kq_array_elems + (key_row0 + n0 + key) * Tr::kD + ch * 8;
      bf16* dst = sK + (stage * Tr::kArrays + arr) * (Tr::kN * Tr::kD) + Tr::swizzle(key, ch) * 8;
      arch::cp_async_16(dst, ok ? src : p.scr.kq, ok);
    }
    if (tid < Tr::kN / 4) {
      const bool ok = n0 + 4 * tid < n_kb;
      arch::cp_async_16(sScale + stage * Tr::kN + 4 * tid,
                        ok ? p.scr.kscale + key_row0 + n0 + 4 * tid : p.scr.kscale, ok);
    }
  };
  load_tile(0, 0);
  arch::cp_async_commit();

  // Query rows: load, quantize per row (absmax over D), store as bf16 integers.
  {
    const T* q = static_cast<const T*>(p.batch.q);
    const std::int64_t q_stride =
        p.batch.q_stride != 0 ? p.batch.q_stride : std::int64_t{c.num_q_heads} * Tr::kD;
    constexpr int kRowsPerPass = Tr::kThreads / Tr::kChunks;
    const int ch = tid % Tr::kChunks;
#pragma unroll 1
    for (int r0 = 0; r0 < Tr::kRows; r0 += kRowsPerPass) {
      const int r = r0 + tid / Tr::kChunks;
      const int g = r / Bq, t = r % Bq;
      const bool valid = g < hpc && t < rows;
      float x[8];
      if (valid) {
        arch::widen8<T>(
            *reinterpret_cast<const uint4*>(q + (s.q_begin + qb * Bq + t) * q_stride +
                                            static_cast<std::int64_t>(h0 + g) * Tr::kD + ch * 8),
            x);
      } else {
#pragma unroll
        for (int i = 0; i < 8; ++i) x[i] = 0.0f;
      }
      float amax = 0.0f;
#pragma unroll
      for (int i = 0; i < 8; ++i) amax = fmaxf(amax, exact::abs(x[i]));
#pragma unroll
      for (int o = Tr::kChunks / 2; o > 0; o >>= 1) {
        amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
      }
      const exact::Quant qt = exact::quant_of(amax, static_cast<float>(kLevels));
      // quantize() in its full-rate form, the same integers: its conversions run at a quarter
      // of the FMA rate, and at chunk 0 (8 KV blocks) the kernel is mostly this prologue (54 us
      // at TP2 with quantize(), 21.5M warp instructions; Nsight Compute, H200).
      *reinterpret_cast<uint4*>(sQ + Tr::swizzle(r, ch) * 8) = exact::quantize8_bf16(x, qt.inv);
      if (ch == 0) sRowT[r] = valid ? exact::mul(qt.scale, p.cexp) : 0.0f;
    }
  }
  __syncthreads();

  // This thread's accumulator rows: atom a, half hh -> packed row warp*16*kAtoms + 16a + lane/4 +
  // 8hh.
  const int warp_row0 = warp * 16 * Tr::kAtoms;
  int row_pos[Tr::kAtoms][2];
  float row_t[Tr::kAtoms][2];
  int atom_head[Tr::kAtoms];
#pragma unroll
  for (int a = 0; a < Tr::kAtoms; ++a) {
    atom_head[a] = (warp_row0 + 16 * a) / Bq;  // Bq >= 16: an atom lies in one head
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      const int r = warp_row0 + 16 * a + (lane >> 2) + 8 * hh;
      const int g = r / Bq, t = r % Bq;
      const bool valid = g < hpc && t < rows;
      row_pos[a][hh] = valid ? span.first_pos + t : -1;
      row_t[a][hh] = sRowT[r];
    }
  }

  // For forced_on(): the row-best tracking, exclude_forced and the row threshold's writer.
  const int n_qb = ceil_div(s.q_len, Bq);
  const bool final_chunk = p.batch.final_chunk != nullptr && p.batch.final_chunk[b] != 0;
  // kRowBest: this thread's kRowBest best non-forced (logit key, block) per accumulator row, over
  // its columns, in (key desc, block asc) order; the quad's four lanes merge them after the last
  // tile.
  constexpr int kTop = kRowBest > 0 ? kRowBest : 1;
  std::uint32_t best_key[Tr::kAtoms][2][kTop];
  int best_kb[Tr::kAtoms][2][kTop];
#pragma unroll
  for (int a = 0; a < Tr::kAtoms; ++a) {
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
#pragma unroll
      for (int i = 0; i < kTop; ++i) {
        best_key[a][hh][i] = 0u;
        best_kb[a][hh][i] = -1;
      }
    }
  }

  const int mi = lane & 7, mj = lane >> 3;
  const std::int64_t mask_rows = static_cast<std::int64_t>(p.q_blocks);
  auto score_row = [&](int h) -> std::int64_t {
    return ((static_cast<std::int64_t>(b) * c.num_q_heads + h) * mask_rows + qb) * p.scr.kv_pad;
  };

#pragma unroll 1
  for (int it = 0; it < n_tiles; ++it) {
    const int stage = it & 1;
    const int n0 = it * Tr::kN;
    std::uint32_t* red_max = sRedMax + stage * Tr::kMaxHeads * Tr::kN;
    std::uint32_t* red_sum = sRedSum + stage * Tr::kMaxHeads * Tr::kN;
    if (it + 1 < n_tiles) {
      load_tile(it + 1, stage ^ 1);
      arch::cp_async_commit();
      arch::cp_async_wait<1>();
    } else {
      arch::cp_async_wait<0>();
    }
    __syncthreads();

    // S = Q K^T: exact integers in fp32.
    float acc[Tr::kAtoms][Tr::kNAtoms][4];
#pragma unroll
    for (int a = 0; a < Tr::kAtoms; ++a) {
#pragma unroll
      for (int n = 0; n < Tr::kNAtoms; ++n) {
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[a][n][e] = 0.0f;
      }
    }
    const bf16* sKs = sK + stage * Tr::kArrays * Tr::kN * Tr::kD;
#pragma unroll
    for (int ks = 0; ks < Tr::kKSteps; ++ks) {
      std::uint32_t bfrag[Tr::kArrays][Tr::kNAtoms][2];
#pragma unroll
      for (int arr = 0; arr < Tr::kArrays; ++arr) {
#pragma unroll
        for (int np = 0; np < Tr::kNAtoms / 2; ++np) {
          std::uint32_t r4[4];
          const int key = np * 16 + mi + 8 * (mj >> 1);
          arch::ldmatrix_x4(r4,
                            sKs + arr * Tr::kN * Tr::kD + Tr::swizzle(key, 2 * ks + (mj & 1)) * 8);
          bfrag[arr][2 * np][0] = r4[0];
          bfrag[arr][2 * np][1] = r4[1];
          bfrag[arr][2 * np + 1][0] = r4[2];
          bfrag[arr][2 * np + 1][1] = r4[3];
        }
      }
#pragma unroll
      for (int a = 0; a < Tr::kAtoms; ++a) {
        std::uint32_t qa[4];
        const int row = warp_row0 + 16 * a + mi + 8 * (mj & 1);
        arch::ldmatrix_x4(qa, sQ + Tr::swizzle(row, 2 * ks + (mj >> 1)) * 8);
        if constexpr (Tr::kBound) {
          std::uint32_t qp[4], qn[4];
#pragma unroll
          for (int i = 0; i < 4; ++i) {
            const std::uint32_t neg = neg_lanes(qa[i]);
            qp[i] = qa[i] & ~neg;
            qn[i] = qa[i] & neg;
          }
#pragma unroll
          for (int n = 0; n < Tr::kNAtoms; ++n) {
            arch::mma_16816<bf16>(acc[a][n], qp, bfrag[0][n]);
            arch::mma_16816<bf16>(acc[a][n], qn, bfrag[1][n]);
          }
        } else {
#pragma unroll
          for (int n = 0; n < Tr::kNAtoms; ++n) arch::mma_16816<bf16>(acc[a][n], qa, bfrag[0][n]);
        }
      }
    }

    // Logits (log2 domain); -inf where the row does not score the block. Every row sees the
    // whole of a block that ends before the chunk, so only the tiles the chunk reaches into test
    // the causal rule per element.
    const float* scale_t = sScale + stage * Tr::kN;
    const bool before_chunk = n0 + Tr::kN <= span.chunk_first_kb;
#pragma unroll
    for (int n = 0; n < Tr::kNAtoms; ++n) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int col = n * 8 + 2 * (lane & 3) + e;
        const int kb = n0 + col;
        const float ks_ = scale_t[col];
#pragma unroll
        for (int a = 0; a < Tr::kAtoms; ++a) {
#pragma unroll
          for (int hh = 0; hh < 2; ++hh) {
            const bool scored =
                row_pos[a][hh] >= 0 &&
                (before_chunk || (kb < n_cand && scores_block(kb, row_pos[a][hh], Bk, s.kv_len)));
            acc[a][n][2 * hh + e] =
                scored ? logit(acc[a][n][2 * hh + e], row_t[a][hh], ks_) : -INFINITY;
          }
        }
      }
    }
    if constexpr (kRowBest > 0) {
#pragma unroll
      for (int n = 0; n < Tr::kNAtoms; ++n) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int kb = n0 + n * 8 + 2 * (lane & 3) + e;  // increasing per thread (insert_later)
          if (kb >= n_cand || forced_on(p.fp, span, kb, qb, n_qb, final_chunk)) continue;
#pragma unroll
          for (int a = 0; a < Tr::kAtoms; ++a) {
#pragma unroll
            for (int hh = 0; hh < 2; ++hh) {
              const float v = acc[a][n][2 * hh + e];
              if (v != -INFINITY)
                insert_later<kTop>(best_key[a][hh], best_kb[a][hh], exact::ordered_key(v), kb);
            }
          }
        }
      }
    }

    if constexpr (kMass) {
      // Per (head, block): maximum over the head's rows (ordered keys, order-free). The thread's
      // atoms of one head combine in registers first, so the quad-column shuffles run once per
      // head rather than once per atom.
      {
        std::uint32_t run[Tr::kNAtoms][2];
#pragma unroll
        for (int a = 0; a < Tr::kAtoms; ++a) {
          const bool same_head = a > 0 && atom_head[a] == atom_head[a - 1];
#pragma unroll
          for (int n = 0; n < Tr::kNAtoms; ++n) {
#pragma unroll
            for (int e = 0; e < 2; ++e) {
              const std::uint32_t u =
                  max(exact::ordered_key(acc[a][n][e]), exact::ordered_key(acc[a][n][2 + e]));
              run[n][e] = same_head ? max(run[n][e], u) : u;
            }
          }
          const bool flush = a + 1 == Tr::kAtoms || atom_head[a + 1] != atom_head[a];
          if (flush) {  // warp-uniform: atom_head depends on the warp and atom only
#pragma unroll
            for (int n = 0; n < Tr::kNAtoms; ++n) {
#pragma unroll
              for (int e = 0; e < 2; ++e) {
                std::uint32_t u = run[n][e];
                u = max(u, __shfl_xor_sync(0xffffffffu, u, 4));
                u = max(u, __shfl_xor_sync(0xffffffffu, u, 8));
                u = max(u, __shfl_xor_sync(0xffffffffu, u, 16));
                if (lane < 4 && atom_head[a] < hpc) {
                  atomicMax(&red_max[atom_head[a] * Tr::kN + n * 8 + 2 * lane + e], u);
                }
              }
            }
          }
        }
      }
      __syncthreads();

      // Per (head, block): fixed-point sum of 2^(logit - max) over the head's rows (integer,
      // order-free). logit - max is never above 0, so the full-rate fix_exp2_nonpos() gives
      // fix_exp2()'s bits; an unscored -inf (or -inf - -inf = NaN) gives 0, as fix_exp2 skips it.
      {
        std::uint32_t run[Tr::kNAtoms][2];
#pragma unroll
        for (int a = 0; a < Tr::kAtoms; ++a) {
          const int g = min_of(atom_head[a], Tr::kMaxHeads - 1);
          const bool same_head = a > 0 && atom_head[a] == atom_head[a - 1];
#pragma unroll
          for (int n = 0; n < Tr::kNAtoms; ++n) {
#pragma unroll
            for (int e = 0; e < 2; ++e) {
              const float m =
                  exact::from_ordered_key(red_max[g * Tr::kN + n * 8 + 2 * (lane & 3) + e]);
              const std::uint32_t f = exact::fix_exp2_nonpos(__fsub_rn(acc[a][n][e], m)) +
                                      exact::fix_exp2_nonpos(__fsub_rn(acc[a][n][2 + e], m));
              run[n][e] = same_head ? run[n][e] + f : f;
            }
          }
          const bool flush = a + 1 == Tr::kAtoms || atom_head[a + 1] != atom_head[a];
          if (flush) {  // warp-uniform
#pragma unroll
            for (int n = 0; n < Tr::kNAtoms; ++n) {
#pragma unroll
              for (int e = 0; e < 2; ++e) {
                std::uint32_t f = run[n][e];
                f += __shfl_xor_sync(0xffffffffu, f, 4);
                f += __shfl_xor_sync(0xffffffffu, f, 8);
                f += __shfl_xor_sync(0xffffffffu, f, 16);
                if (lane < 4 && atom_head[a] < hpc) {
                  atomicAdd(&red_sum[atom_head[a] * Tr::kN + n * 8 + 2 * lane + e], f);
                }
              }
            }
          }
        }
      }
      __syncthreads();

      // One thread per (head, block) stores the tile's results and resets this parity's buffers.
      if (tid < hpc * Tr::kN) {
        const int g = tid / Tr::kN, col = tid % Tr::kN, kb = n0 + col;
        if (kb < n_cand) {
          const std::int64_t at = score_row(h0 + g) + kb;
          p.scr.score_m[at] = exact::from_ordered_key(red_max[g * Tr::kN + col]);
          p.scr.score_f[at] = red_sum[g * Tr::kN + col];
        }
        red_max[g * Tr::kN + col] = exact::kOrderedMinusInf;
        red_sum[g * Tr::kN + col] = 0u;
      }
    } else {
      __syncthreads();  // every warp is done with this stage before the next load reuses it
    }
  }
  if constexpr (kRowBest > 0) {
    // The quad (lanes 4i..4i+3) holds the columns of the same rows, disjoint: merging the four
    // lists in (key desc, block asc) order gives the row's best blocks, as the host's scan finds.
#pragma unroll
    for (int a = 0; a < Tr::kAtoms; ++a) {
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
#pragma unroll
        for (int o = 1; o <= 2; o <<= 1) {
          std::uint32_t other_key[kTop];
          int other_kb[kTop];
#pragma unroll
          for (int i = 0; i < kTop; ++i) {
            other_key[i] = __shfl_xor_sync(0xffffffffu, best_key[a][hh][i], o);
            other_kb[i] = __shfl_xor_sync(0xffffffffu, best_kb[a][hh][i], o);
          }
#pragma unroll
          for (int i = 0; i < kTop; ++i) {
            insert_best<kTop>(best_key[a][hh], best_kb[a][hh], other_key[i], other_kb[i]);
          }
        }
        if ((lane & 3) == 0) {
#pragma unroll
          for (int i = 0; i < kTop; ++i) {
            const int kb = best_kb[a][hh][i];
            if (kb >= 0) atomicOr(&p.scr.row_best[key_row0 / 32 + kb / 32], 1u << (kb & 31));
          }
        }
      }
    }
  }
  if constexpr (!kMass) return;
  __syncthreads();  // the scores of every block are in global memory, visible to the CTA

  // Selection: one warp per packed head.
  if (warp >= hpc) return;
  const int h = h0 + warp;
  const std::int64_t base = score_row(h);
  float* score_s = reinterpret_cast<float*>(p.scr.score_f);  // scores overwrite the sums
  // exclude_forced: forced blocks stay unscored (-1) and out of the row maximum.
  const auto scored_here = [&](int kb) {
    return !(p.fp.exclude_forced && forced_on(p.fp, span, kb, qb, n_qb, final_chunk));
  };
  std::uint32_t mkey = exact::kOrderedMinusInf;
  for (int kb = lane; kb < n_cand; kb += 32) {
    if (scored_here(kb)) mkey = max(mkey, exact::ordered_key(p.scr.score_m[base + kb]));
  }
  mkey = __reduce_max_sync(0xffffffffu, mkey);
  const float row_max = exact::from_ordered_key(mkey);
  float best = -1.0f;
  int scored = 0;
  for (int kb = lane; kb < n_cand; kb += 32) {
    const float sc = scored_here(kb)
                         ? block_score(p.scr.score_m[base + kb], p.scr.score_f[base + kb], row_max)
                         : -1.0f;
    score_s[base + kb] = sc;
    best = fmaxf(best, sc);
    scored += sc >= 0.0f ? 1 : 0;
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) best = fmaxf(best, __shfl_xor_sync(0xffffffffu, best, o));
  scored = __reduce_add_sync(0xffffffffu, scored);
  if (p.fp.selection == FlashPrefillSelection::group_mass) {
    // The row's total in integer score units, then every block's share of the row into the
    // group's mass (integer atomics: the sums do not depend on the order). group_select_kernel
    // selects and writes the rows.
    unsigned long long total = 0;
    for (int kb = lane; kb < n_cand; kb += 32) total += group_mass::score_units(score_s[base + kb]);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) total += __shfl_xor_sync(0xffffffffu, total, o);
    unsigned long long* mass = reinterpret_cast<unsigned long long*>(p.scr.group_mass) + key_row0;
    for (int kb = lane; kb < n_cand; kb += 32) {
      const std::uint64_t u = group_mass::score_units(score_s[base + kb]);
      if (u != 0) atomicAdd(&mass[kb], group_mass::row_share(u, total));
    }
    return;
  }
  const float thr = exact::mul(p.fp.alpha, best);

  // Minimum budget: the k best blocks by (score, kb), found by bitwise search on the score bits,
  // then on kb among the ties at the k-th score.
  const int k = min_of(p.fp.min_budget, scored);
  std::uint32_t tie_bits = 0xffffffffu;  // scores above tie_bits, and the ties with kb >= tie_kb
  int tie_kb = 0;
  if (k > 0) {
    auto count = [&](auto&& pred) {
      int cnt = 0;
      for (int kb = lane; kb < n_cand; kb += 32) {
        const float sc = score_s[base + kb];
        if (sc >= 0.0f && pred(exact::bits_of(sc), kb)) ++cnt;
      }
      return static_cast<int>(__reduce_add_sync(0xffffffffu, static_cast<unsigned>(cnt)));
    };
    std::uint32_t v = 0;
    for (int bit = 30; bit >= 0; --bit) {
      const std::uint32_t cand = v | (1u << bit);
      if (count([&](std::uint32_t u, int) { return u >= cand; }) >= k) v = cand;
    }
    const int need = k - count([&](std::uint32_t u, int) { return u > v; });
    int u_kb = 0;
    for (int bit = 31 - __clz(max(n_cand - 1, 1)); bit >= 0; --bit) {
      const int cand = u_kb | (1 << bit);
      if (cand >= n_cand) continue;
      if (count([&](std::uint32_t u, int kb) { return u == v && kb >= cand; }) >= need) u_kb = cand;
    }
    tie_bits = v;
    tie_kb = u_kb;
  }

  std::uint32_t* out = p.mask.row(b, h, qb);
  for (int w = 0; w < ceil_div(n_kb, 32); ++w) {
    const int kb = w * 32 + lane;
    bool on = false;
    if (kb <= span.last_kb) {
      on = forced_on(p.fp, span, kb, qb, n_qb, final_chunk);
      if (!on) {
        const float sc = score_s[base + kb];
        if (sc >= 0.0f) {
          const std::uint32_t u = exact::bits_of(sc);
          on = sc >= thr || (k > 0 && (u > tie_bits || (u == tie_bits && kb >= tie_kb)));
        }
      }
    }
    const std::uint32_t word = __ballot_sync(0xffffffffu, on);
    if (lane == 0) out[w] = word;
  }
}

/// The mask's scoring pass: block statistics, the rows' selection (score_cta with kMass).
template <class Tr, int kRowBest>
__global__ void __launch_bounds__(Tr::kThreads) score_kernel(ScoreParams p) {
  score_cta<Tr, kRowBest, true>(p);
}

/// The row-best pass of row_best_by_bound (score_cta without kMass), at most 128 registers so
/// that two CTAs share an SM: left to itself ptxas gave the top-2 pass 171 registers, one CTA
/// (8 warps) per SM, and it issued on 40% of the cycles (Nsight Compute, H100, TP2 128K).
/// (score_kernel keeps the bare bound: naming one CTA per SM let ptxas take more than 128
/// registers there, naming two made it spill, and QuestMask(row_guarded()) took 0.763 ms instead
/// of 0.722.) On sm80 two of these CTAs (101 KB of shared memory each at D 128) do not fit an SM,
/// so there the cap buys nothing and costs its 88 bytes of spills (not measured: no A100 here).
template <class Tr, int kRowBest>
__global__ void __launch_bounds__(Tr::kThreads, 2) row_best_kernel(ScoreParams p) {
  static_assert(Tr::kThreads <= 256, "two CTAs per SM get at most 128 registers a thread");
  score_cta<Tr, kRowBest, false>(p);
}

/// Threads of group_select_kernel.
inline constexpr int kSelectThreads = 256;

/// Everything group_select_kernel reads.
struct GroupSelectParams {
  AttentionConfig c;                        ///< The attention config.
  ChunkBatch batch;                         ///< The chunk batch being masked.
  FlashPrefillParams fp;                    ///< Mask hyperparameters.
  BlockMask mask;                           ///< Output bitmap.
  const std::uint64_t* mass = nullptr;      ///< Scratch::group_mass
  const std::uint32_t* row_best = nullptr;  ///< Scratch::row_best (read when fp.keep_row_best)
  int kv_pad = 0;                           ///< Scratch::kv_pad: stride of a mass row.
  std::uint32_t tau_fix = 0;  ///< group_mass::tau_fixed(fp.group_mass), computed on the host
  /// Masses staged in shared memory (GroupSelectSmem): 0 reads them from global memory.
  int staged_blocks = 0;
};

/// Dynamic shared memory of group_select_kernel for `max_kv_blocks`: the forced and selected
/// bitmaps, plus the group's masses when they fit the default 48 KB (`staged_blocks` says which).
/// The selection reads every mass some 20 times (its sums and one histogram per searched digit),
/// so staging turns those passes' global-memory latency into shared-memory reads.
struct GroupSelectSmem {
  int bytes = 0;          ///< Dynamic shared memory to launch with.
  int staged_blocks = 0;  ///< Masses staged (max_kv_blocks, or 0 when they do not fit).
  /// Shared bytes kept for the kernel's static shared memory (the selection's storage and its
  /// alignment), which counts against the same 48 KB as the dynamic part.
  static constexpr int kStaticBytes = 3072;
  static_assert(sizeof(typename group_mass::BlockMassSelect<kSelectThreads>::TempStorage) + 256 <=
                    kStaticBytes,
                "group_select_kernel's static shared memory outgrew GroupSelectSmem::kStaticBytes");
  /// Most KV blocks per sequence: their two bitmaps alone fill the 48 KB.
  static constexpr int kMaxBlocks =
      (48 * 1024 - kStaticBytes) / static_cast<int>(2 * sizeof(std::uint32_t)) * 32;
  /// The layout for the limits' KV blocks per sequence.
  static GroupSelectSmem of(int max_kv_blocks) {
    const int bitmaps = 2 * ceil_div(max_kv_blocks, 32) * static_cast<int>(sizeof(std::uint32_t));
    const int masses = max_kv_blocks * static_cast<int>(sizeof(std::uint64_t));
    GroupSelectSmem g;
    const bool fits = kStaticBytes + masses + bitmaps <= 48 * 1024;
    g.staged_blocks = fits ? max_kv_blocks : 0;
    g.bytes = bitmaps + (fits ? masses : 0);
    return g;
  }
};

/// group_mass selection: one CTA per (sequence, KV head) marks the group-forced blocks, selects
/// the group's blocks from the summed row shares (BlockMassSelect, equal to select_host()) and
/// writes every mask row of the group, one warp per row. Dynamic shared memory: GroupSelectSmem.
/// (A template only so that the header may be included by several translation units.)
template <int kThreads>
__global__ void __launch_bounds__(kThreads) group_select_kernel(GroupSelectParams p) {
  using Select = group_mass::BlockMassSelect<kThreads>;
  __shared__ typename Select::TempStorage tmp;
  extern __shared__ __align__(16) unsigned char group_select_smem[];
  const AttentionConfig& c = p.c;
  const int kvh = static_cast<int>(blockIdx.x) % c.num_kv_heads;
  const int b = static_cast<int>(blockIdx.x) / c.num_kv_heads;
  if (b >= p.batch.num_seqs) return;
  const SeqInfo s = seq_info(p.batch, b);
  if (s.q_len <= 0) return;
  const int Bq = c.block_q, Bk = c.block_k, G = c.gqa_group();
  const int n_kb = ceil_div(s.kv_len, Bk), n_qb = ceil_div(s.q_len, Bq);
  const int n_words = ceil_div(n_kb, 32);
  const bool final_chunk = p.batch.final_chunk != nullptr && p.batch.final_chunk[b] != 0;
  std::uint64_t* staged = reinterpret_cast<std::uint64_t*>(group_select_smem);
  std::uint32_t* forced = reinterpret_cast<std::uint32_t*>(staged + p.staged_blocks);
  std::uint32_t* selected = forced + n_words;
  const std::uint64_t* mass =
      p.mass + (static_cast<std::int64_t>(b) * c.num_kv_heads + kvh) * p.kv_pad;
  const std::uint32_t* row_best =
      p.row_best + (static_cast<std::int64_t>(b) * c.num_kv_heads + kvh) * (p.kv_pad / 32);
  if (p.staged_blocks >= n_kb) {
    for (int kb = threadIdx.x; kb < n_kb; kb += kThreads) staged[kb] = mass[kb];
    mass = staged;
  }
  const int lane = threadIdx.x & 31;
  for (int w = threadIdx.x >> 5; w < n_words; w += kThreads / 32) {  // a bit per lane
    const int kb = w * 32 + lane;
    const bool on = kb < n_kb && group_forced(p.fp, s, kb, n_qb, final_chunk, Bq, Bk);
    const std::uint32_t word = __ballot_sync(0xffffffffu, on);
    // keep_row_best: the rows' best blocks are kept, so their mass counts as covered.
    if (lane == 0) forced[w] = word | (p.fp.keep_row_best ? row_best[w] : 0u);
  }
  __syncthreads();
  Select(tmp).run(mass, forced, n_kb, p.tau_fix, p.fp.min_budget, selected);
  if (p.fp.keep_row_best) {
    for (int w = threadIdx.x; w < n_words; w += kThreads) selected[w] |= row_best[w];
    __syncthreads();
  }
  for (int r = threadIdx.x >> 5; r < G * n_qb; r += kThreads / 32) {
    const int h = kvh * G + r / n_qb, qb = r % n_qb;
    const QueryBlockSpan span = query_block_span(s, qb, Bq, Bk);
    std::uint32_t* out = p.mask.row(b, h, qb);
    for (int w = 0; w < n_words; ++w) {
      const int kb = w * 32 + lane;
      const bool on = kb <= span.last_kb && (((selected[w] >> lane) & 1u) ||
                                             forced_on(p.fp, span, kb, qb, n_qb, final_chunk));
      const std::uint32_t word = __ballot_sync(0xffffffffu, on);
      if (lane == 0) out[w] = word;
    }
  }
}

/// Heads of one GQA group packed per CTA: the largest divisor of G that fits kMaxPackedRows.
inline int heads_per_cta(const AttentionConfig& c, bool bound) {
  const int G = c.gqa_group();
  const int max_rows = bound ? kMaxPackedRows<true> : kMaxPackedRows<false>;
  int best = 1;
  for (int h = 1; h <= min_of(G, kMaxHeadsPerCta); ++h) {
    if (G % h == 0 && h * c.block_q <= max_rows) best = h;
  }
  return best;
}

/// Runtime (dtype, head dim, packed rows) to the kernel instantiations; throws naming the field.
template <bool kBound, class F>
void dispatch(const AttentionConfig& c, int packed_rows, F&& f) {
  require(c.head_dim == 64 || c.head_dim == 128, "config.head_dim", c.head_dim,
          "64 or 128 for the device build of the summary-score mask sources");
  auto by_shape = [&]<class T, int kD>() {
    if (packed_rows <= 128) return f.template operator()<Traits<T, kD, CtaShape<8, 1>, kBound>>();
    if (packed_rows <= 256) return f.template operator()<Traits<T, kD, CtaShape<8, 2>, kBound>>();
    if constexpr (!kBound) return f.template operator()<Traits<T, kD, CtaShape<16, 2>, kBound>>();
    fail("packed rows", packed_rows, "at most 256 for QuestMask");
  };
  auto by_dim = [&]<class T>() {
    if (c.head_dim == 128) return by_shape.template operator()<T, 128>();
    return by_shape.template operator()<T, 64>();
  };
  if (c.dtype == DType::bf16) return by_dim.template operator()<__nv_bfloat16>();
  return by_dim.template operator()<__half>();
}

}  // namespace flash_prefill

/// FlashPrefill's block-sparse estimator over the per-block mean-key cache (DESIGN.md 2 and 4).
///
/// For every mask row (sequence b, query head h, query block qb of the chunk), with Bq / Bk the
/// config's block sizes, rows t of the block at absolute positions pos_t, and kvh = h / G:
///
/// 1. Candidates: KV blocks kb <= last_kb (the block of the block's last row). Row t *scores*
///    block kb when it sees all of it: min((kb + 1) * Bk, L_b) - 1 <= pos_t (FlashPrefill's
///    causal rule on pooled keys). Every block before the chunk is scored by every row; a
///    block the chunk reaches into is scored only by rows at or after its last valid token.
/// 2. Logit (log2 domain): l[t][kb] = q_t . mean_k[kb][kvh] * scale * log2(e) * sharpness, where
///    mean_k is the cached fp32 mean over the block's valid tokens (KeySummaries, kept by
///    append_kv; the K cache is never read) and scale = config.scale(). q_t and mean_k are
///    quantized to integers in [-255, 255] with one absmax scale each (see exact_math.hpp), so
///    the dot product is an exact integer on tensor cores and on the host:
///    l = (I * (s_q * FlashPrefillParams::logit_factor(scale))) * s_k.
/// 3. Block statistics, as FlashPrefill's kernel: m[kb] = max_t l[t][kb] and
///    F[kb] = sum_t 2^(l[t][kb] - m[kb]) over the rows that score kb (the sum in fixed point,
///    2^20 units, truncated per term).
/// 4. Normalization over kb, as FlashPrefill's normalize_scores(): with M = max_kb m[kb], the
///    block score is S[kb] = F[kb] * 2^(m[kb] - M), i.e. the share of the query block's
///    pooled attention mass on block kb, up to the common factor sum_kb S[kb] (dividing by it,
///    as the paper does, changes no decision below, so it is skipped).
/// 5. Forced blocks (never a block after last_kb): the chunk's own causal blocks
///    kb >= chunk_first_kb, the sink kb < sink_blocks, the window kb > first_kb - window_blocks,
///    and — only where ChunkBatch::final_chunk[b] != 0 — every block of the last
///    last_full_blocks query blocks of the chunk (FlashPrefill's "last full blocks").
/// 6. Selection among the other scored blocks kb <= last_kb:
///    - row_threshold (FlashPrefill, FlashPrefillParams::paper()): kept when
///      S[kb] >= alpha * max_kb S[kb], or among the min_budget best scored blocks of the row
///      ordered by (S, kb) descending (ties to the later block).
///    - group_mass (the default): each row's scores become integer shares of the row,
///      floor(floor(S[kb]) * 2^32 / sum_kb floor(S[kb])), summed over every query block of the
///      chunk and every head of the GQA group into one mass per KV block. The group keeps the
///      shortest run of blocks in (mass descending, kb ascending) order that, added to the mass of
///      the blocks forced in any row of the group, reaches ceil(group_mass * total mass) (tau in
///      2^-16 steps), and at least min_budget of them (group_mass::select_host). Every row of the
///      group holds those blocks (up to its last_kb) plus its own forced blocks, so BlockUnion's
///      table is the budgeted selection itself. Why: with a relative per-row threshold the union
///      is decided by the flattest row of the group (a head whose mass sits on single tokens pools
///      to near-equal scores and keeps almost every block); docs/accuracy.md has the measurement.
///
/// Exactness: host and device compute identical fp32 bits (integer dot products, explicitly
/// rounded fp32 steps, a shared polynomial exp2, integer fixed-point sums, ordered maxima), so
/// the device mask equals build_host() bit for bit, with no tolerance and no tie ambiguity.
///
/// GQA: the device kernel packs heads of a GQA group (up to 8 heads and 512 rows, 256 for Quest:
/// all 4 heads of a TP2 group at Bq = 128) against each summary tile held in shared memory; scores
/// and mask rows stay per head, so the mask equals the per-head computation and any union of it is
/// the explicit union.
///
/// Device build: a quantization pass over the summaries, then one CTA per (sequence, KV head,
/// head chunk, query block) of the limits' layout: mma.sync m16n8k16 over 32-key tiles
/// (cp.async double buffering), shared-memory reductions, then one warp per head selects and
/// writes the row's words. With row_best_by_bound (FlashPrefillParams::bound_guarded()) a second
/// quantization and scoring pass over the min/max summaries only ranks every row's blocks by the
/// bound, for keep_row_best. Scratch: workspace_bytes(). Head dims 64 and 128, bf16 and fp16
/// queries, any page size (pages are never read).
template <class Score = MeanKeyScore>
struct FlashPrefillMask {
  FlashPrefillParams params{};  ///< Hyperparameters, validated by configure().
  /// Writes BlockMask::tail_q_blocks (when given, flash_prefill::tail_hint): the final chunk's
  /// last_full_blocks, whose rows keep every block, and on other chunks the rows whose window
  /// lies inside the chunk, so a tail-split union runs them apart from the chunk's other rows.
  static constexpr bool kWritesTailHint = true;

  FlashPrefillMask() = default;  ///< Default hyperparameters.
  /// A mask with hyperparameters `p`.
  explicit FlashPrefillMask(const FlashPrefillParams& p) : params(p) {}

  /// Validates the hyperparameters (compact::Error names `<mask> params.<field>`).
  void configure(const AttentionConfig&, const PlanLimits&) const { params.validate(Score::kName); }

  /// The key summaries this mask reads (the append path must keep them): mean keys for
  /// MeanKeyScore, min/max keys for QuestBoundScore or for row_best_by_bound.
  SummaryNeeds summary_needs() const {
    SummaryNeeds needs;
    needs.mean_k = !Score::kBound;
    needs.min_max_k = Score::kBound || params.needs_bound_row_best(Score::kBound);
    return needs;
  }

  /// Scratch of the device build (quantized summaries, per-block statistics).
  std::size_t workspace_bytes(const AttentionConfig& c, const PlanLimits& l) const {
    return flash_prefill::Scratch::carve(c, l, Score::kBound, nullptr, 0,
                                         params.needs_bound_row_best(Score::kBound))
        .bytes;
  }

  /// Host reference: every pointer in `a` is host memory.
  void build_host(const MaskArgs& a) const {
    check(a, Space::host);
    flash_prefill::build_host<Score::kBound>(a, params);
    if (a.mask.tail_q_blocks == nullptr) return;
    for (int b = 0; b < a.batch.num_seqs; ++b) {
      const SeqInfo s = seq_info(a.batch, b);
      const bool final_chunk = a.batch.final_chunk != nullptr && a.batch.final_chunk[b] != 0;
      a.mask.tail_q_blocks[b] =
          flash_prefill::tail_hint(params, s, a.config.block_q, a.config.block_k, final_chunk);
    }
  }

  /// Device build: launches with grids fixed by the limits (summary quantization, scoring, and
  /// the group selection; row_best_by_bound adds a quantization and a scoring pass of the
  /// bound), no allocation, no sync.
  void build_device(const MaskArgs& a, cudaStream_t stream) const {
    check(a, Space::device);
    using namespace flash_prefill;
    const AttentionConfig& c = a.config;
    require(c.head_dim == 64 || c.head_dim == 128, "config.head_dim", c.head_dim,
            detail::cat("64 or 128 for the device build of ", Score::kName));
    const Geometry geo = Geometry::of(c, a.limits);
    require_aligned(a.scratch.data, kWorkspaceAlignment, "mask scratch");
    const bool bound_best = params.needs_bound_row_best(Score::kBound);
    const Scratch scr =
        Scratch::carve(c, a.limits, Score::kBound, a.scratch.data, a.scratch.bytes, bound_best);
    // Quantized summaries: the score's, and for row_best_by_bound the bound's. Both passes run
    // before either scoring kernel; the first zeroes the group masses and the row-best bitmap.
    const auto quantize = [&]<bool kBoundArrays>(const Scratch& into, bool clear_stats) {
      const long long warps =
          static_cast<long long>(a.limits.max_batch) * geo.max_kv_blocks * c.num_kv_heads;
      const int blocks = static_cast<int>(ceil_div(warps, 8LL));
      if (c.head_dim == 128) {
        quantize_summaries_kernel<kBoundArrays, 128><<<blocks, 256, 0, stream>>>(
            c, geo.max_kv_blocks, a.batch, a.cache.summaries, into, clear_stats);
      } else {
        quantize_summaries_kernel<kBoundArrays, 64><<<blocks, 256, 0, stream>>>(
            c, geo.max_kv_blocks, a.batch, a.cache.summaries, into, clear_stats);
      }
      COMPACT_CHECK_LAUNCH("quantize_summaries_kernel");
    };
    quantize.template operator()<Score::kBound>(scr, true);
    if constexpr (!Score::kBound) {
      if (bound_best) quantize.template operator()<true>(scr.bound_best_view(), false);
    }
    // One scoring launch: packed heads per CTA and grid of the summaries' kind (kBoundArrays).
    const auto score = [&]<bool kBoundArrays, int kRowBest, bool kMass>(const Scratch& with) {
      ScoreParams sp;
      sp.c = c;
      sp.batch = a.batch;
      sp.fp = params;
      sp.scr = with;
      sp.mask = a.mask;
      sp.cexp = params.logit_factor(c.scale());
      sp.heads_per_cta = heads_per_cta(c, kBoundArrays);
      sp.head_chunks = c.gqa_group() / sp.heads_per_cta;
      sp.q_blocks = geo.max_q_blocks;
      const dim3 grid(geo.max_q_blocks, a.limits.max_batch * c.num_kv_heads * sp.head_chunks);
      dispatch<kBoundArrays>(c, sp.heads_per_cta * c.block_q, [&]<class Tr>() {
        const auto kernel = [] {
          if constexpr (kMass)
            return score_kernel<Tr, kRowBest>;
          else
            return row_best_kernel<Tr, kRowBest>;
        }();
        COMPACT_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                Tr::kSmemBytes));
        kernel<<<grid, Tr::kThreads, Tr::kSmemBytes, stream>>>(sp);
        COMPACT_CHECK_LAUNCH("flash_prefill score_kernel");
      });
    };
    const bool two = params.row_best_count == 2;
    if (!params.keep_row_best || bound_best) {
      score.template operator()<Score::kBound, 0, true>(scr);
    } else if (two) {
      score.template operator()<Score::kBound, 2, true>(scr);
    } else {
      score.template operator()<Score::kBound, 1, true>(scr);
    }
    // row_best_by_bound: the rows' best blocks by the bound, from a pass of its own.
    if constexpr (!Score::kBound) {
      if (bound_best && two) score.template operator()<true, 2, false>(scr.bound_best_view());
      if (bound_best && !two) score.template operator()<true, 1, false>(scr.bound_best_view());
    }
    if (params.selection == FlashPrefillSelection::group_mass) {
      flash_prefill::GroupSelectParams gp;
      gp.c = c;
      gp.batch = a.batch;
      gp.fp = params;
      gp.mask = a.mask;
      gp.mass = scr.group_mass;
      gp.row_best = scr.row_best;
      gp.kv_pad = scr.kv_pad;
      gp.tau_fix = group_mass::tau_fixed(params.group_mass);
      const GroupSelectSmem smem = GroupSelectSmem::of(geo.max_kv_blocks);
      gp.staged_blocks = smem.staged_blocks;
      require(geo.max_kv_blocks <= GroupSelectSmem::kMaxBlocks, "limits.max_kv_len",
              a.limits.max_kv_len,
              detail::cat("at most ", GroupSelectSmem::kMaxBlocks,
                          " KV blocks (max_kv_len / block_k) for the group_mass selection"));
      flash_prefill::group_select_kernel<flash_prefill::kSelectThreads>
          <<<a.limits.max_batch * c.num_kv_heads, flash_prefill::kSelectThreads, smem.bytes,
             stream>>>(gp);
      COMPACT_CHECK_LAUNCH("flash_prefill group_select_kernel");
    }
  }

 private:
  void check(const MaskArgs& a, Space space) const {
    params.validate(Score::kName);
    validate_summaries(a.config, a.limits, a.batch.num_seqs, a.cache.summaries, space,
                       summary_needs(), Score::kName);
    require_not_null(a.mask.bits, "mask.bits");
  }
};

}  // namespace compact
