#include "bandwidth.h"

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <new>

namespace hearthlm {

double memory_read_bandwidth(int64_t nbytes, int n_threads, int reps) {
  const int64_t n = (nbytes / 4096) * 4096 / int64_t(sizeof(uint64_t));
  if (n <= 0 || reps <= 0) return 0.0;
  uint64_t* data = static_cast<uint64_t*>(std::aligned_alloc(4096, n * sizeof(uint64_t)));
  if (!data) throw std::bad_alloc();
#pragma omp parallel for num_threads(n_threads)
  for (int64_t i = 0; i < n; ++i) data[i] = uint64_t(i);  // first touch by the reading thread
  double best = 0.0;
  volatile uint64_t sink = 0;
  for (int r = 0; r < reps; ++r) {
    uint64_t total = 0;
    const auto t0 = std::chrono::steady_clock::now();
#pragma omp parallel for num_threads(n_threads) reduction(+ : total)
    for (int64_t i = 0; i < n; ++i) total += data[i];
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    sink = sink + total;
    const double gbs = double(n * sizeof(uint64_t)) / s / 1e9;
    if (gbs > best) best = gbs;
  }
  std::free(data);
  return best;
}

}  // namespace hearthlm
