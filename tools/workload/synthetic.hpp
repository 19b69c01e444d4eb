/// @file synthetic.hpp
/// @brief Synthetic long-context Q/K/V for one attention layer (docs/accuracy.md, WORKLOADS.md):
/// structure built from pre-RoPE feature vectors, then LLaMA-3.1 rotary embedding, then rounding
/// to bf16 / fp16. Deterministic from SyntheticSettings::seed.
///
/// Where each signal lives in the rotary spectrum (D/2 pairs, pair i = dims i and i + D/2, lower
/// index = higher frequency):
/// - content pairs, the `content_pairs` lowest-frequency ones (D/8 by default: for D = 128 the
///   pairs 48..63, which turn by less than 0.9 rad over 128K tokens): position-independent
///   features. The sink, the anchor direction and the needles take single coordinates of the
///   slowest pairs (< 0.3 rad over 128K); topics an orthonormal basis of the rest;
/// - positional pairs, the `positional_pairs` highest-frequency ones (all the others by default):
///   one component c per KV head with equal power per pair and random phases. A head reading
///   it with q = c sees q_i . k_j = sum_l |c_l|^2 cos(theta_l (i - j)), RoPE's decay from
///   distance 0 (locality); a slash head reads it with q = R(-lag) c, which peaks at
///   i - j = lag. Lines add nothing to the keys, so they never disturb the other heads.
/// Isotropic noise sits on every dimension of the keys (weaker on the content pairs) and on every
/// dimension of the queries except the sink, anchor and needle coordinates: those are dedicated
/// channels, so a head's sink logit is stable from row to row, as in trained models (query noise
/// there would make the sink share, and with it the oracle block set, jump between neighbouring
/// rows).
///
/// Head recipes (SyntheticSettings::roles), assigned so that each GQA group mixes them: query head
/// h of group g gets roles[(h % G + g) % roles.size()]. Every head has a sink, whose logit is a
/// per-head base plus sink_log_slope * ln(1 + position) (slope 2: the sink mass grows faster than
/// the diffuse background, so rows stay sparse at 128K), and a local component (local_logit on
/// sink_local heads, local_logit_other elsewhere); the role adds:
/// - sink_local: nothing more (a strong local component);
/// - slash: 1..slash_max_lines lines at lags drawn from slash_lags;
/// - vertical: reads the anchors of its KV head (a fraction in [anchor_rate_min,
///   anchor_rate_max] of positions, logits anchor_logit + Exp, a Pareto tail of index
///   anchor_tail in exp space, capped);
/// - topic: the prompt is cut into segments of log-uniform length in [topic_min_tokens,
///   topic_max_tokens], each with a topic vector in every key of the segment; the queries of each
///   chunk mix 1..topics_per_chunk earlier topics (fresh per chunk and head);
/// - diffuse: only a weak sink and local component (for low-sparsity controls).
/// Needles: `needles` spans of needle_min..max_tokens tokens at random depths whose keys carry a
/// needle direction and whose values are orthonormal payloads; `distractors` tokens per needle
/// with cosine in [distractor_cos_min, max] to it (and their own payloads); question rows (the
/// last `question_rows` rows of the prompt, or rows in the middle of a chunk that is not the final
/// one) of the retrieval heads (needle_heads_per_group per group) carry the needle direction,
/// scaled so that the needle's best token beats every other key of the row by the needle's
/// margin (a logit gap drawn in [margin_min, margin_max]), measured on the rounded Q and K.
/// Question row r asks for needle r % needles; no other row sees a needle.
///
/// Background: `temperature` divides every haystack logit (the whole query before the needle
/// term); it is the one knob calibrated so that the oracle block density (95% of each row's
/// mass, causal-area weighted) matches WORKLOADS.md: 21% at 32K and 9.6% at 128K with the
/// defaults (docs/accuracy.md).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <ostream>
#include <sstream>
#include <string>
#include <vector>

#include "../common/dot.hpp"
#include "../common/parallel.hpp"
#include "compact/core/dtype.hpp"
#include "compact/core/error.hpp"
#include "rng.hpp"
#include "rope.hpp"

namespace compact::tools {

/// What a query head does beyond its sink and local component.
enum class HeadRole : std::uint8_t { sink_local, slash, vertical, topic, diffuse };

constexpr const char* to_string(HeadRole r) {
  switch (r) {
    case HeadRole::sink_local:
      return "sink_local";
    case HeadRole::slash:
      return "slash";
    case HeadRole::vertical:
      return "vertical";
    case HeadRole::topic:
      return "topic";
    default:
      return "diffuse";
  }
}

inline HeadRole parse_role(const std::string& s) {
  for (HeadRole r : {HeadRole::sink_local, HeadRole::slash, HeadRole::vertical, HeadRole::topic,
                     HeadRole::diffuse}) {
    if (s == to_string(r)) return r;
  }
  fail("head role", s, "one of sink_local, slash, vertical, topic, diffuse");
}

/// Every knob of the generator. Logits are in natural-log units of the softmax input
/// (scale * q.k with scale = 1/sqrt(D)), at temperature 1.
struct SyntheticSettings {
  // Shape.
  int tokens = 32768;
  int num_q_heads = 16;
  int num_kv_heads = 4;
  int head_dim = 128;
  DType dtype = DType::bf16;
  std::uint64_t seed = 1;
  int chunk = 1024;  ///< Prompt chunk: topics change per chunk; mid-chunk questions use it.
  RopeSettings rope{};
  int content_pairs = 0;  ///< Lowest-frequency pairs for position-free features; 0: D/8.
  /// Highest-frequency pairs that carry the local component (even pairs) and slash lines (odd
  /// pairs); 0: every pair below the content pairs.
  int positional_pairs = 0;

  std::vector<HeadRole> roles = {HeadRole::sink_local, HeadRole::slash, HeadRole::vertical,
                                 HeadRole::topic};

  // Background.
  double temperature = 1.15;        ///< Divides every haystack logit (calibrated, accuracy.md).
  double noise_logit = 0.2;         ///< Std of the q.k noise: query noise x key noise.
  double key_noise = 0.35;          ///< Key noise per element (positional pairs).
  double key_noise_content = 0.25;  ///< Key noise per element on the content pairs.

  // Sink (every head).
  int sink_tokens = 4;
  double sink_logit_min = -8.0;  ///< Per-head sink logit at position 0 drawn in [min, max] ...
  double sink_logit_max = -5.0;
  double sink_log_slope = 2.0;  ///< ... plus slope * ln(1 + position).

  // Local (every head).
  double local_logit = 10.0;       ///< Peak of the local component on sink_local heads.
  double local_logit_other = 4.0;  ///< Peak on every other head.

  // Slash.
  std::vector<int> slash_lags = {1, 8, 64, 1024, 4096};
  int slash_max_lines = 2;
  double slash_logit = 10.0;

  // Vertical.
  double anchor_rate_min = 0.001;
  double anchor_rate_max = 0.01;
  double anchor_logit = 6.0;  ///< Logit of the weakest anchor.
  double anchor_tail = 0.8;   ///< Pareto index of exp(logit - anchor_logit) (< 1: heavy).
  double anchor_logit_cap = 16.0;

  // Topics.
  int topic_min_tokens = 512;
  int topic_max_tokens = 16384;
  int topics_per_chunk = 3;
  double topic_logit = 7.0;

  // Needles.
  int needles = 4;
  int needle_min_tokens = 1;
  int needle_max_tokens = 32;
  double margin_min = 1.0;
  double margin_max = 8.0;
  int question_rows = 16;
  bool mid_chunk = false;          ///< Question rows in the middle of a chunk (not the final one).
  double question_depth = 0.75;    ///< Where the mid-chunk question sits, as a prompt fraction.
  double needle_min_depth = 0.05;  ///< Needles lie in [min, max] x the question's position.
  double needle_max_depth = 0.95;
  int distractors = 2;  ///< Per needle.
  double distractor_cos_min = 0.5;
  double distractor_cos_max = 0.8;
  int needle_heads_per_group = 1;
  double payload_scale = 1.0;  ///< Payload norm / the norm of a background value.

  int resolved_content_pairs() const { return content_pairs > 0 ? content_pairs : head_dim / 8; }
  int resolved_positional_pairs() const {
    return positional_pairs > 0 ? positional_pairs : head_dim / 2 - resolved_content_pairs();
  }
  int group() const { return num_q_heads / num_kv_heads; }

  /// Throws compact::Error naming the first field out of range.
  void validate() const {
    using detail::cat;
    require(tokens >= 1, "synthetic.tokens", tokens, ">= 1");
    require(num_kv_heads >= 1 && num_q_heads % num_kv_heads == 0, "synthetic.num_q_heads",
            num_q_heads, cat("a positive multiple of num_kv_heads (", num_kv_heads, ")"));
    require(head_dim >= 32 && head_dim % 16 == 0, "synthetic.head_dim", head_dim,
            "a multiple of 16, >= 32");
    require(chunk >= 1, "synthetic.chunk", chunk, ">= 1");
    rope.validate();
    const int half = head_dim / 2;
    const int cp = resolved_content_pairs();
    require(cp >= 4 && cp < half, "synthetic.content_pairs", cp, cat("in [4, ", half, ")"));
    const int pp = resolved_positional_pairs();
    require(pp >= 2 && pp <= half - cp, "synthetic.positional_pairs", pp,
            cat("in [2, head_dim/2 - content_pairs = ", half - cp, "]"));
    require(!roles.empty(), "synthetic.roles", "(empty)", "at least one head role");
    require(temperature > 0, "synthetic.temperature", temperature, "> 0");
    require(noise_logit >= 0, "synthetic.noise_logit", noise_logit, ">= 0");
    require(key_noise >= 0, "synthetic.key_noise", key_noise, ">= 0");
    require(key_noise_content >= 0, "synthetic.key_noise_content", key_noise_content, ">= 0");
    require(sink_tokens >= 0 && sink_tokens <= tokens, "synthetic.sink_tokens", sink_tokens,
            "in [0, tokens]");
    require(sink_logit_max >= sink_logit_min, "synthetic.sink_logit_max", sink_logit_max,
            cat(">= sink_logit_min (", sink_logit_min, ")"));
    require(!slash_lags.empty(), "synthetic.slash_lags", "(empty)", "at least one lag");
    for (int lag : slash_lags) require(lag >= 1, "synthetic.slash_lags", lag, "lags >= 1");
    require(slash_max_lines >= 1, "synthetic.slash_max_lines", slash_max_lines, ">= 1");
    require(anchor_rate_min > 0 && anchor_rate_max >= anchor_rate_min && anchor_rate_max <= 1,
            "synthetic.anchor_rate_max", anchor_rate_max, "in [anchor_rate_min, 1], min > 0");
    require(anchor_tail > 0, "synthetic.anchor_tail", anchor_tail, "> 0");
    require(anchor_logit_cap >= anchor_logit, "synthetic.anchor_logit_cap", anchor_logit_cap,
            ">= anchor_logit");
    require(topic_min_tokens >= 1 && topic_max_tokens >= topic_min_tokens,
            "synthetic.topic_max_tokens", topic_max_tokens, ">= topic_min_tokens >= 1");
    require(topics_per_chunk >= 1, "synthetic.topics_per_chunk", topics_per_chunk, ">= 1");
    require(needles >= 0 && needles <= 8, "synthetic.needles", needles, "in [0, 8]");
    require(needle_min_tokens >= 1 && needle_max_tokens >= needle_min_tokens,
            "synthetic.needle_max_tokens", needle_max_tokens, ">= needle_min_tokens >= 1");
    require(margin_max >= margin_min && margin_min >= 0, "synthetic.margin_max", margin_max,
            ">= margin_min >= 0");
    require(needles == 0 || (question_rows >= needles), "synthetic.question_rows", question_rows,
            cat(">= needles (", needles, "): every needle needs a question row"));
    require(question_depth > 0 && question_depth < 1, "synthetic.question_depth", question_depth,
            "in (0, 1)");
    require(needle_min_depth >= 0 && needle_max_depth <= 1 && needle_min_depth < needle_max_depth,
            "synthetic.needle_max_depth", needle_max_depth, "0 <= needle_min_depth < max <= 1");
    require(distractors >= 0, "synthetic.distractors", distractors, ">= 0");
    require(needles * (1 + distractors) <= head_dim, "synthetic.distractors", distractors,
            cat("needles * (1 + distractors) <= head_dim (orthogonal payloads)"));
    require(distractor_cos_min >= 0 && distractor_cos_max <= 0.99 &&
                distractor_cos_min <= distractor_cos_max,
            "synthetic.distractor_cos_max", distractor_cos_max, "0 <= min <= max <= 0.99");
    require(needle_heads_per_group >= 0 && needle_heads_per_group <= group(),
            "synthetic.needle_heads_per_group", needle_heads_per_group,
            cat("in [0, Hq / Hkv = ", group(), "]"));
    require(needles + 2 <= 2 * cp - 8, "synthetic.needles", needles,
            "room in the content subspace for >= 8 topic directions (raise content_pairs)");
  }

  /// One `key = value` line per knob (for logs and docs/accuracy.md).
  void print(std::ostream& os, const char* prefix = "") const {
    auto list = [](const auto& v) {
      std::ostringstream s;
      for (std::size_t i = 0; i < v.size(); ++i) s << (i ? "," : "") << v[i];
      return s.str();
    };
    std::vector<std::string> role_names;
    for (HeadRole r : roles) role_names.push_back(to_string(r));
    os << prefix << "tokens = " << tokens << ", Hq = " << num_q_heads << ", Hkv = " << num_kv_heads
       << ", head_dim = " << head_dim << ", dtype = " << to_string(dtype) << ", seed = " << seed
       << ", chunk = " << chunk << "\n";
    rope.print(os, prefix);
    os << prefix << "content_pairs = " << resolved_content_pairs()
       << ", positional_pairs = " << resolved_positional_pairs() << "\n"
       << prefix << "roles = " << list(role_names) << "\n"
       << prefix << "temperature = " << temperature << ", noise_logit = " << noise_logit
       << ", key_noise = " << key_noise << ", key_noise_content = " << key_noise_content << "\n"
       << prefix << "sink: tokens = " << sink_tokens << ", logit in [" << sink_logit_min << ", "
       << sink_logit_max << "] + " << sink_log_slope << " * ln(1 + pos)\n"
       << prefix << "local: logit = " << local_logit << " (sink_local heads), " << local_logit_other
       << " (others)\n"
       << prefix << "slash: lags = " << list(slash_lags) << ", lines <= " << slash_max_lines
       << ", logit = " << slash_logit << "\n"
       << prefix << "vertical: anchor rate in [" << anchor_rate_min << ", " << anchor_rate_max
       << "], logit = " << anchor_logit << " + Exp (Pareto index " << anchor_tail << "), cap "
       << anchor_logit_cap << "\n"
       << prefix << "topics: segments of [" << topic_min_tokens << ", " << topic_max_tokens
       << "] tokens (log-uniform), <= " << topics_per_chunk << " per chunk, logit = " << topic_logit
       << "\n"
       << prefix << "needles: " << needles << " of [" << needle_min_tokens << ", "
       << needle_max_tokens << "] tokens, margin in [" << margin_min << ", " << margin_max
       << "], depth in [" << needle_min_depth << ", " << needle_max_depth << "], " << question_rows
       << " question rows " << (mid_chunk ? "mid-chunk at depth " : "at the end")
       << (mid_chunk ? std::to_string(question_depth) : std::string()) << ", " << distractors
       << " distractors (cos [" << distractor_cos_min << ", " << distractor_cos_max << "]), "
       << needle_heads_per_group << " retrieval head(s) per group, payload scale " << payload_scale
       << "\n";
  }
};

/// A planted needle and the rows that retrieve it.
struct Needle {
  int position = 0;                ///< First token.
  int length = 1;                  ///< Tokens.
  double margin = 0.0;             ///< Requested logit gap over every other key.
  std::vector<int> question_rows;  ///< Absolute positions of the rows that ask for it.
  std::vector<int> heads;          ///< Query heads that retrieve it (empty: all).
  std::vector<int> distractors;    ///< Positions of its distractor tokens.
  /// Achieved gap on the rounded Q/K per (question row, head), row-major; generator only.
  std::vector<double> achieved;
  int end() const { return position + length; }
};

/// The generated layer: K and V for every token (rounded, raw 16-bit storage), Q on demand.
class SyntheticWorkload {
 public:
  explicit SyntheticWorkload(const SyntheticSettings& s) : s_(s), rope_(s.rope, s.head_dim) {
    s_.validate();
    D_ = s_.head_dim;
    half_ = D_ / 2;
    cp_ = s_.resolved_content_pairs();
    scale_ = 1.0 / std::sqrt(static_cast<double>(D_));
    plan_layout();
    build_keys_values();
    build_question_terms();
  }

  const SyntheticSettings& settings() const { return s_; }
  int tokens() const { return s_.tokens; }
  /// K and V: [tokens][Hkv][D] in the settings' dtype (raw bits).
  const std::vector<std::uint16_t>& k() const { return k_; }
  const std::vector<std::uint16_t>& v() const { return v_; }
  const std::vector<Needle>& needles() const { return needles_; }
  /// First question row (absolute position); the rows are [question_begin, + question_rows).
  int question_begin() const { return q_begin_; }
  HeadRole role(int h) const { return head_[h].role; }
  bool retrieval_head(int h) const { return head_[h].retrieval; }
  /// Slash lags of a slash head (empty otherwise).
  const std::vector<int>& lags(int h) const { return head_[h].lags; }
  /// Segment boundaries of the topics: segment i spans [starts[i], starts[i+1]).
  const std::vector<int>& segment_starts() const { return seg_start_; }
  /// Anchor positions of a KV head.
  std::vector<int> anchors(int kvh) const {
    std::vector<int> out;
    for (int j = 0; j < s_.tokens; ++j) {
      if (anchor_logit_[static_cast<std::size_t>(kvh) * s_.tokens + j] > 0) out.push_back(j);
    }
    return out;
  }
  /// One line per query head: role, retrieval, lags.
  std::string describe_heads() const {
    std::ostringstream os;
    for (int h = 0; h < s_.num_q_heads; ++h) {
      os << "head " << h << " (kv " << h / s_.group() << "): " << to_string(head_[h].role);
      if (head_[h].role == HeadRole::slash) {
        os << " lags";
        for (int lag : head_[h].lags) os << " " << lag;
      }
      if (head_[h].retrieval) os << ", retrieval";
      os << ", sink logit " << head_[h].sink_logit << "\n";
    }
    return os.str();
  }

  /// Q rows [begin, end): [end - begin][Hq][D] in the settings' dtype (raw bits).
  void queries(int begin, int end, std::uint16_t* out) const {
    require(begin >= 0 && begin <= end && end <= s_.tokens, "queries range",
            detail::cat("[", begin, ", ", end, ")"), detail::cat("inside [0, ", s_.tokens, "]"));
    const int hq = s_.num_q_heads;
    parallel_for(end - begin, [&](long long r) {
      const int pos = begin + static_cast<int>(r);
      std::vector<float> q(D_), cs(half_), sn(half_);
      rope_.angles(pos, cs.data(), sn.data());
      for (int h = 0; h < hq; ++h) {
        query_row(pos, h, cs.data(), sn.data(), q.data());
        const std::size_t base = (static_cast<std::size_t>(r) * hq + h) * D_;
        for (int d = 0; d < D_; ++d) store_float(out, s_.dtype, base + d, q[d]);
      }
    });
  }
  std::vector<std::uint16_t> queries(int begin, int end) const {
    std::vector<std::uint16_t> q(static_cast<std::size_t>(end - begin) * s_.num_q_heads * D_);
    queries(begin, end, q.data());
    return q;
  }

  /// The exact logit gap a question row achieves for its needle on one head, from the rounded
  /// Q and K (best needle token minus the best other key); used by tests and reports.
  double measured_margin(const Needle& n, int row_pos, int h) const {
    const std::vector<std::uint16_t> q = queries(row_pos, row_pos + 1);
    std::vector<float> qf(D_);
    for (int d = 0; d < D_; ++d)
      qf[d] = load_float(q.data(), s_.dtype, static_cast<std::size_t>(h) * D_ + d);
    const int kvh = h / s_.group();
    double best_needle = -1e300, best_other = -1e300;
    for (int j = 0; j <= row_pos; ++j) {
      double dot = 0;
      const std::size_t base = (static_cast<std::size_t>(j) * s_.num_kv_heads + kvh) * D_;
      for (int d = 0; d < D_; ++d)
        dot += static_cast<double>(qf[d]) * load_float(k_.data(), s_.dtype, base + d);
      const double l = dot * scale_;
      if (j >= n.position && j < n.end()) {
        best_needle = std::max(best_needle, l);
      } else {
        best_other = std::max(best_other, l);
      }
    }
    return best_needle - best_other;
  }

 private:
  struct HeadPlan {
    HeadRole role = HeadRole::sink_local;
    bool retrieval = false;
    double sink_logit = 0;
    std::vector<int> lags;
    std::vector<float> static_q;  ///< Pre-RoPE query part that depends on neither row nor chunk.
  };

  // ---- dimension helpers: pair p occupies dims p and p + D/2 ----
  /// A content-subspace vector from its 2 * content_pairs coordinates; coordinates 2i and
  /// 2i + 1 are the two dims of the i-th slowest pair (D/2 - 1 - i).
  std::vector<float> embed_content(const std::vector<double>& c) const {
    std::vector<float> v(D_, 0.0f);
    for (int i = 0; i < cp_; ++i) {
      const int pair = half_ - 1 - i;
      v[pair] = static_cast<float>(c[2 * i]);
      v[pair + half_] = static_cast<float>(c[2 * i + 1]);
    }
    return v;
  }
  static void normalize(std::vector<double>& x) {
    double n = 0;
    for (double e : x) n += e * e;
    n = std::sqrt(n);
    for (double& e : x) e /= n;
  }
  /// Gram-Schmidt of x against `basis` (all unit), then normalized.
  static void orthogonalize(std::vector<double>& x, const std::vector<std::vector<double>>& basis) {
    for (const auto& b : basis) {
      double dot = 0;
      for (std::size_t i = 0; i < x.size(); ++i) dot += x[i] * b[i];
      for (std::size_t i = 0; i < x.size(); ++i) x[i] -= dot * b[i];
    }
    normalize(x);
  }
  /// A random vector of norm `norm` over the positional pairs p < positional_pairs, equal power
  /// per pair and random phases: q . k of two copies is a sum of cosines of equal weight.
  std::vector<float> positional_vector(Rng& rng, double norm) const {
    std::vector<float> v(D_, 0.0f);
    const int pp = s_.resolved_positional_pairs();
    const double amp = norm / std::sqrt(static_cast<double>(pp));
    for (int p = 0; p < pp; ++p) {
      const double phi = rng.uniform(0.0, 6.283185307179586);
      v[p] = static_cast<float>(amp * std::cos(phi));
      v[p + half_] = static_cast<float>(amp * std::sin(phi));
    }
    return v;
  }

  // Key-side norms of the features; query amplitudes follow from the logits
  // (logit = scale * q_amp * key_norm).
  static constexpr double kSinkKey = 16.0;
  static constexpr double kAnchorKey = 4.0;  // of the weakest anchor
  static constexpr double kTopicKey = 4.0;
  static constexpr double kNeedleKey = 8.0;
  static constexpr double kLocalKey = 10.0;
  double query_amp(double logit, double key_norm) const { return logit / (scale_ * key_norm); }

  void plan_layout() {
    const int N = s_.tokens, hkv = s_.num_kv_heads, hq = s_.num_q_heads, G = s_.group();
    Rng rng(s_.seed, Stream::layout);

    // Topic segments (global).
    for (int at = 0; at < N;) {
      seg_start_.push_back(at);
      at +=
          static_cast<int>(std::lround(rng.log_uniform(s_.topic_min_tokens, s_.topic_max_tokens)));
    }
    seg_start_.push_back(N);
    seg_of_.assign(N, 0);
    for (std::size_t i = 0; i + 1 < seg_start_.size(); ++i) {
      for (int j = seg_start_[i]; j < seg_start_[i + 1]; ++j) seg_of_[j] = static_cast<int>(i);
    }
    const int segments = static_cast<int>(seg_start_.size()) - 1;

    // Question rows and needles.
    int q_begin = N - s_.question_rows;
    if (s_.mid_chunk) {
      const int c = static_cast<int>(s_.question_depth * N) / s_.chunk;
      q_begin = c * s_.chunk + s_.chunk / 2 - s_.question_rows / 2;
    }
    if (s_.needles > 0) {
      require(q_begin > s_.sink_tokens + 64 && q_begin + s_.question_rows <= N, "synthetic.tokens",
              N, "room for the needles before the question rows");
    }
    std::vector<char> taken(N, 0);
    for (int j = 0; j < std::min(N, s_.sink_tokens); ++j) taken[j] = 1;
    for (int i = 0; i < s_.needles; ++i) {
      Needle n;
      n.length = rng.uniform_int(s_.needle_min_tokens, s_.needle_max_tokens);
      n.margin = rng.uniform(s_.margin_min, s_.margin_max);
      const int lo = std::max(s_.sink_tokens, static_cast<int>(s_.needle_min_depth * q_begin));
      const int hi = std::max(lo, static_cast<int>(s_.needle_max_depth * q_begin) - n.length);
      for (int attempt = 0;; ++attempt) {
        require(attempt < 1000, "synthetic.needles", s_.needles, "room to place every needle");
        n.position = rng.uniform_int(lo, hi);
        bool free = true;
        for (int j = n.position - 1; j <= n.end() && free; ++j) free = j < 0 || j >= N || !taken[j];
        if (free) break;
      }
      for (int j = n.position; j < n.end(); ++j) taken[j] = 1;
      for (int r = i; r < s_.question_rows; r += s_.needles) n.question_rows.push_back(q_begin + r);
      needles_.push_back(n);
    }
    for (Needle& n : needles_) {
      for (int d = 0; d < s_.distractors; ++d) {
        for (;;) {
          const int j = rng.uniform_int(s_.sink_tokens, q_begin - 1);
          if (!taken[j]) {
            taken[j] = 1;
            n.distractors.push_back(j);
            break;
          }
        }
      }
    }
    q_begin_ = q_begin;
    distractor_cos_.resize(static_cast<std::size_t>(s_.needles) * s_.distractors);
    for (double& c : distractor_cos_) c = rng.uniform(s_.distractor_cos_min, s_.distractor_cos_max);

    // Per KV head: anchors and feature directions.
    anchor_logit_.assign(static_cast<std::size_t>(hkv) * N, 0.0f);
    const int cdim = 2 * cp_;
    sink_dir_.resize(hkv);
    anchor_dir_.resize(hkv);
    needle_dir_.assign(hkv, {});
    distractor_dir_.assign(hkv, {});
    topic_dir_.assign(hkv, {});
    payload_.assign(hkv, {});
    local_vec_.resize(hkv);
    static_k_.assign(hkv, std::vector<float>(D_, 0.0f));
    for (int g = 0; g < hkv; ++g) {
      Rng ar(s_.seed, Stream::layout, {100, static_cast<std::uint64_t>(g)});
      const double rate = ar.log_uniform(s_.anchor_rate_min, s_.anchor_rate_max);
      for (int j = s_.sink_tokens; j < N; ++j) {
        if (ar.uniform() < rate && !taken[j]) {
          const double l =
              std::min(s_.anchor_logit + ar.exponential(1.0 / s_.anchor_tail), s_.anchor_logit_cap);
          anchor_logit_[static_cast<std::size_t>(g) * N + j] = static_cast<float>(l);
        }
      }
      Rng br(s_.seed, Stream::basis, {static_cast<std::uint64_t>(g)});
      // Content coordinates run from the lowest frequency up (see embed_content): the sink, the
      // anchor direction and the needles take single coordinates of the slowest pairs (they turn
      // by < 0.3 rad over 128K, so those logits hold at any distance); topics get an orthonormal
      // basis of the remaining coordinates, segment t using basis vector t % size (a topic the
      // text returns to), so distinct topics never leak into each other's logits.
      auto unit = [&](int c) {
        std::vector<double> x(cdim, 0.0);
        x[c] = 1.0;
        return x;
      };
      const int reserved = 2 + s_.needles;
      reserved_dim_.assign(D_, 0);
      for (int c = 0; c < reserved; ++c) {
        const std::vector<float> e = embed_content(unit(c));
        for (int d = 0; d < D_; ++d) reserved_dim_[d] |= e[d] != 0.0f;
      }
      sink_dir_[g] = embed_content(unit(0));
      anchor_dir_[g] = embed_content(unit(1));
      for (int i = 0; i < s_.needles; ++i) needle_dir_[g].push_back(embed_content(unit(2 + i)));
      std::vector<std::vector<double>> topics;
      for (int t = 0; t < cdim - reserved; ++t) {
        std::vector<double> x(cdim, 0.0);
        for (int c = reserved; c < cdim; ++c) x[c] = br.normal();
        orthogonalize(x, topics);
        topics.push_back(x);
      }
      for (int t = 0; t < segments; ++t) {
        topic_dir_[g].push_back(embed_content(topics[t % topics.size()]));
      }
      // Distractor i.d: cosine c with needle i, the rest a random topic-space direction.
      for (int i = 0; i < s_.needles; ++i) {
        for (int d = 0; d < s_.distractors; ++d) {
          std::vector<double> x(cdim, 0.0);
          for (int c = reserved; c < cdim; ++c) x[c] = br.normal();
          normalize(x);
          const double c = distractor_cos_[static_cast<std::size_t>(i) * s_.distractors + d];
          for (int e = 0; e < cdim; ++e) x[e] *= std::sqrt(1 - c * c);
          x[2 + i] += c;
          distractor_dir_[g].push_back(embed_content(x));
        }
      }
      // Orthonormal value payloads over all D dims.
      std::vector<std::vector<double>> pay;
      for (int i = 0; i < s_.needles * (1 + s_.distractors); ++i) {
        std::vector<double> x(D_);
        for (double& e : x) e = br.normal();
        orthogonalize(x, pay);
        pay.push_back(x);
        std::vector<float> f(D_);
        const double norm = s_.payload_scale * std::sqrt(static_cast<double>(D_));
        for (int d = 0; d < D_; ++d) f[d] = static_cast<float>(norm * x[d]);
        payload_[g].push_back(f);
      }
      local_vec_[g] = positional_vector(br, 1.0);
      for (int d = 0; d < D_; ++d)
        static_k_[g][d] += static_cast<float>(kLocalKey) * local_vec_[g][d];
    }

    // Query heads: role, sink, slash lines (whose key parts join their KV head's static key).
    head_.resize(hq);
    for (int h = 0; h < hq; ++h) {
      HeadPlan& p = head_[h];
      const int g = h / G, i = h % G;
      p.role = s_.roles[static_cast<std::size_t>(i + g) % s_.roles.size()];
      p.retrieval = i < s_.needle_heads_per_group;
      Rng hr(s_.seed, Stream::layout, {200, static_cast<std::uint64_t>(h)});
      p.sink_logit = hr.uniform(s_.sink_logit_min, s_.sink_logit_max);
      p.static_q.assign(D_, 0.0f);
      const double local = p.role == HeadRole::sink_local ? s_.local_logit
                           : p.role == HeadRole::diffuse  ? 0.5 * s_.local_logit_other
                                                          : s_.local_logit_other;
      const double la = query_amp(local, kLocalKey);
      for (int d = 0; d < D_; ++d) p.static_q[d] += static_cast<float>(la * local_vec_[g][d]);
      if (p.role == HeadRole::slash) {
        const int lines = hr.uniform_int(1, s_.slash_max_lines);
        std::vector<int> pool = s_.slash_lags;
        for (int l = 0; l < lines && !pool.empty(); ++l) {
          const int pick = hr.uniform_int(0, static_cast<int>(pool.size()) - 1);
          p.lags.push_back(pool[pick]);
          pool.erase(pool.begin() + pick);
        }
        std::sort(p.lags.begin(), p.lags.end());
        // A line at lag L reads the shared positional key component c with the query R(-L) c:
        // q_i . k_j = sum_l |c_l|^2 cos(theta_l (i - j - L)) peaks at i - j = L. Keys carry
        // nothing per line, so lines never add interference to the other heads of the group.
        const double qa = query_amp(s_.slash_logit, kLocalKey);
        for (int lag : p.lags) {
          std::vector<double> u(local_vec_[g].begin(), local_vec_[g].end());
          rope_.rotate(u.data(), -static_cast<double>(lag));
          for (int d = 0; d < D_; ++d) p.static_q[d] += static_cast<float>(qa * u[d]);
        }
      }
      if (p.role == HeadRole::vertical) {
        const double qa = query_amp(s_.anchor_logit, kAnchorKey);
        for (int d = 0; d < D_; ++d) p.static_q[d] += static_cast<float>(qa * anchor_dir_[g][d]);
      }
    }
  }

  void build_keys_values() {
    const int N = s_.tokens, hkv = s_.num_kv_heads;
    k_.assign(static_cast<std::size_t>(N) * hkv * D_, 0);
    v_.assign(k_.size(), 0);
    // Per token: which needle / distractor it belongs to (-1: none).
    std::vector<int> needle_at(N, -1), distractor_at(N, -1);
    for (std::size_t i = 0; i < needles_.size(); ++i) {
      for (int j = needles_[i].position; j < needles_[i].end(); ++j)
        needle_at[j] = static_cast<int>(i);
      for (std::size_t d = 0; d < needles_[i].distractors.size(); ++d) {
        distractor_at[needles_[i].distractors[d]] = static_cast<int>(i * s_.distractors + d);
      }
    }
    const int content_lo = half_ - cp_;
    parallel_for((N + 255) / 256, [&](long long tile) {
      std::vector<float> kk(D_), vv(D_), cs(half_), sn(half_);
      const int j0 = static_cast<int>(tile) * 256, j1 = std::min(N, j0 + 256);
      for (int j = j0; j < j1; ++j) {
        rope_.angles(j, cs.data(), sn.data());
        for (int g = 0; g < hkv; ++g) {
          Rng kr(s_.seed, Stream::key_noise,
                 {static_cast<std::uint64_t>(j), static_cast<std::uint64_t>(g)});
          for (int d = 0; d < D_; ++d) {
            const int pair = d % half_;
            const float sigma =
                static_cast<float>(pair >= content_lo ? s_.key_noise_content : s_.key_noise);
            kk[d] = static_k_[g][d] + sigma * kr.fast_noise();
          }
          if (j < s_.sink_tokens) add(kk, sink_dir_[g], kSinkKey);
          const float al = anchor_logit_[static_cast<std::size_t>(g) * N + j];
          if (al > 0) add(kk, anchor_dir_[g], kAnchorKey * al / s_.anchor_logit);
          add(kk, topic_dir_[g][seg_of_[j]], kTopicKey);
          if (needle_at[j] >= 0) add(kk, needle_dir_[g][needle_at[j]], kNeedleKey);
          if (distractor_at[j] >= 0) add(kk, distractor_dir_[g][distractor_at[j]], kNeedleKey);
          rope_.apply(kk.data(), cs.data(), sn.data());
          // Values: unit noise; needles and distractors carry their orthonormal payloads.
          if (needle_at[j] >= 0) {
            vv = payload_[g][needle_at[j]];
          } else if (distractor_at[j] >= 0) {
            vv = payload_[g][s_.needles + distractor_at[j]];
          } else {
            Rng vr(s_.seed, Stream::value_noise,
                   {static_cast<std::uint64_t>(j), static_cast<std::uint64_t>(g)});
            for (int d = 0; d < D_; ++d) vv[d] = vr.fast_noise();
          }
          const std::size_t base = (static_cast<std::size_t>(j) * hkv + g) * D_;
          for (int d = 0; d < D_; ++d) {
            store_float(k_.data(), s_.dtype, base + d, kk[d]);
            store_float(v_.data(), s_.dtype, base + d, vv[d]);
          }
        }
      }
    });
  }

  static void add(std::vector<float>& x, const std::vector<float>& dir, double amp) {
    for (std::size_t d = 0; d < x.size(); ++d) x[d] += static_cast<float>(amp * dir[d]);
  }

  /// Topic mixture of (chunk, head): pre-RoPE query part (cached lazily is not needed: cheap).
  void topic_query(int pos, int h, std::vector<float>& q) const {
    const int c = pos / s_.chunk;
    const int g = h / s_.group();
    Rng tr(s_.seed, Stream::topic_choice,
           {static_cast<std::uint64_t>(c), static_cast<std::uint64_t>(h)});
    const int chunk_start = c * s_.chunk;
    // Segments that started before this chunk (at least the first one).
    const int earlier =
        std::max<int>(1, static_cast<int>(std::upper_bound(seg_start_.begin(), seg_start_.end() - 1,
                                                           std::max(0, chunk_start - 1)) -
                                          seg_start_.begin()));
    const int picks = std::min(earlier, tr.uniform_int(1, s_.topics_per_chunk));
    const double qa = query_amp(s_.topic_logit, kTopicKey);
    int chosen[8];
    int n = 0;
    while (n < picks) {
      const int t = tr.uniform_int(0, earlier - 1);
      if (std::find(chosen, chosen + n, t) != chosen + n) continue;
      chosen[n++] = t;
      const double w = tr.uniform(0.6, 1.0);
      add(q, topic_dir_[g][t], qa * w);
    }
  }

  /// Post-RoPE query row before rounding (angles of `pos` given), including the needle term.
  void query_row(int pos, int h, const float* cs, const float* sn, float* out) const {
    std::vector<float> q = base_query_pre(pos, h);
    rope_.apply(q.data(), cs, sn);
    auto it = needle_term_.find(key(pos, h));
    if (it != needle_term_.end()) {
      for (int d = 0; d < D_; ++d) q[d] += it->second[d];
    }
    std::copy(q.begin(), q.end(), out);
  }

  /// Pre-RoPE query (temperature applied), without the needle term.
  std::vector<float> base_query_pre(int pos, int h) const {
    const HeadPlan& p = head_[h];
    const int g = h / s_.group();
    std::vector<float> q = p.static_q;
    if (p.role == HeadRole::topic) topic_query(pos, h, q);
    const double sink = (p.role == HeadRole::diffuse ? 0.5 : 1.0) *
                        (p.sink_logit + s_.sink_log_slope * std::log1p(static_cast<double>(pos)));
    add(q, sink_dir_[g], query_amp(sink, kSinkKey));
    Rng qr(s_.seed, Stream::query_noise,
           {static_cast<std::uint64_t>(pos), static_cast<std::uint64_t>(h)});
    const float sigma = static_cast<float>(s_.key_noise > 0 ? s_.noise_logit / s_.key_noise : 0.0);
    for (int d = 0; d < D_; ++d) {
      const float e = sigma * qr.fast_noise();
      if (!reserved_dim_[d]) q[d] += e;
    }
    const float inv_t = static_cast<float>(1.0 / s_.temperature);
    for (float& e : q) e *= inv_t;
    return q;
  }

  static std::uint64_t key(int pos, int h) {
    return (static_cast<std::uint64_t>(pos) << 16) | static_cast<std::uint64_t>(h);
  }

  /// Solves, per (question row, retrieval head), the needle term alpha * R(pos) n so that the
  /// needle's best token beats every other key by the needle's margin on the rounded Q and K.
  void build_question_terms() {
    if (needles_.empty()) return;
    const int hkv = s_.num_kv_heads, G = s_.group();
    std::vector<int> heads;
    for (int h = 0; h < s_.num_q_heads; ++h) {
      if (head_[h].retrieval) heads.push_back(h);
    }
    struct Job {
      int needle, row, head;
    };
    std::vector<Job> jobs;
    for (std::size_t i = 0; i < needles_.size(); ++i) {
      needles_[i].heads = heads;
      needles_[i].achieved.assign(needles_[i].question_rows.size() * heads.size(), 0.0);
      for (std::size_t r = 0; r < needles_[i].question_rows.size(); ++r) {
        for (std::size_t hh = 0; hh < heads.size(); ++hh) {
          jobs.push_back({static_cast<int>(i), static_cast<int>(r), static_cast<int>(hh)});
        }
      }
    }
    // The rounded keys as floats, [Hkv][N][D], for the logit loops below.
    const int N = s_.tokens;
    std::vector<float> kf(static_cast<std::size_t>(hkv) * N * D_);
    parallel_for(N, [&](long long j) {
      for (int g = 0; g < hkv; ++g) {
        for (int d = 0; d < D_; ++d) {
          kf[(static_cast<std::size_t>(g) * N + j) * D_ + d] =
              load_float(k_.data(), s_.dtype, (static_cast<std::size_t>(j) * hkv + g) * D_ + d);
        }
      }
    });
    std::vector<std::vector<float>> terms(jobs.size());
    parallel_for(static_cast<long long>(jobs.size()), [&](long long ji) {
      const Job& job = jobs[ji];
      Needle& n = needles_[job.needle];
      const int pos = n.question_rows[job.row];
      const int h = heads[job.head];
      const int g = h / G;
      const float* kg = kf.data() + static_cast<std::size_t>(g) * N * D_;
      std::vector<float> cs(half_), sn(half_);
      rope_.angles(pos, cs.data(), sn.data());
      std::vector<float> base = base_query_pre(pos, h);
      rope_.apply(base.data(), cs.data(), sn.data());
      std::vector<float> dir = needle_dir_[g][job.needle];
      rope_.apply(dir.data(), cs.data(), sn.data());
      // Logits of the base query and of the unit needle term against every visible key.
      const int L = pos + 1;
      std::vector<double> l0(L), gk(L);
      for (int j = 0; j < L; ++j) {
        l0[j] = dot(base.data(), kg + static_cast<std::size_t>(j) * D_, D_) * scale_;
        gk[j] = dot(dir.data(), kg + static_cast<std::size_t>(j) * D_, D_) * scale_;
      }
      auto gap = [&](double alpha) {
        double in = -1e300, out = -1e300;
        for (int j = 0; j < L; ++j) {
          const double l = l0[j] + alpha * gk[j];
          if (j >= n.position && j < n.end()) {
            in = std::max(in, l);
          } else {
            out = std::max(out, l);
          }
        }
        return in - out;
      };
      // Bisection for gap(alpha) = margin on the unrounded query.
      double lo = 0, hi = 1;
      while (gap(hi) < n.margin && hi < 1e6) hi *= 2;
      for (int it = 0; it < 50; ++it) {
        const double mid = 0.5 * (lo + hi);
        (gap(mid) < n.margin ? lo : hi) = mid;
      }
      double alpha = hi;
      // Correct for rounding: evaluate the rounded row and shift alpha by the residual.
      std::vector<float> term(D_), qr(D_);
      double achieved = 0;
      for (int round = 0; round < 4; ++round) {
        for (int d = 0; d < D_; ++d) {
          term[d] = static_cast<float>(alpha * dir[d]);
          std::uint16_t bits;
          store_float(&bits, s_.dtype, 0, base[d] + term[d]);
          qr[d] = load_float(&bits, s_.dtype, 0);
        }
        double in = -1e300, out = -1e300, slope_in = 0, slope_out = 0;
        for (int j = 0; j < L; ++j) {
          const double l =
              static_cast<double>(dot(qr.data(), kg + static_cast<std::size_t>(j) * D_, D_)) *
              scale_;
          if (j >= n.position && j < n.end()) {
            if (l > in) in = l, slope_in = gk[j];
          } else if (l > out) {
            out = l, slope_out = gk[j];
          }
        }
        achieved = in - out;
        const double slope = slope_in - slope_out;
        if (std::abs(achieved - n.margin) < 0.01 || slope <= 0) break;
        alpha += (n.margin - achieved) / slope;
      }
      n.achieved[static_cast<std::size_t>(job.row) * heads.size() + job.head] = achieved;
      terms[ji] = term;
    });
    for (std::size_t ji = 0; ji < jobs.size(); ++ji) {
      const Job& job = jobs[ji];
      needle_term_[key(needles_[job.needle].question_rows[job.row], heads[job.head])] = terms[ji];
    }
  }

  SyntheticSettings s_;
  Rope rope_;
  int D_ = 0, half_ = 0, cp_ = 0;
  double scale_ = 0;
  int q_begin_ = 0;
  std::vector<int> seg_start_, seg_of_;
  std::vector<Needle> needles_;
  std::vector<double> distractor_cos_;
  std::vector<float> anchor_logit_;  // [Hkv][N], 0 where no anchor
  std::vector<std::vector<float>> sink_dir_, anchor_dir_, local_vec_, static_k_;
  std::vector<std::vector<std::vector<float>>> needle_dir_, distractor_dir_, topic_dir_, payload_;
  std::vector<HeadPlan> head_;
  std::vector<char> reserved_dim_;  // dims of the sink, anchor and needle coordinates
  std::map<std::uint64_t, std::vector<float>> needle_term_;
  std::vector<std::uint16_t> k_, v_;
};

}  // namespace compact::tools
