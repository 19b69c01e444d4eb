/// @file compact.cuh
/// @brief Umbrella header: the whole library (requires nvcc).
#pragma once

#include "compact/core/block_mask.hpp"
#include "compact/core/block_tables.hpp"
#include "compact/core/chunk_batch.hpp"
#include "compact/core/config.hpp"
#include "compact/core/cuda_check.hpp"
#include "compact/core/device_validate.cuh"
#include "compact/core/dtype.hpp"
#include "compact/core/error.hpp"
#include "compact/core/limits.hpp"
#include "compact/core/paged_kv.hpp"
#include "compact/core/validate.hpp"
#include "compact/core/workspace.hpp"
#include "compact/engine.cuh"
#include "compact/executor/block_sparse_executor.cuh"
#include "compact/executor/paged_flash_executor.cuh"
#include "compact/executor/reference_executor.hpp"
#include "compact/mask/rule_mask.cuh"
#include "compact/union/table_stats.hpp"
#include "compact/union/table_union.cuh"
