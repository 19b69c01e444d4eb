/// @file space.hpp
/// @brief Where a policy's data lives and runs.
#pragma once

namespace compact {

/// Memory space of every pointer a policy receives. A host policy gets host pointers and runs on
/// the calling thread; a device policy gets device pointers and enqueues work on a stream.
enum class Space { host, device };

/// Name of a space, for messages.
constexpr const char* to_string(Space s) {
  return s == Space::host ? "host" : "device";
}

}  // namespace compact
