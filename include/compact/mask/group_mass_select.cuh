/// @file group_mass_select.cuh
/// @brief Mass-coverage selection over integer block masses: the fewest KV blocks, heaviest first,
/// whose mass reaches a fraction of the total. Host reference and a CTA-wide device version that
/// select the same blocks (all arithmetic is integer).
///
/// Used by FlashPrefillMask's group_mass mode: the per-row block scores of every query block of a
/// chunk and every head of a GQA group are normalized per row and summed into one integer mass per
/// KV block, and the group keeps the blocks that carry `tau` of that mass. Selecting once per group
/// is what the union would do anyway (BlockUnion keeps whatever any row keeps), but it bounds the
/// union by a budget instead of letting the flattest head of the group decide it.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>

#include "compact/core/macros.hpp"

namespace compact::group_mass {

/// Fixed-point bits of the coverage fraction tau (tau_fixed()).
inline constexpr int kTauBits = 16;

/// tau in [0, 1] as an integer in [0, 2^16] (host side; the kernels receive the integer, so the
/// host and device targets are the same integer).
inline std::uint32_t tau_fixed(float tau) {
  return static_cast<std::uint32_t>(std::lround(static_cast<double>(tau) * (1 << kTauBits)));
}

/// ceil(total * tau_fix / 2^16) for tau_fix <= 2^16, without overflow for any 64-bit total.
COMPACT_HOST_DEVICE inline std::uint64_t mass_target(std::uint64_t total, std::uint32_t tau_fix) {
  const std::uint64_t q = total >> kTauBits, r = total & ((1u << kTauBits) - 1);
  return q * tau_fix + ((r * tau_fix + ((1u << kTauBits) - 1)) >> kTauBits);
}

/// Integer units of a non-negative block score below 2^31 (truncated; negative scores mark
/// unscored blocks and count 0).
COMPACT_HOST_DEVICE inline std::uint64_t score_units(float s) {
  if (!(s >= 1.0f)) return 0;
#if defined(__CUDA_ARCH__)
  return __float2ull_rz(s);
#else
  return static_cast<std::uint64_t>(s);
#endif
}

/// A block's share of its row, in 2^-32 units of the row total: floor(units * 2^32 / total).
/// units < 2^31 keeps the shift exact.
COMPACT_HOST_DEVICE inline std::uint64_t row_share(std::uint64_t units, std::uint64_t total) {
  return total == 0 ? 0 : (units << 32) / total;
}

/// Host reference. `mass[kb]` for kb < n; `forced[kb]` marks blocks kept whatever their mass.
/// Sets `selected[kb]` for the non-forced blocks chosen: the shortest prefix, in the order
/// (mass descending, kb ascending) over non-forced blocks of positive mass, such that forced mass
/// plus prefix mass reaches mass_target(total, tau_fix); at least min(min_count, candidates)
/// blocks. Returns how many were chosen.
inline int select_host(const std::uint64_t* mass, const std::uint8_t* forced, int n,
                       std::uint32_t tau_fix, int min_count, std::uint8_t* selected) {
  std::uint64_t total = 0, forced_sum = 0;
  std::vector<std::pair<std::uint64_t, int>> cand;
  for (int kb = 0; kb < n; ++kb) {
    selected[kb] = 0;
    total += mass[kb];
    if (forced[kb]) {
      forced_sum += mass[kb];
    } else if (mass[kb] > 0) {
      cand.emplace_back(mass[kb], kb);
    }
  }
  const std::uint64_t target = mass_target(total, tau_fix);
  std::sort(cand.begin(), cand.end(), [](const auto& x, const auto& y) {
    return x.first != y.first ? x.first > y.first : x.second < y.second;
  });
  int take = 0;
  std::uint64_t have = forced_sum;
  while (have < target && take < static_cast<int>(cand.size())) have += cand[take++].first;
  take = std::max(take, std::min(min_count, static_cast<int>(cand.size())));
  for (int i = 0; i < take; ++i) selected[cand[i].second] = 1;
  return take;
}

#if defined(__CUDACC__)

/// CTA-wide selection of select_host() for a block of kThreads threads: every thread calls it with
/// the same arguments. `mass` is global or shared memory (read-only here), `forced` and `selected`
/// are shared-memory bitmaps of ceil(n / 32) words (`selected` is overwritten). Radix searches
/// over the masses replace the sort; the result is the same set.
///
/// The two thresholds (the mass where the heaviest-first prefix reaches the target, and the mass
/// of the last block taken) are found a digit of kDigitBits at a time, from the top bit of the
/// largest candidate: a shared-memory histogram of the digit over the candidates that match the
/// digits found so far, then one CTA-wide scan over the bins. About 5 passes for the ~40-bit
/// masses of group_mass, each with 3 barriers plus the scan's, where a search one bit per
/// CTA-wide reduction took ~40 rounds of 3 barriers per threshold: the selection is a chain of
/// barriers, not of arithmetic.
template <int kThreads>
struct BlockMassSelect {
  static constexpr int kDigitBits = 8;                 ///< Bits of the mass decided per pass.
  static constexpr int kBins = 1 << kDigitBits;        ///< Histogram bins per pass.
  static constexpr unsigned int kNoBin = 0xffffffffu;  ///< A thread's empty run.
  static_assert(kThreads >= kBins && kThreads % 32 == 0,
                "BlockMassSelect: one thread per histogram bin (kThreads >= 256, whole warps)");
  using Reduce = cub::BlockReduce<unsigned long long, kThreads>;  ///< CTA-wide reduction.
  /// CTA-wide scan (warp scans: its storage is a word per warp, not per thread).
  using Scan = cub::BlockScan<unsigned long long, kThreads, cub::BLOCK_SCAN_WARP_SCANS>;
  /// Shared memory the selection needs: one per CTA, passed to the constructor.
  struct TempStorage {
    union {
      typename Reduce::TempStorage reduce;  ///< Storage of the reductions.
      typename Scan::TempStorage scan;      ///< Storage of the bin scans.
    } cub;                                  ///< Used by one collective at a time.
    unsigned long long hist[kBins];         ///< The digit histogram of a pass.
    unsigned long long result[3];           ///< Results broadcast to every thread.
  };
  TempStorage& tmp;  ///< The CTA's shared storage.
  /// A selector over shared storage `t`.
  __device__ explicit BlockMassSelect(TempStorage& t) : tmp(t) {}

  /// Thread 0's `s` (a reduction's result, valid there only), returned to every thread.
  __device__ unsigned long long broadcast(unsigned long long s) {
    if (threadIdx.x == 0) tmp.result[0] = s;
    __syncthreads();
    const unsigned long long r = tmp.result[0];
    __syncthreads();  // result[0] and the reduction's storage are free again
    return r;
  }
  /// Sum over the CTA of each thread's `v`, returned to every thread.
  __device__ unsigned long long sum(unsigned long long v) {
    return broadcast(Reduce(tmp.cub.reduce).Sum(v));
  }
  /// Maximum over the CTA, returned to every thread.
  __device__ unsigned long long max(unsigned long long v) {
    return broadcast(
        Reduce(tmp.cub.reduce).Reduce(v, [](unsigned long long a, unsigned long long b) {
          return a > b ? a : b;
        }));
  }
  /// True for a candidate block: not forced, positive mass.
  static __device__ bool candidate(std::uint64_t a, const std::uint32_t* forced, int kb) {
    return a > 0 && !((forced[kb >> 5] >> (kb & 31)) & 1u);
  }
  /// Sum over candidate blocks of f(mass, kb).
  template <class F>
  __device__ unsigned long long over_candidates(const std::uint64_t* mass,
                                                const std::uint32_t* forced, int n, F&& f) {
    unsigned long long acc = 0;
    for (int kb = threadIdx.x; kb < n; kb += kThreads) {
      const std::uint64_t a = mass[kb];
      if (candidate(a, forced, kb)) acc += f(a, kb);
    }
    return sum(acc);
  }

  /// The result of search().
  struct Threshold {
    std::uint64_t x = 0;      ///< The largest x with W(a >= x) >= need.
    std::uint64_t above = 0;  ///< W(a > x).
    std::uint64_t at = 0;     ///< W(a == x).
  };

  /// With W(P) the total weight of the candidates whose mass a satisfies P (weight a when
  /// kByMass, else 1): the largest x with W(a >= x) >= need, for 0 < need <= W(a >= 0) and
  /// `top` the top bit of the largest candidate. W(a >= x) only changes at candidate masses, so
  /// x is one. Pass by pass, `x` holds the digits decided so far and `acc` the weight of the
  /// candidates above every value with those digits; the invariant acc < need <= acc + (weight
  /// under those digits) picks exactly one bin per pass.
  template <bool kByMass>
  __device__ __forceinline__ Threshold search(const std::uint64_t* mass,
                                              const std::uint32_t* forced, int n, int top,
                                              std::uint64_t need) {
    std::uint64_t x = 0, acc = 0, at = 0;
    for (int shift = top / kDigitBits * kDigitBits; shift >= 0; shift -= kDigitBits) {
      for (int i = threadIdx.x; i < kBins; i += kThreads) tmp.hist[i] = 0;
      __syncthreads();
      const int hi = shift + kDigitBits;  // bits at and above hi must equal x's
      // Masses of a flat selection share their top digits, so most candidates of a pass can
      // fall into one bin: runs of equal digits are summed in registers, and the last run of
      // each thread is summed over the warp when all of the warp's runs share a bin, so that one
      // bin does not take a shared-memory atomic per block.
      unsigned int run_bin = kNoBin;
      unsigned long long run = 0;
      for (int kb = threadIdx.x; kb < n; kb += kThreads) {
        const std::uint64_t a = mass[kb];
        if (!candidate(a, forced, kb) || (hi < 64 && (a >> hi) != (x >> hi))) continue;
        const unsigned int bin = static_cast<unsigned int>((a >> shift) & (kBins - 1));
        if (bin != run_bin) {
          if (run_bin != kNoBin) atomicAdd(&tmp.hist[run_bin], run);
          run_bin = bin;
          run = 0;
        }
        run += kByMass ? a : 1ull;
      }
      // One bin for every lane that has a run (lanes without one add 0 to the warp's sum).
      const unsigned int active = __ballot_sync(0xffffffffu, run_bin != kNoBin);
      const unsigned int peers = __match_any_sync(0xffffffffu, run_bin);
      if (__all_sync(0xffffffffu, run_bin == kNoBin || peers == active)) {
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) run += __shfl_xor_sync(0xffffffffu, run, o);
        if (active != 0u && (threadIdx.x & 31) == __ffs(active) - 1) {
          atomicAdd(&tmp.hist[run_bin], run);
        }
      } else if (run_bin != kNoBin) {
        atomicAdd(&tmp.hist[run_bin], run);
      }
      __syncthreads();
      // Thread t holds digit kBins - 1 - t: the exclusive scan is the weight of higher digits.
      const int t = static_cast<int>(threadIdx.x);
      const unsigned long long w = t < kBins ? tmp.hist[kBins - 1 - t] : 0ull;
      unsigned long long higher = 0;
      Scan(tmp.cub.scan).ExclusiveSum(w, higher);
      if (t < kBins && acc + higher < need && acc + higher + w >= need) {
        tmp.result[0] = static_cast<unsigned long long>(kBins - 1 - t);
        tmp.result[1] = acc + higher;
        tmp.result[2] = w;
      }
      __syncthreads();
      x |= static_cast<std::uint64_t>(tmp.result[0]) << shift;
      acc = tmp.result[1];
      at = tmp.result[2];
      __syncthreads();  // result[] and hist[] are rewritten by the next pass or collective
    }
    return {x, acc, at};
  }

  /// Runs the selection; returns how many blocks were chosen.
  __device__ int run(const std::uint64_t* mass, const std::uint32_t* forced, int n,
                     std::uint32_t tau_fix, int min_count, std::uint32_t* selected) {
    unsigned long long total = 0, forced_sum = 0, cand_sum = 0, cand_count = 0, cand_max = 0;
    for (int kb = threadIdx.x; kb < n; kb += kThreads) {
      const std::uint64_t a = mass[kb];
      total += a;
      if ((forced[kb >> 5] >> (kb & 31)) & 1u) {
        forced_sum += a;
      } else if (a > 0) {
        cand_sum += a;
        cand_count += 1;
        cand_max = a > cand_max ? a : cand_max;
      }
    }
    total = sum(total);
    forced_sum = sum(forced_sum);
    cand_sum = sum(cand_sum);
    const int n_cand = static_cast<int>(sum(cand_count));
    cand_max = max(cand_max);
    const int top = cand_max > 0 ? 63 - __clzll(static_cast<long long>(cand_max)) : 0;
    const std::uint64_t target = mass_target(total, tau_fix);
    const std::uint64_t need = target > forced_sum ? target - forced_sum : 0;
    // How many: the shortest heaviest-first prefix reaching `need`. With v the largest mass whose
    // W(a >= v) reaches it, the blocks above v fall short, and ties at v are added until it does.
    int take = 0;
    if (need > 0 && cand_sum <= need) {
      take = n_cand;
    } else if (need > 0) {
      const Threshold v = search<true>(mass, forced, n, top, need);
      const int above_count = static_cast<int>(over_candidates(
          mass, forced, n, [&](std::uint64_t a, int) { return a > v.x ? 1ull : 0ull; }));
      take = above_count + static_cast<int>((need - v.above + v.x - 1) / v.x);
    }
    take = max_of(take, min_of(min_count, n_cand));
    // Which: the `take` first in (mass desc, kb asc): masses above w, then ties at w by kb.
    for (int w = threadIdx.x; w < (n + 31) / 32; w += kThreads) selected[w] = 0u;
    __syncthreads();
    if (take == 0) return 0;
    const Threshold w = search<false>(mass, forced, n, top, static_cast<std::uint64_t>(take));
    const int ties = take - static_cast<int>(w.above);  // >= 1
    int u = n;  // ties at w are taken for kb <= u: all of them unless only some are needed
    if (static_cast<std::uint64_t>(ties) < w.at) {
      u = 0;  // the largest kb with count(a == w, kb' < kb) < ties
      for (int bit = 31 - __clz(max_of(n - 1, 1)); bit >= 0; --bit) {
        const int c = u | (1 << bit);
        if (c >= n) continue;
        if (static_cast<int>(over_candidates(mass, forced, n, [&](std::uint64_t a, int kb) {
              return a == w.x && kb < c ? 1ull : 0ull;
            })) < ties) {
          u = c;
        }
      }
    }
    for (int kb = threadIdx.x; kb < n; kb += kThreads) {
      const std::uint64_t a = mass[kb];
      if (candidate(a, forced, kb) && (a > w.x || (a == w.x && kb <= u))) {
        atomicOr(&selected[kb >> 5], 1u << (kb & 31));
      }
    }
    __syncthreads();
    return take;
  }
};
#endif  // __CUDACC__

}  // namespace compact::group_mass
