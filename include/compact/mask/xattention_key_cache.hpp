/// @file xattention_key_cache.hpp
/// @brief XAttentionKeyCache: caller-owned int8 key groups that let XAttentionMask's group
/// quantization skip re-quantizing the whole K cache every chunk.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "compact/arch/swizzle.hpp"
#include "compact/core/config.hpp"
#include "compact/core/error.hpp"
#include "compact/core/limits.hpp"
#include "compact/core/macros.hpp"

namespace compact {

/// Quantized antidiagonal key groups of XAttentionMask (`XAttentionParams::quant` =
/// `XAttentionQuant::group`), kept by the caller across chunks as the K cache is.
///
/// Group j of (slot, KV head h) holds positions [j*S, j*S + S) of the sequence (S = the mask's
/// stride) quantized together: `keys` holds S x D int8 integers in [-L, L] (positions past the
/// sequence as 0) and `scales` their one absmax scale. `keys` is laid out as the scorer's shared
/// memory tiles (key_offset()): per kTileGroups groups and position t, one contiguous block of
/// kTileGroups rows of D = 128 bytes in the 128-byte swizzle, so that a scorer stage is one bulk
/// copy; treat it as opaque. A device build
/// re-quantizes the groups its chunk touches, [floor(pos / S), ceil(kv_len / S)) with pos the
/// chunk's first position, and reads the others as they are: before a chunk, groups below
/// floor(pos / S) must hold the sequence's current keys. That holds when every earlier chunk of
/// the sequence went through a device build with this cache and the same stride and levels;
/// after anything else (a slot reused by a sequence that starts past 0, a prefix restored from
/// elsewhere, keys rewritten) call XAttentionMask::refill_key_cache() first. The host build
/// neither reads nor writes it.
struct XAttentionKeyCache {
  /// [num_slots][Hkv][max_groups / kTileGroups][S][kTileGroups * D] int8 (16-byte aligned).
  std::int8_t* keys = nullptr;
  float* scales = nullptr;  ///< [num_slots][Hkv][max_groups] absmax scales.
  int num_slots = 0;        ///< Sequence slots the buffers hold.
  /// Groups per (slot, head): a multiple of kTileGroups, >= ceil(max_kv_len / S).
  int max_groups = 0;
  int stride = 0;  ///< S the cache was laid out for (must equal the mask's).
  /// Optional [num_seqs] device array: slot of batch sequence b (null: slot b).
  const std::int32_t* slot_of_seq = nullptr;
  /// Optional host copy of slot_of_seq: when given, every slot id is checked on the host.
  const std::int32_t* host_slot_of_seq = nullptr;

  /// Key groups of one scorer tile (the rows of one `keys` block).
  static constexpr int kTileGroups = 128;
  /// Head dimension of the layout (one swizzled 128-byte row per position).
  static constexpr int kD = 128;

  /// Groups per (slot, head) that cover `max_kv_len` tokens at stride `stride`, rounded up to
  /// whole tiles.
  static int groups_for(int max_kv_len, int stride) {
    return ceil_div(ceil_div(max_kv_len, stride), kTileGroups) * kTileGroups;
  }
  /// Byte offset in `keys` of 16-byte chunk `chunk` of position t of group `gi` (an index()),
  /// stride S: row gi % kTileGroups of its tile's block for t, in the wgmma 128-byte swizzle.
  COMPACT_HOST_DEVICE static std::int64_t key_offset(std::int64_t gi, int t, int chunk, int S) {
    const int row = static_cast<int>(gi % kTileGroups);
    return ((gi / kTileGroups) * S + t) * (kTileGroups * kD) + arch::swizzle128(row, chunk) * 16;
  }
  /// Bytes of `keys` for the config, slot count and limits.
  static std::size_t key_bytes(const AttentionConfig& c, int num_slots, int max_kv_len,
                               int stride) {
    return static_cast<std::size_t>(num_slots) * c.num_kv_heads *
           static_cast<std::size_t>(groups_for(max_kv_len, stride)) * stride * c.head_dim;
  }
  /// Floats of `scales` for the config, slot count and limits.
  static std::size_t scale_count(const AttentionConfig& c, int num_slots, int max_kv_len,
                                 int stride) {
    return static_cast<std::size_t>(num_slots) * c.num_kv_heads *
           static_cast<std::size_t>(groups_for(max_kv_len, stride));
  }

  /// True when the caller gave a cache (else the device build quantizes every key into its
  /// scratch each call).
  COMPACT_HOST_DEVICE bool present() const { return keys != nullptr; }
  /// Slot of batch sequence b.
  COMPACT_HOST_DEVICE int slot(int b) const { return slot_of_seq ? slot_of_seq[b] : b; }
  /// Index of group j of (slot, KV head h) in `scales` (times S * D: its first byte in `keys`).
  COMPACT_HOST_DEVICE std::int64_t index(int slot_id, int h, int j, int num_kv_heads) const {
    return (static_cast<std::int64_t>(slot_id) * num_kv_heads + h) * max_groups + j;
  }

  /// Throws compact::Error naming `XAttentionMask key_cache.<field>` unless the cache fits the
  /// config, the limits, stride `S` and a batch of `num_seqs` sequences.
  void validate(const AttentionConfig& c, const PlanLimits& l, int S, int num_seqs) const {
    using detail::cat;
    require(scales != nullptr, "XAttentionMask key_cache.scales", "nullptr",
            "a device array of scale_count() floats (key_cache.keys is set)");
    require_aligned(keys, 16, "XAttentionMask key_cache.keys");
    require(stride == S, "XAttentionMask key_cache.stride", stride,
            cat("params.stride (", S, "): the groups are laid out for one stride"));
    require(max_groups >= groups_for(l.max_kv_len, S) && max_groups % kTileGroups == 0,
            "XAttentionMask key_cache.max_groups", max_groups,
            cat("a multiple of ", kTileGroups, " >= ceil(limits.max_kv_len / stride) (",
                groups_for(l.max_kv_len, S), ": groups_for())"));
    require(num_slots >= 1, "XAttentionMask key_cache.num_slots", num_slots, "a positive count");
    if (slot_of_seq == nullptr) {
      require(num_slots >= num_seqs, "XAttentionMask key_cache.num_slots", num_slots,
              cat(">= the batch's num_seqs (", num_seqs, ") when slot_of_seq is null (slot b)"));
    } else if (host_slot_of_seq != nullptr) {
      for (int b = 0; b < num_seqs; ++b) {
        require(host_slot_of_seq[b] >= 0 && host_slot_of_seq[b] < num_slots,
                cat("XAttentionMask key_cache.host_slot_of_seq[", b, "]"), host_slot_of_seq[b],
                cat("a slot in [0, key_cache.num_slots = ", num_slots, ")"));
      }
    }
  }
};

}  // namespace compact
