// Scalar 16-bit float conversions, shared by every ISA's tails. `static inline` on
// purpose: each translation unit keeps its own copy compiled with its own flags.
#pragma once
#include <cstdint>
#include <cstring>
#include <math.h>

namespace hearthlm {

static inline float bf16_to_float(uint16_t h) {
  const uint32_t bits = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

static inline float f16_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);  // inf / nan
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (mant << 13);
  } else if (mant == 0) {
    bits = sign;
  } else {  // subnormal: normalise
    exp = 113;
    while (!(mant & 0x400)) {
      mant <<= 1;
      --exp;
    }
    bits = sign | (exp << 23) | ((mant & 0x3ff) << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

}  // namespace hearthlm

namespace hearthlm {

// float -> IEEE half, round to nearest even; overflow -> inf, NaN stays NaN.
static inline uint16_t float_to_f16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000;
  x &= 0x7fffffff;
  if (x >= 0x7f800000) return uint16_t(sign | (x > 0x7f800000 ? 0x7e00 : 0x7c00));
  if (x >= 0x477ff000) return uint16_t(sign | 0x7c00);  // >= 65520 rounds to inf
  if (x < 0x38800000) {  // below 2^-14: a half subnormal, in units of 2^-24
    float v;
    std::memcpy(&v, &x, 4);
    return uint16_t(sign | uint32_t(nearbyintf(v * 16777216.0f)));
  }
  uint32_t r = x - 0x38000000;  // rebias the exponent from 127 to 15
  r += 0xfff + ((r >> 13) & 1);
  return uint16_t(sign | (r >> 13));
}

// float -> bfloat16, round to nearest even; NaN stays a quiet NaN.
static inline uint16_t float_to_bf16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7fffffff) > 0x7f800000) return uint16_t((x >> 16) | 0x40);
  return uint16_t((x + 0x7fff + ((x >> 16) & 1)) >> 16);
}

}  // namespace hearthlm
