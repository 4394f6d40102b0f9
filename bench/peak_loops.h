// The peak loops of bench/peak.cpp and bench/gemm_peak.cpp: each runs independent
// accumulator chains of one instruction hearthlm's matmuls use, so only throughput
// limits it, and returns the operations it did (a multiply-add counts 2).
#pragma once
#include <cpuid.h>
#include <immintrin.h>
#include <cstdint>
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

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

#if defined(__linux__)
// AMX-INT8: cpuid says so and Linux grants the tile data (ARCH_REQ_XCOMP_PERM, XTILEDATA).
inline bool amx_usable() {
  unsigned a, b, c, d;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !(d & (1u << 24)) || !(d & (1u << 25))) return false;
  return syscall(SYS_arch_prctl, 0x1023, 18) == 0;
}

// TDPBSSD on full tiles (16 x 64 bytes by 16 x 64): 4 accumulator tiles from 2 A and
// 2 B tiles, 16 x 16 x 64 multiply-adds each. hearthlm's kernels use K = 32 per
// instruction (one scale per 32 weights), which takes as long: half this rate at best.
__attribute__((target("amx-tile,amx-int8"))) long int8_amx() {
  struct alignas(64) {
    uint8_t palette = 1, start_row = 0, reserved[14] = {};
    uint16_t colsb[16] = {64, 64, 64, 64, 64, 64, 64, 64};
    uint8_t rows[16] = {16, 16, 16, 16, 16, 16, 16, 16};
  } cfg;
  alignas(64) static thread_local int8_t data[16 * 64];
  __asm__ volatile("" ::: "memory");  // ldtilecfg is asm that tells the compiler nothing of cfg: store it first
  _tile_loadconfig(&cfg);
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  _tile_loadd(4, data, 64);
  _tile_loadd(5, data, 64);
  _tile_loadd(6, data, 64);
  _tile_loadd(7, data, 64);
  const long iters = kIters / 8;
  for (long n = 0; n < iters; ++n) {
    _tile_dpbssd(0, 4, 6);
    _tile_dpbssd(1, 4, 7);
    _tile_dpbssd(2, 5, 6);
    _tile_dpbssd(3, 5, 7);
  }
  _tile_release();
  return iters * 4 * 16 * 16 * 64 * 2;
}
#endif

}  // namespace peak
