/// @file chunk_batch.hpp
/// @brief ChunkBatch (the queries of one chunked-prefill step) and AttentionOutput.
#pragma once

#include <cstdint>

#include "compact/core/macros.hpp"

namespace compact {

/// The new query tokens of one chunked-prefill step for a batch of sequences, packed ragged.
///
/// Sequence b brings n_b = cu_seqlens_q[b+1] - cu_seqlens_q[b] tokens at absolute positions
/// [L_b - n_b, L_b), where L_b = kv_lens[b] counts the KV tokens *including* this chunk (its K/V
/// are already in the cache). All pointers are in the memory space of the policies that read them.
struct ChunkBatch {
  const void* q = nullptr;                     ///< [total_q][Hq][D], token stride q_stride.
  const std::int32_t* cu_seqlens_q = nullptr;  ///< [num_seqs + 1], cu_seqlens_q[0] == 0.
  const std::int32_t* kv_lens = nullptr;       ///< L_b, [num_seqs].
  /// Optional [num_seqs]: nonzero where this chunk ends the sequence's prompt (mask sources may
  /// apply final-chunk rules there). Null: no chunk is final.
  const std::int32_t* final_chunk = nullptr;
  int num_seqs = 0;  ///< B, at most PlanLimits::max_batch.
  /// cu_seqlens_q[num_seqs], or an upper bound of it (kernels read the exact count on the
  /// device, so one CUDA graph can serve steps of different sizes); at most the limits' bound.
  /// The output must have room for total_q rows.
  int total_q = 0;
  std::int64_t q_stride = 0;  ///< Elements between consecutive tokens; 0 means Hq * D.
  /// Optional host copies of cu_seqlens_q / kv_lens for device batches: when given, plan()
  /// validates every length on the host without synchronizing. Ignored for host batches.
  const std::int32_t* host_cu_seqlens_q = nullptr;
  const std::int32_t* host_kv_lens = nullptr;  ///< Optional host copy of kv_lens (see above).
};

/// Where the attention result goes.
struct AttentionOutput {
  void* o = nullptr;  ///< [total_q][Hq][D] in the config's dtype, token stride o_stride.
  /// Optional [total_q][Hq]: natural-log sum of exp(scale * q.k) over the keys attended, -inf for
  /// a row that attends to nothing (its output row is zero).
  float* lse = nullptr;
  std::int64_t o_stride = 0;  ///< Elements between consecutive tokens; 0 means Hq * D.
};

/// What one sequence of a batch looks like, derived from the length arrays (host or device).
struct SeqInfo {
  int q_begin = 0;  ///< First packed query row.
  int q_len = 0;    ///< n_b: new tokens.
  int kv_len = 0;   ///< L_b: KV tokens including the new ones.
  /// Absolute position of the first new token, L_b - n_b.
  COMPACT_HOST_DEVICE constexpr int pos() const { return kv_len - q_len; }
};

/// Reads sequence b's lengths from the batch's arrays (which must be readable where called).
COMPACT_HOST_DEVICE inline SeqInfo seq_info(const ChunkBatch& batch, int b) {
  SeqInfo s;
  s.q_begin = batch.cu_seqlens_q[b];
  s.q_len = batch.cu_seqlens_q[b + 1] - s.q_begin;
  s.kv_len = batch.kv_lens[b];
  return s;
}

}  // namespace compact
