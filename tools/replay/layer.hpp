/// @file layer.hpp
/// @brief The attention layer a replay runs on: captured Q/K/V (.npy) or a synthetic workload,
/// plus the needle list; dumping a layer to .npy and reading / writing needle files.
#pragma once

#include <cstdint>
#include <fstream>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "../common/npy.hpp"
#include "../workload/synthetic.hpp"
#include "compact/core/dtype.hpp"
#include "compact/core/error.hpp"

namespace compact::tools {

/// One layer's Q, K and V for a whole prompt (a single sequence).
struct Layer {
  int tokens = 0, num_q_heads = 0, num_kv_heads = 0, head_dim = 0;
  DType dtype = DType::bf16;
  std::vector<std::uint16_t> k, v;  ///< [tokens][Hkv][D], raw 16-bit elements.
  /// Writes rows [begin, end) of Q, [end - begin][Hq][D], into `out`.
  std::function<void(int, int, std::uint16_t*)> queries;
  std::vector<Needle> needles;
  std::vector<std::string> head_labels;  ///< Per query head (the synthetic role, or "all").
  std::string source;                    ///< For the report.
  std::shared_ptr<const SyntheticWorkload> synthetic;  ///< Keeps a generator alive.
};

/// Reads a needle file: one needle per line, `#` starts a comment:
///   <first token> <tokens> <question rows, comma-separated> [<query heads, comma-separated>]
/// e.g. `51234 1 131070,131071 0,4,8,12`; no heads means every query head retrieves it.
inline std::vector<Needle> read_needles(const std::string& path) {
  std::ifstream f(path);
  require(static_cast<bool>(f), "--needles", path, "a readable needle file");
  std::vector<Needle> out;
  std::string line;
  int number = 0;
  auto ints = [&](const std::string& field) {
    std::vector<int> v;
    std::stringstream ss(field);
    std::string item;
    while (std::getline(ss, item, ',')) {
      char* end = nullptr;
      const long x = std::strtol(item.c_str(), &end, 10);
      require(!item.empty() && *end == '\0' && x >= 0, detail::cat(path, ":", number), item,
              "non-negative integers separated by commas");
      v.push_back(static_cast<int>(x));
    }
    return v;
  };
  while (std::getline(f, line)) {
    ++number;
    if (const std::size_t hash = line.find('#'); hash != std::string::npos) line.resize(hash);
    std::stringstream ss(line);
    std::string pos, len, rows, heads;
    if (!(ss >> pos)) continue;
    require(static_cast<bool>(ss >> len >> rows), detail::cat(path, ":", number), line,
            "<first token> <tokens> <question rows> [<heads>]");
    ss >> heads;
    Needle n;
    n.position = ints(pos).at(0);
    n.length = ints(len).at(0);
    require(n.length >= 1, detail::cat(path, ":", number, " tokens"), n.length, ">= 1");
    n.question_rows = ints(rows);
    if (!heads.empty()) n.heads = ints(heads);
    out.push_back(n);
  }
  return out;
}

inline void write_needles(const std::string& path, const std::vector<Needle>& needles) {
  std::ofstream f(path);
  require(static_cast<bool>(f), "needle file", path, "a writable path");
  f << "# <first token> <tokens> <question rows> [<query heads>]  (margin: requested logit gap)\n";
  for (const Needle& n : needles) {
    f << n.position << " " << n.length << " ";
    for (std::size_t i = 0; i < n.question_rows.size(); ++i)
      f << (i ? "," : "") << n.question_rows[i];
    if (!n.heads.empty()) {
      f << " ";
      for (std::size_t i = 0; i < n.heads.size(); ++i) f << (i ? "," : "") << n.heads[i];
    }
    f << "  # margin " << n.margin << "\n";
  }
}

/// Checks a layer's needles against its shape (compact::Error names the needle).
inline void validate_needles(const Layer& l) {
  for (std::size_t i = 0; i < l.needles.size(); ++i) {
    const Needle& n = l.needles[i];
    const std::string who = detail::cat("needle ", i);
    require(n.position >= 0 && n.end() <= l.tokens, who + " tokens",
            detail::cat("[", n.position, ", ", n.end(), ")"),
            detail::cat("inside [0, ", l.tokens, ")"));
    for (int r : n.question_rows) {
      require(r >= n.end() && r < l.tokens, who + " question row", r,
              detail::cat("after the needle and before ", l.tokens));
    }
    for (int h : n.heads) {
      require(h >= 0 && h < l.num_q_heads, who + " head", h,
              detail::cat("in [0, ", l.num_q_heads, ")"));
    }
  }
}

/// A synthetic layer (the generator stays alive inside the layer).
inline Layer synthetic_layer(const SyntheticSettings& s) {
  auto w = std::make_shared<const SyntheticWorkload>(s);
  Layer l;
  l.tokens = s.tokens;
  l.num_q_heads = s.num_q_heads;
  l.num_kv_heads = s.num_kv_heads;
  l.head_dim = s.head_dim;
  l.dtype = s.dtype;
  l.k = w->k();
  l.v = w->v();
  l.needles = w->needles();
  for (int h = 0; h < s.num_q_heads; ++h) l.head_labels.push_back(to_string(w->role(h)));
  l.queries = [w](int b, int e, std::uint16_t* out) { w->queries(b, e, out); };
  l.source = "synthetic";
  l.synthetic = w;
  return l;
}

/// A captured layer from q.npy [T][Hq][D], k.npy and v.npy [T][Hkv][D]. 16-bit files keep their
/// type; fp32 / fp64 files are rounded to `fallback` (Q, K and V must end in one dtype).
inline Layer npy_layer(const std::string& q_path, const std::string& k_path,
                       const std::string& v_path, DType fallback) {
  NpyArray q = read_npy(q_path), k = read_npy(k_path), v = read_npy(v_path);
  require_qkv_shape(q, "--q " + q_path, 0, 0);
  require_qkv_shape(k, "--k " + k_path, 0, static_cast<int>(q.shape[2]));
  require_qkv_shape(v, "--v " + v_path, static_cast<int>(k.shape[1]), static_cast<int>(q.shape[2]));
  require(k.shape[0] == q.shape[0] && v.shape[0] == q.shape[0], "--k / --v tokens",
          detail::cat(k.shape[0], " / ", v.shape[0]),
          detail::cat("the tokens of --q (", q.shape[0], ")"));
  require(q.shape[1] % k.shape[1] == 0, "--q heads", q.shape[1],
          detail::cat("a multiple of the KV heads of --k (", k.shape[1], ")"));
  Layer l;
  l.tokens = static_cast<int>(q.shape[0]);
  l.num_q_heads = static_cast<int>(q.shape[1]);
  l.num_kv_heads = static_cast<int>(k.shape[1]);
  l.head_dim = static_cast<int>(q.shape[2]);
  l.dtype = q.type == NpyType::bf16 ? DType::bf16 : q.type == NpyType::f16 ? DType::fp16 : fallback;
  l.k = k.to_half_bits(l.dtype);
  l.v = v.to_half_bits(l.dtype);
  auto qbits = std::make_shared<std::vector<std::uint16_t>>(q.to_half_bits(l.dtype));
  const std::size_t row = static_cast<std::size_t>(l.num_q_heads) * l.head_dim;
  l.queries = [qbits, row](int b, int e, std::uint16_t* out) {
    std::copy(qbits->begin() + b * row, qbits->begin() + e * row, out);
  };
  l.head_labels.assign(l.num_q_heads, "all");
  l.source = detail::cat("npy (", q_path, ")");
  return l;
}

/// Writes q.npy, k.npy, v.npy (the layer's dtype; bf16 as '<V2', see npy.hpp) and needles.txt
/// into `dir` (which must exist). Q is streamed chunk by chunk.
inline void dump_layer(const Layer& l, const std::string& dir) {
  const NpyType t = npy_type_of(l.dtype);
  const std::int64_t T = l.tokens, hq = l.num_q_heads, hkv = l.num_kv_heads, D = l.head_dim;
  write_npy(dir + "/k.npy", t, {T, hkv, D}, l.k.data());
  write_npy(dir + "/v.npy", t, {T, hkv, D}, l.v.data());
  NpyWriter q(dir + "/q.npy", t, {T, hq, D});
  std::vector<std::uint16_t> buf;
  for (int b = 0; b < l.tokens; b += 4096) {
    const int e = std::min(l.tokens, b + 4096);
    buf.resize(static_cast<std::size_t>(e - b) * hq * D);
    l.queries(b, e, buf.data());
    q.append(buf.data(), static_cast<std::int64_t>(buf.size()));
  }
  q.close();
  write_needles(dir + "/needles.txt", l.needles);
}

}  // namespace compact::tools
