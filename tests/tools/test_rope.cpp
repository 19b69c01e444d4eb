// Rotary embedding: LLaMA-3.1 frequencies against the formula written out by hand, and the
// rotation against complex multiplication.
#include <doctest/doctest.h>

#include <cmath>
#include <complex>
#include <random>
#include <vector>

#include "../support/seed.hpp"
#include "workload/rope.hpp"

using namespace compact;
using namespace compact::tools;

TEST_CASE("rope: LLaMA-3.1 inverse frequencies (theta 500000, llama3 scaling 8 / 1 / 4 / 8192)") {
  const std::vector<double> f = rope_inv_freq(RopeSettings{}, 128);
  REQUIRE(f.size() == 64);
  const double two_pi = 6.283185307179586;
  for (int i = 0; i < 64; ++i) {
    const double base = std::pow(500000.0, -static_cast<double>(2 * i) / 128.0);
    const double wavelen = two_pi / base;
    double want;
    if (wavelen < 8192.0 / 4.0) {
      want = base;  // high frequencies: unchanged
    } else if (wavelen > 8192.0 / 1.0) {
      want = base / 8.0;  // low frequencies: divided by the factor
    } else {
      const double smooth = (8192.0 / wavelen - 1.0) / (4.0 - 1.0);
      want = (1.0 - smooth) * base / 8.0 + smooth * base;
    }
    CHECK(f[i] == doctest::Approx(want).epsilon(1e-12));
  }
  // Spot values: pair 0 turns by 1 rad per token, the last pair by 500000^(-126/128) / 8.
  CHECK(f[0] == 1.0);
  CHECK(f[63] == doctest::Approx(std::pow(500000.0, -126.0 / 128.0) / 8.0).epsilon(1e-12));
  // Without scaling: the plain geometric series.
  RopeSettings plain;
  plain.llama3_scaling = false;
  CHECK(rope_inv_freq(plain, 64)[31] == doctest::Approx(std::pow(500000.0, -62.0 / 64.0)));
}

TEST_CASE("rope: rotation is complex multiplication of pair (x[i], x[i + D/2]) by exp(i pos f_i)") {
  auto rng = test::rng_for(0x707e);
  std::normal_distribution<float> normal;
  const int D = 64;
  const Rope rope(RopeSettings{}, D);
  for (int pos : {0, 1, 17, 8191, 131071}) {
    std::vector<float> x(D), cs(D / 2), sn(D / 2);
    for (float& e : x) e = normal(rng);
    std::vector<float> y = x;
    rope.angles(pos, cs.data(), sn.data());
    rope.apply(y.data(), cs.data(), sn.data());
    std::vector<double> z(x.begin(), x.end());
    rope.rotate(z.data(), pos);
    for (int i = 0; i < D / 2; ++i) {
      const std::complex<double> want =
          std::complex<double>(x[i], x[i + D / 2]) * std::polar(1.0, pos * rope.inv_freq()[i]);
      CHECK(y[i] == doctest::Approx(want.real()).epsilon(1e-5).scale(10));
      CHECK(y[i + D / 2] == doctest::Approx(want.imag()).epsilon(1e-5).scale(10));
      CHECK(z[i] == doctest::Approx(want.real()).epsilon(1e-12));
      CHECK(z[i + D / 2] == doctest::Approx(want.imag()).epsilon(1e-12));
    }
  }
}

TEST_CASE("rope: q.k depends only on the distance, and rotating by -pos undoes pos") {
  auto rng = test::rng_for(0x707f);
  std::normal_distribution<double> normal;
  const int D = 128;
  const Rope rope(RopeSettings{}, D);
  std::vector<double> q(D), k(D);
  for (double& e : q) e = normal(rng);
  for (double& e : k) e = normal(rng);
  auto dot_at = [&](int i, int j) {
    std::vector<double> a = q, b = k;
    rope.rotate(a.data(), i);
    rope.rotate(b.data(), j);
    double s = 0;
    for (int d = 0; d < D; ++d) s += a[d] * b[d];
    return s;
  };
  CHECK(dot_at(1000, 900) == doctest::Approx(dot_at(100100, 100000)).epsilon(1e-9));
  CHECK(dot_at(5, 0) == doctest::Approx(dot_at(70005, 70000)).epsilon(1e-9));
  std::vector<double> r = q;
  rope.rotate(r.data(), 77777);
  rope.rotate(r.data(), -77777);
  for (int d = 0; d < D; ++d) CHECK(r[d] == doctest::Approx(q[d]).epsilon(1e-9));
}

TEST_CASE("rope: invalid settings raise compact::Error naming the field") {
  RopeSettings s;
  s.theta = 0.5;
  CHECK_THROWS_WITH_AS(rope_inv_freq(s, 128), doctest::Contains("rope.theta"), Error);
  s = RopeSettings{};
  s.high_freq_factor = 1.0;
  CHECK_THROWS_WITH_AS(rope_inv_freq(s, 128), doctest::Contains("rope.high_freq_factor"), Error);
  CHECK_THROWS_WITH_AS(rope_inv_freq(RopeSettings{}, 63), doctest::Contains("head_dim = 63"),
                       Error);
}
