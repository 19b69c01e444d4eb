/// @file entry_bits.hpp
/// @brief Thread-level bit helpers: rounding KV-block bits to table-entry bits (host and device).
#pragma once

#include <cstdint>

#include "compact/core/macros.hpp"

namespace compact::detail {

/// log2 of a power of two.
COMPACT_HOST_DEVICE constexpr int log2_pow2(int v) {
  int s = 0;
  while ((1 << s) < v) ++s;
  return s;
}

/// Mask of the bits of the last mask word that hold KV blocks < num_kv_blocks (all bits when the
/// count is a multiple of 32). Bits above it are garbage a mask source may have left.
COMPACT_HOST_DEVICE constexpr std::uint32_t tail_word_mask(int num_kv_blocks) {
  return (num_kv_blocks & 31) == 0 ? ~0u : (1u << (num_kv_blocks & 31)) - 1u;
}

/// Moves bit 2i of x to bit i (odd bits dropped); the upper 16 bits of the result are zero.
COMPACT_HOST_DEVICE constexpr std::uint32_t compress_even_bits(std::uint32_t x) {
  x &= 0x55555555u;
  x = (x | (x >> 1)) & 0x33333333u;
  x = (x | (x >> 2)) & 0x0f0f0f0fu;
  x = (x | (x >> 4)) & 0x00ff00ffu;
  x = (x | (x >> 8)) & 0x0000ffffu;
  return x;
}

/// Bit i of the result = OR of bits [i*r, (i+1)*r) of x, r = 2^log2_r <= 32: the 32/r entries
/// one mask word holds when r KV blocks share a table entry. Each round ORs neighbours and
/// compresses, so it costs log2(r) rounds rather than a loop over entries.
COMPACT_HOST_DEVICE constexpr std::uint32_t fold_bits(std::uint32_t x, int log2_r) {
  for (int s = 0; s < log2_r; ++s) x = compress_even_bits(x | (x >> 1));
  return x;
}

/// The 32 table-entry bits that r consecutive mask words `u[0 .. r)` map to (entry e of the word
/// is set iff any of KV blocks [e*r, (e+1)*r) is), for r = 2^log2_r in [1, 64].
COMPACT_HOST_DEVICE inline std::uint32_t entry_word(const std::uint32_t* u, int log2_r) {
  if (log2_r == 0) return u[0];
  const int r = 1 << log2_r;
  std::uint32_t e = 0;
  if (r <= 32) {
    const int entries_per_word = 32 >> log2_r;
    for (int j = 0; j < r; ++j) e |= fold_bits(u[j], log2_r) << (j * entries_per_word);
    return e;
  }
  // Coarser than a word: entry i is the OR of r/32 whole words.
  const int words_per_entry = r >> 5;
  for (int i = 0; i < 32; ++i) {
    std::uint32_t any = 0;
    for (int m = 0; m < words_per_entry; ++m) any |= u[i * words_per_entry + m];
    e |= (any != 0 ? 1u : 0u) << i;
  }
  return e;
}

}  // namespace compact::detail
