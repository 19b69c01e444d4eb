/// @file kv_chunk.hpp
/// @brief KvChunk: the new keys and values of one chunked-prefill step, before they are appended.
#pragma once

#include <cstdint>

#include "compact/core/chunk_batch.hpp"

namespace compact {

/// The K/V of the new tokens of one step, packed ragged like the queries of a ChunkBatch.
///
/// Sequence b brings n_b = cu_seqlens[b+1] - cu_seqlens[b] tokens that land at positions
/// [L_b - n_b, L_b), L_b = kv_lens[b] (the length *after* the append, as in ChunkBatch). Token
/// cu_seqlens[b] + t of `k` / `v` is position L_b - n_b + t. Elements are in the config's dtype;
/// all pointers live in the memory space of the append that reads them (append_kv_host or
/// append_kv_device).
struct KvChunk {
  const void* k = nullptr;                   ///< [total][Hkv][D], token stride k_stride.
  const void* v = nullptr;                   ///< [total][Hkv][D], token stride v_stride.
  const std::int32_t* cu_seqlens = nullptr;  ///< [num_seqs + 1], cu_seqlens[0] == 0.
  const std::int32_t* kv_lens = nullptr;     ///< L_b after the append, [num_seqs].
  int num_seqs = 0;                          ///< B, at most PlanLimits::max_batch.
  /// cu_seqlens[num_seqs] or an upper bound of it (as ChunkBatch::total_q; kernels read the
  /// exact lengths on the device).
  int total = 0;
  std::int64_t k_stride = 0;  ///< Elements between tokens of k; 0 means Hkv * D.
  std::int64_t v_stride = 0;  ///< Elements between tokens of v; 0 means Hkv * D.
  /// Optional host copies of cu_seqlens / kv_lens for device chunks: when given, every length is
  /// validated on the host (no synchronization). Ignored by append_kv_host.
  const std::int32_t* host_cu_seqlens = nullptr;
  const std::int32_t* host_kv_lens = nullptr;  ///< Optional host copy of kv_lens (see above).

  /// The chunk whose lengths are those of `batch` (the usual case: append the step's K/V, then
  /// plan and run the same batch).
  static KvChunk of(const ChunkBatch& batch, const void* k, const void* v) {
    KvChunk c;
    c.k = k;
    c.v = v;
    c.cu_seqlens = batch.cu_seqlens_q;
    c.kv_lens = batch.kv_lens;
    c.num_seqs = batch.num_seqs;
    c.total = batch.total_q;
    c.host_cu_seqlens = batch.host_cu_seqlens_q;
    c.host_kv_lens = batch.host_kv_lens;
    return c;
  }
};

}  // namespace compact
