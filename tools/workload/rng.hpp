/// @file rng.hpp
/// @brief Counter-based random numbers for the workload generator: every value is a pure function
/// of (seed, purpose, indices), so generation is deterministic whatever the thread count or the
/// order in which ranges are produced.
#pragma once

#include <cmath>
#include <cstdint>
#include <initializer_list>

namespace compact::tools {

/// The SplitMix64 output function: a bijective 64-bit mixer.
constexpr std::uint64_t mix64(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

/// A key derived from a seed and any number of indices (order matters).
constexpr std::uint64_t derive(std::uint64_t seed, std::initializer_list<std::uint64_t> parts) {
  std::uint64_t k = mix64(seed);
  for (std::uint64_t p : parts) k = mix64(k ^ mix64(p + 0x632be59bd9b4e019ull));
  return k;
}

/// Purposes of the generator's random streams (distinct keys, so streams never overlap).
enum class Stream : std::uint64_t {
  layout = 1,    ///< Segments, anchors, needles, head parameters.
  key_noise,     ///< Per (token, KV head) key noise.
  value_noise,   ///< Per (token, KV head) value noise.
  query_noise,   ///< Per (token, query head) query noise.
  topic_choice,  ///< Per (chunk, query head) topic mixture.
  basis,         ///< Per KV head feature directions.
  sampling,      ///< Row and chunk sampling of the evaluator.
};

/// A small generator over one key: SplitMix64 (a Weyl sequence through mix64).
class Rng {
 public:
  explicit Rng(std::uint64_t key) : state_(key) {}
  Rng(std::uint64_t seed, Stream s, std::initializer_list<std::uint64_t> parts = {})
      : state_(derive(seed ^ (static_cast<std::uint64_t>(s) << 56), parts)) {}

  std::uint64_t next() {
    state_ += 0x9e3779b97f4a7c15ull;
    std::uint64_t z = state_;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  /// Uniform in [0, 1) with 53 random bits.
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  /// Log-uniform in [lo, hi] (both positive).
  double log_uniform(double lo, double hi) { return std::exp(uniform(std::log(lo), std::log(hi))); }
  /// Uniform integer in [lo, hi] (inclusive; the modulo bias is below 2^-40 for our ranges).
  int uniform_int(int lo, int hi) {
    const std::uint64_t span = static_cast<std::uint64_t>(hi - lo) + 1;
    return lo + static_cast<int>(next() % span);
  }
  /// Standard normal (Box-Muller, exact).
  double normal() {
    if (has_spare_) {
      has_spare_ = false;
      return spare_;
    }
    double u1 = uniform();
    while (u1 <= 0.0) u1 = uniform();
    const double u2 = uniform();
    const double r = std::sqrt(-2.0 * std::log(u1));
    spare_ = r * std::sin(6.283185307179586 * u2);
    has_spare_ = true;
    return r * std::cos(6.283185307179586 * u2);
  }
  /// Zero-mean, unit-variance noise from one 64-bit draw: the scaled sum of four 16-bit uniforms
  /// (Irwin-Hall). Not Gaussian in the far tail, but q.k sums D such terms, so logits are normal
  /// to a good approximation; about ten times cheaper than normal().
  float fast_noise() {
    const std::uint64_t x = next();
    const float s = static_cast<float>(x & 0xffff) + static_cast<float>((x >> 16) & 0xffff) +
                    static_cast<float>((x >> 32) & 0xffff) + static_cast<float>(x >> 48);
    // Each term is uniform on {0..65535}: mean 32767.5, variance (65536^2 - 1) / 12.
    constexpr float kMean = 4.0f * 32767.5f;
    constexpr float kInvStd = 1.0f / 37837.23f;  // 1 / sqrt(4 * (65536^2 - 1) / 12)
    return (s - kMean) * kInvStd;
  }
  /// Exponential with the given mean.
  double exponential(double mean) {
    double u = uniform();
    while (u <= 0.0) u = uniform();
    return -mean * std::log(u);
  }

 private:
  std::uint64_t state_;
  double spare_ = 0.0;
  bool has_spare_ = false;
};

}  // namespace compact::tools
