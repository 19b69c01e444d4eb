/// @file rope.hpp
/// @brief Rotary position embedding with LLaMA-3.1's frequency scaling, in the rotate-half layout
/// of Hugging Face LLaMA and vLLM's neox style.
#pragma once

#include <cmath>
#include <ostream>
#include <vector>

#include "compact/core/error.hpp"

namespace compact::tools {

/// Rotary settings. The defaults are LLaMA-3.1's: theta 500000 and the "llama3" scaling of the
/// inverse frequencies (factor 8, low-frequency factor 1, high-frequency factor 4, original
/// context 8192).
struct RopeSettings {
  double theta = 500000.0;
  bool llama3_scaling = true;
  double factor = 8.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int original_context = 8192;

  void validate() const {
    require(theta > 1.0, "rope.theta", theta, "a base > 1");
    if (!llama3_scaling) return;
    require(factor >= 1.0, "rope.factor", factor, ">= 1");
    require(low_freq_factor > 0.0 && high_freq_factor > low_freq_factor, "rope.high_freq_factor",
            high_freq_factor, detail::cat("> rope.low_freq_factor (", low_freq_factor, ") > 0"));
    require(original_context > 0, "rope.original_context", original_context, "> 0");
  }
  void print(std::ostream& os, const char* prefix = "") const {
    os << prefix << "rope.theta = " << theta << "\n"
       << prefix << "rope.llama3_scaling = " << (llama3_scaling ? "on" : "off") << "\n";
    if (llama3_scaling) {
      os << prefix << "rope.factor = " << factor << ", low_freq_factor = " << low_freq_factor
         << ", high_freq_factor = " << high_freq_factor
         << ", original_context = " << original_context << "\n";
    }
  }
};

/// Inverse frequencies of the head_dim / 2 rotary pairs: theta^(-2i / D), then (llama3 scaling)
/// divided by `factor` where the wavelength 2 pi / f exceeds original_context / low_freq_factor,
/// kept where it is below original_context / high_freq_factor, and interpolated in between with
/// smooth = (original_context / wavelength - low) / (high - low):
/// f' = (1 - smooth) * f / factor + smooth * f.
inline std::vector<double> rope_inv_freq(const RopeSettings& s, int head_dim) {
  s.validate();
  require(head_dim > 0 && head_dim % 2 == 0, "head_dim", head_dim, "a positive even number");
  const int half = head_dim / 2;
  std::vector<double> f(half);
  const double two_pi = 6.283185307179586;
  for (int i = 0; i < half; ++i) {
    double inv = std::pow(s.theta, -2.0 * i / head_dim);
    if (s.llama3_scaling) {
      const double wavelen = two_pi / inv;
      const double low_wavelen = s.original_context / s.low_freq_factor;
      const double high_wavelen = s.original_context / s.high_freq_factor;
      if (wavelen > low_wavelen) {
        inv /= s.factor;
      } else if (wavelen >= high_wavelen) {
        const double smooth = (s.original_context / wavelen - s.low_freq_factor) /
                              (s.high_freq_factor - s.low_freq_factor);
        inv = (1.0 - smooth) * inv / s.factor + smooth * inv;
      }
    }
    f[i] = inv;
  }
  return f;
}

/// Applies the rotation of position `pos` to head vectors. Pair i is (x[i], x[i + D/2]), rotated
/// by the angle pos * inv_freq[i]:
///   x'[i] = x[i] cos - x[i + D/2] sin,   x'[i + D/2] = x[i + D/2] cos + x[i] sin,
/// which is Hugging Face's `x * cos + rotate_half(x) * sin`. Then (R(i) q) . (R(j) k) depends on
/// i - j only. Angles are formed in double (pos * f reaches 1.3e5 radians at 128K).
class Rope {
 public:
  Rope(const RopeSettings& s, int head_dim)
      : inv_freq_(rope_inv_freq(s, head_dim)), dim_(head_dim) {}

  int head_dim() const { return dim_; }
  const std::vector<double>& inv_freq() const { return inv_freq_; }

  /// cos and sin of the D/2 angles of a position (negative: the inverse rotation).
  void angles(double pos, float* cos_out, float* sin_out) const {
    for (std::size_t i = 0; i < inv_freq_.size(); ++i) {
      const double a = pos * inv_freq_[i];
      cos_out[i] = static_cast<float>(std::cos(a));
      sin_out[i] = static_cast<float>(std::sin(a));
    }
  }
  /// Rotates one head vector in place with precomputed angles.
  void apply(float* x, const float* cos_a, const float* sin_a) const {
    const int half = dim_ / 2;
    for (int i = 0; i < half; ++i) {
      const float a = x[i], b = x[i + half];
      x[i] = a * cos_a[i] - b * sin_a[i];
      x[i + half] = b * cos_a[i] + a * sin_a[i];
    }
  }
  /// Rotates one head vector in place by position `pos` (computed in double).
  void rotate(double* x, double pos) const {
    const int half = dim_ / 2;
    for (int i = 0; i < half; ++i) {
      const double ang = pos * inv_freq_[i], c = std::cos(ang), s = std::sin(ang);
      const double a = x[i], b = x[i + half];
      x[i] = a * c - b * s;
      x[i + half] = b * c + a * s;
    }
  }

 private:
  std::vector<double> inv_freq_;
  int dim_;
};

}  // namespace compact::tools
