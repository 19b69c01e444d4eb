/// @file kernel_traits.cuh
/// @brief Compile-time geometry of the paged-flash kernels: shared-memory layout, thread maps.
#pragma once

#include <cstdint>

#include "compact/arch/swizzle.hpp"
#include "compact/executor/paged_flash/tile_sizes.hpp"

namespace compact::paged_flash {

/// Everything the kernel's pieces (gather, MMA policy, softmax, epilogue) agree on at compile
/// time. `Mma` is Sm80Mma or Sm90Mma (mma_sm80.cuh, mma_sm90.cuh).
///
/// Shared memory holds Q [kBlockM][D] and kStages x (K, V) [kBlockN][D]. Every tile is stored as
/// D/64 column blocks of [rows][64] elements (128-byte rows) in 8-row atoms whose 16-byte chunks
/// are XOR-swizzled by the row (chunk ^ (row % 8)): the canonical 128-byte-swizzle layout that
/// wgmma descriptors address, and one in which the eight rows an ldmatrix reads, and the rows
/// cp.async writes, fall into distinct banks.
template <class T, int kHeadDim, class Shape, class Mma_>
struct KernelTraits {
  using Element = T;                              ///< Element type of Q, K, V and O (bf16 or fp16).
  using Mma = Mma_;                               ///< GEMM policy: Sm80Mma or Sm90Mma.
  static constexpr int kD = kHeadDim;             ///< Head dim D.
  static constexpr int kBlockM = Shape::kBlockM;  ///< Packed query rows per CTA.
  static constexpr int kBlockN = Shape::kBlockN;  ///< Keys per K/V tile.
  static constexpr int kWarps = Shape::kWarps;    ///< Warps per CTA.
  static constexpr int kStages = Shape::kStages;  ///< K/V shared-memory buffers.
  /// Second __launch_bounds__ argument.
  static constexpr int kMinBlocksPerSM = Shape::kMinBlocksPerSM;
  static constexpr int kThreads = kWarps * 32;  ///< Threads per CTA.

  static constexpr int kRowsPerWarp = kBlockM / kWarps;  ///< Query rows each warp owns.
  static constexpr int kMAtoms = kRowsPerWarp / 16;      ///< m16 row atoms per warp
  static constexpr int kNAtomsS = kBlockN / 8;           ///< n8 column chunks of S
  static constexpr int kNAtomsO = kD / 8;                ///< n8 column chunks of O

  /// 16-byte chunks per row of a tile.
  static constexpr int kChunksPerRow = kD * static_cast<int>(sizeof(T)) / 16;
  /// rows one cp.async sweep covers
  static constexpr int kRowsPerPass = kThreads / kChunksPerRow;
  static constexpr int kKvPasses = kBlockN / kRowsPerPass;  ///< sweeps per K or V tile
  static constexpr int kQPasses = kBlockM / kRowsPerPass;   ///< Sweeps per Q tile.

  static constexpr int kQChunks = kBlockM * kChunksPerRow;  ///< 16-byte chunks of the Q tile.
  /// 16-byte chunks of one K or V tile.
  static constexpr int kKvChunks = kBlockN * kChunksPerRow;
  static constexpr int kRowOffsetBytes = kStages * kBlockN * 8;  ///< offsets of upcoming tiles
  static constexpr int kSmemAlign = 1024;                        ///< a swizzle atom
  /// Dynamic shared memory per CTA, alignment slack included.
  static constexpr int kSmemBytes =
      (kQChunks + 2 * kStages * kKvChunks) * 16 + kRowOffsetBytes + kSmemAlign;

  static_assert(sizeof(T) == 2, "bf16 or fp16 elements");
  static_assert(kD % 64 == 0, "head dim must be a whole number of 64-element column blocks");
  static_assert(kRowsPerWarp % 16 == 0, "each warp owns whole m16 atoms");
  static_assert(kKvPasses * kRowsPerPass == kBlockN && kQPasses * kRowsPerPass == kBlockM,
                "cp.async sweeps must tile Q and K/V exactly");
  static_assert(kStages == 2, "the mainloop schedule is written for double-buffered K/V");

  /// 16-byte chunk index of logical (row, chunk) within a tile of `kRows` rows.
  template <int kRows>
  static __device__ __forceinline__ int swizzle(int row, int chunk) {
    return arch::swizzle128(row, chunk & 7, (chunk >> 3) * (kRows * 8));
  }
};

}  // namespace compact::paged_flash
