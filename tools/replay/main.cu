// compact_replay: replays the chunked prefill of one attention layer (captured Q/K/V .npy files,
// or a synthetic workload) through a mask source and a union strategy, and reports block density
// at every stage, attention-mass recall, relative output error and needle hits against dense
// attention. --study runs the accuracy table of docs/accuracy.md. See --help.
#include <compact/compact.cuh>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iomanip>
#include <iostream>
#include <memory>
#include <numeric>
#include <set>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include "compact/cache/append_kv.cuh"
#include "compact/executor/paged_flash_executor.cuh"
#include "compact/mask/flash_prefill_mask.cuh"
#include "compact/mask/quest_mask.cuh"
#include "compact/mask/xattention_mask.cuh"

#include "../common/args.hpp"
#include "evaluate.hpp"
#include "layer.hpp"

using namespace compact;
using namespace compact::tools;

namespace {

constexpr const char* kUsage = R"(usage:
  compact_replay (--synthetic [generator flags] | --q Q.npy --k K.npy --v V.npy [--needles FILE])
    [--mask dense|sink_local|flash_prefill|quest|xattention] [--union block|qblock|group|none]
    [--chunk 1024] [--block-q 128] [--block-k 128] [--page-size 16] [--exec-group 0]
    [--selection group_mass|row_threshold] [--group-mass 0.9] [--sharpness 3] [--alpha 0.18]
    [--sink 2] [--window 4] [--last-full 2] [--min-budget 0] [--exclude-forced]
    [--keep-row-best] [--row-best-by-bound] [--row-guarded] [--bound-guarded]
    [--xa-stride 8] [--xa-threshold 0.9] [--xa-sink 1] [--xa-levels 255] [--xa-quant token]
    [--path auto|device|host] [--sample-chunks N] [--sample-rows N] [--sample-seed S]
    [--oracle-mass 0.95] [--quiet] [--dump DIR [--dump-only]]
    [--study [--study-lengths 32K,64K,128K] [--study-variants end,mid]]

Input
  --synthetic        generate the layer (tools/workload/synthetic.hpp); the flags below override
                     the calibrated defaults
  --q/--k/--v FILE   captured layer: [tokens, heads, head_dim] .npy; fp32, fp16, or bf16 stored
                     as '<V2' (ml_dtypes) or '<u2' / '<i2' bit patterns
  --needles FILE     one needle per line: <first token> <tokens> <question rows,...> [<heads,...>]
  --dtype bf16|fp16  element type of a synthetic layer (and of fp32 .npy input); default bf16
  --dump DIR         write q.npy, k.npy, v.npy, needles.txt of the layer into DIR (--dump-only:
                     then stop)
Generator (--synthetic)
  --tokens 32K --hq 16 --hkv 4 --head-dim 128 --seed 1
  --preset default|control|single_needle|mid_chunk
  --temperature T --noise-logit --key-noise --key-noise-content
  --roles sink_local,slash,vertical,topic[,diffuse]
  --sink-tokens --sink-logit-min --sink-logit-max --sink-slope
  --local-logit --local-logit-other --slash-lags 1,8,64,1024,4096 --slash-lines --slash-logit
  --anchor-rate-min --anchor-rate-max --anchor-logit --anchor-tail --anchor-cap
  --topic-min --topic-max --topics-per-chunk --topic-logit
  --needles-count --needle-min --needle-max --margin-min --margin-max --question-rows
  --mid-chunk --question-depth --distractors --distractor-cos-min --distractor-cos-max
  --needle-heads --payload-scale --content-pairs --positional-pairs
Mask sources
  dense              every causal block
  sink_local         --sink / --window blocks (static A-shape)
  flash_prefill      mean-key block scores; --selection group_mass (default: the fewest blocks
                     carrying --group-mass of each GQA group's normalized scores) or
                     row_threshold (FlashPrefill's rule: score >= --alpha x the row's best);
                     --sharpness multiplies the logits; --sink, --window, --last-full,
                     --min-budget; --paper: FlashPrefill's own defaults (row_threshold, alpha
                     0.18, sharpness 1); --exclude-forced leaves the forced blocks out of
                     each row's scores; --keep-row-best (group_mass) keeps every query row's
                     best non-forced block (--row-best-by-bound: ranked by the min/max bound,
                     which a mean dilutes no spike of); --row-guarded: group_mass 0.97 with
                     both (use it with quest); --bound-guarded: the defaults with every row's
                     two best blocks by the bound (flash_prefill's retrieval guard)
  quest              the same selection over per-block min/max key bounds
  xattention         antidiagonal scores; --xa-stride, --xa-threshold, --xa-sink,
                     --xa-levels (quantization levels; 127: int8 operands on Hopper),
                     --xa-quant token|group (one scale per token or per antidiagonal
                     group; group needs --xa-levels 127 and, on the GPU, Hopper)
Evaluation
  --path auto        device policies when a GPU is present (every row: recall =
                     exp(lse_sparse - lse_dense), error from both outputs); else the host path:
                     host plan, exact fp32 logits of sampled rows
  --sample-chunks N  chunks planned (host path) and checked exactly on the host (0: all;
                     default: all up to 8K tokens, else 8)
  --sample-rows N    rows per checked chunk, stratified, plus every question row (0: all;
                     default: all up to 8K tokens, else 32); on the device path they give the
                     oracle density and the host/device cross-check
  --oracle-mass 0.95 mass the oracle block set must hold
)";

struct Options {
  bool synthetic = false;
  std::string q_path, k_path, v_path, needles_path, dump_dir;
  bool dump_only = false;
  SyntheticSettings syn;
  DType dtype = DType::bf16;
  int block_q = 128, block_k = 128, page_size = 16, chunk = 1024, exec_group = 0;
  std::string mask = "flash_prefill", union_name = "block", path = "auto";
  FlashPrefillParams fp;
  XAttentionParams xa;
  int sample_chunks = -1, sample_rows = -1;
  std::uint64_t sample_seed = 1;
  double oracle_mass = 0.95;
  bool quiet = false;
  bool study = false;
  std::vector<long long> study_lengths = {32768, 65536, 131072};
  std::vector<std::string> study_variants = {"end"};
};

DType parse_dtype(const std::string& s) {
  if (s == "bf16") return DType::bf16;
  if (s == "fp16") return DType::fp16;
  fail("--dtype", s, "bf16 or fp16");
}

Options parse(Args& a) {
  Options o;
  o.synthetic = a.flag("synthetic");
  o.q_path = a.str("q", "");
  o.k_path = a.str("k", "");
  o.v_path = a.str("v", "");
  o.needles_path = a.str("needles", "");
  o.dump_dir = a.str("dump", "");
  o.dump_only = a.flag("dump-only");
  o.dtype = parse_dtype(a.str("dtype", "bf16"));
  o.block_q = static_cast<int>(a.integer("block-q", o.block_q));
  o.block_k = static_cast<int>(a.integer("block-k", o.block_k));
  o.page_size = static_cast<int>(a.integer("page-size", o.page_size));
  o.chunk = static_cast<int>(a.integer("chunk", o.chunk));
  o.exec_group = static_cast<int>(a.integer("exec-group", o.exec_group));
  o.mask = a.str("mask", o.mask);
  o.union_name = a.str("union", o.union_name);
  o.path = a.str("path", o.path);
  if (a.flag("paper")) o.fp = FlashPrefillParams::paper();
  if (a.flag("row-guarded")) o.fp = FlashPrefillParams::row_guarded();
  if (a.flag("bound-guarded")) o.fp = FlashPrefillParams::bound_guarded();
  {
    const std::string sel =
        a.str("selection",
              o.fp.selection == FlashPrefillSelection::group_mass ? "group_mass" : "row_threshold");
    if (sel == "group_mass") {
      o.fp.selection = FlashPrefillSelection::group_mass;
    } else if (sel == "row_threshold") {
      o.fp.selection = FlashPrefillSelection::row_threshold;
    } else {
      fail("--selection", sel, "group_mass or row_threshold");
    }
  }
  o.fp.group_mass = static_cast<float>(a.real("group-mass", o.fp.group_mass));
  o.fp.sharpness = static_cast<float>(a.real("sharpness", o.fp.sharpness));
  o.fp.alpha = static_cast<float>(a.real("alpha", o.fp.alpha));
  o.fp.sink_blocks = static_cast<int>(a.integer("sink", o.fp.sink_blocks));
  o.fp.window_blocks = static_cast<int>(a.integer("window", o.fp.window_blocks));
  o.fp.last_full_blocks = static_cast<int>(a.integer("last-full", o.fp.last_full_blocks));
  o.fp.min_budget = static_cast<int>(a.integer("min-budget", o.fp.min_budget));
  if (a.has("exclude-forced")) o.fp.exclude_forced = a.flag("exclude-forced");
  if (a.has("keep-row-best")) o.fp.keep_row_best = a.flag("keep-row-best");
  if (a.has("row-best-by-bound")) o.fp.row_best_by_bound = a.flag("row-best-by-bound");
  o.xa.stride = static_cast<int>(a.integer("xa-stride", o.xa.stride));
  o.xa.threshold = static_cast<float>(a.real("xa-threshold", o.xa.threshold));
  o.xa.sink_blocks = static_cast<int>(a.integer("xa-sink", o.xa.sink_blocks));
  o.xa.levels = static_cast<int>(a.integer("xa-levels", o.xa.levels));
  if (a.has("xa-quant")) {
    const std::string q = a.str("xa-quant", "token");
    if (q == "group") {
      o.xa.quant = XAttentionQuant::group;
    } else if (q != "token") {
      fail("--xa-quant", q, "token or group");
    }
  }
  o.sample_chunks = static_cast<int>(a.integer("sample-chunks", o.sample_chunks));
  o.sample_rows = static_cast<int>(a.integer("sample-rows", o.sample_rows));
  o.sample_seed = static_cast<std::uint64_t>(a.integer("sample-seed", 1));
  o.oracle_mass = a.real("oracle-mass", o.oracle_mass);
  o.quiet = a.flag("quiet");
  o.study = a.flag("study");
  o.study_lengths = a.int_list("study-lengths", o.study_lengths);
  o.study_variants = a.str_list("study-variants", o.study_variants);
  const std::set<std::string> masks = {"dense", "sink_local", "flash_prefill", "quest",
                                       "xattention"};
  require(masks.count(o.mask) != 0, "--mask", o.mask,
          "dense, sink_local, flash_prefill, quest or xattention");
  const std::set<std::string> unions = {"block", "qblock", "group", "none"};
  require(unions.count(o.union_name) != 0, "--union", o.union_name, "block, qblock, group or none");
  require(o.path == "auto" || o.path == "device" || o.path == "host", "--path", o.path,
          "auto, device or host");

  SyntheticSettings& s = o.syn;
  const std::string preset = a.str("preset", "default");
  if (preset == "control") {
    s.temperature = 2.5;  // flat rows: the low-sparsity control
  } else if (preset == "single_needle") {
    s.needle_min_tokens = s.needle_max_tokens = 1;
  } else if (preset == "mid_chunk") {
    s.mid_chunk = true;
  } else {
    require(preset == "default", "--preset", preset,
            "default, control, single_needle or mid_chunk");
  }
  s.dtype = o.dtype;
  s.chunk = o.chunk;
  auto i = [&](const char* n, int& x) { x = static_cast<int>(a.integer(n, x)); };
  auto r = [&](const char* n, double& x) { x = a.real(n, x); };
  i("tokens", s.tokens);
  i("hq", s.num_q_heads);
  i("hkv", s.num_kv_heads);
  i("head-dim", s.head_dim);
  s.seed = static_cast<std::uint64_t>(a.integer("seed", static_cast<long long>(s.seed)));
  r("temperature", s.temperature);
  r("noise-logit", s.noise_logit);
  r("key-noise", s.key_noise);
  r("key-noise-content", s.key_noise_content);
  if (a.has("roles")) {
    s.roles.clear();
    for (const std::string& n : a.str_list("roles", {})) s.roles.push_back(parse_role(n));
  }
  i("sink-tokens", s.sink_tokens);
  r("sink-logit-min", s.sink_logit_min);
  r("sink-logit-max", s.sink_logit_max);
  r("sink-slope", s.sink_log_slope);
  r("local-logit", s.local_logit);
  r("local-logit-other", s.local_logit_other);
  if (a.has("slash-lags")) {
    s.slash_lags.clear();
    for (long long l : a.int_list("slash-lags", {})) s.slash_lags.push_back(static_cast<int>(l));
  }
  i("slash-lines", s.slash_max_lines);
  r("slash-logit", s.slash_logit);
  r("anchor-rate-min", s.anchor_rate_min);
  r("anchor-rate-max", s.anchor_rate_max);
  r("anchor-logit", s.anchor_logit);
  r("anchor-tail", s.anchor_tail);
  r("anchor-cap", s.anchor_logit_cap);
  i("topic-min", s.topic_min_tokens);
  i("topic-max", s.topic_max_tokens);
  i("topics-per-chunk", s.topics_per_chunk);
  r("topic-logit", s.topic_logit);
  i("needles-count", s.needles);
  i("needle-min", s.needle_min_tokens);
  i("needle-max", s.needle_max_tokens);
  r("margin-min", s.margin_min);
  r("margin-max", s.margin_max);
  i("question-rows", s.question_rows);
  if (a.has("mid-chunk")) s.mid_chunk = a.flag("mid-chunk");
  r("question-depth", s.question_depth);
  i("distractors", s.distractors);
  r("distractor-cos-min", s.distractor_cos_min);
  r("distractor-cos-max", s.distractor_cos_max);
  i("needle-heads", s.needle_heads_per_group);
  r("payload-scale", s.payload_scale);
  i("content-pairs", s.content_pairs);
  i("positional-pairs", s.positional_pairs);
  return o;
}

// ------------------------------------------------------------------------------------------------
// Formatting.

std::string fmt(double x, int prec = 4) {
  if (std::isnan(x)) return "-";
  std::ostringstream s;
  s << std::fixed << std::setprecision(prec) << x;
  return s.str();
}
std::string pct(double x, int prec = 1) {
  if (std::isnan(x)) return "-";
  return fmt(100.0 * x, prec) + "%";
}

void print_chunk_header(bool device) {
  std::printf("%6s %7s %5s %8s %8s %8s %8s %8s %8s %7s %8s %8s %8s%s\n", "chunk", "pos", "rows",
              "d/head", "d/qblk", "d/group", "d/table", "R mean", "R p1", "R<0.9", "err", "err p99",
              "oracle", device ? "   devR mean  devR p1  dev err" : "");
}

void print_chunk(const ChunkView& cv, Stats& s, bool device) {
  std::printf("%6d %7d %5lld %8s %8s %8s %8s %8s %8s %7s %8s %8s %8s", cv.index, cv.pos0, s.rows,
              pct(s.all.head_density()).c_str(), pct(s.qblock_density()).c_str(),
              pct(s.group_density()).c_str(), pct(s.table_density()).c_str(),
              fmt(s.all.recall.mean()).c_str(), fmt(s.all.recall.quantile(0.01)).c_str(),
              pct(s.all.recall.share_below(0.9)).c_str(), fmt(s.all.error.mean()).c_str(),
              fmt(s.all.error.quantile(0.99)).c_str(), pct(s.all.oracle_density()).c_str());
  if (device) {
    std::printf("   %9s %8s %8s", fmt(s.dev_recall.mean()).c_str(),
                fmt(s.dev_recall.quantile(0.01)).c_str(), fmt(s.dev_error.mean()).c_str());
  }
  if (s.needle_checks > 0) std::printf("  needles %d/%d", s.needle_hits, s.needle_checks);
  std::printf("\n");
}

/// What one replay found, for the study table.
struct Summary {
  std::string label;
  int tokens = 0;
  std::string path;
  Stats stats;
  double plan_ms = 0;  ///< Mean estimator + union time per planned chunk.
};

void print_summary(Summary& r, const Options& o) {
  Stats& s = r.stats;
  const bool device = !s.dev_recall.empty();
  std::printf(
      "\noverall (%s, %d tokens, %d chunks planned, %lld rows x %lld heads evaluated exactly):\n",
      r.path.c_str(), r.tokens, s.planned_chunks, s.rows,
      static_cast<long long>(s.all.recall.size()) / std::max<long long>(1, s.rows));
  std::printf(
      "  block density: per head %s, after Q-block union %s, after group union %s, executed tables "
      "%s\n",
      pct(s.all.head_density(), 2).c_str(), pct(s.qblock_density(), 2).c_str(),
      pct(s.group_density(), 2).c_str(), pct(s.table_density(), 2).c_str());
  std::printf(
      "  oracle density (best block set with %.0f%% of each row's mass, causal-area weighted): %s;"
      " unions of the evaluated rows' oracle sets: Q-block %s, group %s\n",
      100 * o.oracle_mass, pct(s.all.oracle_density(), 2).c_str(),
      pct(s.oracle_qblock_density(), 2).c_str(), pct(s.oracle_group_density(), 2).c_str());
  if (device) {
    std::printf("  mass recall (device, every row): mean %s, p1 %s, min %s, rows < 0.9: %s\n",
                fmt(s.dev_recall.mean()).c_str(), fmt(s.dev_recall.quantile(0.01)).c_str(),
                fmt(s.dev_recall.min()).c_str(), pct(s.dev_recall.share_below(0.9), 3).c_str());
    std::printf("  output error (device, every row): mean %s, p99 %s, max %s\n",
                fmt(s.dev_error.mean()).c_str(), fmt(s.dev_error.quantile(0.99)).c_str(),
                fmt(s.dev_error.max()).c_str());
  }
  std::printf(
      "  mass recall (%s rows): mean %s, p1 %s, p5 %s, min %s, rows < 0.9: %s; head mask alone: "
      "mean %s, p1 %s\n",
      device ? "host, sampled" : "exact", fmt(s.all.recall.mean()).c_str(),
      fmt(s.all.recall.quantile(0.01)).c_str(), fmt(s.all.recall.quantile(0.05)).c_str(),
      fmt(s.all.recall.min()).c_str(), pct(s.all.recall.share_below(0.9), 3).c_str(),
      fmt(s.all.recall_head.mean()).c_str(), fmt(s.all.recall_head.quantile(0.01)).c_str());
  std::printf(
      "  output error (%s rows): mean %s, p99 %s; block recall vs oracle of equal size: mean %s\n",
      device ? "host, sampled" : "exact", fmt(s.all.error.mean()).c_str(),
      fmt(s.all.error.quantile(0.99)).c_str(), fmt(s.all.block_recall.mean()).c_str());
  if (device)
    std::printf("  host/device recall agreement on sampled rows: max |diff| %.2e\n",
                s.dev_host_gap);
  const auto [hit, total] = s.needles_hit();
  if (total > 0) {
    std::printf(
        "  needles: %d/%d hit on every check (%d/%d checks: block selected %d, argmax kept %d)\n",
        hit, total, s.needle_hits, s.needle_checks, s.needle_block_hits, s.needle_argmax_hits);
    for (std::size_t i = 0; i < s.needle_misses.size() && i < 8; ++i) {
      std::printf("    miss: %s\n", s.needle_misses[i].c_str());
    }
    if (s.needle_misses.size() > 8)
      std::printf("    ... %zu more misses\n", s.needle_misses.size() - 8);
  }
  std::printf("  estimator + union time: %.2f ms per planned chunk (%s)\n", r.plan_ms,
              r.path.c_str());
  std::printf("  per head role:  %-12s %9s %9s %9s %9s %9s %9s %9s\n", "role", "oracle", "sink",
              "d/head", "R mean", "R p1", "R<0.9", "err");
  for (auto& [role, rs] : s.roles) {
    std::printf("                  %-12s %9s %9s %9s %9s %9s %9s %9s\n", role.c_str(),
                pct(rs.oracle_density()).c_str(), pct(rs.sink_share.mean()).c_str(),
                pct(rs.head_density()).c_str(), fmt(rs.recall.mean()).c_str(),
                fmt(rs.recall.quantile(0.01)).c_str(), pct(rs.recall.share_below(0.9)).c_str(),
                fmt(rs.error.mean()).c_str());
  }
}

// ------------------------------------------------------------------------------------------------
// The paged cache of the single replayed sequence (host or device storage of the same layout).

struct CacheLayout {
  int num_pages = 0, table_stride = 0, max_blocks = 0;
  std::vector<std::int32_t> page_table;  // shuffled pages, deterministic
  std::size_t pool_elems = 0, summary_elems = 0;

  static CacheLayout make(const AttentionConfig& c, int tokens, std::uint64_t seed) {
    CacheLayout l;
    l.table_stride = ceil_div(tokens, c.page_size);
    l.num_pages = l.table_stride + 2;
    l.page_table.resize(l.table_stride);
    std::vector<std::int32_t> pool(l.num_pages);
    std::iota(pool.begin(), pool.end(), 0);
    Rng rng(seed, Stream::sampling, {0x9a6e});
    for (int i = l.num_pages - 1; i > 0; --i) std::swap(pool[i], pool[rng.uniform_int(0, i)]);
    std::copy_n(pool.begin(), l.table_stride, l.page_table.begin());
    l.pool_elems =
        static_cast<std::size_t>(l.num_pages) * c.page_size * c.num_kv_heads * c.head_dim;
    l.max_blocks = ceil_div(tokens, c.block_k);
    l.summary_elems = static_cast<std::size_t>(l.max_blocks) * c.num_kv_heads * c.head_dim;
    return l;
  }
};

/// Whether `mask` reads the min/max key summaries (masks without summary_needs() read none).
template <class Mask>
bool reads_min_max(const Mask& mask) {
  if constexpr (requires { mask.summary_needs(); }) {
    return mask.summary_needs().min_max_k;
  } else {
    return false;
  }
}

/// Host storage of the cache (and the summaries a mask source reads).
struct HostCache {
  std::vector<std::uint16_t> k, v;
  std::vector<float> mean_k, min_k, max_k;
  PagedKV view;

  HostCache(const AttentionConfig& c, const CacheLayout& l, bool min_max)
      : k(l.pool_elems), v(l.pool_elems), mean_k(l.summary_elems) {
    if (min_max) min_k.resize(l.summary_elems), max_k.resize(l.summary_elems);
    view.k_pages = k.data();
    view.v_pages = v.data();
    view.num_pages = l.num_pages;
    view.page_size = c.page_size;
    view.num_kv_heads = c.num_kv_heads;
    view.head_dim = c.head_dim;
    view.page_table = l.page_table.data();
    view.page_table_stride = l.table_stride;
    view.summaries.mean_k = mean_k.data();
    view.summaries.min_k = min_max ? min_k.data() : nullptr;
    view.summaries.max_k = min_max ? max_k.data() : nullptr;
    view.summaries.num_slots = 1;
    view.summaries.max_blocks = l.max_blocks;
    view.summaries.block_size = c.block_k;
  }
};

/// A 256-byte aligned host workspace.
struct HostWorkspace {
  std::vector<std::byte> storage;
  Workspace ws;
  explicit HostWorkspace(std::size_t bytes) : storage(bytes + kWorkspaceAlignment) {
    void* p = storage.data();
    std::size_t space = storage.size();
    std::align(kWorkspaceAlignment, bytes, p, space);
    ws = Workspace{p, bytes};
  }
};

/// Host copies of a mask and of tables (views point into them).
struct HostPlan {
  std::vector<std::uint32_t> bits;
  std::vector<std::int32_t> indptr, indices, last, split, tail;
  BlockMask mask;
  BlockTables tables;
};

bool device_available() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return n > 0;
}

template <class T>
class DeviceArray {
 public:
  DeviceArray() = default;
  explicit DeviceArray(std::size_t n) : n_(n) {
    if (n_) COMPACT_CUDA_CHECK(cudaMalloc(&p_, n_ * sizeof(T)));
  }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  ~DeviceArray() {
    if (p_) cudaFree(p_);
  }
  void upload(const T* h, std::size_t n, std::size_t at = 0) {
    if (n) COMPACT_CUDA_CHECK(cudaMemcpy(p_ + at, h, n * sizeof(T), cudaMemcpyHostToDevice));
  }
  void download(T* h, std::size_t n) const {
    if (n) COMPACT_CUDA_CHECK(cudaMemcpy(h, p_, n * sizeof(T), cudaMemcpyDeviceToHost));
  }
  T* get() const { return p_; }
  std::size_t size() const { return n_; }

 private:
  T* p_ = nullptr;
  std::size_t n_ = 0;
};

/// Copies a device mask and device tables into host memory.
void download_plan(const BlockMask& m, const BlockTables& t, HostPlan& h) {
  h.bits.resize(m.num_words());
  COMPACT_CUDA_CHECK(cudaMemcpy(h.bits.data(), m.bits, h.bits.size() * 4, cudaMemcpyDeviceToHost));
  h.mask = m;
  h.mask.bits = h.bits.data();
  h.indptr.resize(t.shape.num_tables() + 1);
  h.indices.resize(t.shape.capacity());
  h.last.resize(t.shape.num_tables());
  COMPACT_CUDA_CHECK(
      cudaMemcpy(h.indptr.data(), t.indptr, h.indptr.size() * 4, cudaMemcpyDeviceToHost));
  COMPACT_CUDA_CHECK(
      cudaMemcpy(h.indices.data(), t.indices, h.indices.size() * 4, cudaMemcpyDeviceToHost));
  COMPACT_CUDA_CHECK(
      cudaMemcpy(h.last.data(), t.last_block_tokens, h.last.size() * 4, cudaMemcpyDeviceToHost));
  h.tables = BlockTables{t.shape, h.indptr.data(), h.indices.data(), h.last.data()};
  if (t.q_split != nullptr) {
    h.split.resize(t.shape.max_batch);
    COMPACT_CUDA_CHECK(
        cudaMemcpy(h.split.data(), t.q_split, h.split.size() * 4, cudaMemcpyDeviceToHost));
    h.tables.q_split = h.split.data();
  }
  if (m.tail_q_blocks != nullptr) {
    h.tail.resize(m.max_batch);
    COMPACT_CUDA_CHECK(
        cudaMemcpy(h.tail.data(), m.tail_q_blocks, h.tail.size() * 4, cudaMemcpyDeviceToHost));
    h.mask.tail_q_blocks = h.tail.data();
  }
}

/// Host copy of a host plan's views (the engine's workspace is reused by the next chunk).
void copy_plan(const BlockMask& m, const BlockTables& t, HostPlan& h) {
  h.bits.assign(m.bits, m.bits + m.num_words());
  h.mask = m;
  h.mask.bits = h.bits.data();
  h.indptr.assign(t.indptr, t.indptr + t.shape.num_tables() + 1);
  h.indices.assign(t.indices, t.indices + t.shape.capacity());
  h.last.assign(t.last_block_tokens, t.last_block_tokens + t.shape.num_tables());
  h.tables = BlockTables{t.shape, h.indptr.data(), h.indices.data(), h.last.data()};
  if (t.q_split != nullptr) {
    h.split.assign(t.q_split, t.q_split + t.shape.max_batch);
    h.tables.q_split = h.split.data();
  }
  if (m.tail_q_blocks != nullptr) {
    h.tail.assign(m.tail_q_blocks, m.tail_q_blocks + m.max_batch);
    h.mask.tail_q_blocks = h.tail.data();
  }
}

/// Dense tables for the reference run: every entry of the chunk's KV range, one table per group
/// of `shape` (BlockUnion layout).
void dense_tables(const TableShape& shape, int kv_len, HostPlan& h) {
  h.indptr.assign(shape.num_tables() + 1, 0);
  h.indices.clear();
  h.last.assign(shape.num_tables(), 0);
  const int entries = ceil_div(kv_len, shape.table_block_tokens);
  for (int i = 0; i < shape.num_tables(); ++i) {
    const bool live = i < shape.tables_per_seq();  // sequence 0 only
    if (live) {
      for (int e = 0; e < entries; ++e) h.indices.push_back(e);
      h.last[i] = kv_len - (entries - 1) * shape.table_block_tokens;
    }
    h.indptr[i + 1] = static_cast<std::int32_t>(h.indices.size());
  }
  h.indices.resize(std::max<std::size_t>(h.indices.size(), 1));
  h.tables = BlockTables{shape, h.indptr.data(), h.indices.data(), h.last.data()};
}

// ------------------------------------------------------------------------------------------------
// The replay loops.

struct Run {
  const Options& o;
  const Layer& layer;
  AttentionConfig c;
  PlanLimits lim;
  std::set<int> forced;  // question rows
  std::vector<char> picked;
  int num_chunks = 0;
  int sample_rows = 0;
};

/// Host path: host plan (Engine with host policies), exact fp32 logits of the sampled rows.
template <class Mask, class Union>
void replay_host(Run& run, const Mask& mask, Summary& out) {
  const AttentionConfig& c = run.c;
  const Layer& layer = run.layer;
  const CacheLayout cl = CacheLayout::make(c, layer.tokens, run.o.sample_seed);
  HostCache cache(c, cl, reads_min_max(mask));
  Engine<Mask, Union, ReferenceExecutor> engine(c, run.lim, mask);
  HostWorkspace ws(engine.workspace_bytes());
  const KvFloat kv = KvFloat::of(layer);
  std::vector<std::uint16_t> q(static_cast<std::size_t>(run.o.chunk) * c.num_q_heads * c.head_dim);
  HostPlan plan;
  double plan_ms = 0;
  if (!run.o.quiet) print_chunk_header(false);
  for (int ci = 0; ci < run.num_chunks; ++ci) {
    const int pos0 = ci * run.o.chunk, n = std::min(run.o.chunk, layer.tokens - pos0);
    const std::int32_t cu[2] = {0, n}, kv_len[1] = {pos0 + n}, fin[1] = {ci == run.num_chunks - 1};
    const std::size_t kv_row = static_cast<std::size_t>(c.num_kv_heads) * c.head_dim;
    KvChunk chunk;
    chunk.k = layer.k.data() + pos0 * kv_row;
    chunk.v = layer.v.data() + pos0 * kv_row;
    chunk.cu_seqlens = cu;
    chunk.kv_lens = kv_len;
    chunk.num_seqs = 1;
    chunk.total = n;
    append_kv_host(c, run.lim, chunk, cache.view);
    if (!run.picked[ci]) continue;
    layer.queries(pos0, pos0 + n, q.data());
    ChunkBatch batch;
    batch.q = q.data();
    batch.cu_seqlens_q = cu;
    batch.kv_lens = kv_len;
    batch.final_chunk = fin;
    batch.num_seqs = 1;
    batch.total_q = n;
    const auto t0 = std::chrono::steady_clock::now();
    engine.plan(batch, cache.view, ws.ws);
    plan_ms +=
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    copy_plan(engine.mask_view(ws.ws), engine.tables_view(ws.ws), plan);
    ChunkView cv{ci, pos0, n, fin[0] != 0, q.data(), plan.mask, plan.tables};
    Stats s;
    s.chunks = s.planned_chunks = 1;
    chunk_density(c, cv, layer.head_labels, s);
    const std::vector<int> rows =
        sample_rows(n, run.sample_rows, run.o.sample_seed, ci, pos0, run.forced);
    evaluate_rows(c, layer, kv, cv, rows, run.o.oracle_mass, s);
    if (!run.o.quiet) print_chunk(cv, s, false);
    out.stats.merge(s);
  }
  out.plan_ms = plan_ms / std::max(1, out.stats.planned_chunks);
}

/// Device path: append, plan and run on the GPU for every chunk (recall from LSE, error from
/// outputs of every row), plus the exact host evaluation of the sampled rows of picked chunks.
template <class Mask, class Union>
void replay_device(Run& run, const Mask& mask, Summary& out) {
  const AttentionConfig& c = run.c;
  const Layer& layer = run.layer;
  const PlanLimits& lim = run.lim;
  static_assert(
      DeviceMaskSource<Mask> && DeviceUnionStrategy<Union>,
      "compact_replay's device path needs device builds of the mask source and the union");
  const bool min_max = reads_min_max(mask);
  const CacheLayout cl = CacheLayout::make(c, layer.tokens, run.o.sample_seed);
  const std::size_t kv_row = static_cast<std::size_t>(c.num_kv_heads) * c.head_dim;
  const std::size_t q_row = static_cast<std::size_t>(c.num_q_heads) * c.head_dim;

  DeviceArray<std::uint16_t> k_pool(cl.pool_elems), v_pool(cl.pool_elems);
  DeviceArray<std::int32_t> page_table(cl.page_table.size());
  page_table.upload(cl.page_table.data(), cl.page_table.size());
  DeviceArray<float> mean_k(cl.summary_elems), min_k(min_max ? cl.summary_elems : 0),
      max_k(min_max ? cl.summary_elems : 0);
  PagedKV cache;
  cache.k_pages = k_pool.get();
  cache.v_pages = v_pool.get();
  cache.num_pages = cl.num_pages;
  cache.page_size = c.page_size;
  cache.num_kv_heads = c.num_kv_heads;
  cache.head_dim = c.head_dim;
  cache.page_table = page_table.get();
  cache.page_table_stride = cl.table_stride;
  cache.host_page_table = cl.page_table.data();
  cache.summaries.mean_k = mean_k.get();
  cache.summaries.min_k = min_max ? min_k.get() : nullptr;
  cache.summaries.max_k = min_max ? max_k.get() : nullptr;
  cache.summaries.num_slots = 1;
  cache.summaries.max_blocks = cl.max_blocks;
  cache.summaries.block_size = c.block_k;

  DeviceArray<std::uint16_t> d_q(lim.max_chunk * q_row), d_k(lim.max_chunk * kv_row),
      d_v(lim.max_chunk * kv_row), o_sparse(lim.max_chunk * q_row), o_dense(lim.max_chunk * q_row);
  DeviceArray<float> lse_sparse(static_cast<std::size_t>(lim.max_chunk) * c.num_q_heads),
      lse_dense(static_cast<std::size_t>(lim.max_chunk) * c.num_q_heads);
  DeviceArray<std::int32_t> d_cu(2), d_kv(1), d_final(1);

  // Sparse: the engine with device policies; dense: the same executor over all-entry tables.
  Engine<Mask, Union, PagedFlashExecutor<>> engine(c, lim, mask);
  DeviceArray<std::byte> ws_sparse(engine.workspace_bytes() + kWorkspaceAlignment);
  const Workspace sparse_ws{
      reinterpret_cast<void*>(
          ceil_div<std::uintptr_t>(reinterpret_cast<std::uintptr_t>(ws_sparse.get()),
                                   kWorkspaceAlignment) *
          kWorkspaceAlignment),
      engine.workspace_bytes()};
  // Dense reference: all entries, BlockUnion layout.
  const TableShape dshape = TableShape::make(c, lim, c.group_size(), false);
  PagedFlashExecutor<> exec_dense;
  exec_dense.configure(c, lim, dshape);
  DeviceArray<std::byte> ws_dense(exec_dense.workspace_bytes(c, lim, dshape) + kWorkspaceAlignment);
  const Workspace dense_ws{
      reinterpret_cast<void*>(
          ceil_div<std::uintptr_t>(reinterpret_cast<std::uintptr_t>(ws_dense.get()),
                                   kWorkspaceAlignment) *
          kWorkspaceAlignment),
      ws_dense.size() - kWorkspaceAlignment};
  DeviceArray<std::int32_t> dt_indptr(dshape.num_tables() + 1),
      dt_indices(std::max(1, static_cast<int>(dshape.capacity()))), dt_last(dshape.num_tables());

  const KvFloat kv = KvFloat::of(layer);
  std::vector<std::uint16_t> q(lim.max_chunk * q_row), hos(lim.max_chunk * q_row),
      hod(lim.max_chunk * q_row);
  std::vector<float> hls(static_cast<std::size_t>(lim.max_chunk) * c.num_q_heads), hld(hls.size());
  HostPlan plan, dplan;
  cudaEvent_t e0, e1;
  COMPACT_CUDA_CHECK(cudaEventCreate(&e0));
  COMPACT_CUDA_CHECK(cudaEventCreate(&e1));
  double plan_ms = 0;
  if (!run.o.quiet) print_chunk_header(true);
  for (int ci = 0; ci < run.num_chunks; ++ci) {
    const int pos0 = ci * run.o.chunk, n = std::min(run.o.chunk, layer.tokens - pos0);
    const std::int32_t cu[2] = {0, n}, kv_len[1] = {pos0 + n}, fin[1] = {ci == run.num_chunks - 1};
    d_cu.upload(cu, 2);
    d_kv.upload(kv_len, 1);
    d_final.upload(fin, 1);
    d_k.upload(layer.k.data() + pos0 * kv_row, n * kv_row);
    d_v.upload(layer.v.data() + pos0 * kv_row, n * kv_row);
    KvChunk chunk;
    chunk.k = d_k.get();
    chunk.v = d_v.get();
    chunk.cu_seqlens = d_cu.get();
    chunk.kv_lens = d_kv.get();
    chunk.num_seqs = 1;
    chunk.total = n;
    chunk.host_cu_seqlens = cu;
    chunk.host_kv_lens = kv_len;
    append_kv_device(c, lim, chunk, cache);
    layer.queries(pos0, pos0 + n, q.data());
    d_q.upload(q.data(), n * q_row);
    ChunkBatch batch;
    batch.q = d_q.get();
    batch.cu_seqlens_q = d_cu.get();
    batch.kv_lens = d_kv.get();
    batch.final_chunk = d_final.get();
    batch.num_seqs = 1;
    batch.total_q = n;
    batch.host_cu_seqlens_q = cu;
    batch.host_kv_lens = kv_len;
    const AttentionOutput out_s{o_sparse.get(), lse_sparse.get()},
        out_d{o_dense.get(), lse_dense.get()};
    COMPACT_CUDA_CHECK(cudaEventRecord(e0));
    engine.plan(batch, cache, sparse_ws);
    COMPACT_CUDA_CHECK(cudaEventRecord(e1));
    engine.run(batch, cache, sparse_ws, out_s);
    COMPACT_CUDA_CHECK(cudaEventSynchronize(e1));
    float ms = 0;
    COMPACT_CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
    plan_ms += ms;
    download_plan(engine.mask_view(sparse_ws), engine.tables_view(sparse_ws), plan);
    dense_tables(dshape, pos0 + n, dplan);
    dt_indptr.upload(dplan.indptr.data(), dplan.indptr.size());
    dt_indices.upload(dplan.indices.data(), dplan.indices.size());
    dt_last.upload(dplan.last.data(), dplan.last.size());
    exec_dense.run(ExecArgs{c, lim, batch, cache,
                            BlockTables{dshape, dt_indptr.get(), dt_indices.get(), dt_last.get()},
                            out_d, dense_ws},
                   nullptr);
    COMPACT_CUDA_CHECK(cudaDeviceSynchronize());
    o_sparse.download(hos.data(), n * q_row);
    o_dense.download(hod.data(), n * q_row);
    lse_sparse.download(hls.data(), static_cast<std::size_t>(n) * c.num_q_heads);
    lse_dense.download(hld.data(), static_cast<std::size_t>(n) * c.num_q_heads);

    ChunkView cv{ci, pos0, n, fin[0] != 0, q.data(), plan.mask, plan.tables};
    Stats s;
    s.chunks = s.planned_chunks = 1;
    chunk_density(c, cv, layer.head_labels, s);
    auto dev_recall = [&](int t, int h) {
      const std::size_t i = static_cast<std::size_t>(t) * c.num_q_heads + h;
      return std::min(1.0, std::exp(static_cast<double>(hls[i]) - hld[i]));
    };
    for (int t = 0; t < n; ++t) {
      for (int h = 0; h < c.num_q_heads; ++h) {
        s.dev_recall.add(dev_recall(t, h));
        double num = 0, den = 0;
        for (int d = 0; d < c.head_dim; ++d) {
          const std::size_t i = static_cast<std::size_t>(t) * q_row + h * c.head_dim + d;
          const double a = load_float(hos.data(), c.dtype, i),
                       b = load_float(hod.data(), c.dtype, i);
          num += (a - b) * (a - b);
          den += b * b;
        }
        s.dev_error.add(den > 0 ? std::sqrt(num / den) : 0.0);
      }
    }
    if (run.picked[ci]) {
      const std::vector<int> rows =
          sample_rows(n, run.sample_rows, run.o.sample_seed, ci, pos0, run.forced);
      evaluate_rows(c, layer, kv, cv, rows, run.o.oracle_mass, s, dev_recall);
    }
    if (!run.o.quiet) print_chunk(cv, s, true);
    out.stats.merge(s);
  }
  COMPACT_CUDA_CHECK(cudaEventDestroy(e0));
  COMPACT_CUDA_CHECK(cudaEventDestroy(e1));
  out.plan_ms = plan_ms / std::max(1, out.stats.planned_chunks);
}

template <class Mask>
void with_union(const std::string& u, auto&& fn) {
  if (u == "block") return fn.template operator()<Mask, BlockUnion<>>();
  if (u == "qblock") return fn.template operator()<Mask, QBlockUnion<>>();
  if (u == "group") return fn.template operator()<Mask, GroupUnion<>>();
  if (u == "none") return fn.template operator()<Mask, NoUnion<>>();
  fail("--union", u, "block, qblock, group or none");
}

/// Runtime mask and union names to compile-time policies: fn.template operator()<Mask,
/// Union>(mask).
void dispatch(const Options& o, auto&& fn) {
  if (o.mask == "dense") {
    return with_union<DenseMask>(
        o.union_name, [&]<class M, class U>() { fn.template operator()<M, U>(DenseMask{}); });
  }
  if (o.mask == "sink_local") {
    return with_union<SinkLocalMask>(o.union_name, [&]<class M, class U>() {
      fn.template operator()<M, U>(SinkLocalMask(o.fp.sink_blocks, o.fp.window_blocks));
    });
  }
  if (o.mask == "flash_prefill") {
    return with_union<FlashPrefillMask<>>(o.union_name, [&]<class M, class U>() {
      fn.template operator()<M, U>(FlashPrefillMask<>(o.fp));
    });
  }
  if (o.mask == "quest") {
    return with_union<QuestMask>(
        o.union_name, [&]<class M, class U>() { fn.template operator()<M, U>(QuestMask(o.fp)); });
  }
  if (o.mask == "xattention") {
    return with_union<XAttentionMask>(o.union_name, [&]<class M, class U>() {
      fn.template operator()<M, U>(XAttentionMask(o.xa));
    });
  }
  fail("--mask", o.mask, "dense, sink_local, flash_prefill, quest or xattention");
}

std::string mask_description(const Options& o) {
  if (o.mask == "flash_prefill" || o.mask == "quest") {
    const std::string sel = o.fp.selection == FlashPrefillSelection::group_mass
                                ? detail::cat("group_mass ", o.fp.group_mass)
                                : detail::cat("row_threshold alpha ", o.fp.alpha);
    return detail::cat(o.mask, " (", sel, ", sharpness ", o.fp.sharpness, ", sink ",
                       o.fp.sink_blocks, ", window ", o.fp.window_blocks, ", last_full ",
                       o.fp.last_full_blocks, ", min_budget ", o.fp.min_budget,
                       o.fp.exclude_forced ? ", forced out of the row scores" : "",
                       !o.fp.keep_row_best        ? ""
                       : o.fp.row_best_count == 2 ? ", every row's two best blocks kept"
                                                  : ", every row's best block kept",
                       o.fp.row_best_by_bound ? " (ranked by the min/max bound)" : "", ")");
  }
  if (o.mask == "sink_local")
    return detail::cat("sink_local (sink ", o.fp.sink_blocks, ", window ", o.fp.window_blocks, ")");
  if (o.mask == "xattention") {
    return detail::cat("xattention (stride ", o.xa.stride, ", threshold ", o.xa.threshold,
                       ", sink ", o.xa.sink_blocks, ", levels ", o.xa.levels,
                       o.xa.quant == XAttentionQuant::group ? " per group" : "", ")");
  }
  return o.mask;
}

/// One replay of one layer; prints per-chunk lines (unless quiet) and the summary.
Summary replay(const Options& o, const Layer& layer) {
  AttentionConfig c;
  c.num_q_heads = layer.num_q_heads;
  c.num_kv_heads = layer.num_kv_heads;
  c.head_dim = layer.head_dim;
  c.dtype = layer.dtype;
  c.block_q = o.block_q;
  c.block_k = o.block_k;
  c.page_size = o.page_size;
  c.exec_group_size = o.exec_group;
  c.validate();
  require(o.chunk >= 1, "--chunk", o.chunk, ">= 1");
  require(o.oracle_mass > 0 && o.oracle_mass <= 1, "--oracle-mass", o.oracle_mass, "in (0, 1]");
  Run run{o, layer, c, PlanLimits{}, {}, {}, 0, 0};
  run.lim.max_batch = 1;
  run.lim.max_chunk = std::min(o.chunk, layer.tokens);
  run.lim.max_kv_len = layer.tokens;
  run.lim.validate();
  run.num_chunks = ceil_div(layer.tokens, o.chunk);
  for (const Needle& n : layer.needles)
    run.forced.insert(n.question_rows.begin(), n.question_rows.end());

  bool device = false;
  if (o.path == "device") {
    require(device_available(), "--path", "device", "a CUDA device (none found)");
    device = true;
  } else if (o.path == "auto") {
    device = device_available();
  } else {
    require(o.path == "host", "--path", o.path, "auto, device or host");
  }
  const bool small = layer.tokens <= 8192;
  const int chunks = o.sample_chunks >= 0 ? o.sample_chunks : (small ? 0 : 8);
  run.sample_rows = o.sample_rows >= 0 ? o.sample_rows : (small ? 0 : 32);
  run.picked = sample_chunks(run.num_chunks, o.chunk, chunks, run.forced);
  const int picked = static_cast<int>(std::count(run.picked.begin(), run.picked.end(), 1));

  Summary sum;
  sum.tokens = layer.tokens;
  if (device) {
    sum.path =
        detail::cat("device: append_kv_device + ", o.mask, " + ", o.union_name,
                    " union + PagedFlashExecutor with LSE on every chunk; exact host check of ",
                    run.sample_rows ? std::to_string(run.sample_rows) : std::string("all"),
                    " rows in ", picked, " chunks");
  } else {
    sum.path = detail::cat("host: append_kv_host + host plan of ", picked, " of ", run.num_chunks,
                           " chunks, exact fp32 logits of ",
                           run.sample_rows ? std::to_string(run.sample_rows) : std::string("all"),
                           " rows per chunk (+ question rows), every head");
  }
  if (!o.quiet) {
    std::printf("compact_replay: %s\n", sum.path.c_str());
    std::printf(
        "layer: %s, %d tokens, Hq %d, Hkv %d, D %d, %s; mask %s, union %s, Bq %d, Bk %d, page %d, "
        "chunk %d\n",
        layer.source.c_str(), layer.tokens, c.num_q_heads, c.num_kv_heads, c.head_dim,
        to_string(c.dtype), mask_description(o).c_str(), o.union_name.c_str(), c.block_q, c.block_k,
        c.page_size, o.chunk);
  }
  dispatch(o, [&]<class M, class U>(const M& mask) {
    if (device) {
      replay_device<M, U>(run, mask, sum);
    } else {
      replay_host<M, U>(run, mask, sum);
    }
  });
  return sum;
}

Layer make_layer(const Options& o, int tokens_override = 0) {
  Layer layer;
  if (o.synthetic) {
    SyntheticSettings s = o.syn;
    if (tokens_override > 0) s.tokens = tokens_override;
    layer = synthetic_layer(s);
  } else {
    require(!o.q_path.empty() && !o.k_path.empty() && !o.v_path.empty(), "input", "(none)",
            "--synthetic, or --q, --k and --v .npy files");
    layer = npy_layer(o.q_path, o.k_path, o.v_path, o.dtype);
  }
  if (!o.needles_path.empty()) layer.needles = read_needles(o.needles_path);
  validate_needles(layer);
  return layer;
}

void study(const Options& base) {
  require(base.synthetic, "--study", "set", "--synthetic (the study generates its layers)");
  std::vector<Summary> rows;
  std::printf("compact_replay --study: mask %s, union %s, chunk %d, Bq %d, Bk %d, page %d\n",
              mask_description(base).c_str(), base.union_name.c_str(), base.chunk, base.block_q,
              base.block_k, base.page_size);
  std::printf("generator settings (per length, tokens replaced):\n");
  base.syn.print(std::cout, "  ");
  for (const std::string& variant : base.study_variants) {
    require(variant == "end" || variant == "mid", "--study-variants", variant, "end and/or mid");
    for (long long len : base.study_lengths) {
      Options o = base;
      o.syn.mid_chunk = variant == "mid";
      const auto t0 = std::chrono::steady_clock::now();
      const Layer layer = make_layer(o, static_cast<int>(len));
      std::printf("\n=== %lld tokens, question rows %s ===\n", len,
                  variant == "mid" ? "mid-chunk" : "at the end");
      Summary s = replay(o, layer);
      s.label = variant == "mid" ? "mid-chunk" : "end of prompt";
      print_summary(s, o);
      std::printf("  wall time %.1f s\n",
                  std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      rows.push_back(std::move(s));
    }
  }
  std::printf(
      "\n| tokens | question rows | path | oracle density (row / group union of sampled rows) | "
      "density per head "
      "| after Q-block union | after group union | mass recall mean | recall p1 | rows < 0.9 | "
      "rel. error mean "
      "| error p99 | needles hit |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  for (Summary& s : rows) {
    Stats& st = s.stats;
    const bool dev = !st.dev_recall.empty();
    Samples& rec = dev ? st.dev_recall : st.all.recall;
    Samples& err = dev ? st.dev_error : st.all.error;
    const auto [hit, total] = st.needles_hit();
    std::printf("| %dK | %s | %s | %s / %s | %s | %s | %s | %s | %s | %s | %s | %s | %d/%d |\n",
                s.tokens / 1024, s.label.c_str(), dev ? "device" : "host (sampled)",
                pct(st.all.oracle_density()).c_str(), pct(st.oracle_group_density()).c_str(),
                pct(st.all.head_density()).c_str(), pct(st.qblock_density()).c_str(),
                pct(st.group_density()).c_str(), fmt(rec.mean()).c_str(),
                fmt(rec.quantile(0.01)).c_str(), pct(rec.share_below(0.9), 2).c_str(),
                fmt(err.mean()).c_str(), fmt(err.quantile(0.99)).c_str(), hit, total);
  }
}

}  // namespace

int main(int argc, char** argv) {
  try {
    for (int i = 1; i < argc; ++i) {
      if (std::string(argv[i]) == "--help" || std::string(argv[i]) == "-h") {
        std::fputs(kUsage, stdout);
        return 0;
      }
    }
    Args args(argc, argv);
    const Options o = parse(args);
    args.finish();
    if (o.study) {
      study(o);
      return 0;
    }
    const Layer layer = make_layer(o);
    if (o.synthetic) {
      std::printf("generator settings:\n");
      o.syn.print(std::cout, "  ");
      if (layer.synthetic) std::fputs(layer.synthetic->describe_heads().c_str(), stdout);
    }
    if (!o.dump_dir.empty()) {
      dump_layer(layer, o.dump_dir);
      std::printf("wrote %s/{q,k,v}.npy and needles.txt\n", o.dump_dir.c_str());
      if (o.dump_only) return 0;
    }
    Summary s = replay(o, layer);
    print_summary(s, o);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "compact_replay: %s\n", e.what());
    return 1;
  }
}
