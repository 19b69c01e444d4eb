/// @file smem.cuh
/// @brief Shared-memory address helpers for PTX that takes 32-bit shared addresses.
#pragma once

#include <cstdint>

#include "compact/core/macros.hpp"

namespace compact::arch {

/// The 32-bit shared-state-space address of a generic pointer into shared memory.
COMPACT_DEVICE std::uint32_t smem_addr(const void* p) {
  return static_cast<std::uint32_t>(__cvta_generic_to_shared(p));
}

}  // namespace compact::arch
