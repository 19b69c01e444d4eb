// Sm90Mma's two GEMMs (wgmma with the library's shared-memory layout and descriptors) against a
// host computation, on one warpgroup: S = Q K^T (both K-major) and O = P V (V MN-major).
#include <doctest/doctest.h>

#include <cmath>
#include <random>
#include <vector>

#include "../support/device_buffer.cuh"
#include "../support/seed.hpp"
#include "compact/arch/sm90a_probe.cuh"
#include "compact/executor/paged_flash/kernel_traits.cuh"
#include "compact/executor/paged_flash/mma_sm90.cuh"

using namespace compact;

namespace {

using T = __nv_bfloat16;
template <int kD>
using Traits =
    paged_flash::KernelTraits<T, kD, paged_flash::TileShape<64, 64, 4, 2, 1>, paged_flash::Sm90Mma>;

// Q, K, V: [64][kD] row-major in global; P: [64][64] fp32 (rounded to bf16 by pv, as in the
// kernel). Writes S [64][64] and O [64][kD] fp32 from the accumulator fragments.
template <int kD>
__global__ void wgmma_gemms(const T* q, const T* k, const T* v, const float* p, float* s_out,
                            float* o_out) {
  using Tr = Traits<kD>;
  __shared__ __align__(1024) T smem[3 * 64 * kD];
  T* sq = smem;
  T* sk = smem + 64 * kD;
  T* sv = smem + 2 * 64 * kD;
  for (int i = threadIdx.x; i < 64 * kD / 8; i += blockDim.x) {
    const int row = i / (kD / 8), chunk = i % (kD / 8);
    const int dst = Tr::template swizzle<64>(row, chunk) * 8;
    for (int e = 0; e < 8; ++e) {
      sq[dst + e] = q[row * kD + chunk * 8 + e];
      sk[dst + e] = k[row * kD + chunk * 8 + e];
      sv[dst + e] = v[row * kD + chunk * 8 + e];
    }
  }
  arch::fence_proxy_async_smem();
  __syncthreads();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float s[1][Tr::kNAtomsS * 4];
  Tr::Mma::template qk<Tr>(s, sq, sk, warp, lane);
  const int row0 = warp * 16 + lane / 4;
  for (int c = 0; c < Tr::kNAtomsS; ++c) {
    for (int e = 0; e < 4; ++e) {
      const int row = row0 + 8 * (e / 2), col = 8 * c + 2 * (lane % 4) + e % 2;
      s_out[row * 64 + col] = s[0][4 * c + e];
      s[0][4 * c + e] = p[row * 64 + col];  // now P, for the second GEMM
    }
  }
  float o[1][Tr::kNAtomsO * 4] = {};
  Tr::Mma::template pv<Tr>(o, s, sv, warp, lane);
  for (int c = 0; c < Tr::kNAtomsO; ++c) {
    for (int e = 0; e < 4; ++e) {
      const int row = row0 + 8 * (e / 2), col = 8 * c + 2 * (lane % 4) + e % 2;
      o_out[row * kD + col] = o[0][4 * c + e];
    }
  }
}

template <int kD>
void check_gemms(std::uint64_t salt) {
  auto rng = test::rng_for(salt);
  std::normal_distribution<float> normal;
  std::vector<T> q(64 * kD), k(64 * kD), v(64 * kD);
  std::vector<float> p(64 * 64);
  for (auto* m : {&q, &k, &v}) {
    for (T& x : *m) x = __float2bfloat16(normal(rng));
  }
  // P exactly representable in bf16, so the kernel's rounding of P adds no error.
  for (float& x : p) x = __bfloat162float(__float2bfloat16(normal(rng)));
  test::DeviceBuffer<T> dq(q), dk(k), dv(v);
  test::DeviceBuffer<float> dp(p), ds(64 * 64), dout(64 * kD);
  ds.fill_bytes(0xff);
  dout.fill_bytes(0xff);
  wgmma_gemms<kD><<<1, 128>>>(dq.get(), dk.get(), dv.get(), dp.get(), ds.get(), dout.get());
  COMPACT_CUDA_CHECK(cudaGetLastError());
  COMPACT_CUDA_CHECK(cudaDeviceSynchronize());
  const std::vector<float> s = ds.download(), o = dout.download();
  double s_err = 0, o_err = 0;
  for (int i = 0; i < 64; ++i) {
    for (int j = 0; j < 64; ++j) {
      double ref = 0;
      for (int d = 0; d < kD; ++d) {
        ref += double(__bfloat162float(q[i * kD + d])) * __bfloat162float(k[j * kD + d]);
      }
      s_err = std::max(s_err, std::abs(ref - s[i * 64 + j]));  // NaN poison -> comparison fails
      if (std::isnan(s[i * 64 + j])) s_err = INFINITY;
    }
    for (int d = 0; d < kD; ++d) {
      double ref = 0;
      for (int j = 0; j < 64; ++j) ref += double(p[i * 64 + j]) * __bfloat162float(v[j * kD + d]);
      o_err = std::max(o_err, std::abs(ref - o[i * kD + d]));
      if (std::isnan(o[i * kD + d])) o_err = INFINITY;
    }
  }
  MESSAGE("wgmma D=", kD, ": max |S - ref| ", s_err, ", max |O - ref| ", o_err);
  CHECK(s_err < 1e-3);  // exact products, fp32 sums of 128 terms
  CHECK(o_err < 1e-3);
}

}  // namespace

TEST_CASE("Sm90Mma: wgmma Q K^T and P V on the library's swizzled layout equal the host") {
  if (!arch::sm90a_available()) {
    MESSAGE("SKIPPED: the current GPU or this binary has no sm_90a code");
    return;
  }
  check_gemms<64>(8001);
  check_gemms<128>(8002);
}
