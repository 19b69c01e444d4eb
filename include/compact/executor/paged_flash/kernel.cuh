/// @file kernel.cuh
/// @brief The paged-flash kernel: tile scheduler + gather/mainloop + epilogue, and the merge.
#pragma once

#include <cmath>
#include <cstdint>

#include "compact/arch/cp_async.cuh"
#include "compact/arch/wgmma.cuh"
#include "compact/core/macros.hpp"
#include "compact/executor/paged_flash/epilogue.cuh"
#include "compact/executor/paged_flash/gather.cuh"
#include "compact/executor/paged_flash/kernel_traits.cuh"
#include "compact/executor/paged_flash/mainloop.cuh"
#include "compact/executor/paged_flash/mma_sm80.cuh"
#include "compact/executor/paged_flash/mma_sm90.cuh"
#include "compact/executor/paged_flash/params.cuh"
#include "compact/executor/paged_flash/tile_scheduler.cuh"

namespace compact::paged_flash {

/// Where KV tile j of a table starts: entry j / tiles_per_entry, tile j % tiles_per_entry of it.
__device__ __forceinline__ int tile_position(const Params& p, const std::int32_t* entries, int j,
                                             int tile_tokens) {
  const int entry = __ldg(entries + (j >> p.tiles_per_entry_shift));
  const int sub = j & ((1 << p.tiles_per_entry_shift) - 1);
  return entry * p.shape.table_block_tokens + sub * tile_tokens;
}

/// One CTA: kBlockM packed rows (tokens x heads of one table) against the KV tiles of its table
/// (or of one split of it). K/V tiles are gathered from the pages in place, double-buffered: the
/// copies of tile j+1 are in flight while tile j is multiplied, and the pages of tile j+2 are
/// looked up meanwhile, so that latency hides behind the math too.
///
/// kSplitKV selects the epilogue at compile time (partials for the merge, or the final output):
/// carrying both in one kernel costs registers the mainloop needs.
template <class Traits, bool kSplitKV>
__global__ void __launch_bounds__(Traits::kThreads, Traits::kMinBlocksPerSM)
    paged_flash_kernel(const __grid_constant__ Params p) {
  using T = typename Traits::Element;
  constexpr int kBlockM = Traits::kBlockM;
  constexpr int kBlockN = Traits::kBlockN;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  // Swizzle atoms (and wgmma descriptors) need 1024-byte-aligned tiles.
  T* smem_q =
      reinterpret_cast<T*>((reinterpret_cast<std::uintptr_t>(smem_raw) + Traits::kSmemAlign - 1) &
                           ~static_cast<std::uintptr_t>(Traits::kSmemAlign - 1));
  T* smem_kv = smem_q + Traits::kQChunks * 8;
  auto smem_k = [&](int stage) { return smem_kv + stage * 2 * Traits::kKvChunks * 8; };
  auto smem_v = [&](int stage) { return smem_k(stage) + Traits::kKvChunks * 8; };
  // Row offsets of the next two K/V tiles, [2][kBlockN], after the K/V buffers.
  std::int64_t* smem_rows = reinterpret_cast<std::int64_t*>(smem_k(Traits::kStages));

  const WorkTile w = p.shape.tail_split ? TileScheduler::decode_tail_split<kBlockM>(p, blockIdx.x)
                                        : TileScheduler::decode(p, blockIdx.x);
  if (w.b >= p.num_seqs) return;
  const int q_begin = p.cu_seqlens_q[w.b];
  const int chunk_len = p.cu_seqlens_q[w.b + 1] - q_begin;
  const int kv_len = p.kv_lens[w.b];
  const RowMap rows = TileScheduler::rows(p, w, chunk_len);
  const int m0 = w.m_tile * kBlockM;
  if (m0 >= rows.rows()) return;  // nothing of this table reaches this row tile
  const int pos0 = kv_len - chunk_len;
  const int kvh = rows.head0 / p.gqa_group;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;

  // This CTA's KV tiles: the table's, cut to its split, then to the causal horizon of its rows.
  const int e0 = p.indptr[w.table];
  const int entries = p.indptr[w.table + 1] - e0;
  const int num_tiles = entries == 0 ? 0
                                     : ((entries - 1) << p.tiles_per_entry_shift) +
                                           ceil_div(p.last_block_tokens[w.table], kBlockN);
  const int per_split = ceil_div(num_tiles, p.num_splits);
  int j = w.split * per_split;
  int j_end = min_of(num_tiles, j + per_split);
  const int qpos_min = pos0 + rows.token(m0);
  const int qpos_max = pos0 + rows.token(min_of(m0 + kBlockM, rows.rows()) - 1);
  const std::int32_t* table_entries = p.indices + e0;
  auto tile_pos = [&](int t) { return tile_position(p, table_entries, t, kBlockN); };

  // Prologue: Q and K_j in one group, V_j in the next; tile j+1's pages looked up meanwhile.
  load_q_tile<Traits>(p, rows, q_begin, m0, smem_q);
  using Gather = KvGather<Traits>;
  const T* k_pool = static_cast<const T*>(p.k_pages);
  const T* v_pool = static_cast<const T*>(p.v_pages);
  int pos = j < j_end ? tile_pos(j) : 0;
  if (j < j_end && pos > qpos_max) j_end = j;
  if (j < j_end) Gather::publish(smem_rows, Gather::lookup(p, w.b, kv_len, pos));
  int next_pos = 0;
  bool has_next = j + 1 < j_end;
  if (has_next) {
    next_pos = tile_pos(j + 1);
    has_next = next_pos <= qpos_max;
    if (has_next) Gather::publish(smem_rows + kBlockN, Gather::lookup(p, w.b, kv_len, next_pos));
  }
  __syncthreads();  // tile j's row offsets are visible
  if (j < j_end) Gather::issue(kvh, smem_rows, k_pool, smem_k(0));
  arch::cp_async_commit();
  if (j < j_end) Gather::issue(kvh, smem_rows, v_pool, smem_v(0));
  arch::cp_async_commit();

  WarpAttention<Traits> acc;
  acc.init();
  for (int stage = 0; j < j_end; ++j, stage ^= 1) {
    arch::cp_async_wait<1>();  // Q and K_j have landed (V_j may still be in flight)
    if constexpr (Traits::Mma::kNeedsProxyFence) arch::fence_proxy_async_smem();
    __syncthreads();  // ... for every thread; tile j-1's buffers and pages are free
    if (has_next) {
      const std::int64_t* offsets = smem_rows + (stage ^ 1) * kBlockN;
      Gather::issue(kvh, offsets, k_pool, smem_k(stage ^ 1));
      arch::cp_async_commit();
      Gather::issue(kvh, offsets, v_pool, smem_v(stage ^ 1));
      arch::cp_async_commit();
    } else {
      arch::cp_async_commit();  // empty groups keep the wait counts uniform
      arch::cp_async_commit();
    }
    // Tile j+2: position and row offsets, loaded now, published after the math.
    int after_pos = 0;
    bool has_after = has_next && j + 2 < j_end;
    std::int64_t after_row = -1;
    if (has_after) {
      after_pos = tile_pos(j + 2);
      has_after = after_pos <= qpos_max;
      if (has_after) after_row = Gather::lookup(p, w.b, kv_len, after_pos);
    }

    acc.qk(smem_q, smem_k(stage), warp, lane);
    // Only tiles that reach the chunk's diagonal or the sequence's end need a mask.
    if (pos + kBlockN - 1 > qpos_min || pos + kBlockN > kv_len) {
      acc.mask(rows, m0, pos0, pos, kv_len, warp, lane);
    }
    acc.softmax(p.scale_log2);
    if (has_after) Gather::publish(smem_rows + stage * kBlockN, after_row);

    arch::cp_async_wait<2>();  // V_j has landed
    if constexpr (Traits::Mma::kNeedsProxyFence) arch::fence_proxy_async_smem();
    __syncthreads();
    acc.pv(smem_v(stage), warp, lane);

    if (!has_next) j_end = j + 1;  // the causal horizon (or the split) ends here
    pos = next_pos;
    next_pos = after_pos;
    has_next = has_after;
  }
  arch::cp_async_wait<0>();

  if constexpr (kSplitKV) {
    Epilogue<Traits>::store_partial(p, acc, rows, q_begin, m0, w.split, warp, lane);
  } else {
    Epilogue<Traits>::store(p, acc, rows, q_begin, m0, smem_q, warp, lane);
  }
}

/// Combines the split-KV partials of every (packed row, head): one warp per pair; the grid covers
/// the limits' bound and the rows past the step's exact count exit.
template <class T, int kHeadDim>
__global__ void __launch_bounds__(256) paged_flash_merge_kernel(const __grid_constant__ Params p) {
  constexpr int kPerLane = kHeadDim / 32;
  const int total_q = p.cu_seqlens_q[p.num_seqs];  // exact, read on the device
  const std::int64_t pair = static_cast<std::int64_t>(blockIdx.x) * 8 + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (pair >= static_cast<std::int64_t>(total_q) * p.num_q_heads) return;
  const std::int64_t split_stride = p.part_rows * p.num_q_heads;
  float max_lse = -INFINITY;
  for (int s = 0; s < p.num_splits; ++s)
    max_lse = fmaxf(max_lse, p.part_lse[s * split_stride + pair]);
  float acc[kPerLane] = {};
  float total = 0.0f;
  if (max_lse != -INFINITY) {
    for (int s = 0; s < p.num_splits; ++s) {
      const float weight = __expf(p.part_lse[s * split_stride + pair] - max_lse);
      total += weight;
      const float* src = p.part_o + (s * split_stride + pair) * kHeadDim + lane * kPerLane;
#pragma unroll
      for (int i = 0; i < kPerLane; ++i) acc[i] += weight * src[i];
    }
  }
  const float inv = total > 0.0f ? 1.0f / total : 0.0f;
  const std::int64_t token = pair / p.num_q_heads;
  const int head = static_cast<int>(pair % p.num_q_heads);
  T* dst = static_cast<T*>(p.o) + token * p.o_stride + static_cast<std::int64_t>(head) * kHeadDim +
           lane * kPerLane;
#pragma unroll
  for (int i = 0; i < kPerLane; i += 2) {
    *reinterpret_cast<std::uint32_t*>(dst + i) = arch::pack2<T>(acc[i] * inv, acc[i + 1] * inv);
  }
  if (p.lse != nullptr && lane == 0) {
    p.lse[pair] = total > 0.0f ? max_lse + logf(total) : -INFINITY;
  }
}

}  // namespace compact::paged_flash
