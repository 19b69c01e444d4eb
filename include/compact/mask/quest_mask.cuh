/// @file quest_mask.cuh
/// @brief QuestMask: FlashPrefill's block scoring and selection over Quest's upper bound of q . k
/// from per-channel min/max keys, so a single-token spike is never diluted by pooling.
#pragma once

#include "compact/mask/flash_prefill_mask.cuh"

namespace compact {

/// The second summary-based estimator (DESIGN.md section 2): identical to FlashPrefillMask —
/// same candidates, scoring rows, block statistics, normalization, selection rules, defaults and
/// bit-exact host/device agreement — except that the logit of (row t, block kb) is Quest's upper
/// bound of the block's best key,
/// `l[t][kb] = sum_d max(q_t[d] * max_k[kb][d], q_t[d] * min_k[kb][d]) * scale * log2(e)`,
/// read from KeySummaries::min_k / max_k (kept by append_kv), instead of q_t . mean_k[kb].
///
/// Quantization: q_t as in FlashPrefillMask; max_k and min_k of a (block, KV head) share one
/// absmax scale, so the bound is the exact integer
/// `sum_d (q_d >= 0 ? q_d * max_d : q_d * min_d)`, computed on tensor cores as two GEMMs
/// (positive and negative parts of q against max and min keys) into one accumulator.
/// The device kernel packs at most 256 (head, token) rows per CTA (two key tiles per stage).
struct QuestMask : FlashPrefillMask<QuestBoundScore> {
  QuestMask() = default;  ///< Default hyperparameters.
  /// A mask with hyperparameters `p`.
  explicit QuestMask(const FlashPrefillParams& p) : FlashPrefillMask<QuestBoundScore>(p) {}
};

}  // namespace compact
