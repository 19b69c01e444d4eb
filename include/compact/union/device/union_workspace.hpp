/// @file union_workspace.hpp
/// @brief UnionWorkspace: the scratch layout of the device union passes.
#pragma once

#include <cstddef>
#include <cstdint>

#include "compact/core/block_tables.hpp"
#include "compact/core/macros.hpp"
#include "compact/core/workspace.hpp"

namespace compact {

/// Scratch of the device union: one entry bitmap per table (bit e of table i set iff entry e is
/// selected), written by the count pass and read by the emit pass, so the mask is read once.
/// Sized from the table shape alone (limits), never from the device.
struct UnionWorkspace {
  std::uint32_t* entry_bits = nullptr;  ///< The tables' entry bitmaps, one after another.
  int entry_words_per_table = 0;        ///< ceil(shape.max_entries / 32).
  std::size_t used = 0;                 ///< Bytes the layout takes (what workspace_bytes reports).

  /// Lays the scratch out in `ws`; with a null `ws.data` it only measures. Throws compact::Error
  /// when `ws` is too small.
  static UnionWorkspace carve(const TableShape& shape, Workspace ws) {
    WorkspaceCarver carver(ws.data, ws.bytes);
    UnionWorkspace w;
    w.entry_words_per_table = ceil_div(shape.max_entries, 32);
    w.entry_bits = carver.take<std::uint32_t>(static_cast<std::size_t>(shape.num_tables()) *
                                              w.entry_words_per_table);
    w.used = carver.used();
    return w;
  }
};

}  // namespace compact
