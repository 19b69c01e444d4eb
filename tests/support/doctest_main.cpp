// doctest entry point shared by the host suites: prints the seed so a failure can be replayed.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>

#include "seed.hpp"

int main(int argc, char** argv) {
  std::printf("compact tests: seed %llu (replay with COMPACT_TEST_SEED=%llu)\n",
              static_cast<unsigned long long>(compact::test::base_seed()),
              static_cast<unsigned long long>(compact::test::base_seed()));
  doctest::Context context(argc, argv);
  return context.run();
}
