// The synthetic workload generator: determinism, needles planted where they say with the requested
// margin, slash lines at their lags, and settings validation.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdlib>
#include <sstream>
#include <vector>

#include "workload/synthetic.hpp"

using namespace compact;
using namespace compact::tools;

namespace {

SyntheticSettings small_settings() {
  SyntheticSettings s;
  s.tokens = 6144;
  s.num_q_heads = 8;
  s.num_kv_heads = 2;
  s.head_dim = 64;
  s.chunk = 512;
  s.needles = 3;
  s.question_rows = 6;
  s.needle_max_tokens = 8;
  s.topic_min_tokens = 256;
  s.topic_max_tokens = 2048;
  return s;
}

/// Logits of row `pos`, query head h, against keys [0, pos] (rounded Q and K, in double).
std::vector<double> row_logits(const SyntheticWorkload& w, int pos, int h) {
  const SyntheticSettings& s = w.settings();
  const std::vector<std::uint16_t> q = w.queries(pos, pos + 1);
  const int D = s.head_dim, g = h / s.group();
  std::vector<double> l(pos + 1);
  for (int j = 0; j <= pos; ++j) {
    double dot = 0;
    for (int d = 0; d < D; ++d) {
      dot +=
          static_cast<double>(load_float(q.data(), s.dtype, static_cast<std::size_t>(h) * D + d)) *
          load_float(w.k().data(), s.dtype,
                     (static_cast<std::size_t>(j) * s.num_kv_heads + g) * D + d);
    }
    l[j] = dot / std::sqrt(static_cast<double>(D));
  }
  return l;
}

}  // namespace

TEST_CASE("synthetic: the same seed gives the same layer, whatever the threads and ranges") {
  const SyntheticSettings s = small_settings();
  setenv("COMPACT_TOOL_THREADS", "1", 1);
  const SyntheticWorkload a(s);
  setenv("COMPACT_TOOL_THREADS", "3", 1);
  const SyntheticWorkload b(s);
  unsetenv("COMPACT_TOOL_THREADS");
  CHECK(a.k() == b.k());
  CHECK(a.v() == b.v());
  const std::vector<std::uint16_t> qa = a.queries(0, s.tokens), qb = b.queries(0, s.tokens);
  CHECK(qa == qb);
  // A sub-range equals the same rows of the whole.
  const std::size_t row = static_cast<std::size_t>(s.num_q_heads) * s.head_dim;
  const std::vector<std::uint16_t> part = a.queries(5000, 5100);
  CHECK(std::equal(part.begin(), part.end(), qa.begin() + 5000 * row));
  REQUIRE(a.needles().size() == b.needles().size());
  for (std::size_t i = 0; i < a.needles().size(); ++i) {
    CHECK(a.needles()[i].position == b.needles()[i].position);
    CHECK(a.needles()[i].margin == b.needles()[i].margin);
  }
  SyntheticSettings other = s;
  other.seed = 2;
  const SyntheticWorkload c(other);
  CHECK(c.k() != a.k());
  CHECK(c.queries(0, 64) != a.queries(0, 64));
}

TEST_CASE("synthetic: needles sit where the list says and win by the requested margin") {
  for (bool mid : {false, true}) {
    CAPTURE(mid);
    SyntheticSettings s = small_settings();
    s.mid_chunk = mid;
    s.dtype = mid ? DType::fp16 : DType::bf16;
    const SyntheticWorkload w(s);
    REQUIRE(w.needles().size() == 3);
    const int q0 = w.question_begin();
    if (mid) {
      CHECK(q0 / s.chunk < (s.tokens - 1) / s.chunk);  // not in the final chunk
      CHECK(q0 % s.chunk > 0);                         // strictly inside a chunk
    } else {
      CHECK(q0 == s.tokens - s.question_rows);
    }
    const int D = s.head_dim;
    std::vector<std::vector<float>> payloads;
    for (const Needle& n : w.needles()) {
      CHECK(n.length >= s.needle_min_tokens);
      CHECK(n.length <= s.needle_max_tokens);
      CHECK(n.margin >= s.margin_min);
      CHECK(n.margin <= s.margin_max);
      CHECK(n.question_rows.size() == 2);
      CHECK(n.heads.size() == static_cast<std::size_t>(s.num_kv_heads * s.needle_heads_per_group));
      CHECK(n.distractors.size() == static_cast<std::size_t>(s.distractors));
      for (int r : n.question_rows) {
        CHECK(r >= q0);
        CHECK(r > n.end());
        for (int h : n.heads) {
          CHECK(w.retrieval_head(h));
          // Measured on the rounded Q and K: best needle token minus the best other key.
          CHECK(std::abs(w.measured_margin(n, r, h) - n.margin) < 0.05);
          const std::vector<double> l = row_logits(w, r, h);
          const int argmax = static_cast<int>(std::max_element(l.begin(), l.end()) - l.begin());
          CHECK(argmax >= n.position);
          CHECK(argmax < n.end());
        }
      }
      // Values of the needle tokens are the needle's payload: equal rows of norm ~ sqrt(D).
      for (int g = 0; g < s.num_kv_heads; ++g) {
        std::vector<float> p(D);
        double norm = 0;
        for (int d = 0; d < D; ++d) {
          p[d] = load_float(w.v().data(), s.dtype,
                            (static_cast<std::size_t>(n.position) * s.num_kv_heads + g) * D + d);
          norm += p[d] * p[d];
          const float last =
              load_float(w.v().data(), s.dtype,
                         (static_cast<std::size_t>(n.end() - 1) * s.num_kv_heads + g) * D + d);
          CHECK(last == p[d]);
        }
        CHECK(std::sqrt(norm) == doctest::Approx(std::sqrt(static_cast<double>(D))).epsilon(0.01));
        if (g == 0) payloads.push_back(p);
      }
    }
    // Payloads of different needles are orthogonal (up to rounding).
    for (std::size_t a = 0; a < payloads.size(); ++a) {
      for (std::size_t b = a + 1; b < payloads.size(); ++b) {
        double dot = 0;
        for (int d = 0; d < D; ++d) dot += payloads[a][d] * payloads[b][d];
        CHECK(std::abs(dot) / D < 0.01);
      }
    }
  }
}

TEST_CASE("synthetic: a slash head's strongest distant key sits at its lag") {
  SyntheticSettings s = small_settings();
  s.tokens = 8192;
  s.slash_lags = {1024, 4096};
  s.slash_max_lines = 1;
  s.needles = 0;
  const SyntheticWorkload w(s);
  int checked = 0;
  for (int h = 0; h < s.num_q_heads; ++h) {
    if (w.role(h) != HeadRole::slash) continue;
    REQUIRE(w.lags(h).size() == 1);
    const int lag = w.lags(h)[0];
    for (int pos : {5000, 6500, 8191}) {
      const std::vector<double> l = row_logits(w, pos, h);
      // Away from the sink and the local window, the best key is the line's.
      int best = -1;
      for (int j = s.sink_tokens; j <= pos - 256; ++j) {
        if (best < 0 || l[j] > l[best]) best = j;
      }
      CAPTURE(h);
      CAPTURE(pos);
      CHECK(std::abs((pos - best) - lag) <= 4);
      ++checked;
    }
  }
  CHECK(checked > 0);
}

TEST_CASE("synthetic: settings are validated and printable") {
  SyntheticSettings s = small_settings();
  s.needles = 9;
  CHECK_THROWS_WITH_AS(SyntheticWorkload{s}, doctest::Contains("synthetic.needles = 9"), Error);
  s = small_settings();
  s.num_q_heads = 7;
  CHECK_THROWS_WITH_AS(SyntheticWorkload{s}, doctest::Contains("synthetic.num_q_heads = 7"), Error);
  s = small_settings();
  s.temperature = 0;
  CHECK_THROWS_WITH_AS(SyntheticWorkload{s}, doctest::Contains("synthetic.temperature"), Error);
  s = small_settings();
  s.question_rows = 2;
  CHECK_THROWS_WITH_AS(SyntheticWorkload{s}, doctest::Contains("synthetic.question_rows"), Error);
  CHECK_THROWS_WITH_AS(parse_role("slashes"), doctest::Contains("sink_local, slash"), Error);
  std::ostringstream os;
  small_settings().print(os);
  CHECK(os.str().find("temperature = ") != std::string::npos);
  CHECK(os.str().find("rope.theta = 500000") != std::string::npos);
}
