// A user-written mask policy plugged into the engine: "recent chunks" keeps, for every query
// block, the sink block and the KV blocks of the last `chunks` chunks before it. It models
// compact::MaskSource with its own host build and device kernel (the RuleMask helper would do
// this in 10 lines; this shows the whole contract).
#include <compact/compact.cuh>

#include <cstdio>

#include "../common/example_step.hpp"

// ---- the policy: about 30 lines ---------------------------------------------------------
struct RecentChunksRule {
  int chunk_tokens = 512;  // the engine's prefill chunk size
  int chunks = 2;          // how many recent chunks each query block keeps
  COMPACT_HOST_DEVICE bool keep(const compact::MaskRowContext& row, int kb, int block_k) const {
    const int recent_from = row.seq.pos() - chunks * chunk_tokens;  // first recent position
    return kb == 0 || (kb + 1) * block_k > recent_from;
  }
};

template <class Rule>
__global__ void recent_chunks_kernel(compact::MaskArgs a, Rule rule) {
  const int row = blockIdx.x, qb = row % a.mask.max_q_blocks, bh = row / a.mask.max_q_blocks;
  const int h = bh % a.mask.num_heads, b = bh / a.mask.num_heads;
  if (b >= a.batch.num_seqs || qb * a.config.block_q >= compact::seq_info(a.batch, b).q_len) return;
  const compact::MaskRowContext ctx = compact::detail::mask_row_context(a, b, h, qb);
  for (int w = threadIdx.x; w < compact::ceil_div(ctx.num_kv_blocks, 32); w += blockDim.x) {
    std::uint32_t bits = 0;
    for (int kb = w * 32; kb < min(w * 32 + 32, ctx.span.last_kb + 1); ++kb) {  // never the future
      if (kb >= ctx.span.chunk_first_kb || rule.keep(ctx, kb, a.config.block_k))
        bits |= 1u << (kb % 32);
    }
    a.mask.row(b, h, qb)[w] = bits;
  }
}

struct RecentChunksMask {
  RecentChunksRule rule;
  void build_device(const compact::MaskArgs& a, cudaStream_t stream) const {
    const int rows = a.mask.max_batch * a.mask.num_heads * a.mask.max_q_blocks;
    recent_chunks_kernel<<<rows, 32, 0, stream>>>(a, rule);
    COMPACT_CHECK_LAUNCH("recent_chunks_kernel");
  }
  void build_host(const compact::MaskArgs& a) const {  // same bits, on the host
    for (int b = 0; b < a.batch.num_seqs; ++b)
      for (int h = 0; h < a.config.num_q_heads; ++h)
        for (int qb = 0; qb * a.config.block_q < compact::seq_info(a.batch, b).q_len; ++qb) {
          const compact::MaskRowContext ctx = compact::detail::mask_row_context(a, b, h, qb);
          for (int kb = 0; kb < ctx.num_kv_blocks; ++kb) {
            const bool on = kb <= ctx.span.last_kb &&
                            (kb >= ctx.span.chunk_first_kb || rule.keep(ctx, kb, a.config.block_k));
            std::uint32_t& word = a.mask.row(b, h, qb)[kb / 32];
            word = (word & ~(1u << (kb % 32))) | (static_cast<std::uint32_t>(on) << (kb % 32));
          }
        }
  }
};
static_assert(compact::MaskSource<RecentChunksMask>, "RecentChunksMask must model MaskSource");
// ------------------------------------------------------------------------------------------

int main() {
  compact::AttentionConfig config;
  config.num_q_heads = 16;
  config.num_kv_heads = 4;
  config.head_dim = 128;
  config.block_q = 128;
  config.block_k = 128;
  config.page_size = 64;
  compact::PlanLimits limits;
  limits.max_batch = 2;
  limits.max_chunk = 512;
  limits.max_kv_len = 4096;
  const example::HostStep step(config, limits, {512, 300}, {4096, 2500}, 7);
  const RecentChunksMask mask{RecentChunksRule{512, 2}};
  double density = 0;
  if (example::have_gpu()) {
    using Engine =
        compact::Engine<RecentChunksMask, compact::BlockUnion<>, compact::PagedFlashExecutor<>>;
    const example::DeviceStep dev(step);
    float ms = 0;
    const auto out = example::run_on_device(Engine(config, limits, mask), dev, &density, &ms);
    // The truth: the same policy on the host reference engine.
    using HostEngine =
        compact::Engine<RecentChunksMask, compact::BlockUnion<>, compact::ReferenceExecutor>;
    double host_density = 0;
    const auto ref = example::run_on_host(HostEngine(config, limits, mask), step, &host_density);
    std::printf(
        "RecentChunksMask on the GPU: table density %.3f (host %.3f), plan+run %.3f ms, "
        "max |device - host reference| %.4f\n",
        density, host_density, ms, example::max_abs_diff(out, ref));
    return 0;
  }
  std::printf("No GPU here: running RecentChunksMask through the host reference policies.\n");
  using HostEngine =
      compact::Engine<RecentChunksMask, compact::BlockUnion<>, compact::ReferenceExecutor>;
  example::run_on_host(HostEngine(config, limits, mask), step, &density);
  std::printf("RecentChunksMask + BlockUnion: table density %.3f over 2 sequences\n", density);
  return 0;
}
