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
/// the same arguments. `mass` is global memory (read-only here), `forced` and `selected` are
/// shared-memory bitmaps of ceil(n / 32) words (`selected` is overwritten). Bitwise searches over
/// block-wide integer reductions replace the sort; the result is the same set.
template <int kThreads>
struct BlockMassSelect {
  using Sum = cub::BlockReduce<unsigned long long, kThreads>;  ///< The CTA-wide reduction.

  /// Shared memory the selection needs: one per CTA, passed to the constructor.
  struct TempStorage {
    typename Sum::TempStorage reduce;  ///< Storage of the reduction.
    unsigned long long result;         ///< A reduction's result, broadcast to every thread.
  };

  TempStorage& tmp;  ///< The CTA's shared storage.
  /// A selector over shared storage `t`.
  __device__ explicit BlockMassSelect(TempStorage& t) : tmp(t) {}

  /// Sum over the CTA of each thread's `v`, returned to every thread.
  __device__ unsigned long long sum(unsigned long long v) {
    const unsigned long long s = Sum(tmp.reduce).Sum(v);
    if (threadIdx.x == 0) tmp.result = s;
    __syncthreads();
    const unsigned long long r = tmp.result;
    __syncthreads();
    return r;
  }

  /// Maximum over the CTA, returned to every thread.
  __device__ unsigned long long max(unsigned long long v) {
    const unsigned long long s =
        Sum(tmp.reduce).Reduce(v, [](unsigned long long a, unsigned long long b) {
          return a > b ? a : b;
        });
    if (threadIdx.x == 0) tmp.result = s;
    __syncthreads();
    const unsigned long long r = tmp.result;
    __syncthreads();
    return r;
  }

  /// Sum over candidate blocks (not forced, positive mass) of f(mass, kb).
  template <class F>
  __device__ unsigned long long over_candidates(const std::uint64_t* mass,
                                                const std::uint32_t* forced, int n, F&& f) {
    unsigned long long acc = 0;
    for (int kb = threadIdx.x; kb < n; kb += kThreads) {
      const std::uint64_t a = mass[kb];
      if (a > 0 && !((forced[kb >> 5] >> (kb & 31)) & 1u)) acc += f(a, kb);
    }
    return sum(acc);
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
    const std::uint64_t target = mass_target(total, tau_fix);
    const std::uint64_t need = target > forced_sum ? target - forced_sum : 0;

    // How many: the shortest heaviest-first prefix reaching `need`.
    int take = 0;
    if (need > 0 && cand_sum <= need) {
      take = n_cand;
    } else if (need > 0) {
      // v: the largest mass with sum(a >= v) >= need (an attained mass).
      std::uint64_t v = 0;
      for (int bit = 63 - __clzll(static_cast<long long>(cand_max)); bit >= 0; --bit) {
        const std::uint64_t c = v | (std::uint64_t{1} << bit);
        if (over_candidates(mass, forced, n,
                            [&](std::uint64_t a, int) { return a >= c ? a : 0; }) >= need) {
          v = c;
        }
      }
      const std::uint64_t above =
          over_candidates(mass, forced, n, [&](std::uint64_t a, int) { return a > v ? a : 0; });
      const int above_count = static_cast<int>(over_candidates(
          mass, forced, n, [&](std::uint64_t a, int) { return a > v ? 1ull : 0ull; }));
      take = above_count + static_cast<int>((need - above + v - 1) / v);
    }
    take = max_of(take, min_of(min_count, n_cand));

    // Which: the `take` first in (mass desc, kb asc): masses above w, then ties at w by kb.
    for (int w = threadIdx.x; w < (n + 31) / 32; w += kThreads) selected[w] = 0u;
    __syncthreads();
    if (take == 0) return 0;
    std::uint64_t w = 0;  // the largest mass with count(a >= w) >= take
    for (int bit = 63 - __clzll(static_cast<long long>(cand_max)); bit >= 0; --bit) {
      const std::uint64_t c = w | (std::uint64_t{1} << bit);
      if (static_cast<int>(over_candidates(mass, forced, n, [&](std::uint64_t a, int) {
            return a >= c ? 1ull : 0ull;
          })) >= take) {
        w = c;
      }
    }
    const int gt = static_cast<int>(over_candidates(
        mass, forced, n, [&](std::uint64_t a, int) { return a > w ? 1ull : 0ull; }));
    const int ties = take - gt;  // >= 1
    int u = 0;                   // the largest kb with count(a == w, kb' < kb) < ties
    for (int bit = 31 - __clz(max_of(n - 1, 1)); bit >= 0; --bit) {
      const int c = u | (1 << bit);
      if (c >= n) continue;
      if (static_cast<int>(over_candidates(mass, forced, n, [&](std::uint64_t a, int kb) {
            return a == w && kb < c ? 1ull : 0ull;
          })) < ties) {
        u = c;
      }
    }
    for (int kb = threadIdx.x; kb < n; kb += kThreads) {
      const std::uint64_t a = mass[kb];
      const bool cand = a > 0 && !((forced[kb >> 5] >> (kb & 31)) & 1u);
      if (cand && (a > w || (a == w && kb <= u))) atomicOr(&selected[kb >> 5], 1u << (kb & 31));
    }
    __syncthreads();
    return take;
  }
};

#endif  // __CUDACC__

}  // namespace compact::group_mass
