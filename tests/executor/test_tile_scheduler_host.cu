// TileScheduler's table-to-row mapping on the host (the kernel calls the same functions): every
// chunk row of every head lies in exactly the table TableShape::table_of assigns it, for every
// table shape, with and without a tail split.
#include <doctest/doctest.h>

#include <random>
#include <vector>

#include "../support/seed.hpp"
#include "compact/executor/paged_flash/tile_scheduler.cuh"

using namespace compact;
using paged_flash::Params;
using paged_flash::TileScheduler;
using paged_flash::WorkTile;

TEST_CASE("TileScheduler::rows covers each row of a chunk in the table table_of names") {
  auto rng = test::rng_for(8101);
  long long rows_checked = 0;
  for (int trial = 0; trial < 200; ++trial) {
    AttentionConfig c;
    c.num_kv_heads = 2;
    c.num_q_heads = 2 * (1 + static_cast<int>(rng() % 4));
    c.block_q = 16 << (rng() % 3);
    c.block_k = 64;
    const int mode = static_cast<int>(rng() % 3);  // 0 union, 1 per query block, 2 tail split
    PlanLimits l;
    l.max_batch = 3;
    l.max_chunk = 200;
    l.max_kv_len = 1000;
    const int heads_per_table = mode == 1 ? 1 : c.gqa_group();
    const TableShape shape = TableShape::make(c, l, heads_per_table, mode == 1, mode == 2);
    std::vector<std::int32_t> q_split(l.max_batch);
    for (auto& v : q_split) v = static_cast<int>(rng() % 20) - 3;  // out-of-range values too
    Params p{};
    p.shape = shape;
    p.q_split = mode == 2 && rng() % 4 != 0 ? q_split.data() : nullptr;
    for (int b = 0; b < l.max_batch; ++b) {
      const int len = static_cast<int>(rng() % (l.max_chunk + 1));
      const int n_qb = ceil_div(len, c.block_q);
      const int split = p.q_split != nullptr ? p.q_split[b] : n_qb;
      for (int hg = 0; hg < shape.head_groups; ++hg) {
        int covered = 0;
        for (int qg = 0; qg < shape.q_groups; ++qg) {
          WorkTile w;
          w.b = b;
          w.hg = hg;
          w.qg = qg;
          w.table = shape.table_index(b, hg, qg);
          const paged_flash::RowMap m = TileScheduler::rows(p, w, len);
          CHECK(m.heads == shape.heads_per_table);
          CHECK(m.head0 == hg * shape.heads_per_table);
          covered += m.tokens;
          for (int r = 0; r < m.rows(); ++r) {
            CHECK(shape.table_of(b, m.head(r), m.token(r), split) == w.table);
            ++rows_checked;
          }
        }
        CHECK(covered == len);  // with the check above: each row in exactly its own table
      }
    }
  }
  CHECK(rows_checked > 10000);
}
