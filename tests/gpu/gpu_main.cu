// Entry point of the GPU suites: skips visibly (exit code 77, ctest "Skipped") without a device.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>

#include <cuda_runtime_api.h>

#include "../support/seed.hpp"

int main(int argc, char** argv) {
  int devices = 0;
  const cudaError_t status = cudaGetDeviceCount(&devices);
  if (status != cudaSuccess || devices == 0) {
    std::printf(
        "SKIPPED: the GPU tests need a CUDA device, and none is usable here (%s). "
        "Host tests cover the references; run this suite on a GPU machine.\n",
        status != cudaSuccess ? cudaGetErrorString(status) : "0 devices");
    return 77;
  }
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  std::printf(
      "compact GPU tests on %s (sm_%d%d, %d SMs); seed %llu (replay with COMPACT_TEST_SEED)\n",
      prop.name, prop.major, prop.minor, prop.multiProcessorCount,
      static_cast<unsigned long long>(compact::test::base_seed()));
  doctest::Context context(argc, argv);
  return context.run();
}
