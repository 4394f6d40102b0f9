// Peak arithmetic throughput of this CPU for the instructions hearthlm's matmuls use:
// int8 dot products (AVX2 maddubs+madd, AVX-512 VNNI and AVX-VNNI vpdpbusd) and f32
// FMA (AVX2, AVX-512). Each loop runs 12 independent accumulator chains, so only
// throughput limits it. Built and run by bench/peak.py; one line per kind and thread
// count (1 and the given count): "kind threads GOP/s" (a multiply-add counts 2 operations).
// A second argument "cpu" times each thread by its own CPU time and sums the rates, so
// time a thread spends descheduled on a busy machine does not count.
#include <immintrin.h>
#include <omp.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>

namespace {

constexpr long kIters = 20000000;
constexpr int kChains = 12;

#define KEEP(v) __asm__ volatile("" : "+v"(v))

__attribute__((target("avx2,fma"))) long fma_avx2() {
  __m256 acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = _mm256_set1_ps(float(i));
  __m256 a = _mm256_set1_ps(0.999f), b = _mm256_set1_ps(1e-7f);
  for (long n = 0; n < kIters; ++n) {
    KEEP(a);
    for (int i = 0; i < kChains; ++i) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
  }
  for (int i = 0; i < kChains; ++i) KEEP(acc[i]);
  return kIters * kChains * 8 * 2;
}

__attribute__((target("avx512f"))) long fma_avx512() {
  __m512 acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = _mm512_set1_ps(float(i));
  __m512 a = _mm512_set1_ps(0.999f), b = _mm512_set1_ps(1e-7f);
  for (long n = 0; n < kIters; ++n) {
    KEEP(a);
    for (int i = 0; i < kChains; ++i) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
  }
  for (int i = 0; i < kChains; ++i) KEEP(acc[i]);
  return kIters * kChains * 16 * 2;
}

// u8 x s8 as the AVX2 kernels do it: maddubs (pairs to int16), madd (to int32), add;
// 2 weight x 4 activation registers give 8 distinct products per step.
__attribute__((target("avx2"))) long int8_avx2() {
  __m256i acc[8], x[4];
  for (int i = 0; i < 8; ++i) acc[i] = _mm256_set1_epi32(i);
  for (int i = 0; i < 4; ++i) x[i] = _mm256_set1_epi8(char(i + 1));
  __m256i w0 = _mm256_set1_epi8(3), w1 = _mm256_set1_epi8(5);
  const __m256i ones = _mm256_set1_epi16(1);
  for (long n = 0; n < kIters; ++n) {
    KEEP(w0);
    KEEP(w1);
    for (int i = 0; i < 4; ++i) {
      acc[i] = _mm256_add_epi32(acc[i], _mm256_madd_epi16(_mm256_maddubs_epi16(w0, x[i]), ones));
      acc[i + 4] = _mm256_add_epi32(acc[i + 4], _mm256_madd_epi16(_mm256_maddubs_epi16(w1, x[i]), ones));
    }
  }
  for (int i = 0; i < 8; ++i) KEEP(acc[i]);
  return kIters * 8 * 32 * 2;
}

__attribute__((target("avx512f,avx512vnni"))) long int8_vnni512() {
  __m512i acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = _mm512_set1_epi32(i);
  __m512i a = _mm512_set1_epi8(3), b = _mm512_set1_epi8(5);
  for (long n = 0; n < kIters; ++n) {
    KEEP(a);
    for (int i = 0; i < kChains; ++i) acc[i] = _mm512_dpbusd_epi32(acc[i], a, b);
  }
  for (int i = 0; i < kChains; ++i) KEEP(acc[i]);
  return kIters * kChains * 64 * 2;
}

__attribute__((target("avx2,avxvnni"))) long int8_avxvnni() {
  __m256i acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = _mm256_set1_epi32(i);
  __m256i a = _mm256_set1_epi8(3), b = _mm256_set1_epi8(5);
  for (long n = 0; n < kIters; ++n) {
    KEEP(a);
    for (int i = 0; i < kChains; ++i) acc[i] = _mm256_dpbusd_avx_epi32(acc[i], a, b);
  }
  for (int i = 0; i < kChains; ++i) KEEP(acc[i]);
  return kIters * kChains * 32 * 2;
}

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
