/// @file union_tuning.hpp
/// @brief UnionTuning: launch constants of the device union passes, checked by a concept.
#pragma once

#include <concepts>

namespace compact {

/// Launch constants of the device union passes (see union/device/union_kernels.cuh).
///
/// A tuning is a value-type struct; UnionTuningPolicy states what it must hold so that a wrong one
/// fails at compile time with the member's name.
struct UnionTuning {
  /// Threads per CTA of the count and emit passes (one CTA per table).
  static constexpr int kThreads = 256;
  /// Mask words one count step ORs into shared memory (32 KV blocks each). A multiple of 64, the
  /// largest number of KV blocks one table entry can cover (page 1024 / Bk 16), so a step always
  /// ends on an entry boundary.
  static constexpr int kStepWords = 256;
  /// Independent mask-word loads each thread keeps in flight before ORing them.
  static constexpr int kLoadBatch = 4;
  /// Threads and items per thread of the single-CTA indptr scan (one tile = their product).
  static constexpr int kScanThreads = 1024;
  static constexpr int kScanItems = 4;  ///< Items per thread of the scan.
};

/// What a union tuning must provide: `kThreads` (a multiple of 32, at most 1024), `kStepWords`
/// (a positive multiple of 64), `kLoadBatch` (positive), `kScanThreads` (a multiple of 32, at most
/// 1024) and `kScanItems` (positive), all `static constexpr int`.
template <class T>
concept UnionTuningPolicy = requires {
  { T::kThreads } -> std::convertible_to<int>;
  { T::kStepWords } -> std::convertible_to<int>;
  { T::kLoadBatch } -> std::convertible_to<int>;
  { T::kScanThreads } -> std::convertible_to<int>;
  { T::kScanItems } -> std::convertible_to<int>;
}
&&(T::kThreads % 32 == 0 && T::kThreads > 0 && T::kThreads <= 1024) &&
    (T::kStepWords % 64 == 0 && T::kStepWords > 0) && (T::kLoadBatch > 0) &&
    (T::kScanThreads % 32 == 0 && T::kScanThreads > 0 && T::kScanThreads <= 1024) &&
    (T::kScanItems > 0);

static_assert(UnionTuningPolicy<UnionTuning>);

}  // namespace compact
