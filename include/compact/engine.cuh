/// @file engine.cuh
/// @brief compact::Engine: mask source + union strategy + executor, composed at compile time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>

#include <cuda_runtime_api.h>

#include "compact/concepts/executor.hpp"
#include "compact/concepts/mask_source.hpp"
#include "compact/concepts/union_strategy.hpp"
#include "compact/core/device_validate.cuh"
#include "compact/core/policy_args.hpp"
#include "compact/core/validate.hpp"

namespace compact {

/// Engine-wide switches that are not part of the attention problem.
struct EngineOptions {
  /// plan() checks every length and page id on the device (one kernel and one stream
  /// synchronization). For debugging engines that pass no host mirrors; off by default.
  bool validate_on_device = false;
};

/// One attention layer of chunked prefill, as three compile-time policies:
/// `Mask` (Q chunk + K cache -> 2D block mask), `Union` (mask -> block tables) and `Exec`
/// (attention over the tables). The executor's Space decides where everything runs.
///
/// Lifecycle: construct once with the config and the limits of every step it will serve (this
/// validates both and fixes every buffer size and grid), allocate workspace_bytes() in the
/// executor's memory space, then per step and layer call plan() (mask + union, writes the tables
/// into the workspace) and run() (attention). Neither allocates nor synchronizes (unless
/// EngineOptions::validate_on_device), so both can be captured in a CUDA graph for a fixed
/// batch size; lengths are read on the device.
template <class Mask, class Union, class Exec>
class Engine {
  static_assert(MaskSource<Mask>,
                "compact::Engine<Mask, Union, Exec>: Mask must model compact::MaskSource: a "
                "copyable struct with `void build_host(const compact::MaskArgs&) const` and/or "
                "`void build_device(const compact::MaskArgs&, cudaStream_t) const`.");
  static_assert(UnionStrategy<Union>,
                "compact::Engine<Mask, Union, Exec>: Union must model compact::UnionStrategy: a "
                "copyable struct with `compact::TableShape table_shape(const "
                "compact::AttentionConfig&, const compact::PlanLimits&) const` and "
                "`build_host(const compact::UnionArgs&) const` and/or "
                "`build_device(const compact::UnionArgs&, cudaStream_t) const`.");
  static_assert(Executor<Exec>,
                "compact::Engine<Mask, Union, Exec>: Exec must model compact::Executor: a "
                "copyable struct with `static constexpr compact::Space space` and "
                "`void run(const compact::ExecArgs&, cudaStream_t) const`.");

 public:
  /// Where every pointer handed to plan() and run() must live.
  static constexpr Space space = Exec::space;

  static_assert(space == Space::host || DeviceMaskSource<Mask>,
                "compact::Engine: the executor runs on the device, so Mask needs "
                "`void build_device(const compact::MaskArgs&, cudaStream_t) const`.");
  static_assert(space == Space::device || HostMaskSource<Mask>,
                "compact::Engine: the executor runs on the host, so Mask needs "
                "`void build_host(const compact::MaskArgs&) const`.");
  static_assert(space == Space::host || DeviceUnionStrategy<Union>,
                "compact::Engine: the executor runs on the device, so Union needs "
                "`void build_device(const compact::UnionArgs&, cudaStream_t) const`.");
  static_assert(space == Space::device || HostUnionStrategy<Union>,
                "compact::Engine: the executor runs on the host, so Union needs "
                "`void build_host(const compact::UnionArgs&) const`.");

  /// Validates `config` and `limits` (compact::Error names the first bad field) and lets each
  /// policy validate itself and fix its launch plan.
  Engine(const AttentionConfig& config, const PlanLimits& limits, Mask mask = {},
         Union union_strategy = {}, Exec executor = {}, EngineOptions options = {})
      : config_(config),
        limits_(limits),
        mask_(std::move(mask)),
        union_(std::move(union_strategy)),
        exec_(std::move(executor)),
        options_(options) {
    config_.validate();
    limits_.validate();
    detail::configure(mask_, config_, limits_);
    detail::configure(union_, config_, limits_);
    shape_ = union_.table_shape(config_, limits_);
    require(shape_.heads_per_table > 0 && config_.num_q_heads % shape_.heads_per_table == 0,
            "table_shape().heads_per_table", shape_.heads_per_table,
            "a divisor of config.num_q_heads");
    require(config_.gqa_group() % shape_.heads_per_table == 0, "table_shape().heads_per_table",
            shape_.heads_per_table,
            "a divisor of the GQA group (a table's heads must share one KV head)");
    if constexpr (HasExecutorConfigure<Exec>) exec_.configure(config_, limits_, shape_);
  }

  /// Bytes of workspace plan() and run() need, in the executor's memory space.
  std::size_t workspace_bytes() const { return carve(Workspace{}).used; }

  /// Mask + union: writes the block mask and the block tables into the workspace. Validates the
  /// inputs on the host first (compact::Error on a bad argument).
  void plan(const ChunkBatch& batch, const PagedKV& cache, Workspace workspace,
            cudaStream_t stream = nullptr) const {
    validate_batch(config_, limits_, batch, space);
    validate_cache(config_, limits_, batch, cache, space);
    const Layout w = carve(workspace);
    if constexpr (space == Space::device) {
      if (options_.validate_on_device) {
        validate_on_device(config_, limits_, batch, cache, w.validation_record, stream);
      }
    }
    const MaskArgs mask_args{config_, limits_, batch, cache, w.mask, w.mask_scratch};
    const UnionArgs union_args{config_, limits_, batch, w.mask, w.tables, w.union_scratch};
    if constexpr (space == Space::device) {
      mask_.build_device(mask_args, stream);
      union_.build_device(union_args, stream);
    } else {
      mask_.build_host(mask_args);
      union_.build_host(union_args);
    }
  }

  /// Attention over the tables the last plan() wrote into `workspace`, for the same batch.
  void run(const ChunkBatch& batch, const PagedKV& cache, Workspace workspace,
           const AttentionOutput& out, cudaStream_t stream = nullptr) const {
    validate_batch(config_, limits_, batch, space);
    validate_output(config_, batch, out);
    const Layout w = carve(workspace);
    exec_.run(ExecArgs{config_, limits_, batch, cache, w.tables, out, w.exec_scratch}, stream);
  }

  /// The mask the last plan() wrote (views into `workspace`).
  BlockMask mask_view(Workspace workspace) const { return carve(workspace).mask; }
  /// The tables the last plan() wrote (views into `workspace`).
  BlockTables tables_view(Workspace workspace) const { return carve(workspace).tables; }

  const AttentionConfig& config() const { return config_; }  ///< The config.
  const PlanLimits& limits() const { return limits_; }       ///< The plan limits.
  const TableShape& table_shape() const { return shape_; }   ///< The block tables' shape.
  const Mask& mask_source() const { return mask_; }          ///< The mask source policy.
  const Union& union_strategy() const { return union_; }     ///< The union strategy policy.
  const Exec& executor() const { return exec_; }             ///< The executor policy.

 private:
  struct Layout {
    BlockMask mask;
    BlockTables tables;
    Workspace mask_scratch, union_scratch, exec_scratch;
    void* validation_record = nullptr;
    std::size_t used = 0;
  };

  /// The one place the workspace is laid out: sizing runs it with a null base.
  Layout carve(Workspace ws) const {
    if (ws.data != nullptr) {
      require_aligned(ws.data, kWorkspaceAlignment, "workspace.data");
    } else {
      require(ws.bytes == 0, "workspace.data", "nullptr", "a valid pointer");
    }
    WorkspaceCarver carver(ws.data, ws.bytes);
    Layout w;
    w.mask = BlockMask::shape_for(config_, limits_);
    w.mask.bits = carver.take<std::uint32_t>(w.mask.num_words());
    if constexpr (MaskWritesTailHint<Mask>) {
      w.mask.tail_q_blocks = carver.take<std::int32_t>(limits_.max_batch);
    }
    w.tables.shape = shape_;
    w.tables.indptr = carver.take<std::int32_t>(shape_.num_tables() + 1);
    w.tables.indices = carver.take<std::int32_t>(shape_.capacity());
    w.tables.last_block_tokens = carver.take<std::int32_t>(shape_.num_tables());
    if (shape_.tail_split) w.tables.q_split = carver.take<std::int32_t>(limits_.max_batch);
    w.mask_scratch = carver.take_workspace(detail::workspace_bytes_of(mask_, config_, limits_));
    w.union_scratch = carver.take_workspace(detail::workspace_bytes_of(union_, config_, limits_));
    std::size_t exec_bytes = 0;
    if constexpr (HasExecutorWorkspace<Exec>) {
      exec_bytes = exec_.workspace_bytes(config_, limits_, shape_);
    }
    w.exec_scratch = carver.take_workspace(exec_bytes);
    if constexpr (space == Space::device) {
      w.validation_record = carver.take_bytes(sizeof(detail::DeviceValidationRecord));
    }
    w.used = carver.used();
    return w;
  }

  AttentionConfig config_;
  PlanLimits limits_;
  Mask mask_;
  Union union_;
  Exec exec_;
  EngineOptions options_;
  TableShape shape_{};
};

}  // namespace compact
