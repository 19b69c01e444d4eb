// Semantics of the host references of FlashPrefillMask, QuestMask, XAttentionMask and
// ExternalMask: always-on and never-on rules, sink / window / final-chunk rules, thresholds and
// budgets on planted structure, the cumulative-mass property, hyperparameter errors.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "../support/naive.hpp"
#include "../support/seed.hpp"
#include "compact/compact.cuh"
#include "compact/mask/external_mask.cuh"
#include "compact/mask/flash_prefill_mask.cuh"
#include "compact/mask/group_mass_select.cuh"
#include "compact/mask/quest_mask.cuh"
#include "compact/mask/xattention_mask.cuh"
#include "mask_test_util.hpp"

using namespace compact;
using doctest::Contains;

// Conformance of the new mask sources to the concept (host and device builds, hooks).
static_assert(MaskSource<FlashPrefillMask<>> && HostMaskSource<FlashPrefillMask<>> &&
              DeviceMaskSource<FlashPrefillMask<>> && HasConfigure<FlashPrefillMask<>> &&
              HasWorkspaceBytes<FlashPrefillMask<>>);
static_assert(MaskSource<QuestMask> && DeviceMaskSource<QuestMask> && HasWorkspaceBytes<QuestMask>);
static_assert(MaskSource<XAttentionMask> && DeviceMaskSource<XAttentionMask> &&
              HasConfigure<XAttentionMask> && HasWorkspaceBytes<XAttentionMask>);
static_assert(MaskSource<ExternalMask> && HostMaskSource<ExternalMask> &&
              DeviceMaskSource<ExternalMask> && HasWorkspaceBytes<ExternalMask>);

namespace {

/// A host mask buffer for a problem.
struct HostMask {
  std::vector<std::uint32_t> bits;
  BlockMask view;
  explicit HostMask(const test::HostProblem& p) {
    view = BlockMask::shape_for(p.config, p.limits);
    bits.assign(view.num_words(), 0xdeadbeefu);
    view.bits = bits.data();
  }
};

template <class Mask>
HostMask build(const Mask& m, const test::HostProblem& p, const KeySummaries& s) {
  HostMask out(p);
  PagedKV cache = p.cache();
  cache.summaries = s;
  compact::detail::configure(m, p.config, p.limits);
  m.build_host(MaskArgs{p.config, p.limits, p.batch(), cache, out.view, {}});
  return out;
}

test::HostProblem random_problem(std::uint64_t salt, int hq, int hkv, int bq, int bk,
                                 int seqs = 3) {
  auto rng = test::rng_for(salt);
  AttentionConfig c;
  c.num_q_heads = hq;
  c.num_kv_heads = hkv;
  c.head_dim = 32;
  c.block_q = bq;
  c.block_k = bk;
  test::ProblemSpec spec;
  spec.num_seqs = seqs;
  spec.max_chunk = 200;
  spec.max_kv = 1500;
  test::HostProblem p = test::make_problem(c, spec, rng);
  test::plant_hot_blocks(p, rng);
  return p;
}

/// A random direction of D = 64 entries and norm `norm`.
std::vector<float> random_direction(std::mt19937_64& rng, double norm) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> u(64);
  double sq = 0;
  for (auto& x : u) {
    x = normal(rng);
    sq += static_cast<double>(x) * x;
  }
  for (auto& x : u) x = static_cast<float>(x * norm / std::sqrt(sq));
  return u;
}

/// Element d of the key at token pos in the paged K cache of a planted problem (D = 64, page 16).
std::size_t key_at(const test::HostProblem& p, int pos, int d) {
  return (static_cast<std::size_t>(p.page_table[pos / 16]) * 16 + pos % 16) * 64 + d;
}

/// One sequence, one head, D = 64, Bq = Bk = 64, 12 KV blocks, the chunk = the last block.
/// Keys are small noise; blocks 3, 6, 9 get a * u with a = 3, 2, 1 (|u| = 4), queries 2u, so the
/// pooled logits of those blocks are about 12, 8, 4 nats above the rest.
test::HostProblem planted_problem(std::uint64_t salt, bool final_chunk, bool needle = false) {
  auto rng = test::rng_for(salt);
  AttentionConfig c;
  c.num_q_heads = 1;
  c.num_kv_heads = 1;
  c.head_dim = 64;
  c.block_q = 64;
  c.block_k = 64;
  c.page_size = 16;
  test::ProblemSpec spec;
  spec.num_seqs = 1;
  spec.max_chunk = 64;
  spec.max_kv = 768;
  spec.ragged = false;
  spec.q_scale = 0.1f;
  spec.k_scale = 0.1f;
  test::HostProblem p = test::make_problem(c, spec, rng);
  p.final_chunk[0] = final_chunk ? 1 : 0;
  const std::vector<float> u = random_direction(rng, 4.0);  // |u| = 4
  auto add_key = [&](int pos, float a) {
    for (int d = 0; d < 64; ++d) {
      const std::size_t at = key_at(p, pos, d);
      store_float(p.k.data(), c.dtype, at, load_float(p.k.data(), c.dtype, at) + a * u[d]);
    }
  };
  if (needle) {
    add_key(5 * 64 + 17, 6.0f);  // one token
  } else {
    const float strength[3] = {3.0f, 2.0f, 1.0f};
    for (int i = 0; i < 3; ++i) {
      for (int pos = (3 + 3 * i) * 64; pos < (4 + 3 * i) * 64; ++pos) add_key(pos, strength[i]);
    }
  }
  for (int t = 0; t < 64; ++t) {
    for (int d = 0; d < 64; ++d) {
      const std::size_t at = static_cast<std::size_t>(t) * 64 + d;
      store_float(p.q.data(), c.dtype, at, load_float(p.q.data(), c.dtype, at) + 2.0f * u[d]);
    }
  }
  return p;
}

/// planted_problem() (hot blocks 3, 6, 9 in the direction u every query reads; about 12 nats for
/// block 3) with the keys of block 8 set to 2w and query row 7 to 0.5w, for a random w (nearly
/// orthogonal to u at D = 64, |w| = 4): row 7's best block is 8, at about 2 nats, every other
/// row's is 3, so the query block's pooled score of block 8 is negligible.
test::HostProblem row_needle_problem(std::uint64_t salt) {
  test::HostProblem p = planted_problem(salt, false);
  auto rng = test::rng_for(salt + 1);
  const std::vector<float> w = random_direction(rng, 4.0);  // |w| = 4
  const AttentionConfig& c = p.config;
  for (int pos = 8 * 64; pos < 9 * 64; ++pos) {
    for (int d = 0; d < 64; ++d) store_float(p.k.data(), c.dtype, key_at(p, pos, d), 2.0f * w[d]);
  }
  for (int d = 0; d < 64; ++d)
    store_float(p.q.data(), c.dtype, std::size_t{7} * 64 + d, 0.5f * w[d]);
  return p;
}

std::vector<int> selected_blocks(const test::HostProblem& p, const BlockMask& m) {
  std::vector<int> on;
  for (int kb = 0; kb < 12; ++kb) {
    if (m.test(0, 0, 0, kb)) on.push_back(kb);
  }
  return on;
}

/// selected_blocks() of FlashPrefillMask, or of QuestMask when `quest`, with hyperparameters f.
std::vector<int> selected_by(bool quest, const FlashPrefillParams& f, const test::HostProblem& p,
                             const test::HostSummaries& hs) {
  return quest ? selected_blocks(p, build(QuestMask(f), p, hs.view).view)
               : selected_blocks(p, build(FlashPrefillMask<>(f), p, hs.view).view);
}

FlashPrefillParams bare(float alpha, int budget = 0) {
  FlashPrefillParams f = FlashPrefillParams::paper();
  f.alpha = alpha;
  f.sink_blocks = 0;
  f.window_blocks = 0;
  f.last_full_blocks = 0;
  f.min_budget = budget;
  return f;
}

}  // namespace

TEST_CASE("FlashPrefillMask host: contract, alpha = 0, sink, window and final-chunk rules") {
  std::uint64_t salt = 9500;
  long long sharp_selected = 0, sharp_causal = 0;  // alpha = 1 over the reps
  for (int rep = 0; rep < 3; ++rep) {
    const test::HostProblem p =
        random_problem(++salt, rep == 2 ? 8 : 4, rep == 0 ? 4 : 2, 32, rep == 1 ? 16 : 64);
    const test::HostSummaries hs = test::summaries_from_scratch(p);
    FlashPrefillParams zero = FlashPrefillParams::paper();
    zero.alpha = 0.0f;
    const HostMask all = build(FlashPrefillMask<>(zero), p, hs.view);
    const test::MaskCensus a = test::census(p, all.view);
    CHECK(a.violations == 0);
    CHECK(a.selected == a.causal);

    // The paper's rule, then a sharp threshold to make the rules visible.
    FlashPrefillParams f = FlashPrefillParams::paper();
    f.alpha = 1.0f;
    f.sink_blocks = 2;
    f.window_blocks = 3;
    f.last_full_blocks = 1;
    const HostMask m = build(FlashPrefillMask<>(f), p, hs.view);
    const test::MaskCensus s = test::census(p, m.view);
    CHECK(s.violations == 0);
    // A small random problem can lie wholly inside the rules' blocks (about 1 seed in 20): the
    // strict check is on the sum over the reps.
    CHECK(s.selected <= s.causal);
    sharp_selected += s.selected;
    sharp_causal += s.causal;
    for (int b = 0; b < static_cast<int>(p.kv_lens.size()); ++b) {
      const int n = p.cu_seqlens[b + 1] - p.cu_seqlens[b];
      const int n_qb = ceil_div(n, p.config.block_q);
      for (int h = 0; h < p.config.num_q_heads; ++h) {
        for (int qb = 0; qb < n_qb; ++qb) {
          const QueryBlockSpan span = test::span_of(p, b, qb);
          const bool dense = p.final_chunk[b] != 0 && qb == n_qb - 1;
          int on = 0;
          for (int kb = 0; kb <= span.last_kb; ++kb) {
            const bool bit = m.view.test(b, h, qb, kb);
            on += bit;
            if (kb < 2 || kb > span.first_kb - 3 || dense) REQUIRE(bit);
          }
          // Only the final chunk's last query block is dense (when it has history to drop).
          int optional = 0;
          for (int kb = 0; kb <= span.last_kb; ++kb) {
            optional += !(kb < 2 || kb > span.first_kb - 3 || kb >= span.chunk_first_kb);
          }
          if (!dense && optional >= 2) CHECK(on < span.last_kb + 1);
        }
      }
    }
  }
  CHECK(sharp_selected < sharp_causal);
}

TEST_CASE(
    "flash_prefill::tail_hint: the final chunk's full rows, else the rows past the windows "
    "that reach before the chunk") {
  FlashPrefillParams f = FlashPrefillParams::paper();
  f.window_blocks = 4;
  f.last_full_blocks = 2;
  auto hint = [&](int q_len, int kv_len, bool final_chunk, int bq = 128, int bk = 128) {
    return flash_prefill::tail_hint(f, SeqInfo{0, q_len, kv_len}, bq, bk, final_chunk);
  };
  // Chunk 1,024 at 4,096 (KV block 32), Bq = Bk = 128: query blocks 0-2 reach blocks 29-31.
  CHECK(hint(1024, 5120, false) == 5);
  CHECK(hint(1024, 5120, true) == 2);
  CHECK(hint(100, 5120, true) == 1);  // one query block: last_full clamped to it
  // The first chunk has nothing before it; a chunk shorter than the window reaches back in every
  // query block: one table.
  CHECK(hint(1024, 1024, false) == 0);
  CHECK(hint(256, 4352, false) == 0);
  // Chunk at 4,160 (mid block 32): query block 3 starts in block 35, its window 32-35.
  CHECK(hint(1024, 5184, false) == 5);
  // Bq 64 < Bk 128 at 4,096: query blocks 0-5 (blocks 32-34) reach back, 6-15 do not.
  CHECK(hint(1024, 5120, false, 64, 128) == 10);
  f.window_blocks = 2;
  CHECK(hint(1024, 5120, false) == 7);
  f.window_blocks = 1;  // the diagonal block alone: always inside the chunk
  CHECK(hint(1024, 5120, false) == 0);
  f.window_blocks = 0;
  CHECK(hint(1024, 5120, false) == 0);
}

TEST_CASE("FlashPrefillMask host: planted blocks follow alpha, the budget and the rules") {
  const test::HostProblem p = planted_problem(9601, false);
  const test::HostSummaries hs = test::summaries_from_scratch(p);
  auto sel = [&](const FlashPrefillParams& f) {
    return selected_blocks(p, build(FlashPrefillMask<>(f), p, hs.view).view);
  };
  CHECK(sel(bare(1.0f)) == std::vector<int>{3, 11});           // the best block and the chunk
  CHECK(sel(bare(1.0f, 2)) == std::vector<int>{3, 6, 11});     // minimum budget 2
  CHECK(sel(bare(1.0f, 3)) == std::vector<int>{3, 6, 9, 11});  // minimum budget 3
  CHECK(sel(bare(0.01f)) == std::vector<int>{3, 6, 11});       // e^-4 of the best passes 0.01
  CHECK(sel(bare(1e-4f)) == std::vector<int>{3, 6, 9, 11});    // e^-8 passes 1e-4
  FlashPrefillParams rules = bare(1.0f);
  rules.sink_blocks = 2;
  rules.window_blocks = 3;
  CHECK(sel(rules) == std::vector<int>{0, 1, 3, 9, 10, 11});
  rules.last_full_blocks = 1;  // not the final chunk: no effect
  CHECK(sel(rules) == std::vector<int>{0, 1, 3, 9, 10, 11});
  const test::HostProblem fin = planted_problem(9601, true);
  const HostMask dense = build(FlashPrefillMask<>(rules), fin, hs.view);
  CHECK(selected_blocks(fin, dense.view).size() == 12);  // final chunk: its last block sees all
}

TEST_CASE("group_mass::select_host: covers tau of the mass with the fewest, heaviest blocks") {
  auto rng = test::rng_for(9620);
  std::uniform_int_distribution<int> len(1, 300), coin(0, 9);
  std::uniform_int_distribution<std::uint64_t> value(0, 1000);
  long long cases = 0;
  for (int rep = 0; rep < 2000; ++rep) {
    const int n = len(rng);
    std::vector<std::uint64_t> mass(n);
    std::vector<std::uint8_t> forced(n), sel(n), wider(n);
    for (int kb = 0; kb < n; ++kb) {
      mass[kb] = coin(rng) < 2 ? 0 : value(rng) / (rep % 3 == 0 ? 100 : 1);  // ties when coarse
      forced[kb] = coin(rng) == 0;
    }
    const float tau = static_cast<float>(rep % 11) / 10.0f;
    const int min_count = rep % 4 == 0 ? 2 : 0;
    const std::uint32_t tf = group_mass::tau_fixed(tau);
    const int take =
        group_mass::select_host(mass.data(), forced.data(), n, tf, min_count, sel.data());
    std::uint64_t total = 0, have = 0, lightest = ~std::uint64_t{0};
    int count = 0, candidates = 0;
    for (int kb = 0; kb < n; ++kb) {
      total += mass[kb];
      candidates += !forced[kb] && mass[kb] > 0;
      if (forced[kb]) have += mass[kb];
      if (sel[kb]) {
        REQUIRE(!forced[kb]);
        REQUIRE(mass[kb] > 0);
        have += mass[kb];
        ++count;
        lightest = std::min(lightest, mass[kb]);
      }
    }
    REQUIRE(count == take);
    const std::uint64_t target = group_mass::mass_target(total, tf);
    // Coverage: the target is reached, or every candidate is taken.
    REQUIRE((have >= target || count == candidates));
    // Heaviest first: nothing left out outweighs what was taken.
    for (int kb = 0; kb < n; ++kb) {
      if (!forced[kb] && !sel[kb] && count > 0) REQUIRE(mass[kb] <= lightest);
    }
    // Fewest: without its lightest block the selection would fall short (beyond the budget).
    if (count > std::min(min_count, candidates)) REQUIRE(have - lightest < target);
    // Monotone in tau.
    group_mass::select_host(mass.data(), forced.data(), n, group_mass::tau_fixed(1.0f), 0,
                            wider.data());
    for (int kb = 0; kb < n; ++kb) {
      if (sel[kb] && min_count == 0) REQUIRE(wider[kb]);
    }
    ++cases;
  }
  CHECK(cases == 2000);
  CHECK(group_mass::mass_target(100, group_mass::tau_fixed(0.9f)) == 90);
  CHECK(group_mass::mass_target(101, group_mass::tau_fixed(0.5f)) == 51);  // rounds up
  CHECK(group_mass::mass_target(~std::uint64_t{0} >> 20, group_mass::tau_fixed(1.0f)) ==
        ~std::uint64_t{0} >> 20);
}

TEST_CASE("FlashPrefillMask group_mass host: one selection per GQA group, tau bounds it") {
  std::uint64_t salt = 9630;
  long long loose = 0, tight = 0;  // selected blocks at tau = 0.3 and tau = 1 over the reps
  for (int rep = 0; rep < 3; ++rep) {
    const test::HostProblem p = random_problem(++salt, 8, rep == 0 ? 2 : 4, 32, 64, 2);
    const test::HostSummaries hs = test::summaries_from_scratch(p);
    const int G = p.config.gqa_group();
    FlashPrefillParams f;  // the default selection
    REQUIRE(f.selection == FlashPrefillSelection::group_mass);
    f.sink_blocks = 1;
    f.window_blocks = 1;
    f.last_full_blocks = 0;
    std::vector<test::MaskCensus> census;
    std::vector<HostMask> masks;
    for (const float tau : {0.3f, 0.8f, 1.0f}) {
      f.group_mass = tau;
      masks.push_back(build(FlashPrefillMask<>(f), p, hs.view));
      census.push_back(test::census(p, masks.back().view));
      CHECK(census.back().violations == 0);
    }
    // Monotone in tau; strictly so over the reps (a single small problem can already be covered
    // by its forced blocks at tau = 0.8, so the strict check is on the sums).
    CHECK(census[0].selected <= census[1].selected);
    CHECK(census[1].selected <= census[2].selected);
    loose += census[0].selected;
    tight += census[2].selected;
    // tau = 1 keeps every block with a nonzero score: with the logits flattened (sharpness 1/16),
    // every causal block.
    FlashPrefillParams flat = f;
    flat.sharpness = 0.0625f;
    const HostMask all = build(FlashPrefillMask<>(flat), p, hs.view);
    const test::MaskCensus a = test::census(p, all.view);
    CHECK(a.selected == a.causal);
    for (int b = 0; b < static_cast<int>(p.kv_lens.size()); ++b) {
      const int n_qb = ceil_div(p.cu_seqlens[b + 1] - p.cu_seqlens[b], p.config.block_q);
      for (int h = 0; h < p.config.num_q_heads; ++h) {
        for (int qb = 0; qb < n_qb; ++qb) {
          const QueryBlockSpan span = test::span_of(p, b, qb);
          const QueryBlockSpan span0 = test::span_of(p, b, 0);
          for (int kb = 0; kb < span.chunk_first_kb; ++kb) {
            // Pre-chunk blocks outside every row's sink and window: the group's choice, the same
            // in every row of the group (the group's first row is the witness).
            if (kb < 1 || kb > span0.first_kb - 1) continue;
            for (std::size_t t = 0; t < masks.size(); ++t) {
              REQUIRE(masks[t].view.test(b, h, qb, kb) ==
                      masks[t].view.test(b, (h / G) * G, 0, kb));
              const bool in_wider = masks[t + (t < 2 ? 1 : 0)].view.test(b, h, qb, kb);
              REQUIRE((!masks[t].view.test(b, h, qb, kb) || in_wider));
            }
          }
          for (int kb = 0; kb <= span.last_kb; ++kb) {
            const bool rule = kb < 1 || kb > span.first_kb - 1;
            if (rule) REQUIRE(masks[0].view.test(b, h, qb, kb));
          }
        }
      }
    }
  }
  CHECK(loose < tight);
}

TEST_CASE("QuestMask host: a single-token needle survives where the mean dilutes it") {
  const test::HostProblem p = planted_problem(9701, false, /*needle=*/true);
  const test::HostSummaries hs = test::summaries_from_scratch(p);
  const std::vector<int> quest = selected_blocks(p, build(QuestMask(bare(0.5f)), p, hs.view).view);
  CHECK(quest == std::vector<int>{5, 11});
  const std::vector<int> mean =
      selected_blocks(p, build(FlashPrefillMask<>(bare(0.5f)), p, hs.view).view);
  CHECK(std::find(mean.begin(), mean.end(), 5) != mean.end());
  CHECK(mean.size() > quest.size());  // the mean's margin is small: more blocks pass the same alpha
}

TEST_CASE("exclude_forced: the row's scale comes from the blocks the rules do not keep") {
  // Blocks 0-3 forced as the sink: the hottest block (3) is among them. With it in the row's
  // scores, alpha = 1 keeps only the forced blocks; left out, the best of the rest (6) is kept.
  const test::HostProblem p = planted_problem(9611, false);
  const test::HostSummaries hs = test::summaries_from_scratch(p);
  FlashPrefillParams f = bare(1.0f);
  f.sink_blocks = 4;
  for (const bool quest : {false, true}) {
    CAPTURE(quest);
    CHECK(selected_by(quest, f, p, hs) == std::vector<int>{0, 1, 2, 3, 11});
    FlashPrefillParams out = f;
    out.exclude_forced = true;
    CHECK(selected_by(quest, out, p, hs) == std::vector<int>{0, 1, 2, 3, 6, 11});
  }
}

/// group_mass with a budget the heaviest block alone carries, and no forced block but the chunk's
/// own: what the rows' best blocks add shows.
FlashPrefillParams tiny_group_budget() {
  FlashPrefillParams f;  // group_mass
  f.group_mass = 0.05f;
  f.sink_blocks = 0;
  f.window_blocks = 0;
  f.last_full_blocks = 0;
  return f;
}

TEST_CASE("keep_row_best: one row's best block survives the group's budget") {
  const test::HostProblem p = row_needle_problem(9621);
  const test::HostSummaries hs = test::summaries_from_scratch(p);
  const FlashPrefillParams f = tiny_group_budget();
  for (const bool quest : {false, true}) {
    CAPTURE(quest);
    CHECK(selected_by(quest, f, p, hs) == std::vector<int>{3, 11});  // 11: the chunk's own block
    FlashPrefillParams keep = f;
    keep.keep_row_best = true;
    CHECK(selected_by(quest, keep, p, hs) == std::vector<int>{3, 8, 11});
  }
  // Only with the group's budget: the row threshold keeps per row already.
  FlashPrefillParams bad = FlashPrefillParams::paper();
  bad.keep_row_best = true;
  CHECK_THROWS_WITH_AS(FlashPrefillMask<>(bad).configure(p.config, p.limits),
                       Contains("FlashPrefillMask params.keep_row_best"), Error);
}

TEST_CASE("row_best_by_bound: a one-token needle a row retrieves survives the mean's budget") {
  // planted_problem() (block 3 the hottest for every row) plus one token of block 8 at 24 w, w
  // orthogonal to u, and query row 7 at 0.5 w + 2 u. Row 7's best mean-key block stays 3 (about
  // 12 nats; the needle gives block 8's mean about 0.4), its best by the bound is 8 (about 24).
  test::HostProblem p = planted_problem(9631, false);
  auto rng = test::rng_for(9632);
  std::vector<float> u(64), w = random_direction(rng, 4.0);
  for (int d = 0; d < 64; ++d) {  // recover u from the planted query rows: q = noise + 2 u
    u[d] = 0.0f;
    for (int t = 0; t < 64; ++t) u[d] += load_float(p.q.data(), p.config.dtype, t * 64 + d) / 128;
  }
  double wu = 0, uu = 0, ww = 0;
  for (int d = 0; d < 64; ++d) wu += w[d] * u[d], uu += u[d] * u[d];
  for (int d = 0; d < 64; ++d) w[d] -= static_cast<float>(wu / uu) * u[d], ww += w[d] * w[d];
  for (int d = 0; d < 64; ++d) w[d] *= static_cast<float>(4.0 / std::sqrt(ww));  // |w| = 4
  const AttentionConfig& c = p.config;
  for (int d = 0; d < 64; ++d) {
    store_float(p.k.data(), c.dtype, key_at(p, 8 * 64 + 17, d), 24.0f * w[d]);
    store_float(p.q.data(), c.dtype, std::size_t{7} * 64 + d, 0.5f * w[d] + 2.0f * u[d]);
  }
  const test::HostSummaries hs = test::summaries_from_scratch(p);
  FlashPrefillParams f = tiny_group_budget();
  f.keep_row_best = true;
  CHECK(selected_by(false, f, p, hs) == std::vector<int>{3, 11});  // 11: the chunk's own block
  FlashPrefillParams by_bound = f;
  by_bound.row_best_by_bound = true;
  CHECK(selected_by(false, by_bound, p, hs) == std::vector<int>{3, 8, 11});
  // Two best blocks a row: every row's second is 6 by the mean (hot blocks 3, 6, 9 at 3, 2, 1 u).
  FlashPrefillParams two = f;
  two.row_best_count = 2;
  CHECK(selected_by(false, two, p, hs) == std::vector<int>{3, 6, 11});
  FlashPrefillParams guarded = FlashPrefillParams::bound_guarded();
  CHECK(guarded.row_best_count == 2);
  CHECK(guarded.keep_row_best);
  CHECK(guarded.row_best_by_bound);
  CHECK(guarded.group_mass == doctest::Approx(0.85));
  // QuestMask ranks by the bound already (block 8 is in its selection either way).
  const std::vector<int> quest = selected_by(true, f, p, hs);
  CHECK(std::find(quest.begin(), quest.end(), 8) != quest.end());
  CHECK(selected_by(true, by_bound, p, hs) == quest);

  // It picks the score of keep_row_best, so it needs it; and it reads the min/max summaries.
  FlashPrefillParams bad = f;
  bad.keep_row_best = false;
  bad.row_best_by_bound = true;
  CHECK_THROWS_WITH_AS(FlashPrefillMask<>(bad).configure(p.config, p.limits),
                       Contains("FlashPrefillMask params.row_best_by_bound"), Error);
  FlashPrefillParams three = f;
  three.row_best_count = 3;
  CHECK_THROWS_WITH_AS(QuestMask(three).configure(p.config, p.limits),
                       Contains("QuestMask params.row_best_count"), Error);
  // What an engine's append path must keep for each: the mean, plus min/max for the bound.
  CHECK(FlashPrefillMask<>(by_bound).summary_needs().mean_k);
  CHECK(FlashPrefillMask<>(by_bound).summary_needs().min_max_k);
  CHECK(!FlashPrefillMask<>(f).summary_needs().min_max_k);
  CHECK(QuestMask(f).summary_needs().min_max_k);
  CHECK(!QuestMask(f).summary_needs().mean_k);
  KeySummaries no_bounds = hs.view;
  no_bounds.min_k = nullptr;
  no_bounds.max_k = nullptr;
  CHECK_THROWS_AS(build(FlashPrefillMask<>(by_bound), p, no_bounds), Error);
  CHECK(selected_blocks(p, build(FlashPrefillMask<>(f), p, no_bounds).view) ==
        std::vector<int>{3, 11});
}

TEST_CASE("XAttentionMask host: cumulative mass threshold, forced blocks, minimality") {
  std::uint64_t salt = 9800;
  for (int rep = 0; rep < 3; ++rep) {
    const test::HostProblem p = random_problem(++salt, 4, rep == 0 ? 4 : 2, 32, 64, 2);
    for (float threshold : {0.5f, 0.9f, 1.0f}) {
      XAttentionParams xp;
      xp.stride = rep == 2 ? 4 : 8;
      xp.threshold = threshold;
      const HostMask m = build(XAttentionMask(xp), p, KeySummaries{});
      CHECK(test::census(p, m.view).violations == 0);
      PagedKV cache = p.cache();
      const MaskArgs args{p.config, p.limits, p.batch(), cache, m.view, {}};
      for (int b = 0; b < static_cast<int>(p.kv_lens.size()); ++b) {
        const int n = p.cu_seqlens[b + 1] - p.cu_seqlens[b];
        for (int h = 0; h < p.config.num_q_heads; ++h) {
          const auto scores = xattention::block_scores(args, xp, b, h);
          REQUIRE(static_cast<int>(scores.size()) == ceil_div(n, p.config.block_q));
          for (int qb = 0; qb < static_cast<int>(scores.size()); ++qb) {
            const QueryBlockSpan span = test::span_of(p, b, qb);
            const std::vector<std::uint64_t>& a = scores[qb];
            std::uint64_t total = 0, kept = 0, min_other = ~0ull, max_dropped = 0;
            bool any_other = false;
            for (int kb = 0; kb <= span.last_kb; ++kb) {
              total += a[kb];
              const bool on = m.view.test(b, h, qb, kb);
              const bool forced = kb < xp.sink_blocks || kb >= span.chunk_first_kb;
              if (forced) REQUIRE(on);
              if (on) kept += a[kb];
              if (on && !forced) {
                any_other = true;
                min_other = std::min(min_other, a[kb]);
              }
              if (!on) max_dropped = std::max(max_dropped, a[kb]);
            }
            // Each row's softmax mass is 2^32 in fixed point, up to one unit per block.
            const int rows = std::min(p.config.block_q, n - qb * p.config.block_q);
            const std::uint64_t groups = ceil_div(rows, xp.stride);
            REQUIRE(total <= groups << 32);
            REQUIRE(total + groups * (span.last_kb + 1) >= groups << 32);
            const double req = static_cast<double>(threshold) * static_cast<double>(total);
            // Enough mass kept, and not one block more than needed (greedy by score).
            REQUIRE(static_cast<double>(kept) >= req);
            if (any_other) {
              REQUIRE(static_cast<double>(kept - min_other) < req);
              REQUIRE(max_dropped <= min_other);
            }
            if (threshold == 1.0f) REQUIRE(max_dropped == 0);
          }
        }
      }
    }
  }
}

TEST_CASE("XAttentionMask host: the quantized block scores track the unquantized estimate") {
  // A[qb][kb] against the same antidiagonal softmax in double from the unquantized Q and K. Both
  // are sums over the query block's groups of each group's softmax mass on kb (2^32 a group).
  // Tolerance: 1% of a group's mass per (qb, kb), averaged over the block's groups (per-token
  // quantization to 255 levels gives 0.02-0.05% here); NaN fails. Both the default levels and
  // the int8 ones (127), per token and per antidiagonal group.
  std::uint64_t salt = 9850;
  struct Setting {
    int stride, levels;
    XAttentionQuant quant;
  };
  constexpr XAttentionQuant kToken = XAttentionQuant::token, kGroup = XAttentionQuant::group;
  for (const auto& [stride, levels, quant] : {Setting{8, 255, kToken},
                                              {16, 255, kToken},
                                              {8, 127, kToken},
                                              {16, 127, kToken},
                                              {8, 127, kGroup},
                                              {16, 127, kGroup}}) {
    auto rng = test::rng_for(++salt);
    AttentionConfig c;
    c.num_q_heads = 4;
    c.num_kv_heads = 2;
    c.head_dim = 128;
    c.block_q = 64;
    c.block_k = 64;
    c.page_size = 16;
    test::ProblemSpec spec;
    spec.num_seqs = 2;
    spec.max_chunk = 160;
    spec.max_kv = 1200;
    spec.k_scale = 1.0f;
    test::HostProblem p = test::make_problem(c, spec, rng);
    test::plant_hot_blocks(p, rng, 3.0f);
    XAttentionParams xp;
    xp.stride = stride;
    xp.levels = levels;
    xp.quant = quant;
    const PagedKV cache = p.cache();
    const ChunkBatch batch = p.batch();
    const MaskArgs args{c, p.limits, batch, cache, BlockMask{}, {}};
    const double cx = static_cast<double>(c.scale()) * 1.4426950408889634 / stride;
    double worst = 0.0;
    for (int b = 0; b < batch.num_seqs; ++b) {
      const SeqInfo s = seq_info(batch, b);
      for (int h = 0; h < c.num_q_heads; ++h) {
        const auto scores = xattention::block_scores(args, xp, b, h);
        auto q_at = [&](int r, int d) {
          return static_cast<double>(load_float(
              batch.q, c.dtype,
              static_cast<std::size_t>((s.q_begin + r) * c.num_q_heads + h) * c.head_dim + d));
        };
        auto k_at = [&](int pos, int d) {
          return static_cast<double>(
              load_float(cache.k_pages, c.dtype,
                         static_cast<std::size_t>(cache.offset(b, pos, h / c.gqa_group()) + d)));
        };
        for (int qb = 0; qb < static_cast<int>(scores.size()); ++qb) {
          const QueryBlockSpan span = query_block_span(s, qb, c.block_q, c.block_k);
          const int gpb = c.block_k / stride, n_cand = span.last_kb + 1;
          std::vector<double> ref(n_cand, 0.0);
          const int i0 = qb * c.block_q / stride;
          const int i1 = std::min((qb + 1) * c.block_q / stride, ceil_div(s.q_len, stride));
          for (int i = i0; i < i1; ++i) {
            std::vector<double> x(static_cast<std::size_t>(n_cand) * gpb, -INFINITY);
            double m = -INFINITY;
            for (int j = 0; j < n_cand * gpb; ++j) {
              if (!xattention::group_visible(s, i, j, stride)) continue;
              double y = 0.0;
              for (int t = 0; t < stride; ++t) {
                const int r = i * stride + stride - 1 - t, pos = j * stride + t;
                if (r >= s.q_len || pos >= s.kv_len) continue;
                for (int d = 0; d < c.head_dim; ++d) y += q_at(r, d) * k_at(pos, d);
              }
              x[j] = y * cx;
              m = std::max(m, x[j]);
            }
            double z = 0.0;
            for (const double v : x) z += v == -INFINITY ? 0.0 : std::exp2(v - m);
            for (int j = 0; j < n_cand * gpb; ++j)
              if (x[j] != -INFINITY) ref[j / gpb] += std::exp2(x[j] - m) / z;
          }
          const double groups = i1 - i0;
          for (int kb = 0; kb < n_cand; ++kb) {
            const double got = static_cast<double>(scores[qb][kb]) / 4294967296.0;
            const double err = std::abs(got - ref[kb]) / groups;
            REQUIRE(!std::isnan(err));
            worst = std::max(worst, err);
          }
        }
      }
    }
    CAPTURE(stride);
    CAPTURE(levels);
    CAPTURE(static_cast<int>(quant));
    MESSAGE("XAttention stride " << stride << ", levels " << levels
                                 << (quant == kGroup ? " per group" : " per token")
                                 << ": worst block-score error " << worst << " of a group's mass");
    CHECK(worst <= 0.01);
  }
}

TEST_CASE("XAttention group tiles: key cache and query tiles are permutations of their buffers") {
  // The group scorer bulk-copies 16 KB blocks of these buffers straight into its stages, so every
  // (group, position, chunk) must own one 16-byte chunk of the buffer, in the 128-byte swizzle of
  // the wgmma descriptors (chunk c of row r at c ^ r % 8), one block per tile and position.
  AttentionConfig c;
  c.num_q_heads = 8;
  c.num_kv_heads = 2;
  c.head_dim = 128;
  for (const int S : {4, 8, 16}) {
    CAPTURE(S);
    const int max_kv_len = 3000, slots = 2;
    XAttentionKeyCache kc;
    kc.max_groups = XAttentionKeyCache::groups_for(max_kv_len, S);
    CHECK(kc.max_groups % XAttentionKeyCache::kTileGroups == 0);
    CHECK(kc.max_groups >= (max_kv_len + S - 1) / S);
    const std::size_t bytes = XAttentionKeyCache::key_bytes(c, slots, max_kv_len, S);
    std::vector<int> owner(bytes / 16, -1);
    bool all_ok = true;
    for (int slot = 0; slot < slots; ++slot) {
      for (int h = 0; h < c.num_kv_heads; ++h) {
        for (int j = 0; j < kc.max_groups; ++j) {
          const std::int64_t gi = kc.index(slot, h, j, c.num_kv_heads);
          for (int t = 0; t < S; ++t) {
            for (int ch = 0; ch < 8; ++ch) {
              const std::int64_t off = XAttentionKeyCache::key_offset(gi, t, ch, S);
              // Within its tile's block for position t: row j % 128, chunk ch ^ (j % 8).
              const std::int64_t block = (gi / 128) * S + t;
              const bool ok = off % 16 == 0 && off >= 0 && static_cast<std::size_t>(off) < bytes &&
                              off / 16384 == block &&
                              off % 16384 == ((j % 128) * 8 + (ch ^ (j % 8))) * 16 &&
                              owner[off / 16] < 0;
              all_ok = all_ok && ok;
              if (ok) owner[off / 16] = 1;
            }
          }
        }
      }
    }
    CHECK(all_ok);
    CHECK(std::count(owner.begin(), owner.end(), -1) == 0);

    PlanLimits l;
    l.max_batch = 3;
    l.max_chunk = 1000;  // 1000 / S rows per head: tiles straddle heads
    l.max_kv_len = max_kv_len;
    const xattention::Scratch scr = xattention::Scratch::carve(c, l, S, true, false, nullptr, 0);
    const int G = c.gqa_group();
    CHECK(scr.q_tiles == (G * scr.groups + 127) / 128);
    CHECK(scr.qq == nullptr);  // group quantization reads the tiles only
    const std::size_t q_bytes =
        static_cast<std::size_t>(l.max_batch) * c.num_kv_heads * scr.q_tiles * S * 128 * 128;
    std::vector<int> q_owner(q_bytes / 16, -1);
    bool q_ok = true;
    for (int b = 0; b < l.max_batch; ++b) {
      for (int kvh = 0; kvh < c.num_kv_heads; ++kvh) {
        for (int tile = 0; tile < scr.q_tiles; ++tile) {
          for (int t = 0; t < S; ++t) {
            for (int row = 0; row < 128; ++row) {
              for (int ch = 0; ch < 8; ++ch) {
                const std::int64_t off =
                    scr.query_tile_offset(b, kvh, tile, t, row, ch, S, c.num_kv_heads);
                const bool ok = off >= 0 && static_cast<std::size_t>(off) < q_bytes &&
                                off % 16384 == (row * 8 + (ch ^ (row % 8))) * 16 &&
                                q_owner[off / 16] < 0;
                q_ok = q_ok && ok;
                if (ok) q_owner[off / 16] = 1;
              }
            }
          }
        }
      }
    }
    CHECK(q_ok);
    CHECK(std::count(q_owner.begin(), q_owner.end(), -1) == 0);
  }
}

TEST_CASE("ExternalMask host: the source plus the chunk's blocks, never the future") {
  auto rng = test::rng_for(9901);
  const test::HostProblem p = random_problem(9902, 4, 2, 32, 16, 3);
  const BlockMask shape = BlockMask::shape_for(p.config, p.limits);
  std::vector<std::uint32_t> src = test::random_mask_bits(p, shape, 0.2, rng);
  for (auto& w : src) w |= 0x80000000u;  // future garbage in every word
  ExternalMaskSource source{shape, Space::host};
  source.mask.bits = src.data();
  const HostMask m = build(ExternalMask(&source), p, KeySummaries{});
  test::for_each_written_word(p, [&](int b, int h, int qb, int w) {
    const QueryBlockSpan span = test::span_of(p, b, qb);
    for (int bit = 0; bit < 32; ++bit) {
      const int kb = w * 32 + bit;
      const bool in = (src[shape.row_offset(b, h, qb) + w] >> bit) & 1u;
      const bool want = kb <= span.last_kb && (in || kb >= span.chunk_first_kb);
      REQUIRE(m.view.test(b, h, qb, kb) == want);
    }
  });
}

TEST_CASE("mask sources: bad hyperparameters and missing inputs name themselves") {
  const test::HostProblem p = random_problem(9950, 4, 2, 32, 64, 2);
  const AttentionConfig& c = p.config;
  FlashPrefillParams f;
  f.alpha = 1.5f;
  CHECK_THROWS_WITH_AS(FlashPrefillMask<>(f).configure(c, p.limits),
                       Contains("FlashPrefillMask params.alpha = 1.5"), Error);
  f = FlashPrefillParams{};
  f.min_budget = -1;
  CHECK_THROWS_WITH_AS(QuestMask(f).configure(c, p.limits),
                       Contains("QuestMask params.min_budget = -1"), Error);
  f = FlashPrefillParams{};
  f.window_blocks = -2;
  CHECK_THROWS_WITH_AS((Engine<FlashPrefillMask<>, BlockUnion<>, ReferenceExecutor>(
                           c, p.limits, FlashPrefillMask<>(f))),
                       Contains("FlashPrefillMask params.window_blocks = -2"), Error);
  XAttentionParams xp;
  xp.stride = 3;
  CHECK_THROWS_WITH_AS(XAttentionMask(xp).configure(c, p.limits),
                       Contains("XAttentionMask params.stride = 3"), Error);
  xp.stride = 64;  // does not divide block_q = 32
  CHECK_THROWS_WITH_AS(XAttentionMask(xp).configure(c, p.limits),
                       Contains("XAttentionMask params.stride = 64"), Error);
  xp = XAttentionParams{};
  xp.threshold = 0.0f;
  CHECK_THROWS_WITH_AS(XAttentionMask(xp).configure(c, p.limits),
                       Contains("XAttentionMask params.threshold = 0"), Error);
  xp = XAttentionParams{};
  xp.sink_blocks = -1;
  CHECK_THROWS_WITH_AS(XAttentionMask(xp).configure(c, p.limits),
                       Contains("XAttentionMask params.sink_blocks = -1"), Error);
  xp = XAttentionParams{};
  xp.levels = 256;  // products would no longer be exact in fp32
  CHECK_THROWS_WITH_AS(XAttentionMask(xp).configure(c, p.limits),
                       Contains("XAttentionMask params.levels = 256"), Error);
  xp = XAttentionParams{};
  xp.quant = XAttentionQuant::group;  // int8 operands: at most 127 levels
  CHECK_THROWS_WITH_AS(XAttentionMask(xp).configure(c, p.limits),
                       Contains("XAttentionMask params.levels = 255"), Error);
  xp.levels = xattention::kInt8Levels;
  CHECK_NOTHROW(XAttentionMask(xp).configure(c, p.limits));
  XAttentionKeyCache kc;
  alignas(16) std::int8_t kc_bytes[16] = {};
  kc.keys = kc_bytes;
  kc.scales = nullptr;
  CHECK_THROWS_WITH_AS(kc.validate(c, p.limits, 8, 1),
                       Contains("XAttentionMask key_cache.scales = nullptr"), Error);
  std::vector<float> kc_scales(4);
  kc.scales = kc_scales.data();
  kc.stride = 16;
  CHECK_THROWS_WITH_AS(kc.validate(c, p.limits, 8, 1),
                       Contains("XAttentionMask key_cache.stride = 16"), Error);
  kc.stride = 8;
  kc.max_groups = XAttentionKeyCache::groups_for(p.limits.max_kv_len, 8) - 1;
  CHECK_THROWS_WITH_AS(kc.validate(c, p.limits, 8, 1),
                       Contains("XAttentionMask key_cache.max_groups"), Error);
  kc.max_groups = XAttentionKeyCache::groups_for(p.limits.max_kv_len, 8) + 1;  // not whole tiles
  const std::string not_whole = detail::cat("XAttentionMask key_cache.max_groups = ", kc.max_groups,
                                            ": expected a multiple of 128");
  CHECK_THROWS_WITH_AS(kc.validate(c, p.limits, 8, 1), Contains(not_whole.c_str()), Error);
  kc.max_groups = XAttentionKeyCache::groups_for(p.limits.max_kv_len, 8);
  CHECK(kc.max_groups % XAttentionKeyCache::kTileGroups == 0);
  kc.num_slots = 1;
  CHECK_THROWS_WITH_AS(kc.validate(c, p.limits, 8, 2),
                       Contains("XAttentionMask key_cache.num_slots = 1"), Error);
  const std::int32_t bad_slot[2] = {0, 1};
  kc.slot_of_seq = bad_slot;  // stands in for the device array
  kc.host_slot_of_seq = bad_slot;
  CHECK_THROWS_WITH_AS(kc.validate(c, p.limits, 8, 2),
                       Contains("XAttentionMask key_cache.host_slot_of_seq[1] = 1"), Error);
  XAttentionMask with_cache;  // per-token quantization does not use a key cache
  std::vector<std::int8_t> kc_keys(16);
  with_cache.key_cache.keys = kc_keys.data();
  CHECK_THROWS_WITH_AS(with_cache.configure(c, p.limits),
                       Contains("XAttentionMask key_cache.keys = set"), Error);
  XAttentionMask xm;
  xm.force_arch = 70;  // not a scoring kernel (checked before any device query)
  CHECK_THROWS_WITH_AS(xm.configure(c, p.limits), Contains("XAttentionMask::force_arch = 70"),
                       Error);

  HostMask out(p);
  const MaskArgs args{c, p.limits, p.batch(), p.cache(), out.view, {}};
  CHECK_THROWS_WITH_AS(FlashPrefillMask<>{}.build_host(args),
                       Contains("cache.summaries.mean_k = nullptr"), Error);
  test::HostSummaries hs = test::summaries_from_scratch(p);
  hs.view.min_k = nullptr;
  MaskArgs with = args;
  with.cache.summaries = hs.view;
  CHECK_NOTHROW(FlashPrefillMask<>{}.build_host(with));
  CHECK_THROWS_WITH_AS(QuestMask{}.build_host(with), Contains("cache.summaries.min_k = nullptr"),
                       Error);
  with.cache.summaries.max_blocks = 2;
  CHECK_THROWS_WITH_AS(FlashPrefillMask<>{}.build_host(with),
                       Contains("cache.summaries.max_blocks = 2"), Error);

  CHECK_THROWS_WITH_AS(ExternalMask{}.build_host(args), Contains("ExternalMask source = nullptr"),
                       Error);
  BlockMask wrong = BlockMask::shape_for(c, p.limits);
  std::vector<std::uint32_t> bits(wrong.num_words());
  wrong.bits = bits.data();
  wrong.num_heads = 3;
  ExternalMaskSource src{wrong, Space::host};
  CHECK_THROWS_WITH_AS(ExternalMask(&src).build_host(args),
                       Contains("ExternalMask source.mask.num_heads = 3"), Error);
  src.mask.num_heads = c.num_q_heads;
  src.space = Space::device;
  CHECK_THROWS_WITH_AS(ExternalMask(&src).build_host(args),
                       Contains("ExternalMask source.space = device"), Error);
}

TEST_CASE(
    "Engine<FlashPrefillMask, BlockUnion, ReferenceExecutor>: sparse tables, and the final chunk's "
    "dense rows in a tail table of their own") {
  test::HostProblem p = random_problem(9960, 8, 2, 32, 64, 3);
  p.final_chunk = {1, 0, 1};
  test::HostSummaries hs = test::summaries_from_scratch(p);
  FlashPrefillParams f = FlashPrefillParams::paper();
  f.alpha = 0.9f;
  f.last_full_blocks = 2;
  using E = Engine<FlashPrefillMask<>, BlockUnion<>, ReferenceExecutor>;
  static_assert(MaskWritesTailHint<FlashPrefillMask<>> && !MaskWritesTailHint<DenseMask>);
  const E engine(p.config, p.limits, FlashPrefillMask<>(f));
  REQUIRE(engine.table_shape().tail_split);
  std::vector<std::byte> storage(engine.workspace_bytes() + kWorkspaceAlignment);
  void* base = storage.data();
  std::size_t space = storage.size();
  std::align(kWorkspaceAlignment, engine.workspace_bytes(), base, space);
  const Workspace ws{base, engine.workspace_bytes()};
  PagedKV cache = p.cache();
  cache.summaries = hs.view;
  std::vector<std::uint16_t> o(p.out_elems(), 0xffff);  // NaN poison
  std::vector<float> lse(static_cast<std::size_t>(p.cu_seqlens.back()) * p.config.num_q_heads, NAN);
  engine.plan(p.batch(), cache, ws);
  engine.run(p.batch(), cache, ws, AttentionOutput{o.data(), lse.data()});
  const BlockMask mask = engine.mask_view(ws);
  const BlockTables tables = engine.tables_view(ws);
  CHECK(test::census(p, mask).violations == 0);
  const TableDensity d = table_density(p.config, p.batch(), tables);
  CHECK(d.selected <= d.dense);  // small problems may select every block

  const AttentionConfig& c = p.config;
  const TableShape& shape = tables.shape;
  int final_tails = 0, window_tails = 0;
  std::int64_t entries = 0;
  std::vector<int> split(3);
  for (int b = 0; b < 3; ++b) {
    const SeqInfo si = seq_info(p.batch(), b);
    const int n_qb = ceil_div(si.q_len, c.block_q);
    const int hint = test::expected_tail_hint(f.last_full_blocks, f.window_blocks, si, c.block_q,
                                              c.block_k, p.final_chunk[b] != 0);
    CAPTURE(b);
    REQUIRE(mask.tail_q_blocks[b] == hint);
    REQUIRE(tables.q_split[b] == n_qb - hint);
    split[b] = n_qb - hint;
    (p.final_chunk[b] ? final_tails : window_tails) += hint > 0;
    for (int hg = 0; hg < shape.head_groups; ++hg) {
      // Each table holds exactly the union of its own rows; the final chunk's tail rows keep
      // every block.
      for (int qg = 0; qg < 2; ++qg) {
        const int table = shape.table_index(b, hg, qg);
        std::vector<int> want;
        for (int kb = 0; kb < ceil_div(si.kv_len, c.block_k); ++kb) {
          bool on = false;
          for (int h = hg * shape.heads_per_table; h < (hg + 1) * shape.heads_per_table; ++h) {
            for (int qb = qg == 0 ? 0 : split[b]; qb < (qg == 0 ? split[b] : n_qb); ++qb) {
              on = on || mask.test(b, h, qb, kb);
            }
          }
          const int e = kb * c.block_k / shape.table_block_tokens;
          if (on && (want.empty() || want.back() != e)) want.push_back(e);
        }
        const std::vector<int> got(tables.indices + tables.indptr[table],
                                   tables.indices + tables.indptr[table + 1]);
        CHECK(got == want);
        entries += static_cast<std::int64_t>(want.size());
        if (qg == 1 && p.final_chunk[b] && hint > 0) {
          CHECK(static_cast<int>(got.size()) == ceil_div(si.kv_len, shape.table_block_tokens));
        }
      }
    }
  }
  CHECK(final_tails == 2);
  CHECK(d.selected == entries);
  MESSAGE("window tails among the non-final chunks: ", window_tails);  // seed-dependent

  // The output is attention over each row's own partition's union, from the definition.
  const test::NaiveResult naive = test::naive_attention(p, [&](int b, int h, int t, int j) {
    const int n_qb = ceil_div(p.cu_seqlens[b + 1] - p.cu_seqlens[b], c.block_q);
    const bool tail = t / c.block_q >= split[b];
    const int g = h / shape.heads_per_table, e = j / shape.table_block_tokens;
    for (int hh = g * shape.heads_per_table; hh < (g + 1) * shape.heads_per_table; ++hh) {
      for (int qb = tail ? split[b] : 0; qb < (tail ? n_qb : split[b]); ++qb) {
        for (int kb = e * shape.table_block_tokens / c.block_k;
             kb < std::min((e + 1) * shape.table_block_tokens / c.block_k,
                           ceil_div(p.kv_lens[b], c.block_k));
             ++kb) {
          if (mask.test(b, hh, qb, kb)) return true;
        }
      }
    }
    return false;
  });
  double worst = 0;
  for (std::size_t i = 0; i < o.size(); ++i) {
    const double got = load_float(o.data(), c.dtype, i);
    REQUIRE(!std::isnan(got));
    worst = std::max(worst, std::abs(got - naive.o[i]) / (1.0 + std::abs(naive.o[i])));
  }
  CHECK(worst < 8e-3);  // one bf16 rounding of the output
  for (std::size_t i = 0; i < lse.size(); ++i) REQUIRE(std::abs(lse[i] - naive.lse[i]) < 1e-4);
}
