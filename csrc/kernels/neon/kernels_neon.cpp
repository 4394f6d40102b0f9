// NEON kernels for arm64 (Apple Silicon, Graviton, Raspberry Pi 5, ...). NEON is
// mandatory on arm64, so this path needs no extra compiler flags.
#include <arm_neon.h>
#include <math.h>
#include <string.h>

#include "kernels/convert.h"
#include "kernels/kernels.h"

namespace hearthlm {
namespace neon {

struct Vec {
  using F = float32x4_t;
  static constexpr int64_t N = 4;
  static F zero() { return vdupq_n_f32(0.0f); }
  static F set1(float v) { return vdupq_n_f32(v); }
  static F load(const float* p) { return vld1q_f32(p); }
  static void store(float* p, F v) { vst1q_f32(p, v); }
  static F load_bf16(const uint16_t* p) { return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(p), 16)); }
  static F load_f16(const uint16_t* p) { return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p))); }
  static F load_i8(const int8_t* p) {  // 4 bytes, read without over-reading the row
    int32_t word;
    memcpy(&word, p, 4);
    const int16x8_t wide = vmovl_s8(vreinterpret_s8_s32(vdup_n_s32(word)));
    return vcvtq_f32_s32(vmovl_s16(vget_low_s16(wide)));
  }
  static F add(F a, F b) { return vaddq_f32(a, b); }
  static F sub(F a, F b) { return vsubq_f32(a, b); }
  static F mul(F a, F b) { return vmulq_f32(a, b); }
  static F div(F a, F b) { return vdivq_f32(a, b); }
  static F fma(F a, F b, F c) { return vfmaq_f32(c, a, b); }
  static F max(F a, F b) { return vmaxq_f32(a, b); }
  static F min(F a, F b) { return vminq_f32(a, b); }
  static F round(F a) { return vrndnq_f32(a); }
  static F pow2n(F n) {
    const int32x4_t e = vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127));
    return vreinterpretq_f32_s32(vshlq_n_s32(e, 23));
  }
  static float hsum(F v) { return vaddvq_f32(v); }
  static float hmax(F v) { return vmaxvq_f32(v); }
};

#include "kernels/simd_kernels.inc"

}  // namespace neon

const KernelTable* neon_kernels() {
  static const KernelTable table = neon::make_table("neon");
  return &table;
}

}  // namespace hearthlm
