// AVX2 + FMA + F16C kernels (Haswell and later, Zen and later). Compiled with
// -mavx2 -mfma -mf16c; only entered when cpuid and xgetbv say the CPU and OS allow it.
#include <immintrin.h>
#include <math.h>

#include "kernels/convert.h"
#include "kernels/kernels.h"

namespace hearthlm {
namespace avx2 {

struct Vec {
  using F = __m256;
  static constexpr int64_t N = 8;
  static F zero() { return _mm256_setzero_ps(); }
  static F set1(float v) { return _mm256_set1_ps(v); }
  static F load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, F v) { _mm256_storeu_ps(p, v); }
  static F load_bf16(const uint16_t* p) {
    const __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
  }
  static F load_f16(const uint16_t* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)p));
  }
  static F load_i8(const int8_t* p) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i*)p)));
  }
  static F add(F a, F b) { return _mm256_add_ps(a, b); }
  static F sub(F a, F b) { return _mm256_sub_ps(a, b); }
  static F mul(F a, F b) { return _mm256_mul_ps(a, b); }
  static F div(F a, F b) { return _mm256_div_ps(a, b); }
  static F fma(F a, F b, F c) { return _mm256_fmadd_ps(a, b, c); }
  static F max(F a, F b) { return _mm256_max_ps(a, b); }
  static F min(F a, F b) { return _mm256_min_ps(a, b); }
  static F round(F a) { return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static F pow2n(F n) {
    const __m256i e = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
    return _mm256_castsi256_ps(_mm256_slli_epi32(e, 23));
  }
  static float hsum(F v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  static float hmax(F v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
  }
  // Always inlined: called from several kernels, an out-of-line copy would be a weak
  // symbol (test_kernel_driver.py).
  __attribute__((always_inline)) static void transpose(F* r) {  // r[i] lane j -> r[j] lane i, 8 x 8
    F t[8], s[8];
    for (int i = 0; i < 8; i += 2) {
      t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
      t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4)
      for (int h = 0; h < 2; ++h) {
        s[i + 2 * h] = _mm256_shuffle_ps(t[i + h], t[i + h + 2], 0x44);
        s[i + 2 * h + 1] = _mm256_shuffle_ps(t[i + h], t[i + h + 2], 0xEE);
      }
    for (int i = 0; i < 4; ++i) {
      r[i] = _mm256_permute2f128_ps(s[i], s[i + 4], 0x20);
      r[i + 4] = _mm256_permute2f128_ps(s[i], s[i + 4], 0x31);
    }
  }
};

#include "kernels/simd_kernels.inc"
#include "kernels/x86_f8.inc"

// Integer dot products with _mm256_maddubs_epi16 (u8 x s8 -> pairs summed in int16)
// and _mm256_madd_epi16 (pairs summed in int32). Each 32-bit lane is one weight row;
// a 4-byte activation group is broadcast to all lanes (quant.h's layout).
struct QVec : F8Avx {
  static constexpr int kKTileTokens = 4;
  struct W8 { __m256i g[8]; };   // k group g (4 k x 8 rows), signed q
  struct WU4 { __m256i g[8]; };  // k group g, unsigned nibbles
  struct W4 { WU4 u; };          // q4: nibbles q + 8
  struct W5 { __m256i g[8]; };   // q5k: k group g, unsigned q in [0, 31]
  struct W6 { __m256i g[8]; };   // q6k: k group g, unsigned q in [0, 63]

  static __m256i broadcast4(const int8_t* p) {
    int32_t v;
    std::memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
  }
  static W8 load(const BlockQ8x8& b) {
    W8 w;
    for (int g = 0; g < 8; ++g) w.g[g] = _mm256_loadu_si256((const __m256i*)(b.qs + 32 * g));
    return w;
  }
  static WU4 load_nibbles(const uint8_t* qs) {
    const __m256i low = _mm256_set1_epi8(0x0F);
    WU4 w;
    for (int c = 0; c < 4; ++c) {
      const __m256i v = _mm256_loadu_si256((const __m256i*)(qs + 32 * c));
      w.g[c] = _mm256_and_si256(v, low);
      w.g[c + 4] = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
    }
    return w;
  }
  static W4 load(const BlockQ4x8& b) { return W4{load_nibbles(b.qs)}; }
  static W5 load_q5(const BlockQ5Kx8::Sub& s) {
    const WU4 low = load_nibbles(s.qs);
    const __m256i qh = _mm256_loadu_si256((const __m256i*)s.qh);
    W5 w;
    for (int g = 0; g < 8; ++g) w.g[g] = _mm256_or_si256(low.g[g], q5_high(qh, g));
    return w;
  }
  static W6 load_q6(const BlockQ6Kx8& b, int subs, int j) {
    const WU4 low = load_nibbles(b.ql[j]);
    W6 w;
    for (int g = 0; g < 8; ++g) w.g[g] = _mm256_or_si256(low.g[g], q6_high(q6_qh(b, subs, j), g));
    return w;
  }
  // s8 x s8 via the sign trick: |w| x (a with w's sign). |q| <= 127, so a pair sum
  // (<= 2*127*127) never saturates int16.
  static __m256i dot(const W8& w, const BlockQ8Act& a) {
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i acc = _mm256_setzero_si256();
    for (int g = 0; g < 8; ++g) {
      const __m256i x = broadcast4(a.qs + 4 * g);
      const __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(w.g[g], w.g[g]), _mm256_sign_epi8(x, w.g[g]));
      acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p, ones));
    }
    return acc;
  }
  // u4 x s8: a pair sum is <= 2*15*127, so all 8 groups add up in int16 (<= 30480).
  static __m256i dot(const WU4& w, const BlockQ8Act& a) {
    __m256i acc = _mm256_setzero_si256();
    for (int g = 0; g < 8; ++g)
      acc = _mm256_add_epi16(acc, _mm256_maddubs_epi16(w.g[g], broadcast4(a.qs + 4 * g)));
    return _mm256_madd_epi16(acc, _mm256_set1_epi16(1));
  }
  // u5 x s8: a pair sum is <= 2*31*127, so four groups add up in int16 (<= 31496).
  static __m256i dot(const W5& w, const BlockQ8Act& a) {
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i acc = _mm256_setzero_si256();
    for (int h = 0; h < 2; ++h) {
      __m256i p = _mm256_maddubs_epi16(w.g[4 * h], broadcast4(a.qs + 16 * h));
      for (int g = 4 * h + 1; g < 4 * h + 4; ++g)
        p = _mm256_add_epi16(p, _mm256_maddubs_epi16(w.g[g], broadcast4(a.qs + 4 * g)));
      acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p, ones));
    }
    return acc;
  }
  // Σ q·a = Σ (q+8)·a - 8·Σ a.
  static __m256i dot(const W4& w, const BlockQ8Act& a) {
    return _mm256_sub_epi32(dot(w.u, a), _mm256_set1_epi32(8 * (a.sum[0] + a.sum[1])));
  }
  // u6 x s8: a pair sum is <= 2*63*127, so two groups add up in int16 (<= 32004).
  static void dot_halves(const W6& w, const BlockQ8Act& a, __m256i& lo, __m256i& hi) {
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i half[2];
    for (int h = 0; h < 2; ++h) {
      __m256i acc = _mm256_set1_epi32(-32 * a.sum[h]);
      for (int g = 4 * h; g < 4 * h + 4; g += 2) {
        const __m256i p = _mm256_add_epi16(_mm256_maddubs_epi16(w.g[g], broadcast4(a.qs + 4 * g)),
                                           _mm256_maddubs_epi16(w.g[g + 1], broadcast4(a.qs + 4 * g + 4)));
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p, ones));
      }
      half[h] = acc;
    }
    lo = half[0];
    hi = half[1];
  }
  static void quantize_block(BlockQ8Act* out, const float* x) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 v[4], amax = _mm256_setzero_ps();
    for (int i = 0; i < 4; ++i) {
      v[i] = _mm256_loadu_ps(x + 8 * i);
      amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign, v[i]));
    }
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    const float d = _mm_cvtss_f32(m) / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    __m256i q[4];
    for (int i = 0; i < 4; ++i)
      q[i] = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v[i], _mm256_set1_ps(id)),
                                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    for (int h = 0; h < 2; ++h) {  // k 0-15 are q[0], q[1]; k 16-31 are q[2], q[3]
      const __m256i s = _mm256_add_epi32(q[2 * h], q[2 * h + 1]);
      __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
      s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4E));
      s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xB1));
      out->sum[h] = int16_t(_mm_cvtsi128_si32(s4));
    }
    // packs work per 128-bit lane: 4-byte chunks come out as q0 q1 q2 q3 (low
    // halves) then the high halves; the permute restores k order.
    const __m256i packed = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
    _mm256_storeu_si256((__m256i*)out->qs,
                        _mm256_permutevar8x32_epi32(packed, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
    out->d = d;
    out->dsum = d * float(out->sum[0] + out->sum[1]);
  }
};

#include "kernels/quant_kernels.inc"

}  // namespace avx2

const KernelTable* avx2_kernels() {
  static const KernelTable table = avx2::with_quant_kernels(avx2::make_table("avx2"));
  return &table;
}

}  // namespace hearthlm
