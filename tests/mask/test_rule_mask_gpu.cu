// Device RuleMask builds equal their host builds bit for bit.
#include <doctest/doctest.h>

#include "../support/device_problem.cuh"
#include "../support/seed.hpp"
#include "compact/mask/rule_mask.cuh"

using namespace compact;

namespace {

template <class Mask>
void check_device_equals_host(const Mask& m, std::uint64_t salt) {
  auto rng = test::rng_for(salt);
  for (int rep = 0; rep < 4; ++rep) {
    AttentionConfig c;
    c.num_q_heads = rep % 2 ? 16 : 8;
    c.num_kv_heads = rep % 2 ? 4 : 8;
    c.head_dim = 8;
    c.block_q = rep < 2 ? 64 : 128;
    c.block_k = rep < 2 ? 128 : 64;
    test::ProblemSpec spec;
    spec.num_seqs = 1 + rep * 3;
    spec.max_chunk = 700;
    spec.max_kv = 9000;
    const test::HostProblem p = test::make_problem(c, spec, rng);
    const test::DeviceProblem d(p);
    const BlockMask shape = BlockMask::shape_for(c, p.limits);
    std::vector<std::uint32_t> host_bits(shape.num_words(), 0);
    test::DeviceBuffer<std::uint32_t> dev_bits(shape.num_words());
    dev_bits.fill_bytes(0);
    BlockMask hm = shape, dm = shape;
    hm.bits = host_bits.data();
    dm.bits = dev_bits.get();
    m.build_host(MaskArgs{c, p.limits, p.batch(), p.cache(), hm, {}});
    m.build_device(MaskArgs{c, p.limits, d.batch(), d.cache(), dm, {}}, nullptr);
    COMPACT_CUDA_CHECK(cudaDeviceSynchronize());
    CHECK(dev_bits.download() == host_bits);
  }
}

}  // namespace

TEST_CASE("DenseMask: device equals host") {
  check_device_equals_host(DenseMask{}, 5001);
}
TEST_CASE("SinkLocalMask: device equals host") {
  check_device_equals_host(SinkLocalMask(2, 4), 5002);
}
