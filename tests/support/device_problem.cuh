// A HostProblem mirrored on the device, with host mirrors wired for validation.
#pragma once

#include "device_buffer.cuh"
#include "random_problem.hpp"

namespace compact::test {

struct DeviceProblem {
  DeviceBuffer<std::int32_t> cu_seqlens, kv_lens, page_table, final_chunk;
  DeviceBuffer<std::uint16_t> q, k, v;
  const HostProblem* host = nullptr;

  explicit DeviceProblem(const HostProblem& p)
      : cu_seqlens(p.cu_seqlens),
        kv_lens(p.kv_lens),
        page_table(p.page_table),
        final_chunk(p.final_chunk),
        q(p.q),
        k(p.k),
        v(p.v),
        host(&p) {}

  ChunkBatch batch() const {
    ChunkBatch b = host->batch();
    b.q = q.get();
    b.cu_seqlens_q = cu_seqlens.get();
    b.kv_lens = kv_lens.get();
    b.final_chunk = final_chunk.get();
    b.host_cu_seqlens_q = host->cu_seqlens.data();
    b.host_kv_lens = host->kv_lens.data();
    return b;
  }
  PagedKV cache() const {
    PagedKV c = host->cache();
    c.k_pages = k.get();
    c.v_pages = v.get();
    c.page_table = page_table.get();
    c.host_page_table = host->page_table.data();
    return c;
  }
};

}  // namespace compact::test
