// Peak arithmetic throughput of this CPU for the instructions hearthlm's matmuls use:
// int8 dot products (AVX2 maddubs+madd, AVX-512 VNNI and AVX-VNNI vpdpbusd, AMX tiles) and f32
// FMA (AVX2, AVX-512). Each loop runs 12 independent accumulator chains, so only
// throughput limits it. Built and run by bench/peak.py; one line per kind and thread
// count (1 and the given count): "kind threads GOP/s" (a multiply-add counts 2 operations).
// A second argument "cpu" times each thread by its own CPU time and sums the rates, so
// time a thread spends descheduled on a busy machine does not count.
#include <omp.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>

#include "peak_loops.h"

namespace {

using namespace peak;

struct Kind {
  const char* name;
  int supported;
  long (*run)();
};

}  // namespace

int main(int argc, char** argv) {
  const int max_threads = argc > 1 ? std::atoi(argv[1]) : 2;
  const bool cpu_time = argc > 2 && std::strcmp(argv[2], "cpu") == 0;
  __builtin_cpu_init();
  const Kind kinds[] = {
      {"f32_fma_avx2", __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"), fma_avx2},
      {"f32_fma_avx512", __builtin_cpu_supports("avx512f"), fma_avx512},
      {"int8_avx2_maddubs", __builtin_cpu_supports("avx2"), int8_avx2},
      {"int8_avx512_vnni", __builtin_cpu_supports("avx512vnni"), int8_vnni512},
      {"int8_avx_vnni", __builtin_cpu_supports("avxvnni"), int8_avxvnni},
#if defined(__linux__)
      {"int8_amx", amx_usable(), int8_amx},
#endif
  };
  for (const Kind& k : kinds) {
    if (!k.supported) continue;
    for (int threads = 1; threads <= max_threads; threads = threads == max_threads ? threads + 1 : max_threads) {
      long ops = 0;
      double cpu_rate = 0.0;
      const auto t0 = std::chrono::steady_clock::now();
#pragma omp parallel num_threads(threads) reduction(+ : ops, cpu_rate)
      {
        timespec c0, c1;
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c0);
        const long n = k.run();
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c1);
        ops += n;
        cpu_rate += double(n) / (double(c1.tv_sec - c0.tv_sec) + 1e-9 * double(c1.tv_nsec - c0.tv_nsec));
      }
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::printf("%s %d %.1f\n", k.name, threads, (cpu_time ? cpu_rate : double(ops) / s) / 1e9);
    }
  }
  return 0;
}
