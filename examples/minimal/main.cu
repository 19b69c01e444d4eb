// Minimal engine: one chunked-prefill step of a small ragged batch through
// Engine<SinkLocalMask, BlockUnion, Executor>, compared with dense attention.
//
// With a GPU the executor is PagedFlashExecutor (mask, union and attention on the device) and the
// dense device result is checked against the double-precision host reference. Without one, the
// same step runs on the host reference policies, and the example says so.
#include <compact/compact.cuh>

#include <cstdio>

#include "../common/example_step.hpp"

int main() {
  compact::AttentionConfig config;  // a small GQA layer: 8 query heads over 2 KV heads
  config.num_q_heads = 8;
  config.num_kv_heads = 2;
  config.head_dim = 64;
  config.dtype = compact::DType::bf16;
  config.block_q = 64;
  config.block_k = 64;
  config.page_size = 16;
  compact::PlanLimits limits;  // the largest step the engines will serve
  limits.max_batch = 3;
  limits.max_chunk = 256;
  limits.max_kv_len = 2048;

  // Three sequences mid-prefill: chunk lengths and KV lengths (chunk included), unaligned.
  const example::HostStep step(config, limits, {256, 100, 37}, {2048, 1500, 777}, 2026);
  const compact::SinkLocalMask a_shape(1, 4);  // sink block + 4-block local window

  if (example::have_gpu()) {
    using Sparse = compact::Engine<compact::SinkLocalMask, compact::BlockUnion<>,
                                   compact::PagedFlashExecutor<>>;
    using Dense =
        compact::Engine<compact::DenseMask, compact::BlockUnion<>, compact::PagedFlashExecutor<>>;
    cudaDeviceProp prop{};
    COMPACT_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    std::printf("CompactAttention minimal example on %s (%d query tokens, 3 sequences).\n",
                prop.name, step.batch().total_q);
    const example::DeviceStep dev(step);
    double sparse_density = 0, dense_density = 0;
    float sparse_ms = 0, dense_ms = 0;
    const auto sparse =
        example::run_on_device(Sparse(config, limits, a_shape), dev, &sparse_density, &sparse_ms);
    const auto dense =
        example::run_on_device(Dense(config, limits), dev, &dense_density, &dense_ms);
    std::vector<__nv_bfloat16> reference(step.out_elems());
    compact::reference::attention(config, step.batch(), step.cache(),
                                  compact::AttentionOutput{reference.data()});
    std::printf(
        "dense  : DenseMask + BlockUnion + PagedFlashExecutor, density %.3f, "
        "plan+run %.3f ms, max |device - host reference| %.4f\n",
        dense_density, dense_ms, example::max_abs_diff(dense, reference));
    std::printf(
        "sparse : SinkLocalMask(1, 4) + BlockUnion + PagedFlashExecutor, density %.3f, "
        "plan+run %.3f ms\n",
        sparse_density, sparse_ms);
    std::printf(
        "max |sparse - dense| over %zu outputs: %.4f (random data has no locality, so "
        "the dropped blocks matter)\n",
        dense.size(), example::max_abs_diff(sparse, dense));
    return 0;
  }

  std::printf(
      "CompactAttention minimal example: no GPU here, running the host reference "
      "policies on a small problem (3 sequences, %d query tokens).\n",
      step.batch().total_q);
  using Sparse =
      compact::Engine<compact::SinkLocalMask, compact::BlockUnion<>, compact::ReferenceExecutor>;
  using Dense =
      compact::Engine<compact::DenseMask, compact::BlockUnion<>, compact::ReferenceExecutor>;
  double sparse_density = 0, dense_density = 0;
  const auto sparse = example::run_on_host(Sparse(config, limits, a_shape), step, &sparse_density);
  const auto dense = example::run_on_host(Dense(config, limits), step, &dense_density);
  std::printf("dense  : DenseMask + BlockUnion, table density %.3f\n", dense_density);
  std::printf(
      "sparse : SinkLocalMask(sink 1, window 4) + BlockUnion, table density %.3f "
      "(sparsity %.1f%%)\n",
      sparse_density, 100.0 * (1.0 - sparse_density));
  std::printf(
      "max |sparse - dense| over %zu outputs: %.4f (random data has no locality, so the "
      "dropped blocks matter)\n",
      dense.size(), example::max_abs_diff(sparse, dense));
  return 0;
}
