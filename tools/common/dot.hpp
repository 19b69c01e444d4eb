/// @file dot.hpp
/// @brief Host inner loops of the tools, written so the compiler vectorizes them without
/// -ffast-math: eight independent fp32 partial sums, combined in a fixed order (so results do
/// not depend on the thread that computes them).
#pragma once

namespace compact::tools {

/// sum_i a[i] * b[i] in fp32 with 8 interleaved partial sums (n a multiple of 8 is fastest).
inline float dot(const float* __restrict a, const float* __restrict b, int n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int l = 0; l < 8; ++l) acc[l] += a[i + l] * b[i + l];
  }
  for (; i < n; ++i) acc[i & 7] += a[i] * b[i];
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

/// y[i] += w * x[i].
inline void axpy(float w, const float* __restrict x, float* __restrict y, int n) {
  for (int i = 0; i < n; ++i) y[i] += w * x[i];
}

}  // namespace compact::tools
