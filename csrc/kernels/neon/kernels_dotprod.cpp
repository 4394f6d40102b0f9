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
  static constexpr int kKTileTokens = 4;
  struct F8 { float32x4_t lo, hi; };
  struct I8 { int32x4_t lo, hi; };
  struct W8 { int8x16_t lo[8], hi[8]; };  // k group g, signed q
  struct W4 { int8x16_t lo[8], hi[8]; };  // k group g, nibbles widened to signed q
  struct WU4 { int8x16_t lo[8], hi[8]; };  // k group g, unsigned nibbles
  using W5 = WU4;                          // k group g, q5k's unsigned q
  struct W6 { int8x16_t lo[8], hi[8]; };   // k group g, q6k's q - 32

  static F8 zero() { return {vdupq_n_f32(0.0f), vdupq_n_f32(0.0f)}; }
  static F8 set1(float v) { return {vdupq_n_f32(v), vdupq_n_f32(v)}; }
  static F8 mul(F8 a, F8 b) { return {vmulq_f32(a.lo, b.lo), vmulq_f32(a.hi, b.hi)}; }
  static F8 fma(F8 a, F8 b, F8 c) { return {vfmaq_f32(c.lo, a.lo, b.lo), vfmaq_f32(c.hi, a.hi, b.hi)}; }
  static F8 fnma(F8 a, F8 b, F8 c) { return {vfmsq_f32(c.lo, a.lo, b.lo), vfmsq_f32(c.hi, a.hi, b.hi)}; }
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
  static WU4 load_nibbles(const uint8_t* qs) {
    const uint8x16_t low = vdupq_n_u8(0x0F);
    WU4 w;
    for (int c = 0; c < 4; ++c)
      for (int h = 0; h < 2; ++h) {
        const uint8x16_t v = vld1q_u8(qs + 32 * c + 16 * h);
        int8x16_t* lo_or_hi = h ? w.hi : w.lo;
        lo_or_hi[c] = vreinterpretq_s8_u8(vandq_u8(v, low));
        lo_or_hi[c + 4] = vreinterpretq_s8_u8(vshrq_n_u8(v, 4));
      }
    return w;
  }
  static W4 load(const BlockQ4x8& b) {
    const WU4 u = load_nibbles(b.qs);
    const int8x16_t eight = vdupq_n_s8(8);
    W4 w;
    for (int g = 0; g < 8; ++g) {
      w.lo[g] = vsubq_s8(u.lo[g], eight);
      w.hi[g] = vsubq_s8(u.hi[g], eight);
    }
    return w;
  }
  // Group g's fifth bits sit at bit g of the 32 bytes qh (rows 0-3 in bytes 0-15).
  static W5 load_q5(const BlockQ5Kx8::Sub& s) {
    W5 w = load_nibbles(s.qs);
    const uint8x16_t one = vdupq_n_u8(1);
    for (int h = 0; h < 2; ++h) {
      const uint8x16_t bits = vld1q_u8(s.qh + 16 * h);
      int8x16_t* lo_or_hi = h ? w.hi : w.lo;
      for (int g = 0; g < 8; ++g) {
        const uint8x16_t b5 = vshlq_n_u8(vandq_u8(vshlq_u8(bits, vdupq_n_s8(int8_t(-g))), one), 4);
        lo_or_hi[g] = vorrq_s8(lo_or_hi[g], vreinterpretq_s8_u8(b5));
      }
    }
    return w;
  }
  // Group g's high 2 bits sit at bits 2(g & 3) of the 32 bytes qh[32 * (g >> 2)...].
  static W6 load_q6(const BlockQ6Kx8& b, int subs, int j) {
    const WU4 u = load_nibbles(b.ql[j]);
    const uint8_t* qh = q6_qh(b, subs, j);
    const uint8x16_t three = vdupq_n_u8(3);
    const int8x16_t off = vdupq_n_s8(32);
    W6 w;
    for (int g = 0; g < 8; ++g)
      for (int h = 0; h < 2; ++h) {
        const uint8x16_t bits = vld1q_u8(qh + 32 * (g >> 2) + 16 * h);
        const uint8x16_t hi2 = vandq_u8(vshlq_u8(bits, vdupq_n_s8(int8_t(-2 * (g & 3)))), three);
        const int8x16_t q = vorrq_s8(h ? u.hi[g] : u.lo[g], vreinterpretq_s8_u8(vshlq_n_u8(hi2, 4)));
        (h ? w.hi : w.lo)[g] = vsubq_s8(q, off);
      }
    return w;
  }
  template <class Weights>
  static I8 dot_groups(const Weights& w, const BlockQ8Act& a, int g0, int g1) {
    int32x4_t lo = vdupq_n_s32(0), hi = vdupq_n_s32(0);
    for (int g = g0; g < g1; ++g) {
      const int8x16_t x = broadcast4(a.qs + 4 * g);
      lo = vdotq_s32(lo, w.lo[g], x);
      hi = vdotq_s32(hi, w.hi[g], x);
    }
    return {lo, hi};
  }
  template <class Weights>
  static I8 dot(const Weights& w, const BlockQ8Act& a) { return dot_groups(w, a, 0, 8); }
  static void dot_halves(const W6& w, const BlockQ8Act& a, I8& lo, I8& hi) {
    lo = dot_groups(w, a, 0, 4);
    hi = dot_groups(w, a, 4, 8);
  }
  static I8 bytes8(const uint8_t* p) {
    const uint16x8_t v = vmovl_u8(vld1_u8(p));
    return {vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(v))), vreinterpretq_s32_u32(vmovl_u16(vget_high_u16(v)))};
  }
  template <class AffineBlock>  // q4k, q5k
  static void k_scales(const AffineBlock& b, F8* dsc, F8* dm) {
    const F8 d = scales(b.d), dmin = scales(b.dmin);
    for (int j = 0; j < kKSubs; ++j) {
      const I8 lo = bytes8(b.scales_lo + 8 * j), hi = bytes8(b.scales_hi + 8 * (j & 3));
      const int32x4_t sh = vdupq_n_s32(-4 * (j >> 2)), f = vdupq_n_s32(15), t = vdupq_n_s32(3);
      I8 sc, m;
      for (int h = 0; h < 2; ++h) {
        const int32x4_t l = h ? lo.hi : lo.lo, x = vshlq_s32(h ? hi.hi : hi.lo, sh);
        (h ? sc.hi : sc.lo) = vorrq_s32(vandq_s32(l, f), vshlq_n_s32(vandq_s32(x, t), 4));
        (h ? m.hi : m.lo) = vorrq_s32(vshrq_n_s32(l, 4), vshlq_n_s32(vandq_s32(vshrq_n_s32(x, 2), t), 4));
      }
      dsc[j] = mul(d, to_float(sc));
      dm[j] = mul(dmin, to_float(m));
    }
  }
  static void k_scales(const BlockQ6Kx8& b, F8* dsc) {
    const F8 d = scales(b.d);
    for (int s = 0; s < 2 * kKSubs; ++s) {
      const int16x8_t v = vmovl_s8(vld1_s8(b.scales + 8 * s));
      dsc[s] = mul(d, to_float(I8{vmovl_s16(vget_low_s16(v)), vmovl_s16(vget_high_s16(v))}));
    }
  }
  static void quantize_block(BlockQ8Act* out, const float* x) {
    float32x4_t v[8], amax = vdupq_n_f32(0.0f);
    for (int i = 0; i < 8; ++i) {
      v[i] = vld1q_f32(x + 4 * i);
      amax = vmaxq_f32(amax, vabsq_f32(v[i]));
    }
    const float d = vmaxvq_f32(amax) / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    int32x4_t sum[2] = {vdupq_n_s32(0), vdupq_n_s32(0)};
    for (int i = 0; i < 8; i += 2) {
      const int32x4_t q0 = vcvtnq_s32_f32(vmulq_n_f32(v[i], id));  // round half to even
      const int32x4_t q1 = vcvtnq_s32_f32(vmulq_n_f32(v[i + 1], id));
      sum[i / 4] = vaddq_s32(sum[i / 4], vaddq_s32(q0, q1));
      const int16x8_t q16 = vcombine_s16(vqmovn_s32(q0), vqmovn_s32(q1));
      vst1_s8(out->qs + 4 * i, vqmovn_s16(q16));
    }
    out->d = d;
    out->sum[0] = int16_t(vaddvq_s32(sum[0]));
    out->sum[1] = int16_t(vaddvq_s32(sum[1]));
    out->dsum = d * float(out->sum[0] + out->sum[1]);
  }
};

#include "kernels/quant_kernels.inc"

}  // namespace dotprod

const KernelTable* dotprod_kernels() {
  static const KernelTable table = dotprod::with_quant_kernels(dotprod::make_table("dotprod"));
  return &table;
}

}  // namespace hearthlm
