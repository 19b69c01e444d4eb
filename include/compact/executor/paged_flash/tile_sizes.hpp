/// @file tile_sizes.hpp
/// @brief The paged-flash tile table: every tile-size heuristic lives here, greppable.
#pragma once

namespace compact::paged_flash {

/// Tile shape of one CTA. kBlockM packed query rows (heads of an execution group x tokens) by
/// kBlockN keys per step; kWarps warps each own kBlockM / kWarps rows (two m16 MMA atoms when
/// kBlockM = 128 and kWarps = 4, so every K/V fragment read from shared memory feeds two MMAs);
/// kStages K/V buffers so the gather of tile j+1 overlaps the math of tile j.
template <int kBlockM_, int kBlockN_, int kWarps_, int kStages_>
struct TileShape {
  static constexpr int kBlockM = kBlockM_;
  static constexpr int kBlockN = kBlockN_;
  static constexpr int kWarps = kWarps_;
  static constexpr int kStages = kStages_;
};

/// The shape used for a head dim. One table for sm80 and sm90: 128x64 with two K/V stages needs
/// 96 KB of shared memory at D = 128 (two CTAs per H100 SM, register-limited; one per A100 SM),
/// 48 KB at D = 64. Only the H100 numbers are measured (bench/results/).
template <int kHeadDim>
struct DefaultTileShape {
  static_assert(kHeadDim == 64 || kHeadDim == 128, "paged_flash: head dim must be 64 or 128");
  using type = TileShape<128, 64, 4, 2>;
};

/// Split-KV heuristic constants: split only when the grid would fill less than kFillTarget of
/// the GPU's CTA slots, never into pieces shorter than kMinTilesPerSplit KV tiles, at most
/// kMaxSplits pieces.
inline constexpr double kFillTarget = 0.8;
inline constexpr int kMinTilesPerSplit = 8;
inline constexpr int kMaxSplits = 16;

}  // namespace compact::paged_flash
