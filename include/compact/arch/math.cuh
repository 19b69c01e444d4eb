/// @file math.cuh
/// @brief Fast special functions for softmax inner loops.
#pragma once

#include "compact/core/macros.hpp"

namespace compact::arch {

/// 2^x with the SFU's approximation (flush-to-zero): one MUFU.EX2, no range handling. Enough for
/// softmax weights in [0, 1]; exp2(-inf) is 0.
COMPACT_DEVICE float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

}  // namespace compact::arch
