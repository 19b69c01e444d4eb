// Fresh random inputs each run; COMPACT_TEST_SEED=<n> replays a failing run.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <random>

namespace compact::test {

/// The run's base seed: COMPACT_TEST_SEED if set, else fresh from std::random_device.
inline std::uint64_t base_seed() {
  static const std::uint64_t seed = []() -> std::uint64_t {
    if (const char* env = std::getenv("COMPACT_TEST_SEED")) return std::strtoull(env, nullptr, 10);
    std::random_device rd;
    return (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
  }();
  return seed;
}

/// A generator for one test case, derived from the base seed and a case-specific salt.
inline std::mt19937_64 rng_for(std::uint64_t salt) {
  std::seed_seq seq{static_cast<std::uint32_t>(base_seed()),
                    static_cast<std::uint32_t>(base_seed() >> 32), static_cast<std::uint32_t>(salt),
                    static_cast<std::uint32_t>(salt >> 32)};
  return std::mt19937_64(seq);
}

}  // namespace compact::test
