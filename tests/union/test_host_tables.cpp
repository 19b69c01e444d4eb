// Properties of the host union (the reference every device union must equal), on random masks.
#include <doctest/doctest.h>

#include <algorithm>
#include <set>
#include <vector>

#include "../support/random_problem.hpp"
#include "../support/seed.hpp"
#include "compact/union/host_tables.hpp"

using namespace compact;

namespace {

struct Built {
  TableShape shape;
  std::vector<std::int32_t> indptr, indices, last, split;
  std::vector<std::int32_t> tail;  // the mask's tail hint (empty: none)
  BlockTables view() {
    BlockTables v{shape, indptr.data(), indices.data(), last.data()};
    if (shape.tail_split) v.q_split = split.data();
    return v;
  }
};

// `tail`: BlockMask::tail_q_blocks per sequence slot, or empty for no hint.
Built build(const test::HostProblem& p, std::vector<std::uint32_t>& bits, int heads_per_table,
            bool per_q_block, std::vector<std::int32_t> tail = {}) {
  Built t;
  t.shape = TableShape::make(p.config, p.limits, heads_per_table, per_q_block, !per_q_block);
  t.indptr.assign(t.shape.num_tables() + 1, -7);
  t.indices.assign(t.shape.capacity(), -7);
  t.last.assign(t.shape.num_tables(), -7);
  t.split.assign(p.limits.max_batch, -7);
  t.tail = std::move(tail);
  BlockMask mask = BlockMask::shape_for(p.config, p.limits);
  mask.bits = bits.data();
  if (!t.tail.empty()) mask.tail_q_blocks = t.tail.data();
  reference::build_tables(UnionArgs{p.config, p.limits, p.batch(), mask, t.view(), {}});
  return t;
}

// Checks every property of DESIGN.md's "minimal" tables against the mask, independently of how
// the union computes them.
void check_minimal(const test::HostProblem& p, const std::vector<std::uint32_t>& bits, Built& t) {
  const AttentionConfig& c = p.config;
  const TableShape& s = t.shape;
  BlockMask mask = BlockMask::shape_for(c, p.limits);
  mask.bits = const_cast<std::uint32_t*>(bits.data());
  const int T = s.table_block_tokens;
  const int per_entry = T / c.block_k;
  REQUIRE(t.indptr[0] == 0);
  REQUIRE(static_cast<std::size_t>(t.indptr[s.num_tables()]) <= s.capacity());
  const int live = static_cast<int>(p.kv_lens.size());
  for (int b = 0; b < s.max_batch; ++b) {
    const int L = b < live ? p.kv_lens[b] : 0;
    const int n = b < live ? p.cu_seqlens[b + 1] - p.cu_seqlens[b] : 0;
    const int n_qb = ceil_div(n, c.block_q), n_kb = ceil_div(L, c.block_k);
    // Tail split: the hint clamped to [0, n_qb] rows go to table 1; none without a hint.
    const int hint = t.tail.empty() || n_qb == 0 ? 0 : std::clamp(t.tail[b], 0, n_qb);
    const int split = n_qb - hint;
    if (s.tail_split) REQUIRE(t.split[b] == split);
    const int want_q_groups = s.per_q_block  ? ceil_div(p.limits.max_chunk, c.block_q)
                              : s.tail_split ? 2
                                             : 1;
    REQUIRE(s.q_groups == want_q_groups);
    REQUIRE(s.tail_split == !s.per_q_block);  // the library's unions split wherever they union
    for (int hg = 0; hg < s.head_groups; ++hg) {
      for (int qg = 0; qg < s.q_groups; ++qg) {
        const int table = s.table_index(b, hg, qg);
        REQUIRE(t.indptr[table] <= t.indptr[table + 1]);
        // The expected set, straight from the definition.
        std::set<int> want;
        int qb0 = s.per_q_block ? qg : 0;
        int qb1 = s.per_q_block ? std::min(qg + 1, n_qb) : n_qb;
        if (s.tail_split) {
          qb0 = qg == 0 ? 0 : split;
          qb1 = qg == 0 ? split : n_qb;
        }
        // Every row's table (table_of) is this one exactly for the rows in [qb0, qb1).
        for (int qb = 0; qb < n_qb; ++qb) {
          const bool mine = qb >= qb0 && qb < qb1;
          const int h = hg * s.heads_per_table;
          REQUIRE((t.view().table_of(b, h, qb * c.block_q) == table) == mine);
        }
        for (int h = hg * s.heads_per_table; h < (hg + 1) * s.heads_per_table; ++h) {
          for (int qb = qb0; qb < qb1; ++qb) {
            for (int kb = 0; kb < n_kb; ++kb) {
              if (mask.test(b, h, qb, kb)) want.insert(kb / per_entry);
            }
          }
        }
        std::vector<int> got(t.indices.begin() + t.indptr[table],
                             t.indices.begin() + t.indptr[table + 1]);
        for (std::size_t i = 1; i < got.size(); ++i)
          REQUIRE(got[i - 1] < got[i]);                              // ascending, unique
        REQUIRE(std::vector<int>(want.begin(), want.end()) == got);  // covered and nothing else
        const int expect_last = got.empty() ? 0 : std::min(T, L - got.back() * T);
        REQUIRE(t.last[table] == expect_last);
        if (!got.empty()) REQUIRE(got.back() < ceil_div(L, T));
      }
    }
  }
}

}  // namespace

TEST_CASE("host union tables are minimal on 1,000+ random masks for every union and paging") {
  struct Heads {
    int hq, hkv;
  };
  const Heads heads[] = {{32, 8}, {16, 4}, {8, 8}, {28, 4}, {8, 1}};
  const int pages[] = {16, 64, 128, 256};
  const int blocks[] = {64, 128};
  auto rng = test::rng_for(2001);
  int checked = 0;
  for (int it = 0; it < 1100; ++it) {
    const Heads hd = heads[rng() % 5];
    AttentionConfig c;
    c.num_q_heads = hd.hq;
    c.num_kv_heads = hd.hkv;
    c.head_dim = 8;  // no attention here: keep K/V tiny
    c.page_size = pages[rng() % 4];
    c.block_k = blocks[rng() % 2];
    c.block_q = blocks[rng() % 2];
    const int g = c.gqa_group();
    std::vector<int> divisors;
    for (int e = 1; e <= g; ++e) {
      if (g % e == 0) divisors.push_back(e);
    }
    c.exec_group_size = (rng() % 3 == 0) ? divisors[rng() % divisors.size()] : 0;
    c.validate();
    test::ProblemSpec spec;
    spec.num_seqs = 1 + static_cast<int>(rng() % 4);
    spec.max_chunk = 1 + static_cast<int>(rng() % 300);
    spec.max_kv = spec.max_chunk + static_cast<int>(rng() % 4000);
    spec.extra_pages = 0;
    test::HostProblem p = test::make_problem(c, spec, rng);
    p.limits.max_batch = spec.num_seqs + static_cast<int>(rng() % 2);  // tables past the batch
    const double density = (it % 10 == 0)   ? 0.0
                           : (it % 10 == 1) ? 1.0
                                            : std::uniform_real_distribution<double>(0, 1)(rng);
    std::vector<std::uint32_t> bits =
        test::random_mask_bits(p, BlockMask::shape_for(c, p.limits), density, rng);
    const bool union_q = rng() % 2, union_heads = rng() % 2;
    CAPTURE(it);
    CAPTURE(c.num_q_heads);
    CAPTURE(c.page_size);
    CAPTURE(c.block_k);
    CAPTURE(union_q);
    CAPTURE(union_heads);
    // Tail hints on half the masks: any value is valid (clamped), including out of range.
    std::vector<std::int32_t> tail;
    if (rng() % 2) {
      for (int b = 0; b < p.limits.max_batch; ++b) tail.push_back(static_cast<int>(rng() % 7) - 2);
    }
    CAPTURE(tail.size());
    Built t = build(p, bits, union_heads ? c.group_size() : 1, !union_q, tail);
    check_minimal(p, bits, t);
    ++checked;
  }
  CHECK(checked >= 1000);
}

TEST_CASE("a full mask yields every table block; an empty mask yields empty tables") {
  auto rng = test::rng_for(2002);
  AttentionConfig c;
  c.num_q_heads = 8;
  c.num_kv_heads = 2;
  c.head_dim = 8;
  c.page_size = 256;  // coarser than Bk: 2 blocks per entry
  c.block_k = 128;
  test::ProblemSpec spec;
  spec.num_seqs = 2;
  spec.max_chunk = 200;
  spec.max_kv = 3000;
  test::HostProblem p = test::make_problem(c, spec, rng);
  auto full = test::random_mask_bits(p, BlockMask::shape_for(c, p.limits), 1.0, rng);
  Built t = build(p, full, c.group_size(), false);
  for (int b = 0; b < 2; ++b) {
    for (int g = 0; g < t.shape.head_groups; ++g) {
      const int table = t.shape.table_index(b, g, 0);
      CHECK(t.indptr[table + 1] - t.indptr[table] == ceil_div(p.kv_lens[b], 256));
      CHECK(t.last[table] == p.kv_lens[b] - (ceil_div(p.kv_lens[b], 256) - 1) * 256);
    }
  }
  auto empty = test::random_mask_bits(p, BlockMask::shape_for(c, p.limits), 0.0, rng);
  Built e = build(p, empty, 1, true);
  CHECK(e.indptr[e.shape.num_tables()] == 0);
  for (int v : e.last) CHECK(v == 0);
}
