/// @file workspace.hpp
/// @brief Workspace (caller-owned scratch memory) and the carver that lays it out.
#pragma once

#include <cstddef>
#include <cstdint>

#include "compact/core/error.hpp"

namespace compact {

/// Caller-owned scratch memory, host or device as the engine's policies require. The library
/// never allocates: ask an Engine for workspace_bytes() once, allocate, and pass the same
/// workspace to plan() and run().
struct Workspace {
  void* data = nullptr;   ///< Start of the memory.
  std::size_t bytes = 0;  ///< Size of the memory.
};

/// Every carved region starts on this boundary (enough for vector loads and CUB).
inline constexpr std::size_t kWorkspaceAlignment = 256;

/// Lays regions out one after another. With a null base it only measures, so sizing and carving
/// run the same code and cannot disagree.
class WorkspaceCarver {
 public:
  /// Carves [base, base + bytes); a null base only measures.
  explicit WorkspaceCarver(void* base = nullptr, std::size_t bytes = 0)
      : base_(static_cast<std::byte*>(base)), bytes_(bytes) {}

  /// Reserves `count` elements of T; returns null when only measuring.
  template <class T>
  T* take(std::size_t count) {
    return static_cast<T*>(take_bytes(count * sizeof(T)));
  }
  /// Reserves `bytes` bytes; returns null when only measuring.
  void* take_bytes(std::size_t bytes) {
    const std::size_t start = used_;
    used_ += (bytes + kWorkspaceAlignment - 1) / kWorkspaceAlignment * kWorkspaceAlignment;
    if (base_ == nullptr) return nullptr;
    require(used_ <= bytes_, "workspace.bytes", bytes_,
            detail::cat("at least ", used_, " bytes (Engine::workspace_bytes())"));
    return base_ + start;
  }
  /// Hands the rest of the workspace to a sub-component as its own Workspace.
  Workspace take_workspace(std::size_t bytes) { return Workspace{take_bytes(bytes), bytes}; }
  /// Bytes reserved so far, padding included.
  std::size_t used() const { return used_; }

 private:
  std::byte* base_;
  std::size_t bytes_;
  std::size_t used_ = 0;
};

}  // namespace compact
