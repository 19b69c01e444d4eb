// Host model of the device union passes: the thread-level helpers they share with the device
// (entry rounding, tail masks, table decoding, window arithmetic) replayed sequentially must give
// exactly the host reference tables. The GPU suite checks the kernels themselves.
#include <doctest/doctest.h>

#include <algorithm>
#include <bit>
#include <vector>

#include "../support/seed.hpp"
#include "compact/union/device/entry_bits.hpp"
#include "compact/union/device/union_params.hpp"
#include "compact/union/device/union_tuning.hpp"
#include "compact/union/device/union_workspace.hpp"
#include "compact/union/host_tables.hpp"
#include "union_masks.hpp"

using namespace compact;

namespace {

// Entry word by definition: entry e of the 32 is set iff any KV block [e*r, (e+1)*r) is.
std::uint32_t naive_entry_word(const std::uint32_t* u, int r) {
  std::uint32_t e = 0;
  for (int i = 0; i < 32; ++i) {
    for (int kb = i * r; kb < (i + 1) * r; ++kb) {
      if ((u[kb / 32] >> (kb % 32)) & 1u) e |= 1u << i;
    }
  }
  return e;
}

struct Tables {
  std::vector<std::int32_t> indptr, indices, last, split;
  BlockTables view(const TableShape& s) {
    BlockTables v{s, indptr.data(), indices.data(), last.data()};
    if (s.tail_split) v.q_split = split.data();
    return v;
  }
};

// The three passes, sequentially, with the same helpers and window arithmetic as the kernels.
void model_passes(const UnionArgs& a, int step_words) {
  const UnionWorkspace layout = UnionWorkspace::carve(a.tables.shape, Workspace{});
  std::vector<std::uint32_t> bitmap(
      static_cast<std::size_t>(a.tables.shape.num_tables()) * layout.entry_words_per_table,
      0xffffffffu);  // stale garbage, as in a reused workspace
  const UnionParams p = UnionParams::make(a, bitmap.data(), layout.entry_words_per_table);
  const int tables = p.shape.num_tables();
  const int log2_r = p.log2_blocks_per_entry;
  std::vector<std::uint32_t> window(step_words);
  bool in_bounds = true;
  for (int table = 0; table < tables; ++table) {  // count pass
    const TableRows t = table_rows(p, table);
    if (p.q_split != nullptr && table % p.shape.tables_per_seq() == 0) p.q_split[t.b] = t.q_split;
    p.indptr[table] = 0;
    p.last_block_tokens[table] = 0;
    if (t.empty()) continue;
    int count = 0, last = -1;
    std::uint32_t* bits = p.entry_bits + static_cast<std::size_t>(table) * p.entry_words_per_table;
    for (int w0 = 0; w0 < t.num_words; w0 += step_words) {
      const int n = std::min(step_words, t.num_words - w0);
      const std::uint32_t last_mask =
          w0 + n == t.num_words ? detail::tail_word_mask(t.num_kv_blocks) : ~0u;
      std::fill(window.begin(), window.end(), 0u);
      for (int j = 0; j < t.rows(); ++j) {
        for (int w = 0; w < n; ++w) {
          std::uint32_t v = p.mask.bits[t.row_offset(p.mask, j) + w0 + w];
          if (w == n - 1) v &= last_mask;
          window[w] |= v;
        }
      }
      const int ew0 = w0 >> log2_r;
      const int n_ew = (n + (1 << log2_r) - 1) >> log2_r;
      for (int k = 0; k < n_ew; ++k) {
        const bool ok = ew0 + k < t.num_entry_words && ew0 + k < p.entry_words_per_table &&
                        ((k + 1) << log2_r) <= step_words;
        in_bounds = in_bounds && ok;
        if (!ok) continue;
        const std::uint32_t e = detail::entry_word(window.data() + (k << log2_r), log2_r);
        bits[ew0 + k] = e;
        count += std::popcount(e);
        if (e != 0) last = std::max(last, (ew0 + k) * 32 + 31 - std::countl_zero(e));
      }
    }
    in_bounds = in_bounds && t.num_entry_words <= p.entry_words_per_table;
    const int T = p.shape.table_block_tokens;
    p.indptr[table] = count;
    p.last_block_tokens[table] = count == 0 ? 0 : std::min(T, t.kv_len - last * T);
  }
  int running = 0;  // scan pass
  for (int table = 0; table < tables; ++table) {
    const int c = p.indptr[table];
    p.indptr[table] = running;
    running += c;
  }
  p.indptr[tables] = running;
  for (int table = 0; table < tables; ++table) {  // emit pass
    const int begin = p.indptr[table], count = p.indptr[table + 1] - begin;
    if (count <= 0) continue;
    const TableRows t = table_rows(p, table);
    const std::uint32_t* bits =
        p.entry_bits + static_cast<std::size_t>(table) * p.entry_words_per_table;
    int written = 0;
    for (int w = 0; w < t.num_entry_words && written < count; ++w) {
      for (std::uint32_t b = bits[w]; b != 0; b &= b - 1) {
        p.indices[begin + written++] = w * 32 + std::countr_zero(b);
      }
    }
    in_bounds = in_bounds && written == count;
  }
  CHECK(in_bounds);  // every window read and bitmap word written stayed inside its buffer
}

}  // namespace

TEST_CASE("entry_word rounds r KV blocks to one entry for every r from 1 to 64") {
  auto rng = test::rng_for(3101);
  std::vector<std::uint32_t> u(64);
  for (int log2_r = 0; log2_r <= 6; ++log2_r) {
    const int r = 1 << log2_r;
    for (int it = 0; it < 2000; ++it) {
      for (auto& w : u) {
        // Mix dense, sparse and single-bit words so every entry sees both outcomes.
        const int kind = static_cast<int>(rng() % 4);
        w = kind == 0   ? static_cast<std::uint32_t>(rng())
            : kind == 1 ? static_cast<std::uint32_t>(rng() & rng() & rng() & rng())
            : kind == 2 ? 1u << (rng() % 32)
                        : 0u;
      }
      CAPTURE(r);
      REQUIRE(detail::entry_word(u.data(), log2_r) == naive_entry_word(u.data(), r));
    }
  }
  CHECK(detail::fold_bits(0x80000001u, 5) == 1u);
  CHECK(detail::fold_bits(0x80000000u, 1) == 0x8000u);
  CHECK(detail::tail_word_mask(64) == ~0u);
  CHECK(detail::tail_word_mask(33) == 1u);
}

TEST_CASE("host model of the device passes equals the host reference on random masks") {
  struct Heads {
    int hq, hkv;
  };
  const Heads heads[] = {{32, 8}, {16, 4}, {8, 8}, {28, 4}};
  const int pages[] = {16, 64, 128, 256, 1024};
  auto rng = test::rng_for(3102);
  for (int it = 0; it < 200; ++it) {
    const Heads hd = heads[rng() % 4];
    test::UnionStep step;
    AttentionConfig& c = step.config;
    c.num_q_heads = hd.hq;
    c.num_kv_heads = hd.hkv;
    c.head_dim = 8;
    c.page_size = pages[rng() % 5];
    c.block_k = (rng() % 3 == 0) ? 16 : (rng() % 2 ? 64 : 128);
    c.block_q = rng() % 2 ? 64 : 128;
    const int g = c.gqa_group();
    c.exec_group_size = (rng() % 2 == 0) ? 0 : (g % 2 == 0 ? g / 2 : 1);
    c.validate();
    const int num_seqs = 1 + static_cast<int>(rng() % 4);
    step.limits.max_batch = num_seqs + static_cast<int>(rng() % 3);  // tables past the batch
    step.limits.max_chunk = 1 + static_cast<int>(rng() % 400);
    step.limits.max_kv_len = step.limits.max_chunk + static_cast<int>(rng() % 12000);
    for (int b = 0; b < num_seqs; ++b) {
      const int q = static_cast<int>(rng() % (step.limits.max_chunk + 1));  // 0 included
      step.add_seq(q, std::uniform_int_distribution<int>(q, step.limits.max_kv_len)(rng));
    }
    step.limits.validate();
    const double u = std::uniform_real_distribution<double>(0, 1)(rng);
    const test::MaskKind kind = rng() % 2 ? test::MaskKind::random : test::MaskKind::structured;
    std::vector<std::uint32_t> bits = test::make_union_mask(step, kind, u * u, rng);
    BlockMask mask = BlockMask::shape_for(c, step.limits);
    mask.bits = bits.data();
    std::vector<std::int32_t> tail;  // a tail hint on half the masks, out-of-range values included
    for (int b = 0; b < step.limits.max_batch; ++b) tail.push_back(static_cast<int>(rng() % 7) - 2);
    if (rng() % 2) mask.tail_q_blocks = tail.data();
    const bool union_q = rng() % 2, union_heads = rng() % 2;
    const TableShape shape =
        TableShape::make(c, step.limits, union_heads ? c.group_size() : 1, !union_q, union_q);
    Tables want, got;
    for (Tables* t : {&want, &got}) {
      t->indptr.assign(shape.num_tables() + 1, -7);
      t->indices.assign(shape.capacity(), -7);
      t->last.assign(shape.num_tables(), -7);
      t->split.assign(step.limits.max_batch, -7);
    }
    const ChunkBatch batch = step.batch();
    reference::build_tables(UnionArgs{c, step.limits, batch, mask, want.view(shape), {}});
    // Small windows exercise the multi-window path that long sequences take on the device.
    const int step_words = (rng() % 2) ? UnionTuning::kStepWords : 64;
    CAPTURE(it);
    CAPTURE(c.page_size);
    CAPTURE(c.block_k);
    CAPTURE(union_q);
    CAPTURE(union_heads);
    CAPTURE(step_words);
    model_passes(UnionArgs{c, step.limits, batch, mask, got.view(shape), {}}, step_words);
    REQUIRE(got.indptr == want.indptr);
    REQUIRE(got.last == want.last);
    REQUIRE(got.indices == want.indices);
    REQUIRE(got.split == want.split);
  }
}
