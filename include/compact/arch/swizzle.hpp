/// @file swizzle.hpp
/// @brief The 128-byte swizzle of shared-memory tiles that wgmma descriptors address, as an index
/// function host and device code share (layouts written in global memory to be bulk-copied into
/// such tiles follow it too).
#pragma once

#include "compact/core/macros.hpp"

namespace compact::arch {

/// 16-byte chunk index of (row, chunk), chunk in [0, 8), in a block of 128-byte rows stored in
/// 8-row atoms whose chunks are XOR-swizzled by the row, chunk ^ (row % 8), plus `base` (the
/// block's first chunk, for tiles of several such column blocks).
COMPACT_HOST_DEVICE constexpr int swizzle128(int row, int chunk, int base = 0) {
  return base + row * 8 + (chunk ^ (row & 7));
}

}  // namespace compact::arch
