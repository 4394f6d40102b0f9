// Test-only: compile an AVX-512 translation unit for a CPU without AVX-512 by mapping
// its intrinsics to SIMDe's portable implementations (Debian: libsimde-dev), so the
// kernel driver can check the AVX-512 paths against scalar on any x86-64 with AVX2.
// SIMDe 0.7.4 lacks a few intrinsics the kernels use; they are defined here from
// their Intel definitions, element by element. Its alias for _mm512_madd_epi16 takes the
// masked form's four arguments (a SIMDe bug), so that alias is redefined at the end.
#pragma once
#define SIMDE_ENABLE_NATIVE_ALIASES
#include <math.h>
#include <simde/x86/avx512.h>
#include <stdint.h>
#include <string.h>

#include "kernels/convert.h"

namespace avx512_emulation {

static inline simde__m512i cvtps_epi32(simde__m512 a) {  // round to nearest even
  float f[16];
  int32_t r[16];
  simde_mm512_storeu_ps(f, a);
  for (int i = 0; i < 16; ++i) r[i] = int32_t(nearbyintf(f[i]));
  return simde_mm512_loadu_si512(r);
}
static inline simde__m512 cvtepi32_ps(simde__m512i a) {
  int32_t v[16];
  float r[16];
  simde_mm512_storeu_si512(v, a);
  for (int i = 0; i < 16; ++i) r[i] = float(v[i]);
  return simde_mm512_loadu_ps(r);
}
static inline simde__m512i cvtepu16_epi32(simde__m256i a) {
  uint16_t v[16];
  int32_t r[16];
  simde_mm256_storeu_si256(reinterpret_cast<simde__m256i*>(v), a);
  for (int i = 0; i < 16; ++i) r[i] = v[i];
  return simde_mm512_loadu_si512(r);
}
static inline simde__m512i cvtepi8_epi32(simde__m128i a) {
  int8_t v[16];
  int32_t r[16];
  simde_mm_storeu_si128(reinterpret_cast<simde__m128i*>(v), a);
  for (int i = 0; i < 16; ++i) r[i] = v[i];
  return simde_mm512_loadu_si512(r);
}
static inline simde__m512 cvtph_ps(simde__m256i a) {
  uint16_t v[16];
  float r[16];
  simde_mm256_storeu_si256(reinterpret_cast<simde__m256i*>(v), a);
  for (int i = 0; i < 16; ++i) r[i] = hearthlm::f16_to_float(v[i]);
  return simde_mm512_loadu_ps(r);
}
static inline simde__m512 maskz_loadu_ps(simde__mmask16 k, const void* p) {
  float r[16];
  for (int i = 0; i < 16; ++i) r[i] = (k >> i) & 1 ? static_cast<const float*>(p)[i] : 0.0f;
  return simde_mm512_loadu_ps(r);
}
static inline void mask_storeu_ps(void* p, simde__mmask16 k, simde__m512 a) {
  float f[16];
  simde_mm512_storeu_ps(f, a);
  for (int i = 0; i < 16; ++i)
    if ((k >> i) & 1) static_cast<float*>(p)[i] = f[i];
}
static inline simde__m512 shuffle_f32x4(simde__m512 a, simde__m512 b, int imm) {
  float fa[16], fb[16], r[16];
  simde_mm512_storeu_ps(fa, a);
  simde_mm512_storeu_ps(fb, b);
  for (int lane = 0; lane < 4; ++lane) {
    const float* from = lane < 2 ? fa : fb;
    memcpy(r + 4 * lane, from + 4 * ((imm >> (2 * lane)) & 3), 4 * sizeof(float));
  }
  return simde_mm512_loadu_ps(r);
}
static inline float reduce_add_ps(simde__m512 a) {
  float f[16], s = 0.0f;
  simde_mm512_storeu_ps(f, a);
  for (int i = 0; i < 16; ++i) s += f[i];
  return s;
}
static inline float reduce_max_ps(simde__m512 a) {
  float f[16];
  simde_mm512_storeu_ps(f, a);
  float m = f[0];
  for (int i = 1; i < 16; ++i) m = f[i] > m ? f[i] : m;
  return m;
}
static inline int32_t reduce_add_epi32(simde__m512i a) {
  int32_t v[16], s = 0;
  simde_mm512_storeu_si512(v, a);
  for (int i = 0; i < 16; ++i) s += v[i];
  return s;
}

}  // namespace avx512_emulation

#define _mm512_cvtps_epi32 avx512_emulation::cvtps_epi32
#define _mm512_cvtepi32_ps avx512_emulation::cvtepi32_ps
#define _mm512_cvtepu16_epi32 avx512_emulation::cvtepu16_epi32
#define _mm512_cvtepi8_epi32 avx512_emulation::cvtepi8_epi32
#define _mm512_cvtph_ps avx512_emulation::cvtph_ps
#define _mm512_maskz_loadu_ps avx512_emulation::maskz_loadu_ps
#define _mm512_mask_storeu_ps avx512_emulation::mask_storeu_ps
#define _mm512_shuffle_f32x4 avx512_emulation::shuffle_f32x4
#define _mm512_reduce_add_ps avx512_emulation::reduce_add_ps
#define _mm512_reduce_max_ps avx512_emulation::reduce_max_ps
#define _mm512_reduce_add_epi32 avx512_emulation::reduce_add_epi32
#undef _mm512_madd_epi16
#define _mm512_madd_epi16 simde_mm512_madd_epi16
