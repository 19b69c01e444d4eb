/// @file tile_sizes.hpp
/// @brief The paged-flash tile table: every tile-size heuristic lives here, greppable.
#pragma once

namespace compact::paged_flash {

/// Tile shape of one CTA: kBlockM packed query rows (tokens x heads of an execution group) by
/// kBlockN keys per step, kWarps warps, kStages K/V buffers (the gather of tile j+1 overlaps the
/// math of tile j), and kMinBlocksPerSM for __launch_bounds__ (which caps registers).
template <int kBlockM_, int kBlockN_, int kWarps_, int kStages_, int kMinBlocksPerSM_>
struct TileShape {
  static constexpr int kBlockM = kBlockM_;  ///< Packed query rows per CTA.
  static constexpr int kBlockN = kBlockN_;  ///< Keys per K/V tile.
  static constexpr int kWarps = kWarps_;    ///< Warps per CTA.
  static constexpr int kStages = kStages_;  ///< K/V shared-memory buffers.
  /// CTAs per SM to fit (second __launch_bounds__ argument).
  static constexpr int kMinBlocksPerSM = kMinBlocksPerSM_;
};

/// sm80 (mma.sync): 4 warps of 32 rows (two m16 atoms, so every K/V fragment read from shared
/// memory feeds two MMAs). 96 KB of shared memory at D = 128: two CTAs per H100 SM (register
/// bound), one per A100 SM.
template <int kHeadDim>
using Sm80TileShape = TileShape<128, 64, 4, 2, 2>;

/// sm90 (wgmma): two warpgroups of 64 rows sharing each K/V tile; accumulators stay small
/// (S 32, O 64 registers per thread at D = 128), so two CTAs fit per SM and overlap one's
/// softmax with the other's MMAs.
template <int kHeadDim>
using Sm90TileShape = TileShape<128, 64, 8, 2, 2>;

/// Split-KV heuristic constants: split only when the grid would fill less than kFillTarget of
/// the GPU's CTA slots, never into pieces shorter than kMinTilesPerSplit KV tiles, at most
/// kMaxSplits pieces.
inline constexpr double kFillTarget = 0.8;
inline constexpr int kMinTilesPerSplit = 8;  ///< Fewest KV tiles per split.
inline constexpr int kMaxSplits = 16;        ///< Most splits per table.

}  // namespace compact::paged_flash
