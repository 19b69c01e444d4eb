/// @file block_row_union.cuh
/// @brief BlockRowUnion: a CTA ORs a window of many bit-packed mask rows into shared memory.
#pragma once

#include <cstdint>

#include "compact/core/macros.hpp"

namespace compact {

/// Block-level OR of mask rows over a window of kStepWords words (32 KV blocks each).
///
/// The (row, word) pairs of the window are spread flat over the CTA, words fastest, so a warp
/// reads whole 128-byte runs of a row (or several short rows), and every thread keeps kLoadBatch
/// independent loads in flight before it ORs them into shared memory with atomicOr (shared-memory
/// atomics are native, and rows of one table rarely collide in one instruction). The caller owns
/// the TempStorage, as with CUB's block primitives; its words hold the union after run().
template <int kThreads, int kStepWords, int kLoadBatch>
class BlockRowUnion {
 public:
  /// Shared memory of one CTA: the window's union.
  struct TempStorage {
    std::uint32_t words[kStepWords];  ///< The union of the current window of words.
  };

  /// A union over shared storage `storage`.
  COMPACT_DEVICE explicit BlockRowUnion(TempStorage& storage) : storage_(storage) {}

  /// Sets storage.words[w] = OR over rows j < num_rows of row_of(j)[w0 + w] for w < num_words
  /// (<= kStepWords), with word num_words - 1 ANDed with last_word_mask, and 0 for w >=
  /// num_words. `row_of(j)` returns a pointer to the start of row j. Every thread must call it;
  /// it begins and ends with a barrier, so the words are readable right after it returns; a
  /// caller that reads them must synchronize again before the next run() overwrites them.
  template <class RowFn>
  COMPACT_DEVICE void run(const RowFn& row_of, int num_rows, int w0, int num_words,
                          std::uint32_t last_word_mask) {
    for (int w = threadIdx.x; w < kStepWords; w += kThreads) storage_.words[w] = 0;
    __syncthreads();
    const int items = num_rows * num_words;
    for (int base = threadIdx.x; base < items; base += kThreads * kLoadBatch) {
      std::uint32_t bits[kLoadBatch];
      int word[kLoadBatch];
#pragma unroll
      for (int u = 0; u < kLoadBatch; ++u) {
        const int i = base + u * kThreads;
        bits[u] = 0;
        word[u] = 0;
        if (i < items) {
          const int j = i / num_words;
          word[u] = i - j * num_words;
          bits[u] = __ldg(row_of(j) + w0 + word[u]);
          if (word[u] == num_words - 1) bits[u] &= last_word_mask;
        }
      }
#pragma unroll
      for (int u = 0; u < kLoadBatch; ++u) {
        if (bits[u] != 0) atomicOr(&storage_.words[word[u]], bits[u]);
      }
    }
    __syncthreads();
  }

 private:
  TempStorage& storage_;
};

}  // namespace compact
