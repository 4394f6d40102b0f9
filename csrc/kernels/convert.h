// Scalar 16-bit float conversions, shared by every ISA's tails. `static inline` on
// purpose: each translation unit keeps its own copy compiled with its own flags.
#pragma once
#include <cstdint>
#include <cstring>

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

// float32 -> IEEE half, rounding to nearest even (as numpy and F16C do): overflow
// gives inf, tiny values become subnormals or zero, NaN stays NaN.
static inline uint16_t float_to_f16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint16_t sign = uint16_t((x >> 16) & 0x8000);
  x &= 0x7fffffffu;
  if (x > 0x7f800000u) return sign | 0x7e00;   // NaN
  if (x >= 0x477ff000u) return sign | 0x7c00;  // >= 65520 rounds to inf
  uint32_t h, rem, half;
  if (x >= 0x38800000u) {  // normal half: rebias the exponent, drop 13 mantissa bits
    h = (x >> 13) - (112u << 10);
    rem = x & 0x1fffu;
    half = 0x1000u;
  } else {  // subnormal half, in units of 2^-24
    if (x < 0x33000000u) return sign;  // <= 2^-25 rounds to zero
    const uint32_t shift = 126u - (x >> 23);
    const uint32_t mant = (x & 0x7fffffu) | 0x800000u;
    h = mant >> shift;
    rem = mant & ((1u << shift) - 1);
    half = 1u << (shift - 1);
  }
  if (rem > half || (rem == half && (h & 1))) ++h;  // may carry into the exponent: correct
  return sign | uint16_t(h);
}

// float -> bfloat16, round to nearest even; NaN stays a quiet NaN.
static inline uint16_t float_to_bf16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7fffffff) > 0x7f800000) return uint16_t((x >> 16) | 0x40);
  return uint16_t((x + 0x7fff + ((x >> 16) & 1)) >> 16);
}

}  // namespace hearthlm
