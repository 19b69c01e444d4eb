/// @file ldmatrix.cuh
/// @brief ldmatrix (sm75+): warp-cooperative 8x8 b16 matrix loads from shared memory.
#pragma once

#include <cstdint>

#include "compact/arch/smem.cuh"

namespace compact::arch {

/// Four 8x8 b16 matrices; lane l supplies the row address of matrix l / 8, row l % 8.
COMPACT_DEVICE void ldmatrix_x4(std::uint32_t (&r)[4], const void* row_addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(row_addr)));
}

/// As ldmatrix_x4, transposing each 8x8 matrix (for operands stored K-major).
COMPACT_DEVICE void ldmatrix_x4_trans(std::uint32_t (&r)[4], const void* row_addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(row_addr)));
}

/// Two 8x8 b16 matrices; lanes 0-15 supply the row addresses.
COMPACT_DEVICE void ldmatrix_x2(std::uint32_t (&r)[2], const void* row_addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(smem_addr(row_addr)));
}

}  // namespace compact::arch
