/// @file parallel.hpp
/// @brief parallel_for over host threads (the tools' only parallelism; results never depend on
/// the thread count because every work item writes its own slots).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace compact::tools {

/// Threads to use: COMPACT_TOOL_THREADS if set, else the hardware concurrency.
inline int tool_threads() {
  if (const char* env = std::getenv("COMPACT_TOOL_THREADS")) {
    const int n = std::atoi(env);
    if (n > 0) return n;
  }
  return std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
}

/// Calls fn(i) for every i in [0, n), items handed out dynamically to tool_threads() threads.
/// The first exception thrown by any item is rethrown on the caller's thread.
template <class Fn>
void parallel_for(long long n, Fn&& fn) {
  const int threads = static_cast<int>(std::min<long long>(tool_threads(), n));
  if (threads <= 1) {
    for (long long i = 0; i < n; ++i) fn(i);
    return;
  }
  std::atomic<long long> next{0};
  std::exception_ptr error;
  std::mutex error_mutex;
  auto work = [&] {
    for (;;) {
      const long long i = next.fetch_add(1);
      if (i >= n) return;
      try {
        fn(i);
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex);
        if (!error) error = std::current_exception();
        next = n;
      }
    }
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) pool.emplace_back(work);
  work();
  for (std::thread& t : pool) t.join();
  if (error) std::rethrow_exception(error);
}

}  // namespace compact::tools
