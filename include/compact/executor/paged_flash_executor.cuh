/// @file paged_flash_executor.cuh
/// @brief PagedFlashExecutor: dense FlashAttention over per-group block tables, in place in pages.
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_runtime_api.h>

#include "compact/arch/sm90a_probe.cuh"
#include "compact/core/cuda_check.hpp"
#include "compact/core/error.hpp"
#include "compact/core/policy_args.hpp"
#include "compact/core/space.hpp"
#include "compact/executor/paged_flash/dispatch.cuh"
#include "compact/executor/paged_flash/kernel.cuh"
#include "compact/executor/paged_flash/kernel_traits.cuh"
#include "compact/executor/paged_flash/tile_sizes.hpp"

namespace compact {

/// Compile-time tuning of the paged-flash executors: which instantiations exist and which tile
/// shape each head dim uses (see paged_flash/tile_sizes.hpp).
struct PagedFlashTuning {
  static constexpr bool kEnableFp16 = true;       ///< Instantiate half kernels.
  static constexpr bool kEnableHeadDim64 = true;  ///< Instantiate head-dim-64 kernels.
  /// Use the wgmma kernels on sm90 GPUs when the binary has sm_90a code (else mma.sync).
  static constexpr bool kEnableSm90 = true;
  /// Tile shape of the mma.sync kernels per head dim.
  template <int kHeadDim>
  using Sm80Shape = paged_flash::Sm80TileShape<kHeadDim>;
  /// Tile shape of the wgmma kernels per head dim.
  template <int kHeadDim>
  using Sm90Shape = paged_flash::Sm90TileShape<kHeadDim>;
};

/// Attention over block tables on the GPU (sm80+: mma.sync, ldmatrix, cp.async).
///
/// One CTA takes kBlockM packed rows of one table: for BlockUnion tables, the tokens of a chunk
/// times the heads of an execution group, so every K/V tile gathered from a page feeds every
/// head of the group. It walks the table's entries in order, gathers each 64-token K/V tile
/// straight from the pages through the sequence's page table (no copy or compaction of KV),
/// and runs an fp32 online softmax. Causal masking runs only on tiles that reach the chunk's
/// diagonal or the sequence's end; tiles past a row tile's last query are skipped. When the
/// limits' grid would not fill the GPU, each table's tiles are split across CTAs and a merge
/// kernel combines the partials (chosen once, in configure()).
///
/// Works with any TableShape (per group, per head, per query block); BlockSparseExecutor is the
/// same kernels with one table per (head, query block). Head dims 64 and 128, bf16 and fp16,
/// page sizes that are powers of two, tables whose entries cover a multiple of 64 tokens. Two
/// kernel families share everything but the GEMMs: mma.sync + ldmatrix (sm80 and newer) and
/// warpgroup MMAs with operands in shared memory (sm90a), picked in configure().
template <class Tuning = PagedFlashTuning>
struct PagedFlashExecutor {
  static constexpr Space space = Space::device;  ///< Every pointer is device memory.

  /// Force a split count (0: the heuristic of paged_flash/tile_sizes.hpp). For tests and
  /// experiments; set before the Engine configures the executor.
  int force_splits = 0;
  /// Force the kernel family: 80 (mma.sync, any sm80+ GPU), 90 (wgmma; error where unavailable)
  /// or 0 (the fastest available).
  int force_arch = 0;

  /// Validates support, opts into shared memory, and fixes the grid and split count from the
  /// limits and the current device. Throws compact::Error naming what is unsupported.
  void configure(const AttentionConfig& c, const PlanLimits& l, const TableShape& shape) {
    require(shape.table_block_tokens % kTileTokens == 0, "config.block_k / config.page_size",
            shape.table_block_tokens,
            detail::cat("table blocks (max(block_k, page_size)) of a multiple of ", kTileTokens,
                        " tokens, the executor's KV tile"));
    require(force_splits >= 0 && force_splits <= paged_flash::kMaxSplits,
            "PagedFlashExecutor::force_splits", force_splits,
            detail::cat("0 (heuristic) or a split count in [1, ", paged_flash::kMaxSplits, "]"));
    int device = 0;
    COMPACT_CUDA_CHECK(cudaGetDevice(&device));
    int major = 0, minor = 0, sms = 0;
    COMPACT_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
    COMPACT_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device));
    COMPACT_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    require(major >= 8, "device compute capability", detail::cat(major, ".", minor),
            "8.0 or newer (mma.sync bf16, cp.async)");
    shape_ = shape;
    const int rows_per_table =
        shape.heads_per_table * (shape.per_q_block ? c.block_q : l.max_chunk);
    use_sm90_ = Tuning::kEnableSm90 && force_arch != 80 && arch::sm90a_available();
    require(
        force_arch != 90 || use_sm90_, "PagedFlashExecutor::force_arch", force_arch,
        "80 or 0 on this GPU/binary (sm90 kernels need compute capability 9.x and sm_90a code)");
    paged_flash::dispatch<Tuning>(c, [&]<class T, int kD>() {
      with_traits<T, kD>([&]<class Traits>() {
        int per_sm = 0;
        for (const auto kernel : {paged_flash::paged_flash_kernel<Traits, false>,
                                  paged_flash::paged_flash_kernel<Traits, true>}) {
          cudaFuncAttributes attr{};
          const cudaError_t image = cudaFuncGetAttributes(&attr, kernel);
          if (image != cudaSuccess) {
            cudaGetLastError();
            fail("device compute capability", detail::cat(major, ".", minor),
                 detail::cat("an architecture this binary was compiled for "
                             "(CMAKE_CUDA_ARCHITECTURES; cudaFuncGetAttributes: ",
                             cudaGetErrorString(image), ")"));
          }
          COMPACT_CUDA_CHECK(cudaFuncSetAttribute(
              kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Traits::kSmemBytes));
          COMPACT_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
              &per_sm, kernel, Traits::kThreads, Traits::kSmemBytes));
          require(
              per_sm > 0, "PagedFlashExecutor occupancy", per_sm,
              detail::cat("room for one CTA of ", Traits::kSmemBytes, " bytes of shared memory"));
        }
        m_tiles_ = ceil_div(rows_per_table, Traits::kBlockM);
        // A tail split cuts a chunk at a query block: its two tables need one more row tile
        // than the chunk unless a query block's rows fill whole tiles.
        if (shape.tail_split && (c.block_q * shape.heads_per_table) % Traits::kBlockM != 0) {
          ++m_tiles_;
        }
        cta_slots_ = per_sm * sms;
      });
    });
    num_splits_ = force_splits > 0 ? force_splits : heuristic_splits(l, shape);
    configured_ = true;
  }

  /// Split-KV partials (fp32 O and LSE per split and row), when configure() chose to split.
  std::size_t workspace_bytes(const AttentionConfig& c, const PlanLimits& l,
                              const TableShape&) const {
    if (num_splits_ <= 1) return 0;
    const std::size_t pairs =
        static_cast<std::size_t>(num_splits_) * l.total_q_bound() * c.num_q_heads;
    return pairs * c.head_dim * sizeof(float) + kWorkspaceAlignment + pairs * sizeof(float);
  }

  /// Enqueues attention (and the merge when splitting) on `stream`; no allocation, no sync.
  void run(const ExecArgs& a, cudaStream_t stream) const {
    require(configured_, "PagedFlashExecutor", "unconfigured",
            "configure() before run() (the Engine does this at construction)");
    require(a.tables.shape.heads_per_table == shape_.heads_per_table &&
                a.tables.shape.per_q_block == shape_.per_q_block &&
                a.tables.shape.tail_split == shape_.tail_split &&
                a.tables.shape.max_batch == shape_.max_batch,
            "tables.shape", "a different table layout", "the shape given to configure()");
    paged_flash::Params p = make_params(a);
    paged_flash::dispatch<Tuning>(a.config, [&]<class T, int kD>() {
      with_traits<T, kD>([&]<class Traits>() {
        const long long grid = paged_flash::TileScheduler::grid_size(shape_, m_tiles_, num_splits_);
        if (num_splits_ == 1) {
          paged_flash::paged_flash_kernel<Traits, false>
              <<<static_cast<unsigned>(grid), Traits::kThreads, Traits::kSmemBytes, stream>>>(p);
          COMPACT_CHECK_LAUNCH("paged_flash_kernel");
        } else {
          paged_flash::paged_flash_kernel<Traits, true>
              <<<static_cast<unsigned>(grid), Traits::kThreads, Traits::kSmemBytes, stream>>>(p);
          COMPACT_CHECK_LAUNCH("paged_flash_kernel (split-KV)");
          const long long pairs = a.limits.total_q_bound() * a.config.num_q_heads;
          paged_flash::paged_flash_merge_kernel<T, kD>
              <<<static_cast<unsigned>(ceil_div(pairs, 8LL)), 256, 0, stream>>>(p);
          COMPACT_CHECK_LAUNCH("paged_flash_merge_kernel");
        }
      });
    });
  }

  /// The split count configure() chose (1: no split).
  int num_splits() const { return num_splits_; }
  /// Row-tile slots per table (per head/tail pair of tables with a tail split) in the grid.
  int row_tiles_per_table() const { return m_tiles_; }
  /// 90 when configure() chose the wgmma kernels, 80 for the mma.sync kernels.
  int arch() const { return use_sm90_ ? 90 : 80; }

 private:
  /// Calls f.template operator()<Traits>() with the kernel traits configure() chose.
  template <class T, int kD, class F>
  void with_traits(F&& f) const {
    using Sm80 = paged_flash::KernelTraits<T, kD, typename Tuning::template Sm80Shape<kD>,
                                           paged_flash::Sm80Mma>;
    using Sm90 = paged_flash::KernelTraits<T, kD, typename Tuning::template Sm90Shape<kD>,
                                           paged_flash::Sm90Mma>;
    if constexpr (Tuning::kEnableSm90) {
      if (use_sm90_) return f.template operator()<Sm90>();
    }
    f.template operator()<Sm80>();
  }

  static constexpr int kTileTokens = 64;  // the kBlockN of every tile shape in tile_sizes.hpp

  int heuristic_splits(const PlanLimits& l, const TableShape& shape) const {
    // The grid without a split (a tail split's two tables share their row-tile slots).
    const long long ctas = paged_flash::TileScheduler::grid_size(shape, m_tiles_, 1);
    if (ctas >= paged_flash::kFillTarget * cta_slots_) return 1;
    const int max_tiles = ceil_div(l.max_kv_len, kTileTokens);
    const long long want = ceil_div(static_cast<long long>(cta_slots_), ctas);
    const long long by_length = max_of(1, max_tiles / paged_flash::kMinTilesPerSplit);
    return static_cast<int>(
        min_of(min_of(want, by_length), static_cast<long long>(paged_flash::kMaxSplits)));
  }

  paged_flash::Params make_params(const ExecArgs& a) const {
    const AttentionConfig& c = a.config;
    paged_flash::Params p{};
    p.q = a.batch.q;
    p.o = a.out.o;
    p.lse = a.out.lse;
    p.q_stride = a.batch.q_stride ? a.batch.q_stride : std::int64_t{c.num_q_heads} * c.head_dim;
    p.o_stride = a.out.o_stride ? a.out.o_stride : std::int64_t{c.num_q_heads} * c.head_dim;
    p.cu_seqlens_q = a.batch.cu_seqlens_q;
    p.kv_lens = a.batch.kv_lens;
    p.num_seqs = a.batch.num_seqs;
    p.num_q_heads = c.num_q_heads;
    p.gqa_group = c.gqa_group();
    p.k_pages = a.cache.k_pages;
    p.v_pages = a.cache.v_pages;
    p.page_table = a.cache.page_table;
    p.page_table_stride = a.cache.page_table_stride;
    p.page_stride = a.cache.resolved_page_stride();
    p.token_stride = std::int64_t{c.num_kv_heads} * c.head_dim;
    p.page_size = c.page_size;
    p.page_shift = log2_of(c.page_size);
    p.indptr = a.tables.indptr;
    p.indices = a.tables.indices;
    p.last_block_tokens = a.tables.last_block_tokens;
    p.q_split = shape_.tail_split ? a.tables.q_split : nullptr;
    p.shape = shape_;
    p.tiles_per_entry_shift = log2_of(shape_.table_block_tokens / kTileTokens);
    p.m_tiles_per_table = m_tiles_;
    p.num_splits = num_splits_;
    p.scale_log2 = c.scale() * 1.4426950408889634f;
    if (num_splits_ > 1) {
      WorkspaceCarver carver(a.scratch.data, a.scratch.bytes);
      const std::size_t pairs =
          static_cast<std::size_t>(num_splits_) * a.limits.total_q_bound() * c.num_q_heads;
      p.part_o = carver.take<float>(pairs * c.head_dim);
      p.part_lse = carver.take<float>(pairs);
      p.part_rows = a.limits.total_q_bound();
    }
    return p;
  }

  static int log2_of(int v) {
    int s = 0;
    while ((1 << s) < v) ++s;
    return s;
  }

  TableShape shape_{};
  int m_tiles_ = 0;
  int cta_slots_ = 0;
  int num_splits_ = 1;
  bool use_sm90_ = false;
  bool configured_ = false;
};

}  // namespace compact
