// Work split into contiguous ranges, one per OpenMP thread: the marching kernels' threads each take
// a block of layers (cubes) or rows (squares), keep their scratch for it, and sweep it in order.
#pragma once

#include <cstdint>
#include <exception>
#include <mutex>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace fastsdf {

// Threads that parallel_ranges gives work to: no more than there are items, at least one.
inline int64_t busy_threads(int64_t items) {
#ifdef _OPENMP
  const int64_t threads = omp_get_max_threads();
#else
  const int64_t threads = 1;
#endif
  return threads < items ? threads : (items > 1 ? items : 1);
}

// Runs work(begin, end) on contiguous ranges of [0, n), one per busy thread, and rethrows the first
// exception any thread raised (an exception must not leave an OpenMP region).
template <typename Work>
void parallel_ranges(int64_t n, Work&& work) {
  std::exception_ptr error;
  std::mutex error_mutex;
#pragma omp parallel num_threads(static_cast<int>(busy_threads(n)))
  {
#ifdef _OPENMP
    const int64_t thread = omp_get_thread_num(), threads = omp_get_num_threads();
#else
    const int64_t thread = 0, threads = 1;
#endif
    const int64_t begin = n * thread / threads, end = n * (thread + 1) / threads;
    if (begin < end) {
      try {
        work(begin, end);
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex);
        if (!error) error = std::current_exception();
      }
    }
  }
  if (error) std::rethrow_exception(error);
}

}  // namespace fastsdf
