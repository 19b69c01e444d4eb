/// @file summary_check.hpp
/// @brief Host-side checks of a KeySummaries cache against the config, the limits and a batch.
#pragma once

#include <cstdint>

#include "compact/core/config.hpp"
#include "compact/core/error.hpp"
#include "compact/core/limits.hpp"
#include "compact/core/paged_kv.hpp"
#include "compact/core/space.hpp"

namespace compact {

/// Which summary arrays a consumer needs.
struct SummaryNeeds {
  bool mean_k = false;     ///< KeySummaries::mean_k.
  bool min_max_k = false;  ///< KeySummaries::min_k and max_k.
  bool mean_v = false;     ///< KeySummaries::mean_v.
};

/// Checks the summaries `who` needs (compact::Error names the field): the needed arrays exist and
/// are 16-byte aligned, max_blocks covers limits.max_kv_len, block_size is 0 or config.block_k,
/// and every slot id of the batch's sequences is in [0, num_slots) when it is readable on the
/// host (host caches, or device caches that carry host_slot_of_seq).
inline void validate_summaries(const AttentionConfig& c, const PlanLimits& l, int num_seqs,
                               const KeySummaries& s, Space space, SummaryNeeds needs,
                               std::string_view who) {
  using detail::cat;
  auto need = [&](const float* p, const char* field) {
    require(p != nullptr, cat("cache.summaries.", field), "nullptr",
            cat("a summary array (", who, " reads it; append_kv keeps it up to date)"));
    require_aligned(p, 16, cat("cache.summaries.", field));
  };
  if (needs.mean_k) need(s.mean_k, "mean_k");
  if (needs.min_max_k) {
    need(s.min_k, "min_k");
    need(s.max_k, "max_k");
  }
  if (needs.mean_v) need(s.mean_v, "mean_v");
  const int blocks = ceil_div(l.max_kv_len, c.block_k);
  require(s.max_blocks >= blocks, "cache.summaries.max_blocks", s.max_blocks,
          cat(">= ceil(limits.max_kv_len / config.block_k) = ", blocks));
  require(s.block_size == 0 || s.block_size == c.block_k, "cache.summaries.block_size",
          s.block_size, cat("0 (unchecked) or config.block_k (", c.block_k, ")"));
  require(s.num_slots >= 1, "cache.summaries.num_slots", s.num_slots, "a positive slot count");
  const std::int32_t* slots = space == Space::host ? s.slot_of_seq : s.host_slot_of_seq;
  if (s.slot_of_seq == nullptr) {
    require(s.num_slots >= num_seqs, "cache.summaries.num_slots", s.num_slots,
            cat(">= the batch's num_seqs (", num_seqs, ") when slot_of_seq is null (slot b)"));
  } else if (slots != nullptr) {
    for (int b = 0; b < num_seqs; ++b) {
      require(slots[b] >= 0 && slots[b] < s.num_slots, cat("cache.summaries.slot_of_seq[", b, "]"),
              slots[b], cat("a slot in [0, cache.summaries.num_slots = ", s.num_slots, ")"));
    }
  }
}

}  // namespace compact
