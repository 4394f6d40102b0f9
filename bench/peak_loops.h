// The peak loops of bench/peak.cpp and bench/gemm_peak.cpp: each runs independent
// accumulator chains of one instruction hearthlm's matmuls use, so only throughput
// limits it, and returns the operations it did (a multiply-add counts 2).
#pragma once
#include <immintrin.h>

namespace peak {

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

}  // namespace peak
