/// @file kernel_traits.cuh
/// @brief Compile-time geometry of the paged-flash kernel: shared-memory layout and thread maps.
#pragma once

#include <cstdint>

#include "compact/executor/paged_flash/tile_sizes.hpp"

namespace compact::paged_flash {

/// Everything the kernel's pieces (gather, mainloop, epilogue) agree on at compile time.
///
/// Shared memory holds Q [kBlockM][D] and kStages x (K, V) [kBlockN][D], in 16-byte chunks whose
/// position within a row is XOR-swizzled by the row index (chunk ^ (row % 8)), so that the eight
/// rows an ldmatrix reads, and the rows cp.async writes, fall into distinct banks.
template <class T, int kHeadDim, class Shape = typename DefaultTileShape<kHeadDim>::type>
struct KernelTraits {
  using Element = T;
  static constexpr int kD = kHeadDim;
  static constexpr int kBlockM = Shape::kBlockM;
  static constexpr int kBlockN = Shape::kBlockN;
  static constexpr int kWarps = Shape::kWarps;
  static constexpr int kStages = Shape::kStages;
  static constexpr int kThreads = kWarps * 32;

  static constexpr int kRowsPerWarp = kBlockM / kWarps;
  static constexpr int kMAtoms = kRowsPerWarp / 16;  // m16 MMA tiles per warp
  static constexpr int kNAtomsS = kBlockN / 8;        // n8 tiles of S = Q K^T
  static constexpr int kNAtomsO = kD / 8;             // n8 tiles of O
  static constexpr int kKStepsS = kD / 16;            // k16 steps of Q K^T
  static constexpr int kKStepsO = kBlockN / 16;       // k16 steps of P V

  static constexpr int kChunksPerRow = kD * static_cast<int>(sizeof(T)) / 16;
  static constexpr int kRowsPerPass = kThreads / kChunksPerRow;  // rows one cp.async sweep covers
  static constexpr int kKvPasses = kBlockN / kRowsPerPass;       // sweeps per K or V tile
  static constexpr int kQPasses = kBlockM / kRowsPerPass;

  static constexpr int kQChunks = kBlockM * kChunksPerRow;
  static constexpr int kKvChunks = kBlockN * kChunksPerRow;
  static constexpr int kRowOffsetBytes = kStages * kBlockN * 8;  // offsets of upcoming tiles
  static constexpr int kSmemBytes = (kQChunks + 2 * kStages * kKvChunks) * 16 + kRowOffsetBytes;

  static_assert(kRowsPerWarp % 16 == 0, "each warp owns whole m16 atoms");
  static_assert(kKvPasses * kRowsPerPass == kBlockN && kQPasses * kRowsPerPass == kBlockM,
                "cp.async sweeps must tile Q and K/V exactly");
  static_assert(kChunksPerRow % 8 == 0, "the swizzle permutes groups of 8 chunks");
  static_assert(kStages == 2, "the mainloop schedule is written for double-buffered K/V");

  /// Chunk index (in 16-byte units) of logical (row, chunk) within a tile.
  static __device__ __forceinline__ int swizzle(int row, int chunk) {
    return row * kChunksPerRow + (chunk ^ (row & 7));
  }
};

}  // namespace compact::paged_flash
