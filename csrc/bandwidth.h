// A read-bandwidth probe, so benchmarks can say what fraction of the memory system
// decode reaches on this machine at the same thread count.
#pragma once
#include <cstdint>

namespace hearthlm {

// Best of `reps` timed passes reading `nbytes` (rounded down to 4 KiB) with
// `n_threads` threads; returns GB/s (1e9 bytes per second).
double memory_read_bandwidth(int64_t nbytes, int n_threads, int reps);

}  // namespace hearthlm
