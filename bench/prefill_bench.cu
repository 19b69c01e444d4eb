// End-to-end chunked prefill of one layer over a whole generated prompt: dense, CompactAttention
// and the 2D block-sparse baseline on the same cache, chunk by chunk, selection and attention
// timed apart. Masks come from a synthetic long-context workload (tools/workload), not random.
//
// Timing: every chunk's selection (plan: mask + union) and attention (run) of every method are
// timed with CUDA events COMPACT_PREFILL_REPS times (default 3, after the untimed warm-up pass
// over chunk 0) and the per-chunk medians are summed over the prompt. Each timed pass starts
// behind a host lead (common/host_lead.cuh, as bench/peers.py does for its peers), so the events
// time the GPU's work, not the host's launch latency; the host's time inside plan() is reported
// apart (plan_host_ms: in an engine it overlaps the GPU's previous work).
//
// Environment: COMPACT_PREFILL_CSV, when set, is a file that receives one line per (chunk, method):
// preset, prompt, chunk size, chunk index, method, selection ms, attention ms, table entries,
// dense entries (the per-chunk medians behind the totals) and the host ms of plan().
// COMPACT_SELECTION_DIR, when set, receives the last chunk's FlashPrefill 2D mask of every
// configuration as a .npy bool array [B][Hq][nqb][nkb] (for bench/peers.py's FlexAttention peer:
// selection_{preset}_{kv}_{chunk}.npy).
// COMPACT_PREFILL_MASK=bound_guarded gives CompactAttention and the 2D baseline
// FlashPrefillMask(FlashPrefillParams::bound_guarded()) instead of the defaults (the cache then
// keeps min/max key summaries too, and the methods are named compact:bound_guarded and
// block_sparse:bound_guarded).
#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "common/bench_common.cuh"
#include "common/bench_problem.cuh"
#include "compact/compact.cuh"
#include "workload/synthetic.hpp"

namespace {

using namespace compact;
using namespace compact::bench;

constexpr int kMethods = 3;
constexpr std::array<const char*, kMethods> kMethodNames = {"dense", "compact", "block_sparse"};

/// FlashPrefillMask's parameters of the run (COMPACT_PREFILL_MASK) and the name suffix they give.
struct MaskChoice {
  FlashPrefillParams params;
  std::string suffix;
};

const MaskChoice& mask_choice() {
  static const MaskChoice m = [] {
    const char* env = std::getenv("COMPACT_PREFILL_MASK");
    const std::string v = env != nullptr ? env : "";
    if (v.empty() || v == "default") return MaskChoice{};
    if (v == "bound_guarded") return MaskChoice{FlashPrefillParams::bound_guarded(), ":" + v};
    std::fprintf(stderr,
                 "prefill_bench: COMPACT_PREFILL_MASK is '%s', expected default or "
                 "bound_guarded\n",
                 v.c_str());
    std::exit(2);
  }();
  return m;
}

/// A method's name in benchmark names and the CSV: dense is the same whatever the mask.
std::string method_name(int m) {
  return m == 0 ? std::string(kMethodNames[0]) : kMethodNames[m] + mask_choice().suffix;
}

struct Shape {
  Preset preset;
  int prompt;
  int chunk;
};

/// Totals of one method over every chunk of the prompt.
struct MethodTotals {
  double select_ms = 0, attn_ms = 0;
  double last_select_ms = 0, last_attn_ms = 0;
  double selected = 0, dense = 0;  // table entries, for density
  double last_rel_err = 0;         // last chunk's output vs dense, relative L2
  double plan_host_ms = 0;         // host time of plan() (validation + launches), not GPU time
};

struct PrefillResult {
  std::array<MethodTotals, kMethods> m;
  double append_ms = 0;
  double generate_s = 0;
  int chunks = 0;
};

/// cudaEvent pair helper: elapsed ms between two recorded events.
float elapsed(cudaEvent_t a, cudaEvent_t b) {
  float ms = 0;
  COMPACT_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
  return ms;
}

/// Writes a bool .npy [B][H][nqb][nkb] (numpy format 1.0, C order).
void write_npy_bool(const std::string& path, const std::vector<std::uint8_t>& data,
                    const std::array<int, 4>& shape) {
  std::string header = "{'descr': '|b1', 'fortran_order': False, 'shape': (" +
                       std::to_string(shape[0]) + ", " + std::to_string(shape[1]) + ", " +
                       std::to_string(shape[2]) + ", " + std::to_string(shape[3]) + "), }";
  while ((10 + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  std::ofstream f(path, std::ios::binary);
  f.write("\x93NUMPY\x01\x00", 8);
  const std::uint16_t len = static_cast<std::uint16_t>(header.size());
  f.write(reinterpret_cast<const char*>(&len), 2);
  f.write(header.data(), static_cast<std::streamsize>(header.size()));
  f.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
}

/// The whole prefill for one shape, every method; cached so each method's benchmark reports it.
const PrefillResult& run_prefill(const Shape& sh) {
  static std::map<std::string, PrefillResult> results;
  const std::string key = std::string(sh.preset.name) + "/" + std::to_string(sh.prompt) + "/" +
                          std::to_string(sh.chunk);
  if (auto it = results.find(key); it != results.end()) return it->second;
  PrefillResult r;
  const int B = sh.preset.batch, Hq = sh.preset.num_q_heads, Hkv = sh.preset.num_kv_heads;
  const int D = sh.preset.head_dim, C = sh.chunk, P = sh.prompt;

  // One generated layer; every sequence of the batch prefills the same prompt (own pages).
  compact::tools::SyntheticSettings s;
  s.tokens = P;
  s.num_q_heads = Hq;
  s.num_kv_heads = Hkv;
  s.head_dim = D;
  s.chunk = C;
  s.seed = 2026;
  const auto t0 = std::chrono::steady_clock::now();
  const compact::tools::SyntheticWorkload w(s);
  r.generate_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  AttentionConfig c;
  c.num_q_heads = Hq;
  c.num_kv_heads = Hkv;
  c.head_dim = D;
  c.dtype = DType::bf16;
  c.block_q = 128;
  c.block_k = 128;
  c.page_size = 16;
  PlanLimits l;
  l.max_batch = B;
  l.max_chunk = C;
  l.max_kv_len = P;

  // Device state: the prompt's K/V (source of each chunk), packed chunk buffers, the cache.
  const std::size_t row_kv = static_cast<std::size_t>(Hkv) * D,
                    row_q = static_cast<std::size_t>(Hq) * D;
  test::DeviceBuffer<std::uint16_t> k_all(w.k()), v_all(w.v());
  test::DeviceBuffer<std::uint16_t> q(B * C * row_q), k_new(B * C * row_kv), v_new(B * C * row_kv);
  std::array<test::DeviceBuffer<std::uint16_t>, kMethods> out;
  for (auto& o : out) o = test::DeviceBuffer<std::uint16_t>(B * C * row_q);
  const int pages_per_seq = ceil_div(P, c.page_size);
  std::vector<std::int32_t> table(static_cast<std::size_t>(B) * pages_per_seq);
  std::iota(table.begin(), table.end(), 0);
  std::mt19937_64 rng(7);
  std::shuffle(table.begin(), table.end(), rng);  // pages scattered over the pool
  test::DeviceBuffer<std::int32_t> d_table(table);
  const std::size_t pool = table.size() * c.page_size * row_kv;
  test::DeviceBuffer<std::uint16_t> k_pool(pool), v_pool(pool);
  const int max_blocks = ceil_div(P, c.block_k);
  test::DeviceBuffer<float> mean_k(static_cast<std::size_t>(B) * max_blocks * row_kv);
  // Quest's min/max keys, only for a mask that ranks rows' blocks by the bound.
  const bool min_max = FlashPrefillMask<>(mask_choice().params).summary_needs().min_max_k;
  test::DeviceBuffer<float> min_k(min_max ? mean_k.size() : 0), max_k(min_max ? mean_k.size() : 0);
  std::vector<std::int32_t> cu(B + 1), kv(B), fin(B);
  for (int b = 0; b <= B; ++b) cu[b] = b * C;
  test::DeviceBuffer<std::int32_t> d_cu(cu), d_kv(B), d_fin(B);

  ChunkBatch batch;
  batch.q = q.get();
  batch.cu_seqlens_q = d_cu.get();
  batch.kv_lens = d_kv.get();
  batch.final_chunk = d_fin.get();
  batch.num_seqs = B;
  batch.total_q = B * C;
  batch.host_cu_seqlens_q = cu.data();
  batch.host_kv_lens = kv.data();
  PagedKV cache;
  cache.k_pages = k_pool.get();
  cache.v_pages = v_pool.get();
  cache.num_pages = static_cast<int>(table.size());
  cache.page_size = c.page_size;
  cache.num_kv_heads = Hkv;
  cache.head_dim = D;
  cache.page_table = d_table.get();
  cache.page_table_stride = pages_per_seq;
  // No host page-table mirror: plan() would walk every page id on the host per method and chunk
  // (an engine's choice; the validation is not what is measured here).
  cache.summaries.mean_k = mean_k.get();
  cache.summaries.min_k = min_max ? min_k.get() : nullptr;
  cache.summaries.max_k = min_max ? max_k.get() : nullptr;
  cache.summaries.num_slots = B;
  cache.summaries.max_blocks = max_blocks;
  const KvChunk kv_chunk = KvChunk::of(batch, k_new.get(), v_new.get());

  using Dense = Engine<DenseMask, BlockUnion<>, PagedFlashExecutor<>>;
  using Compact = Engine<FlashPrefillMask<>, BlockUnion<>, PagedFlashExecutor<>>;
  using Sparse2D = Engine<FlashPrefillMask<>, NoUnion<>, BlockSparseExecutor<>>;
  const Dense dense(c, l);
  const Compact compact(c, l, FlashPrefillMask<>(mask_choice().params));
  const Sparse2D sparse2d(c, l, FlashPrefillMask<>(mask_choice().params));
  std::array<test::DeviceBuffer<std::byte>, kMethods> ws{
      test::DeviceBuffer<std::byte>(dense.workspace_bytes()),
      test::DeviceBuffer<std::byte>(compact.workspace_bytes()),
      test::DeviceBuffer<std::byte>(sparse2d.workspace_bytes())};
  auto wsp = [&](int m) { return Workspace{ws[m].get(), ws[m].size()}; };
  auto plan = [&](int m) {
    if (m == 0) dense.plan(batch, cache, wsp(m));
    if (m == 1) compact.plan(batch, cache, wsp(m));
    if (m == 2) sparse2d.plan(batch, cache, wsp(m));
  };
  auto run = [&](int m) {
    const AttentionOutput o{out[m].get()};
    if (m == 0) dense.run(batch, cache, wsp(m), o);
    if (m == 1) compact.run(batch, cache, wsp(m), o);
    if (m == 2) sparse2d.run(batch, cache, wsp(m), o);
  };
  auto tables = [&](int m) {
    return m == 0   ? dense.tables_view(wsp(m))
           : m == 1 ? compact.tables_view(wsp(m))
                    : sparse2d.tables_view(wsp(m));
  };

  const char* reps_env = std::getenv("COMPACT_PREFILL_REPS");
  const int reps = reps_env != nullptr ? std::max(1, std::atoi(reps_env)) : 3;
  auto median = [](std::vector<float> v) {
    std::sort(v.begin(), v.end());
    return v.size() % 2 ? v[v.size() / 2] : 0.5f * (v[v.size() / 2 - 1] + v[v.size() / 2]);
  };
  std::array<float, kMethods> sel_ms{}, att_ms{}, host_ms{};
  std::array<cudaEvent_t, 2 + 2 * kMethods> ev;
  for (auto& e : ev) COMPACT_CUDA_CHECK(cudaEventCreate(&e));
  std::vector<std::uint16_t> q_chunk;
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> csv(nullptr, &std::fclose);
  if (const char* path = std::getenv("COMPACT_PREFILL_CSV")) {
    csv.reset(std::fopen(path, "a"));
    if (!csv) std::fprintf(stderr, "prefill_bench: cannot append to %s\n", path);
  }
  r.chunks = P / C;
  for (int i = -1; i < r.chunks; ++i) {  // i = -1: an untimed warm-up pass over chunk 0
    const int ci = i < 0 ? 0 : i;
    const bool last = ci == r.chunks - 1;
    for (int b = 0; b < B; ++b) {
      kv[b] = (ci + 1) * C;
      fin[b] = last;
    }
    d_kv.upload(kv);
    d_fin.upload(fin);
    q_chunk = w.queries(ci * C, (ci + 1) * C);
    for (int b = 0; b < B; ++b) {
      COMPACT_CUDA_CHECK(cudaMemcpy(q.get() + b * C * row_q, q_chunk.data(), C * row_q * 2,
                                    cudaMemcpyHostToDevice));
      COMPACT_CUDA_CHECK(cudaMemcpy(k_new.get() + b * C * row_kv, k_all.get() + ci * C * row_kv,
                                    C * row_kv * 2, cudaMemcpyDeviceToDevice));
      COMPACT_CUDA_CHECK(cudaMemcpy(v_new.get() + b * C * row_kv, v_all.get() + ci * C * row_kv,
                                    C * row_kv * 2, cudaMemcpyDeviceToDevice));
    }
    host_lead();
    COMPACT_CUDA_CHECK(cudaEventRecord(ev[0]));
    append_kv_device(c, l, kv_chunk, cache);
    COMPACT_CUDA_CHECK(cudaEventRecord(ev[1]));
    COMPACT_CUDA_CHECK(cudaEventSynchronize(ev[1]));
    const float append_ms = elapsed(ev[0], ev[1]);
    for (int m = 0; m < kMethods; ++m) {
      std::vector<float> sel, att, host;
      for (int rep = 0; rep < (i < 0 ? 1 : reps); ++rep) {
        host_lead();  // the host enqueues plan and run while the GPU spins
        COMPACT_CUDA_CHECK(cudaEventRecord(ev[2]));
        const auto h0 = std::chrono::steady_clock::now();
        plan(m);
        const auto h1 = std::chrono::steady_clock::now();
        COMPACT_CUDA_CHECK(cudaEventRecord(ev[3]));
        run(m);
        COMPACT_CUDA_CHECK(cudaEventRecord(ev[4]));
        COMPACT_CUDA_CHECK(cudaEventSynchronize(ev[4]));
        sel.push_back(elapsed(ev[2], ev[3]));
        att.push_back(elapsed(ev[3], ev[4]));
        host.push_back(std::chrono::duration<float, std::milli>(h1 - h0).count());
      }
      sel_ms[m] = median(sel);
      att_ms[m] = median(att);
      host_ms[m] = median(host);
    }
    if (i < 0) continue;
    r.append_ms += append_ms;
    const ChunkBatch hb = [&] {
      ChunkBatch h = batch;
      h.cu_seqlens_q = cu.data();
      h.kv_lens = kv.data();
      return h;
    }();
    for (int m = 0; m < kMethods; ++m) {
      const float sel = sel_ms[m];
      const float att = att_ms[m];
      MethodTotals& t = r.m[m];
      t.select_ms += sel;
      t.attn_ms += att;
      t.plan_host_ms += host_ms[m];
      if (last) {
        t.last_select_ms = sel;
        t.last_attn_ms = att;
      }
      const TableDensity d = table_density(c, hb, tables(m), Space::device);
      t.selected += d.selected;
      t.dense += d.dense;
      if (csv) {
        std::fprintf(csv.get(), "%s,%d,%d,%d,%s,%.5f,%.5f,%.0f,%.0f,%.5f\n", sh.preset.name, P, C,
                     i, method_name(m).c_str(), sel, att, static_cast<double>(d.selected),
                     static_cast<double>(d.dense), host_ms[m]);
      }
    }
    if (last) {
      const std::vector<std::uint16_t> ref = out[0].download();
      for (int m = 1; m < kMethods; ++m) {
        const std::vector<std::uint16_t> got = out[m].download();
        double e2 = 0, r2 = 0;
        for (std::size_t e = 0; e < ref.size(); ++e) {
          const double g = load_float(got.data(), c.dtype, e),
                       x = load_float(ref.data(), c.dtype, e);
          e2 += (g - x) * (g - x);
          r2 += x * x;
        }
        r.m[m].last_rel_err = std::sqrt(e2 / std::max(r2, 1e-30));
      }
      if (const char* dir = std::getenv("COMPACT_SELECTION_DIR")) {
        // The 2D FlashPrefill mask of the last chunk, [B][Hq][nqb][nkb], for FlexAttention.
        const BlockMask mk = sparse2d.mask_view(wsp(2));
        std::vector<std::uint32_t> bits(mk.num_words());
        COMPACT_CUDA_CHECK(
            cudaMemcpy(bits.data(), mk.bits, bits.size() * 4, cudaMemcpyDeviceToHost));
        const int nqb = ceil_div(C, c.block_q), nkb = ceil_div(P, c.block_k);
        std::vector<std::uint8_t> sel(static_cast<std::size_t>(B) * Hq * nqb * nkb);
        BlockMask hm = mk;
        hm.bits = bits.data();
        std::size_t at = 0;
        for (int b = 0; b < B; ++b)
          for (int h = 0; h < Hq; ++h)
            for (int qb = 0; qb < nqb; ++qb)
              for (int kb = 0; kb < nkb; ++kb) sel[at++] = hm.test(b, h, qb, kb);
        write_npy_bool(std::string(dir) + "/selection_" + sh.preset.name + "_" + std::to_string(P) +
                           "_" + std::to_string(C) + ".npy",
                       sel, {B, Hq, nqb, nkb});
      }
    }
  }
  for (auto& e : ev) COMPACT_CUDA_CHECK(cudaEventDestroy(e));
  return results.emplace(key, r).first->second;
}

void BM_ChunkedPrefill(benchmark::State& state, Shape sh, int method) {
  const PrefillResult* r = nullptr;
  for (auto _ : state) r = &run_prefill(sh);
  const MethodTotals& t = r->m[method];
  const double total = t.select_ms + t.attn_ms;
  state.SetIterationTime(total * 1e-3);
  state.counters["ms"] = total;
  state.counters["total_ms"] = total;
  state.counters["select_ms"] = t.select_ms;
  state.counters["attn_ms"] = t.attn_ms;
  state.counters["last_chunk_ms"] = t.last_select_ms + t.last_attn_ms;
  state.counters["last_select_ms"] = t.last_select_ms;
  state.counters["density"] = t.dense > 0 ? t.selected / t.dense : 0;
  state.counters["plan_host_ms"] = t.plan_host_ms;
  state.counters["append_ms"] = r->append_ms;
  state.counters["chunks"] = r->chunks;
  if (method > 0) state.counters["last_rel_err_vs_dense"] = t.last_rel_err;
  state.counters["generate_s"] = r->generate_s;
}

const int kRegistered = [] {
  std::vector<Shape> shapes;
  for (int p : {32768, 65536, 131072}) shapes.push_back({kTP2, p, 1024});
  shapes.push_back({kTP2, 131072, 512});
  shapes.push_back({kTP2, 131072, 2048});
  for (int p : {32768, 65536, 131072}) shapes.push_back({kTP1, p, 1024});
  for (const Shape& sh : shapes) {
    for (int m = 0; m < kMethods; ++m) {
      const std::string name = "BM_ChunkedPrefill/" + method_name(m) + "/" + sh.preset.name +
                               "/kv:" + std::to_string(sh.prompt) +
                               "/chunk:" + std::to_string(sh.chunk);
      benchmark::RegisterBenchmark(name.c_str(), BM_ChunkedPrefill, sh, m)
          ->UseManualTime()
          ->Iterations(1)
          ->Unit(benchmark::kMillisecond);
    }
  }
  return 0;
}();

}  // namespace

COMPACT_BENCHMARK_MAIN()
