// Device union passes equal the host reference exactly (indptr, every entry, last-block tokens)
// on fresh random masks: every union, GQA shape, execution group, block and page size, ragged
// batches up to 16 sequences and 128K tokens, densities from always-on only to full. Outputs and
// workspace are poisoned first, so anything left unwritten or written past its end shows.
#include <doctest/doctest.h>

#include <cstddef>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>

#include "../support/device_buffer.cuh"
#include "../support/seed.hpp"
#include "compact/union/table_union.cuh"
#include "union_masks.hpp"

using namespace compact;

static_assert(DeviceUnionStrategy<BlockUnion<>> && DeviceUnionStrategy<QBlockUnion<>> &&
              DeviceUnionStrategy<GroupUnion<>> && DeviceUnionStrategy<NoUnion<>>);
static_assert(HasWorkspaceBytes<BlockUnion<>>);

namespace {

/// Small CTAs and windows: every loop of the passes (several count windows per table, several
/// emit windows, several scan tiles) runs more than once on test-sized problems.
struct TinyTuning {
  static constexpr int kThreads = 32;
  static constexpr int kStepWords = 64;
  static constexpr int kLoadBatch = 3;
  static constexpr int kScanThreads = 32;
  static constexpr int kScanItems = 3;
};
static_assert(UnionTuningPolicy<TinyTuning>);

constexpr std::size_t kGuardBytes = 4096;
constexpr std::uint8_t kGuardByte = 0xa5;
constexpr std::int32_t kPoison = -1;  // what fill_bytes(0xff) leaves in an int32

/// First index where two arrays differ, or -1.
long long first_mismatch(const std::vector<std::int32_t>& a, const std::vector<std::int32_t>& b,
                         std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) {
    if (a[i] != b[i]) return static_cast<long long>(i);
  }
  return -1;
}

/// The host reference tables of one step.
struct HostTables {
  std::vector<std::int32_t> indptr, indices, last, split;
  explicit HostTables(const TableShape& s)
      : indptr(s.num_tables() + 1, -7),
        indices(s.capacity(), -7),
        last(s.num_tables(), -7),
        split(s.max_batch, -7) {}
  BlockTables view(const TableShape& s) {
    BlockTables v{s, indptr.data(), indices.data(), last.data()};
    if (s.tail_split) v.q_split = split.data();
    return v;
  }
};

/// A tail hint (BlockMask::tail_q_blocks) for half the masks, out-of-range values included,
/// derived from the mask's random bits; empty for no hint.
std::vector<std::int32_t> tail_hint_for(const std::vector<std::uint32_t>& bits, int max_batch) {
  std::vector<std::int32_t> hint;
  if (bits.empty() || (bits[bits.size() / 2] & 2u) == 0) return hint;
  for (int b = 0; b < max_batch; ++b) {
    hint.push_back(static_cast<int>(bits[(b * 7919u) % bits.size()] % 7u) - 2);
  }
  return hint;
}

/// Device lengths, mask, tables and workspace of one step. The workspace is exactly
/// workspace_bytes() long, followed by guard bytes that must survive.
struct DeviceUnion {
  TableShape shape;
  std::size_t ws_bytes = 0;
  test::DeviceBuffer<std::int32_t> cu_seqlens, kv_lens, indptr, indices, last, split, tail;
  test::DeviceBuffer<std::uint32_t> bits;
  test::DeviceBuffer<std::uint8_t> ws;
  std::vector<std::int32_t> hint;  ///< The mask's tail hint on the host (empty: none).

  template <class U>
  DeviceUnion(const U& u, const test::UnionStep& step)
      : shape(u.table_shape(step.config, step.limits)),
        ws_bytes(u.workspace_bytes(step.config, step.limits)),
        cu_seqlens(step.cu_seqlens),
        kv_lens(step.kv_lens),
        indptr(shape.num_tables() + 1),
        indices(shape.capacity()),
        last(shape.num_tables()),
        split(shape.max_batch),
        tail(shape.max_batch),
        bits(BlockMask::shape_for(step.config, step.limits).num_words()),
        ws(ws_bytes + kGuardBytes) {}

  /// Uploads the mask bits and (when not empty) a tail hint.
  void set_mask(const std::vector<std::uint32_t>& mask_bits, std::vector<std::int32_t> tail_hint) {
    bits.upload(mask_bits);
    hint = std::move(tail_hint);
    if (!hint.empty()) tail.upload(hint);
  }
  void poison() {
    indptr.fill_bytes(0xff);
    indices.fill_bytes(0xff);
    last.fill_bytes(0xff);
    split.fill_bytes(0xff);
    ws.fill_bytes(kGuardByte);  // stale bitmaps full of set bits, and the guard
  }
  UnionArgs args(const test::UnionStep& step) const {
    ChunkBatch batch = step.batch();
    batch.cu_seqlens_q = cu_seqlens.get();
    batch.kv_lens = kv_lens.get();
    BlockMask mask = BlockMask::shape_for(step.config, step.limits);
    mask.bits = bits.get();
    if (!hint.empty()) mask.tail_q_blocks = tail.get();
    BlockTables tables{shape, indptr.get(), indices.get(), last.get()};
    if (shape.tail_split) tables.q_split = split.get();
    return UnionArgs{step.config, step.limits, batch, mask, tables, Workspace{ws.get(), ws_bytes}};
  }
};

/// Compares the device tables with the host reference for `step` and `mask_bits`. With
/// `poisoned_tail`, the index slots past the total must still hold the poison written before the
/// build (false when an earlier, larger build legitimately left entries there: CSR readers stop
/// at indptr).
void check_equal(const test::UnionStep& step, const std::vector<std::uint32_t>& mask_bits,
                 DeviceUnion& d, bool poisoned_tail = true) {
  const TableShape& s = d.shape;
  HostTables want(s);
  std::vector<std::uint32_t> bits = mask_bits;
  BlockMask mask = BlockMask::shape_for(step.config, step.limits);
  mask.bits = bits.data();
  std::vector<std::int32_t> hint = d.hint;
  if (!hint.empty()) mask.tail_q_blocks = hint.data();
  reference::build_tables(
      UnionArgs{step.config, step.limits, step.batch(), mask, want.view(s), {}});
  const std::size_t total = static_cast<std::size_t>(want.indptr[s.num_tables()]);
  if (s.tail_split) {
    const std::vector<std::int32_t> split = d.split.download();
    const long long bad_split = first_mismatch(split, want.split, split.size());
    INFO("q_split mismatch at sequence ", bad_split, ": device ",
         bad_split >= 0 ? split[bad_split] : 0, ", host ",
         bad_split >= 0 ? want.split[bad_split] : 0, " (hint given: ", !hint.empty(), ")");
    REQUIRE(bad_split == -1);
  }

  const std::vector<std::int32_t> indptr = d.indptr.download();
  const std::vector<std::int32_t> last = d.last.download();
  // Entries up to the end plus a stretch past it, which must still hold the poison.
  const std::size_t tail = std::min<std::size_t>(s.capacity() - total, 4096);
  std::vector<std::int32_t> indices(total + tail);
  if (!indices.empty()) {
    COMPACT_CUDA_CHECK(cudaMemcpy(indices.data(), d.indices.get(),
                                  indices.size() * sizeof(std::int32_t), cudaMemcpyDeviceToHost));
  }
  std::vector<std::uint8_t> guard(kGuardBytes);
  COMPACT_CUDA_CHECK(
      cudaMemcpy(guard.data(), d.ws.get() + d.ws_bytes, kGuardBytes, cudaMemcpyDeviceToHost));

  const long long bad_ptr = first_mismatch(indptr, want.indptr, indptr.size());
  INFO("indptr mismatch at ", bad_ptr, " of ", s.num_tables() + 1, ": device ",
       bad_ptr >= 0 ? indptr[bad_ptr] : 0, ", host ", bad_ptr >= 0 ? want.indptr[bad_ptr] : 0);
  REQUIRE(bad_ptr == -1);
  const long long bad_last = first_mismatch(last, want.last, last.size());
  INFO("last_block_tokens mismatch at table ", bad_last, ": device ",
       bad_last >= 0 ? last[bad_last] : 0, ", host ", bad_last >= 0 ? want.last[bad_last] : 0);
  REQUIRE(bad_last == -1);
  const long long bad_idx = first_mismatch(indices, want.indices, total);
  INFO("indices mismatch at ", bad_idx, " of ", total, ": device ",
       bad_idx >= 0 ? indices[bad_idx] : 0, ", host ", bad_idx >= 0 ? want.indices[bad_idx] : 0);
  REQUIRE(bad_idx == -1);
  if (poisoned_tail) {
    std::size_t past_end_written = 0;
    for (std::size_t i = total; i < indices.size(); ++i) past_end_written += indices[i] != kPoison;
    CHECK(past_end_written == 0);
  }
  std::size_t guard_written = 0;
  for (std::uint8_t g : guard) guard_written += g != kGuardByte;
  CHECK(guard_written == 0);
}

/// Poison, build on the device, compare.
template <class U>
void check_union(const U& u, const test::UnionStep& step, const std::vector<std::uint32_t>& bits,
                 cudaStream_t stream) {
  DeviceUnion d(u, step);
  d.set_mask(bits, tail_hint_for(bits, step.limits.max_batch));
  d.poison();
  u.build_device(d.args(step), stream);
  COMPACT_CUDA_CHECK(cudaStreamSynchronize(stream));
  check_equal(step, bits, d);
}

/// Runs all four unions (exec group as in the config) on one step and mask.
template <class Tuning>
void check_all_unions(const test::UnionStep& step, const std::vector<std::uint32_t>& bits,
                      cudaStream_t stream) {
  {
    INFO("union: BlockUnion");
    check_union(BlockUnion<Tuning>{}, step, bits, stream);
  }
  {
    INFO("union: QBlockUnion");
    check_union(QBlockUnion<Tuning>{}, step, bits, stream);
  }
  {
    INFO("union: GroupUnion");
    check_union(GroupUnion<Tuning>{}, step, bits, stream);
  }
  {
    INFO("union: NoUnion");
    check_union(NoUnion<Tuning>{}, step, bits, stream);
  }
}

struct Heads {
  int hq, hkv;
};

/// A random execution group: the GQA group (0) or, when `smaller` and one exists, a proper divisor.
int random_exec_group(int gqa_group, bool smaller, std::mt19937_64& rng) {
  std::vector<int> divisors;
  for (int e = 1; e < gqa_group; ++e) {
    if (gqa_group % e == 0) divisors.push_back(e);
  }
  if (!smaller || divisors.empty()) return 0;
  return divisors[rng() % divisors.size()];
}

/// A ragged step: num_seqs sequences, limits laid out for up to two more; chunks in
/// [0, max_chunk] (sometimes empty), KV lengths in [chunk, max_kv] (sometimes exactly max_kv).
test::UnionStep random_step(const AttentionConfig& c, int num_seqs, int max_chunk, int max_kv,
                            std::mt19937_64& rng) {
  test::UnionStep st;
  st.config = c;
  st.limits.max_batch = num_seqs + static_cast<int>(rng() % 3);
  st.limits.max_chunk = max_chunk;
  st.limits.max_kv_len = max_kv;
  for (int b = 0; b < num_seqs; ++b) {
    const int roll = static_cast<int>(rng() % 16);
    const int q = roll == 0 ? 0 : std::uniform_int_distribution<int>(1, max_chunk)(rng);
    const int kv = roll == 0 && rng() % 2 ? 0
                   : roll <= 3            ? max_kv
                                          : std::uniform_int_distribution<int>(q, max_kv)(rng);
    st.add_seq(q, std::max(kv, q));
  }
  st.config.validate();
  st.limits.validate();
  return st;
}

/// A mask kind and density: always-on only, empty, full, or random (skewed to sparse).
struct Density {
  test::MaskKind kind;
  double density;
};
Density pick_density(int it, std::mt19937_64& rng) {
  switch (it % 8) {
    case 0:
      return {test::MaskKind::structured, 0.0};  // only the always-on blocks
    case 1:
      return {test::MaskKind::random, 1.0};  // every block
    case 2:
      return {test::MaskKind::random, 0.0};  // nothing at all
    case 3:
      return {test::MaskKind::structured, 0.1};  // the realistic ~10% regime
    default: {
      const double u = std::uniform_real_distribution<double>(0, 1)(rng);
      return {rng() % 2 ? test::MaskKind::random : test::MaskKind::structured, u * u};
    }
  }
}

}  // namespace

TEST_CASE("device unions equal the host reference: GQA shapes x pages x Bk, up to 16 x 128K") {
  const Heads heads[] = {{32, 8}, {16, 4}, {8, 8}, {28, 4}};
  const int pages[] = {16, 64, 128, 256};
  const int blocks[] = {64, 128};
  auto rng = test::rng_for(6001);
  cudaStream_t stream;
  COMPACT_CUDA_CHECK(cudaStreamCreate(&stream));
  for (int it = 0; it < 64; ++it) {
    AttentionConfig c;
    c.num_q_heads = heads[it % 4].hq;
    c.num_kv_heads = heads[it % 4].hkv;
    c.head_dim = 8;  // never read: the union sees lengths and the mask only
    c.page_size = pages[(it / 4) % 4];
    c.block_k = blocks[(it / 16) % 2];
    c.block_q = rng() % 2 ? 64 : 128;
    c.exec_group_size = random_exec_group(c.gqa_group(), it % 2 == 1, rng);
    const bool long_context = it >= 32;  // the second half runs at the 128K limit
    const int num_seqs = 1 + static_cast<int>(rng() % 16);
    const int max_chunk = 1 + static_cast<int>(rng() % 1024);
    const int max_kv = long_context ? 131072 : max_chunk + static_cast<int>(rng() % 20000);
    const test::UnionStep step = random_step(c, num_seqs, max_chunk, max_kv, rng);
    const Density den = pick_density(it, rng);
    const std::vector<std::uint32_t> bits = test::make_union_mask(step, den.kind, den.density, rng);
    CAPTURE(it);
    CAPTURE(c.num_q_heads);
    CAPTURE(c.num_kv_heads);
    CAPTURE(c.exec_group_size);
    CAPTURE(c.page_size);
    CAPTURE(c.block_k);
    CAPTURE(c.block_q);
    CAPTURE(num_seqs);
    CAPTURE(step.limits.max_batch);
    CAPTURE(max_chunk);
    CAPTURE(max_kv);
    CAPTURE(den.density);
    check_all_unions<UnionTuning>(step, bits, stream);
  }
  COMPACT_CUDA_CHECK(cudaStreamDestroy(stream));
}

TEST_CASE("device unions with tiny CTAs: multi-window count, emit and scan; r up to 64") {
  const Heads heads[] = {{32, 8}, {16, 4}, {8, 8}, {28, 4}};
  const int pages[] = {16, 64, 256, 1024};
  auto rng = test::rng_for(6002);
  for (int it = 0; it < 24; ++it) {
    AttentionConfig c;
    c.num_q_heads = heads[it % 4].hq;
    c.num_kv_heads = heads[it % 4].hkv;
    c.head_dim = 8;
    c.page_size = pages[(it / 4) % 4];
    c.block_k = it % 3 == 0 ? 64 : 16;  // Bk 16: 4,096+ blocks, several 64-word windows per row
    c.block_q = 64;
    c.exec_group_size = random_exec_group(c.gqa_group(), it % 2 == 0, rng);
    const int num_seqs = 1 + static_cast<int>(rng() % 8);
    const int max_chunk = 1 + static_cast<int>(rng() % 512);
    const int max_kv = max_chunk + static_cast<int>(rng() % 90000);
    const test::UnionStep step = random_step(c, num_seqs, max_chunk, max_kv, rng);
    const Density den = pick_density(it, rng);
    const std::vector<std::uint32_t> bits = test::make_union_mask(step, den.kind, den.density, rng);
    CAPTURE(it);
    CAPTURE(c.num_q_heads);
    CAPTURE(c.exec_group_size);
    CAPTURE(c.page_size);
    CAPTURE(c.block_k);
    CAPTURE(num_seqs);
    CAPTURE(max_kv);
    CAPTURE(den.density);
    check_all_unions<TinyTuning>(step, bits, nullptr);
  }
}

TEST_CASE("a smaller step on the buffers of a larger one leaves nothing stale") {
  auto rng = test::rng_for(6003);
  AttentionConfig c;
  c.num_q_heads = 16;
  c.num_kv_heads = 4;
  c.head_dim = 8;
  c.page_size = 16;
  test::UnionStep big = random_step(c, 6, 700, 30000, rng);
  test::UnionStep small = random_step(c, 2, 700, 30000, rng);
  small.limits = big.limits;  // the same engine serves both
  for (bool group_union : {true, false}) {
    CAPTURE(group_union);
    const auto run = [&](const auto& u) {
      DeviceUnion d(u, big);
      d.poison();
      const std::vector<std::uint32_t> full =
          test::make_union_mask(big, test::MaskKind::random, 1.0, rng);
      d.bits.upload(full);
      u.build_device(d.args(big), nullptr);
      COMPACT_CUDA_CHECK(cudaDeviceSynchronize());
      check_equal(big, full, d);
      // Same tables and workspace, no poison in between: only the new step may show.
      const std::vector<std::uint32_t> sparse =
          test::make_union_mask(small, test::MaskKind::structured, 0.05, rng);
      d.bits.upload(sparse);
      d.cu_seqlens.upload(small.cu_seqlens);  // the buffers hold the larger step's lengths
      d.kv_lens.upload(small.kv_lens);
      u.build_device(d.args(small), nullptr);
      COMPACT_CUDA_CHECK(cudaDeviceSynchronize());
      check_equal(small, sparse, d, /*poisoned_tail=*/false);
    };
    if (group_union) {
      run(BlockUnion<>{});
    } else {
      run(NoUnion<>{});
    }
  }
}

TEST_CASE("the passes replay from a CUDA graph with new lengths and masks") {
  auto rng = test::rng_for(6004);
  AttentionConfig c;
  c.num_q_heads = 32;
  c.num_kv_heads = 8;
  c.head_dim = 8;
  c.page_size = 64;
  const int num_seqs = 5;
  test::UnionStep step = random_step(c, num_seqs, 1024, 65536, rng);
  const BlockUnion<> u{};
  DeviceUnion d(u, step);
  // A tail hint from the start, so its pointer is part of the captured launches.
  d.set_mask(std::vector<std::uint32_t>(d.bits.size(), 0u),
             std::vector<std::int32_t>(step.limits.max_batch, 1));
  cudaStream_t stream;
  COMPACT_CUDA_CHECK(cudaStreamCreate(&stream));
  cudaGraph_t graph;
  COMPACT_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
  u.build_device(d.args(step), stream);  // only num_seqs (fixed) is baked in besides pointers
  COMPACT_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
  cudaGraphExec_t exec;
  COMPACT_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
  for (int replay = 0; replay < 3; ++replay) {
    CAPTURE(replay);
    test::UnionStep next = random_step(c, num_seqs, 1024, 65536, rng);
    next.limits = step.limits;
    const std::vector<std::uint32_t> bits =
        test::make_union_mask(next, test::MaskKind::structured, 0.1 * replay, rng);
    std::vector<std::int32_t> hint(step.limits.max_batch);
    for (auto& v : hint) v = static_cast<int>(rng() % 4);
    d.poison();
    d.set_mask(bits, hint);
    d.cu_seqlens.upload(next.cu_seqlens);
    d.kv_lens.upload(next.kv_lens);
    COMPACT_CUDA_CHECK(cudaGraphLaunch(exec, stream));
    COMPACT_CUDA_CHECK(cudaStreamSynchronize(stream));
    check_equal(next, bits, d);
  }
  COMPACT_CUDA_CHECK(cudaGraphExecDestroy(exec));
  COMPACT_CUDA_CHECK(cudaGraphDestroy(graph));
  COMPACT_CUDA_CHECK(cudaStreamDestroy(stream));
}

TEST_CASE("build_device rejects a short workspace and a foreign table layout") {
  auto rng = test::rng_for(6005);
  AttentionConfig c;
  c.num_q_heads = 8;
  c.num_kv_heads = 2;
  c.head_dim = 8;
  const test::UnionStep step = random_step(c, 3, 300, 5000, rng);
  const BlockUnion<> u{};
  DeviceUnion d(u, step);
  UnionArgs short_ws = d.args(step);
  short_ws.scratch.bytes = d.ws_bytes - 1;
  CHECK_THROWS_WITH_AS(u.build_device(short_ws, nullptr), doctest::Contains("workspace.bytes"),
                       Error);
  UnionArgs foreign = d.args(step);
  foreign.tables.shape = NoUnion<>{}.table_shape(c, step.limits);
  CHECK_THROWS_WITH_AS(u.build_device(foreign, nullptr), doctest::Contains("tables.shape"), Error);
  UnionArgs no_scratch = d.args(step);
  no_scratch.scratch = Workspace{};
  CHECK_THROWS_WITH_AS(u.build_device(no_scratch, nullptr), doctest::Contains("scratch"), Error);
  // The size is a function of the limits alone (no device query): same on every call.
  CHECK(u.workspace_bytes(c, step.limits) == d.ws_bytes);
  CHECK(d.ws_bytes >= static_cast<std::size_t>(d.shape.num_tables()) *
                          ceil_div(d.shape.max_entries, 32) * sizeof(std::uint32_t));
}
