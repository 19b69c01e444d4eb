// Conformance of the shipped policies to the concepts, and rejection of incomplete ones.
// Compiling this file is the test; the runtime case only records that it compiled.
#include <doctest/doctest.h>

#include "compact/compact.cuh"

using namespace compact;

static_assert(MaskSource<DenseMask> && HostMaskSource<DenseMask> && DeviceMaskSource<DenseMask>);
static_assert(MaskSource<SinkLocalMask> && DeviceMaskSource<SinkLocalMask>);
static_assert(HasConfigure<SinkLocalMask>);
static_assert(UnionStrategy<BlockUnion<>> && HostUnionStrategy<BlockUnion<>>);
static_assert(UnionStrategy<QBlockUnion<>> && UnionStrategy<GroupUnion<>> &&
              UnionStrategy<NoUnion<>>);
static_assert(Executor<ReferenceExecutor> && ReferenceExecutor::space == Space::host);

// Declared, never defined: only their signatures matter to the concepts.
namespace conformance {
struct NoBuild {};
struct HostOnlyMask {
  void build_host(const MaskArgs&) const;
};
struct WrongShape {
  int table_shape(const AttentionConfig&, const PlanLimits&) const;
  void build_host(const UnionArgs&) const;
};
struct NoSpace {
  void run(const ExecArgs&, cudaStream_t) const;
};
}  // namespace conformance

using namespace conformance;
static_assert(!MaskSource<NoBuild>);
static_assert(MaskSource<HostOnlyMask> && !DeviceMaskSource<HostOnlyMask>);
static_assert(!UnionStrategy<WrongShape>);
static_assert(!Executor<NoSpace>);
static_assert(!MaskSource<int>);

TEST_CASE(
    "policy concepts: shipped policies conform, incomplete ones are rejected (compile time)") {
  CHECK(MaskSource<HostOnlyMask>);
}
