// arm64 with the dot-product extension (SDOT: Apple M1+, Graviton 2+, Cortex-A76+,
// Raspberry Pi 5): the NEON float kernels plus quantized kernels on vdotq_s32.
// Compiled with -march=armv8.2-a+dotprod; only entered when HWCAP / sysctl report it.
#include <arm_neon.h>
#include <math.h>

#include "kernels/convert.h"
#include "kernels/kernels.h"

namespace hearthlm {
namespace dotprod {

#include "kernels/neon/vec_neon.inc"

#include "kernels/simd_kernels.inc"

// Integer dot products with vdotq_s32 (s8 x s8, 4 products summed into each int32):
// as on x86, each 32-bit lane is one weight row (rows 0-3 in `lo`, 4-7 in `hi`) and a
// 4-byte activation group is broadcast to all lanes. Signed x signed: no offsets.
struct QVec {
  struct F8 { float32x4_t lo, hi; };
  struct I8 { int32x4_t lo, hi; };
  struct W8 { int8x16_t lo[8], hi[8]; };  // k group g, signed q
  struct W4 { int8x16_t lo[8], hi[8]; };  // k group g, nibbles widened to signed q

  static F8 zero() { return {vdupq_n_f32(0.0f), vdupq_n_f32(0.0f)}; }
  static F8 set1(float v) { return {vdupq_n_f32(v), vdupq_n_f32(v)}; }
  static F8 mul(F8 a, F8 b) { return {vmulq_f32(a.lo, b.lo), vmulq_f32(a.hi, b.hi)}; }
  static F8 fma(F8 a, F8 b, F8 c) { return {vfmaq_f32(c.lo, a.lo, b.lo), vfmaq_f32(c.hi, a.hi, b.hi)}; }
  static void store(float* p, F8 v) {
    vst1q_f32(p, v.lo);
    vst1q_f32(p + 4, v.hi);
  }
  static F8 scales(const uint16_t* d) {
    return {vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(d))),
            vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(d + 4)))};
  }
  static F8 to_float(I8 v) { return {vcvtq_f32_s32(v.lo), vcvtq_f32_s32(v.hi)}; }

  static int8x16_t broadcast4(const int8_t* p) {
    int32_t v;
    std::memcpy(&v, p, 4);
    return vreinterpretq_s8_s32(vdupq_n_s32(v));
  }
  static W8 load(const BlockQ8x8& b) {
    W8 w;
    for (int g = 0; g < 8; ++g) {
      w.lo[g] = vld1q_s8(b.qs + 32 * g);
      w.hi[g] = vld1q_s8(b.qs + 32 * g + 16);
    }
    return w;
  }
  static W4 load(const BlockQ4x8& b) {
    const uint8x16_t low = vdupq_n_u8(0x0F);
    const int8x16_t eight = vdupq_n_s8(8);
    W4 w;
    for (int c = 0; c < 4; ++c)
      for (int h = 0; h < 2; ++h) {
        const uint8x16_t v = vld1q_u8(b.qs + 32 * c + 16 * h);
        int8x16_t* lo_or_hi = h ? w.hi : w.lo;
        lo_or_hi[c] = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(v, low)), eight);
        lo_or_hi[c + 4] = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(v, 4)), eight);
      }
    return w;
  }
  template <class Weights>
  static I8 dot(const Weights& w, const BlockQ8Act& a) {
    int32x4_t lo = vdupq_n_s32(0), hi = vdupq_n_s32(0);
    for (int g = 0; g < 8; ++g) {
      const int8x16_t x = broadcast4(a.qs + 4 * g);
      lo = vdotq_s32(lo, w.lo[g], x);
      hi = vdotq_s32(hi, w.hi[g], x);
    }
    return {lo, hi};
  }
  static void quantize_block(BlockQ8Act* out, const float* x) {
    float32x4_t v[8], amax = vdupq_n_f32(0.0f);
    for (int i = 0; i < 8; ++i) {
      v[i] = vld1q_f32(x + 4 * i);
      amax = vmaxq_f32(amax, vabsq_f32(v[i]));
    }
    const float d = vmaxvq_f32(amax) / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    int32x4_t sum = vdupq_n_s32(0);
    for (int i = 0; i < 8; i += 2) {
      const int32x4_t q0 = vcvtnq_s32_f32(vmulq_n_f32(v[i], id));  // round half to even
      const int32x4_t q1 = vcvtnq_s32_f32(vmulq_n_f32(v[i + 1], id));
      sum = vaddq_s32(sum, vaddq_s32(q0, q1));
      const int16x8_t q16 = vcombine_s16(vqmovn_s32(q0), vqmovn_s32(q1));
      vst1_s8(out->qs + 4 * i, vqmovn_s16(q16));
    }
    out->d = d;
    out->sum = vaddvq_s32(sum);
  }
};

#include "kernels/quant_kernels.inc"

}  // namespace dotprod

const KernelTable* dotprod_kernels() {
  static const KernelTable table = dotprod::with_quant_kernels(dotprod::make_table("dotprod"));
  return &table;
}

}  // namespace hearthlm
