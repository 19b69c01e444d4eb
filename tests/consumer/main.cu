// Builds an engine from the installed headers; running it is not needed for the test.
#include <compact/compact.cuh>

#include <cstdio>

int main() {
  compact::AttentionConfig config;
  config.num_q_heads = 16;
  config.num_kv_heads = 4;
  compact::PlanLimits limits;
  limits.max_batch = 8;
  compact::Engine<compact::DenseMask, compact::BlockUnion<>, compact::ReferenceExecutor> engine(
      config, limits);
  std::printf("workspace: %zu bytes\n", engine.workspace_bytes());
  return 0;
}
