// AVX-512 (F, BW, VL, DQ, VNNI) kernels: Cascade Lake, Ice Lake, Sapphire Rapids,
// Zen 4 and later. Compiled with -mavx512f -mavx512bw -mavx512vl -mavx512dq
// -mavx512vnni; only entered when cpuid and xgetbv (opmask + ZMM state) say the CPU
// and OS allow it.
#include <immintrin.h>
#include <math.h>

#include <type_traits>

#include "kernels/convert.h"
#include "kernels/kernels.h"

namespace hearthlm {
namespace avx512 {

struct Vec {
  using F = __m512;
  static constexpr int64_t N = 16;
  static F zero() { return _mm512_setzero_ps(); }
  static F set1(float v) { return _mm512_set1_ps(v); }
  static F load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, F v) { _mm512_storeu_ps(p, v); }
  static F load_bf16(const uint16_t* p) {
    const __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
  }
  static F load_f16(const uint16_t* p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)p));
  }
  static F load_i8(const int8_t* p) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i*)p)));
  }
  static F add(F a, F b) { return _mm512_add_ps(a, b); }
  static F sub(F a, F b) { return _mm512_sub_ps(a, b); }
  static F mul(F a, F b) { return _mm512_mul_ps(a, b); }
  static F div(F a, F b) { return _mm512_div_ps(a, b); }
  static F fma(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }
  static F max(F a, F b) { return _mm512_max_ps(a, b); }
  static F min(F a, F b) { return _mm512_min_ps(a, b); }
  static F round(F a) {
    return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  }
  static F pow2n(F n) {
    const __m512i e = _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127));
    return _mm512_castsi512_ps(_mm512_slli_epi32(e, 23));
  }
  static float hsum(F v) { return _mm512_reduce_add_ps(v); }
  static float hmax(F v) { return _mm512_reduce_max_ps(v); }
  // Always inlined: called from several kernels, an out-of-line copy would be a weak
  // symbol (test_kernel_driver.py).
  __attribute__((always_inline)) static void transpose(F* r) {  // r[i] lane j -> r[j] lane i, 16 x 16
    F t[16];
    for (int i = 0; i < 16; i += 2) {
      t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
      t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4)
      for (int h = 0; h < 2; ++h) {
        const __m512d a = _mm512_castps_pd(t[i + h]), b = _mm512_castps_pd(t[i + h + 2]);
        r[i + 2 * h] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
        r[i + 2 * h + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
      }
    for (int i = 0; i < 4; ++i)
      for (int h = 0; h < 2; ++h) {
        t[8 * h + i] = _mm512_shuffle_f32x4(r[8 * h + i], r[8 * h + 4 + i], 0x88);
        t[8 * h + 4 + i] = _mm512_shuffle_f32x4(r[8 * h + i], r[8 * h + 4 + i], 0xdd);
      }
    for (int i = 0; i < 8; ++i) {
      r[i] = _mm512_shuffle_f32x4(t[i], t[8 + i], 0x88);
      r[i + 8] = _mm512_shuffle_f32x4(t[i], t[8 + i], 0xdd);
    }
  }
};

#include "kernels/simd_kernels.inc"
#include "kernels/x86_f8.inc"

// Integer dot products with VNNI's _mm512_dpbusd_epi32 (u8 x s8, 4 products summed
// into each int32, no int16 stage). Like the AVX2 code, each 32-bit lane is one
// weight row; a 512-bit register holds two k groups (lanes 0-7 and 8-15), folded
// together at the end. Weights enter as unsigned bytes q + offset (offset 128 for
// q8, 8 for q4) and the result is corrected by offset·Σa.
struct QVec : F8Avx {
  static constexpr int kKTileTokens = 8;
  struct W8 { __m512i p[4]; };   // k groups (2p, 2p+1), as q + 128
  struct WU4 { __m512i p[4]; };  // k groups (2p, 2p+1), unsigned nibbles
  struct W4 { WU4 u; };          // q4: nibbles q + 8
  using W5 = WU4;                // q5k: k groups (2p, 2p+1), unsigned q in [0, 31]
  struct W6 { __m512i p[4]; };   // q6k: k groups (2p, 2p+1), unsigned q in [0, 63]

  // Lanes 0-7: activation bytes p[0..3]; lanes 8-15: p[4..7].
  static __m512i broadcast8(const int8_t* p) {
    const __m512i v = _mm512_castsi128_si512(_mm_loadl_epi64((const __m128i*)p));
    return _mm512_permutexvar_epi32(_mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0), v);
  }
  static W8 load(const BlockQ8x8& b) {
    W8 w;
    for (int i = 0; i < 4; ++i)
      w.p[i] = _mm512_xor_si512(_mm512_loadu_si512(b.qs + 64 * i), _mm512_set1_epi8(char(0x80)));
    return w;
  }
  // Bytes 0-63 hold groups 0,1 (low nibbles) and 4,5 (high); bytes 64-127: 2,3 and 6,7.
  static WU4 load_nibbles(const uint8_t* qs) {
    const __m512i low = _mm512_set1_epi8(0x0F);
    WU4 w;
    for (int h = 0; h < 2; ++h) {
      const __m512i v = _mm512_loadu_si512(qs + 64 * h);
      w.p[h] = _mm512_and_si512(v, low);
      w.p[h + 2] = _mm512_and_si512(_mm512_srli_epi16(v, 4), low);
    }
    return w;
  }
  static W4 load(const BlockQ4x8& b) { return W4{load_nibbles(b.qs)}; }
  static W5 load_q5(const BlockQ5Kx8::Sub& s) {
    W5 w = load_nibbles(s.qs);
    const __m256i qh = _mm256_loadu_si256((const __m256i*)s.qh);
    for (int i = 0; i < 4; ++i)
      w.p[i] = _mm512_or_si512(w.p[i], _mm512_inserti64x4(_mm512_castsi256_si512(q5_high(qh, 2 * i)),
                                                          q5_high(qh, 2 * i + 1), 1));
    return w;
  }
  static W6 load_q6(const BlockQ6Kx8& b, int subs, int j) {
    const WU4 low = load_nibbles(b.ql[j]);
    const uint8_t* qh = q6_qh(b, subs, j);
    W6 w;
    for (int i = 0; i < 4; ++i)
      w.p[i] = _mm512_or_si512(low.p[i], _mm512_inserti64x4(_mm512_castsi256_si512(q6_high(qh, 2 * i)),
                                                             q6_high(qh, 2 * i + 1), 1));
    return w;
  }
  static __m256i fold(__m512i v) {
    return _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1));
  }
  static __m256i dot(const __m512i* w, const BlockQ8Act& a, int32_t offset) {
    __m512i acc = _mm512_setzero_si512();
    for (int i = 0; i < 4; ++i) acc = _mm512_dpbusd_epi32(acc, w[i], broadcast8(a.qs + 8 * i));
    return _mm256_sub_epi32(fold(acc), _mm256_set1_epi32(offset * (a.sum[0] + a.sum[1])));
  }
  static __m256i dot(const W8& w, const BlockQ8Act& a) { return dot(w.p, a, 128); }
  static __m256i dot(const W4& w, const BlockQ8Act& a) { return dot(w.u.p, a, 8); }
  static __m256i dot(const WU4& w, const BlockQ8Act& a) { return dot(w.p, a, 0); }
  // Groups 0-3 are k < 16 (p[0], p[1]), groups 4-7 k >= 16 (p[2], p[3]).
  static void dot_halves(const W6& w, const BlockQ8Act& a, __m256i& lo, __m256i& hi) {
    __m512i acc[2];
    for (int h = 0; h < 2; ++h) {
      acc[h] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w.p[2 * h], broadcast8(a.qs + 16 * h));
      acc[h] = _mm512_dpbusd_epi32(acc[h], w.p[2 * h + 1], broadcast8(a.qs + 16 * h + 8));
    }
    lo = _mm256_sub_epi32(fold(acc[0]), _mm256_set1_epi32(32 * a.sum[0]));
    hi = _mm256_sub_epi32(fold(acc[1]), _mm256_set1_epi32(32 * a.sum[1]));
  }
  static void quantize_block(BlockQ8Act* out, const float* x) {
    const __m512 v0 = _mm512_loadu_ps(x), v1 = _mm512_loadu_ps(x + 16);
    const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
    const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    const __m512 idv = _mm512_set1_ps(id);
    constexpr int kRound = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
    const __m512i q0 = _mm512_cvtps_epi32(_mm512_roundscale_ps(_mm512_mul_ps(v0, idv), kRound));
    const __m512i q1 = _mm512_cvtps_epi32(_mm512_roundscale_ps(_mm512_mul_ps(v1, idv), kRound));
    _mm_storeu_si128((__m128i*)out->qs, _mm512_cvtsepi32_epi8(q0));
    _mm_storeu_si128((__m128i*)(out->qs + 16), _mm512_cvtsepi32_epi8(q1));
    out->d = d;
    out->sum[0] = int16_t(_mm512_reduce_add_epi32(q0));
    out->sum[1] = int16_t(_mm512_reduce_add_epi32(q1));
    out->dsum = d * float(out->sum[0] + out->sum[1]);
  }
};

#include "kernels/quant_kernels.inc"

// q8 and q4 for any M: two row groups (16 rows) side by side in each 512-bit register,
// so an activation group is one 4-byte broadcast to all 16 lanes (no permutes, no
// folds) and the float work runs on 16 rows at once. A tile of up to kPairTokens
// tokens reuses each unpacked block, so a small batch reads and unpacks the weights
// once. The int32 dot products and the per-row FMAs are the scalar twin's.
constexpr int kPairTokens = 8;
// A pair tile streams two row groups at once; it prefetches each this far ahead, into
// L2 (prefetcht1), not L1: on Zen 4 a pair tile's L1 prefetches 2048 bytes ahead left
// one core reading 12 GB/s where one stream reads 24; into L2 8192 bytes ahead, the
// two streams of a core read as fast as one (bench/README.md, seventh session).
constexpr int64_t kPairPrefetchBytes = 8192;
static inline void prefetch_ahead(const void* p, size_t off) {
  __builtin_prefetch(static_cast<const char*>(p) + kPairPrefetchBytes + off, 0, 2);
}
// Stream a's look-ahead past its row group (where stream b is) goes to the next pair's
// stream b instead (two groups on), so neither stream of the next pair starts cold.
static inline void prefetch_ahead_a(const void* p, size_t off, const void* b, int64_t group_bytes) {
  const char* at = static_cast<const char*>(p);
  if (at + kPairPrefetchBytes + off >= static_cast<const char*>(b)) at += 2 * group_bytes;
  prefetch_ahead(at, off);
}

struct Pair {
  __m512i g[8];  // k group g (4 k x 16 rows), as q + offset
  __m512 d;      // the 16 rows' scales
};

#include "kernels/avx512/pair_loads.inc"
static inline Pair load_pair(const BlockQ8x8& a, const BlockQ8x8& b) {
  Pair p;
  for (int g = 0; g < 8; ++g) p.g[g] = _mm512_xor_si512(halves(a.qs + 32 * g, b.qs + 32 * g), _mm512_set1_epi8(char(0x80)));
  p.d = pair_scales(a.d, b.d);
  return p;
}
static inline Pair load_pair(const BlockQ4x8& a, const BlockQ4x8& b) {
  const __m512i low = _mm512_set1_epi8(0x0F);
  Pair p;
  for (int c = 0; c < 4; ++c) {
    const __m512i v = halves(a.qs + 32 * c, b.qs + 32 * c);
    p.g[c] = _mm512_and_si512(v, low);
    p.g[c + 4] = _mm512_and_si512(_mm512_srli_epi16(v, 4), low);
  }
  p.d = pair_scales(a.d, b.d);
  return p;
}
template <class Block> constexpr int16_t kOffset = 128;  // q8 enters as q + 128
template <> constexpr int16_t kOffset<BlockQ4x8> = 8;

static inline int32_t word(const void* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// y rows [n0, n0 + rows) (rows <= 16) of tokens [m0, m0 + RM) from a pair tile's
// accumulators, bias added.
template <int RM>
static inline void store_pair_tile(float* y, const __m512* acc, const float* bias, int64_t ldy, int64_t m0,
                                   int64_t n0, int64_t rows) {
  for (int i = 0; i < RM; ++i) {
    float* yi = y + (m0 + i) * ldy + n0;
    if (rows == 2 * kQRows) {
      _mm512_storeu_ps(yi, bias ? _mm512_add_ps(acc[i], _mm512_loadu_ps(bias + n0)) : acc[i]);
      continue;
    }
    float out[2 * kQRows];
    _mm512_storeu_ps(out, acc[i]);
    for (int64_t r = 0; r < rows; ++r) yi[r] = bias ? out[r] + bias[n0 + r] : out[r];
  }
}

// s[i] += Σ w[g]·(token i's bytes 4g..4g+3) over g in [g0, g1): token-inner, so the
// RM dpbusd chains interleave and their latency overlaps; for 2 and 3 tokens each chain
// is split in two (alternate groups, summed after: integer, so exact in any order).
template <int RM>
static inline void pair_dots(__m512i* s, const __m512i* w, const BlockQ8Act* const* a, int g0, int g1) {
  constexpr int kChains = RM == 2 || RM == 3 ? 2 : 1;
  __m512i t[kChains][RM];
  for (int i = 0; i < RM; ++i) {
    t[0][i] = s[i];
    if constexpr (kChains == 2) t[1][i] = _mm512_setzero_si512();
  }
  for (int g = g0; g < g1; ++g)
    for (int i = 0; i < RM; ++i) {
      __m512i& c = t[(g - g0) % kChains][i];
      c = _mm512_dpbusd_epi32(c, w[g], _mm512_set1_epi32(word(a[i]->qs + 4 * g)));
    }
  for (int i = 0; i < RM; ++i) s[i] = kChains == 2 ? _mm512_add_epi32(t[0][i], t[kChains - 1][i]) : t[0][i];
}

// Rows [n0, n0 + rows) (rows <= 16) of tokens [m0, m0 + RM): row groups wa and wb.
template <int RM, class Block>
static inline void matmul_pair_tile(float* y, const BlockQ8Act* xq, const Block* wa, const Block* wb,
                                    const float* bias, int64_t nb, int64_t ldy, int64_t m0, int64_t n0,
                                    int64_t rows) {
  const __m512i neg_offset = _mm512_set1_epi16(int16_t(-kOffset<Block>));
  __m512 acc[RM];
  for (int i = 0; i < RM; ++i) acc[i] = _mm512_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    for (size_t off = 0; off < sizeof(Block); off += 64) {
      prefetch_ahead_a(wa + b, off, wb, nb * int64_t(sizeof(Block)));
      prefetch_ahead(wb + b, off);
    }
    const Pair w = load_pair(wa[b], wb[b]);
    const BlockQ8Act* a[RM];
    __m512i s[RM];
    for (int i = 0; i < RM; ++i) {
      a[i] = xq + (m0 + i) * nb + b;
      s[i] = _mm512_madd_epi16(_mm512_set1_epi32(word(a[i]->sum)), neg_offset);  // -offset * Σa
    }
    pair_dots<RM>(s, w.g, a, 0, 8);
    for (int i = 0; i < RM; ++i)
      acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s[i]), _mm512_mul_ps(w.d, _mm512_set1_ps(a[i]->d)), acc[i]);
  }
  store_pair_tile<RM>(y, acc, bias, ldy, m0, n0, rows);
}

// Prefill (M > kPanelMinM), BLIS-style. For up to kPanelPairs pairs (128 rows) and
// kPanelBlocks k blocks at a time (K-blocked), the weights are unpacked once into
// panels and each tile of kPanelTokens tokens is packed once: its activation bytes
// block-major, with -offset·Σa precomputed as where each block's dot starts. A
// register tile of two pairs x kPanelTokens tokens then runs over both: per block,
// token and 16 rows the vector units see 8 vpdpbusd and 3 float ops (the int->float
// conversion, the scale product, the FMA: the scalar twin's arithmetic), nothing
// else, and each activation broadcast feeds both pairs. 12 independent dpbusd chains
// cover the instruction's latency. Between K blocks the partial sums wait in y
// (float32 stored and reloaded exactly); the bias is added once, at the end.
constexpr int64_t kPanelMinM = 4 * kPairTokens;  // below, the pair tiles (weights stream from memory)
constexpr int64_t kPanelBlocks = 16;  // 512 k: 8 panels of 9 KB and 4 KB of tokens on the stack, in L1/L2
constexpr int64_t kPanelPairs = 8;
constexpr int kPanelTokens = 6;

struct ActTile {
  int8_t qs[kPanelBlocks][kPanelTokens][kQBlock];
  float d[kPanelBlocks][kPanelTokens];
  int32_t start[kPanelBlocks][kPanelTokens];  // -offset·Σa: where each block's dot starts
};

static inline void pack_tokens(ActTile& t, const BlockQ8Act* xq, int64_t nb, int64_t rm, int64_t bn,
                               int32_t offset) {
  for (int64_t i = 0; i < rm; ++i)
    for (int64_t b = 0; b < bn; ++b) {
      const BlockQ8Act& a = xq[i * nb + b];
      _mm256_storeu_si256((__m256i*)t.qs[b][i], _mm256_loadu_si256((const __m256i*)a.qs));
      t.d[b][i] = a.d;
      t.start[b][i] = -offset * (int32_t(a.sum[0]) + int32_t(a.sum[1]));
    }
}

// y[m0 + i][n0 + 16p .. n0 + 16p + 16) under mask[p], i < RM, p < P, over the tile's
// bn blocks: P pairs share each activation broadcast.
template <int RM, int P>
static inline void panel_tile(float* y, const ActTile& t, const Pair (*panels)[kPanelBlocks], int64_t bn,
                              int64_t ldy, int64_t m0, int64_t n0, const __mmask16* mask, const float* bias,
                              bool first, bool last) {
  __m512 acc[P][RM];
  for (int p = 0; p < P; ++p)
    for (int i = 0; i < RM; ++i)
      acc[p][i] = first ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(mask[p], y + (m0 + i) * ldy + n0 + 16 * p);
  for (int64_t b = 0; b < bn; ++b) {
    __m512i s[P][RM];
    for (int i = 0; i < RM; ++i) {
      s[0][i] = _mm512_set1_epi32(t.start[b][i]);
      for (int p = 1; p < P; ++p) s[p][i] = s[0][i];
    }
    for (int g = 0; g < 8; ++g) {
      __m512i wg[P];
      for (int p = 0; p < P; ++p) wg[p] = panels[p][b].g[g];
      for (int i = 0; i < RM; ++i) {
        const __m512i a = _mm512_set1_epi32(word(t.qs[b][i] + 4 * g));
        for (int p = 0; p < P; ++p) s[p][i] = _mm512_dpbusd_epi32(s[p][i], wg[p], a);
      }
    }
    for (int p = 0; p < P; ++p)
      for (int i = 0; i < RM; ++i)
        acc[p][i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s[p][i]), _mm512_mul_ps(panels[p][b].d, _mm512_set1_ps(t.d[b][i])),
                                    acc[p][i]);
  }
  for (int p = 0; p < P; ++p) {
    const __m512 bv = last && bias ? _mm512_maskz_loadu_ps(mask[p], bias + n0 + 16 * p) : _mm512_setzero_ps();
    for (int i = 0; i < RM; ++i)
      _mm512_mask_storeu_ps(y + (m0 + i) * ldy + n0 + 16 * p, mask[p], last && bias ? _mm512_add_ps(acc[p][i], bv) : acc[p][i]);
  }
}

// Tiles of rm <= RM tokens (RM: the largest, a compile-time tile height).
template <int RM>
static inline void panel_tiles(int rm, float* y, const ActTile& t, const Pair (*panels)[kPanelBlocks], int64_t pairs,
                               int64_t bn, int64_t ldy, int64_t m0, int64_t n0, int64_t n1, const float* bias,
                               bool first, bool last) {
  if constexpr (RM > 1)
    if (rm < RM) return panel_tiles<RM - 1>(rm, y, t, panels, pairs, bn, ldy, m0, n0, n1, bias, first, last);
  __mmask16 mask[kPanelPairs];
  for (int64_t p = 0; p < pairs; ++p) {
    const int64_t n = n0 + 2 * kQRows * p, rows = n1 - n < 2 * kQRows ? n1 - n : 2 * kQRows;
    mask[p] = __mmask16((1u << rows) - 1);
  }
  int64_t p = 0;
  for (; p + 2 <= pairs; p += 2) panel_tile<RM, 2>(y, t, panels + p, bn, ldy, m0, n0 + 2 * kQRows * p, mask + p, bias, first, last);
  if (p < pairs) panel_tile<RM, 1>(y, t, panels + p, bn, ldy, m0, n0 + 2 * kQRows * p, mask + p, bias, first, last);
}

// Rows [n0, n1) of all M tokens, n1 - n0 <= 2 * kQRows * kPanelPairs, past one row group.
template <class Block>
static void matmul_panels(float* y, const BlockQ8Act* xq, const Block* w, const float* bias, int64_t M,
                          int64_t nb, int64_t ldy, int64_t n0, int64_t n1) {
  Pair panels[kPanelPairs][kPanelBlocks];
  ActTile tile;
  const int64_t pairs = (n1 - n0 + 2 * kQRows - 1) / (2 * kQRows);
  for (int64_t b0 = 0; b0 < nb || b0 == 0; b0 += kPanelBlocks) {  // K = 0 still writes the bias
    const int64_t bn = nb - b0 < kPanelBlocks ? nb - b0 : kPanelBlocks;
    for (int64_t p = 0; p < pairs; ++p) {
      const Block* wa = w + (n0 / kQRows + 2 * p) * nb + b0;
      const bool lone = n0 + 2 * kQRows * p + kQRows >= n1;  // a last lone row group: itself again, masked off
      for (int64_t b = 0; b < bn; ++b) panels[p][b] = load_pair(wa[b], lone ? wa[b] : wa[nb + b]);
    }
    const bool first = b0 == 0, last = b0 + bn == nb;
    for (int64_t m = 0; m < M; m += kPanelTokens) {
      const int64_t rm = M - m < kPanelTokens ? M - m : kPanelTokens;
      pack_tokens(tile, xq + m * nb + b0, nb, rm, bn, kOffset<Block>);
      panel_tiles<kPanelTokens>(int(rm), y, tile, panels, pairs, bn, ldy, m, n0, n1, bias, first, last);
    }
  }
}

template <class Block>
static void matmul_pairs(float* y, const BlockQ8Act* xq, const void* wv, const float* bias, int64_t M,
                         int64_t K, int64_t ldy, int64_t n0, int64_t n1) {
  const Block* w = static_cast<const Block*>(wv);
  const int64_t nb = q_blocks(K);
  if (M > kPanelMinM) {
    for (int64_t n = n0; n < n1; n += 2 * kQRows * kPanelPairs)
      matmul_panels(y, xq, w, bias, M, nb, ldy, n, n1 - n < 2 * kQRows * kPanelPairs ? n1 : n + 2 * kQRows * kPanelPairs);
    return;
  }
  int64_t n = n0;
  for (; n + kQRows < n1; n += 2 * kQRows) {
    const Block* wa = w + (n / kQRows) * nb;
    const int64_t rows = n1 - n < 2 * kQRows ? n1 - n : 2 * kQRows;
    int64_t m = 0;
    for (; m + kPairTokens <= M; m += kPairTokens)
      matmul_pair_tile<kPairTokens>(y, xq, wa, wa + nb, bias, nb, ldy, m, n, rows);
    switch (M - m) {
      case 7: matmul_pair_tile<7>(y, xq, wa, wa + nb, bias, nb, ldy, m, n, rows); break;
      case 6: matmul_pair_tile<6>(y, xq, wa, wa + nb, bias, nb, ldy, m, n, rows); break;
      case 5: matmul_pair_tile<5>(y, xq, wa, wa + nb, bias, nb, ldy, m, n, rows); break;
      case 4: matmul_pair_tile<4>(y, xq, wa, wa + nb, bias, nb, ldy, m, n, rows); break;
      case 3: matmul_pair_tile<3>(y, xq, wa, wa + nb, bias, nb, ldy, m, n, rows); break;
      case 2: matmul_pair_tile<2>(y, xq, wa, wa + nb, bias, nb, ldy, m, n, rows); break;
      case 1: matmul_pair_tile<1>(y, xq, wa, wa + nb, bias, nb, ldy, m, n, rows); break;
      default: break;
    }
  }
  if (n < n1) matmul_q<Block>(y, xq, wv, bias, M, K, ldy, n, n1);  // a last lone row group
}

// K-quants for any M, on the same 16-row pairs: per super-block the two row groups'
// sub-block scales are unpacked once; per sub-block the 8 k groups of 16 rows are
// unpacked once for the tile's tokens, then each token is 8 dpbusd on 4-byte broadcasts
// and the scalar twin's per-block FMAs. q4k / q5k keep their 6-bit sc_j, m_j as bytes
// until sub-block j needs them: 128-bit lane Q holds rows 4Q..4Q+3 (a's rows 0-7, then
// b's) of four sub-blocks (dword i: sub-block i, [0]: 0-3, [1]: 4-7), so one in-lane
// byte shuffle widens a sub-block to 16 rows, written into the float 2^23 + sc
// (0x4B000000 | sc); (2^23 + sc)·d - 2^23·d is one FMA rounding once, to exactly the
// scalar twin's d·sc. One token runs a full super-block's 8 sub-blocks unrolled.
struct AffinePairScales {
  __m512i sc[2], m[2];
  __m512 d, dmin, d_bias, dmin_bias;  // d, dmin and 2^23 times them
};
struct Q6PairScales { __m512 dsc[2 * kKSubs]; };  // q6k: d·sc of halves s = 0..15
template <class Block> struct PairScalesOf { using type = AffinePairScales; };
template <> struct PairScalesOf<BlockQ6Kx8> { using type = Q6PairScales; };
struct PairSub { __m512i g[8]; };  // k group g of a sub-block, 16 rows, unsigned q

// Dwords w, w + 2, w + 4, w + 6 (w = first, first + 1) of a then of b: lane Q gets
// rows 4Q..4Q+3 of the four sub-blocks whose 8-row qwords start at dword `first`.
static inline __m512i pair_lanes(__m512i a, __m512i b, int first) {
  return _mm512_permutex2var_epi32(
      a, _mm512_add_epi32(_mm512_set_epi32(23, 21, 19, 17, 22, 20, 18, 16, 7, 5, 3, 1, 6, 4, 2, 0), _mm512_set1_epi32(first)), b);
}
// Dword i of every lane of v spread over its 4 dwords: byte t into byte 0 of dword t,
// bytes 1-3 from fill.
static inline __m512i spread_bytes(__m512i v, int i, __m512i fill) {
  return _mm512_mask_shuffle_epi8(fill, 0x1111111111111111ull, v, _mm512_set4_epi32(4 * i + 3, 4 * i + 2, 4 * i + 1, 4 * i));
}
static inline __m512 scaled(__m512i bytes, int i, __m512 d, __m512 d_bias) {
  const __m512i f = spread_bytes(bytes, i, _mm512_set1_epi32(0x4B000000));
  return _mm512_fmsub_ps(_mm512_castsi512_ps(f), d, d_bias);
}
static inline __m512 pair_dsc(const AffinePairScales& s, int j) { return scaled(s.sc[j >> 2], j & 3, s.d, s.d_bias); }
static inline __m512 pair_dm(const AffinePairScales& s, int j) { return scaled(s.m[j >> 2], j & 3, s.dmin, s.dmin_bias); }
static inline __m512 pair_dsc(const Q6PairScales& s, int h) { return s.dsc[h]; }
// The 6-bit sc_j, m_j of quant.h: lo0 / lo1 hold scales_lo of sub-blocks 0-3 / 4-7, hi
// the scales_hi of j & 3, in pair_lanes' layout.
template <class Block>
static inline void pair_k_scales(const Block& a, const Block& b, AffinePairScales& s) {
  const __m512i la = _mm512_loadu_si512(a.scales_lo), lb = _mm512_loadu_si512(b.scales_lo);
  const __m512i lo0 = pair_lanes(la, lb, 0), lo1 = pair_lanes(la, lb, 8);
  const __m512i hi = pair_lanes(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i*)a.scales_hi)),
                                _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i*)b.scales_hi)), 0);
  const __m512i n4 = _mm512_set1_epi8(0x0F);
  auto high = [&](int mask, int left) {  // (hi & mask) moved to bits 4-5 (16-bit shifts, masked first)
    const __m512i h = _mm512_and_si512(hi, _mm512_set1_epi8(char(mask)));
    return left >= 0 ? _mm512_slli_epi16(h, unsigned(left)) : _mm512_srli_epi16(h, unsigned(-left));
  };
  // h | (x & n4) in one ternary-logic op (0xF8: A | (B & C))
  s.sc[0] = _mm512_ternarylogic_epi32(high(0x03, 4), lo0, n4, 0xF8);
  s.sc[1] = _mm512_ternarylogic_epi32(high(0x30, 0), lo1, n4, 0xF8);
  s.m[0] = _mm512_ternarylogic_epi32(high(0x0C, 2), _mm512_srli_epi16(lo0, 4), n4, 0xF8);
  s.m[1] = _mm512_ternarylogic_epi32(high(0xC0, -2), _mm512_srli_epi16(lo1, 4), n4, 0xF8);
  const __m512 bias = _mm512_set1_ps(8388608.0f);
  s.d = pair_scales(a.d, b.d);
  s.dmin = pair_scales(a.dmin, b.dmin);
  s.d_bias = _mm512_mul_ps(s.d, bias);
  s.dmin_bias = _mm512_mul_ps(s.dmin, bias);
}
// Qwords q of a and b alternating (a's q0, b's q0, a's q1, ...) from q = first: 8 bytes
// per row group, so 16-byte lane i holds one scale's 16 rows.
static inline __m512i pair_qwords(__m512i a, __m512i b, int first) {
  return _mm512_permutex2var_epi64(a, _mm512_add_epi64(_mm512_set_epi64(11, 3, 10, 2, 9, 1, 8, 0), _mm512_set1_epi64(first)), b);
}
// 16-byte lane I of v (signed bytes), widened to 16 floats, times d.
template <int I>
static inline void lanes_times(__m512 d, __m512i v, __m512* out) {
  out[I] = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm512_extracti32x4_epi32(v, I))));
  if constexpr (I < 3) lanes_times<I + 1>(d, v, out);
}
// q6k: int8 scales [s*8 + r], s = 0..15: 4 lanes of 16 rows per 32 bytes of a and b.
static inline void pair_k_scales(const BlockQ6Kx8& a, const BlockQ6Kx8& b, Q6PairScales& s) {
  const __m512 d = pair_scales(a.d, b.d);
  for (int h = 0; h < 2; ++h) {
    const __m512i va = _mm512_loadu_si512(a.scales + 64 * h), vb = _mm512_loadu_si512(b.scales + 64 * h);
    lanes_times<0>(d, pair_qwords(va, vb, 0), s.dsc + 8 * h);
    lanes_times<0>(d, pair_qwords(va, vb, 4), s.dsc + 8 * h + 4);
  }
}

static inline PairSub pair_nibbles(const uint8_t* a, const uint8_t* b) {
  const __m512i low = _mm512_set1_epi8(0x0F);
  PairSub w;
  for (int c = 0; c < 4; ++c) {
    const __m512i v = halves(a + 32 * c, b + 32 * c);
    w.g[c] = _mm512_and_si512(v, low);
    w.g[c + 4] = _mm512_and_si512(_mm512_srli_epi16(v, 4), low);
  }
  return w;
}
static inline PairSub load_pair_sub(const BlockQ4Kx8& a, const BlockQ4Kx8& b, int, int j) {
  return pair_nibbles(a.qs[j], b.qs[j]);
}
// Fifth bits: qh byte r*4 + i holds bit g for k = 4g + i, the lanes' own layout.
static inline PairSub load_pair_sub(const BlockQ5Kx8& a, const BlockQ5Kx8& b, int, int j) {
  PairSub w = pair_nibbles(a.sub[j].qs, b.sub[j].qs);
  const __m512i qh = halves(a.sub[j].qh, b.sub[j].qh), bit4 = _mm512_set1_epi8(0x10);
  for (int g = 0; g < 8; ++g) {
    const __m512i at = g < 4 ? _mm512_slli_epi16(qh, unsigned(4 - g)) : _mm512_srli_epi16(qh, unsigned(g - 4));
    w.g[g] = _mm512_ternarylogic_epi32(w.g[g], at, bit4, 0xF8);  // g | (at & bit4)
  }
  return w;
}
// High 2 bits: qh[h*32 + r*4 + i] bits 2c for k = 16h + 4c + i.
static inline PairSub load_pair_sub(const BlockQ6Kx8& a, const BlockQ6Kx8& b, int subs, int j) {
  PairSub w = pair_nibbles(a.ql[j], b.ql[j]);
  const __m512i bits45 = _mm512_set1_epi8(0x30);
  for (int h = 0; h < 2; ++h) {
    const __m512i qh = halves(q6_qh(a, subs, j) + 32 * h, q6_qh(b, subs, j) + 32 * h);
    for (int c = 0; c < 4; ++c) {
      const __m512i at = c < 2 ? _mm512_slli_epi16(qh, unsigned(4 - 2 * c)) : _mm512_srli_epi16(qh, unsigned(2 * c - 4));
      w.g[4 * h + c] = _mm512_ternarylogic_epi32(w.g[4 * h + c], at, bits45, 0xF8);
    }
  }
  return w;
}

// Sub-block j of the tile's RM tokens a[i] into acc[i], in the scalar twin's order.
template <int RM>
static inline void pair_k_steps(__m512* acc, const PairSub& w, const AffinePairScales& s, int j,
                                const BlockQ8Act* const* a) {
  __m512i isum[RM];
  for (int i = 0; i < RM; ++i) isum[i] = _mm512_setzero_si512();
  pair_dots<RM>(isum, w.g, a, 0, 8);
  const __m512 dsc = pair_dsc(s, j), dm = pair_dm(s, j);
  for (int i = 0; i < RM; ++i) {
    acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[i]), _mm512_mul_ps(dsc, _mm512_set1_ps(a[i]->d)), acc[i]);
    acc[i] = _mm512_fnmadd_ps(dm, _mm512_set1_ps(a[i]->dsum), acc[i]);
  }
}
// q6k, token by token (two chains of 4 groups each already cover the latency): Σ (q - 32)·a
// per half, the -32·Σa offsets from a.sum by one madd each.
template <int RM>
static inline void pair_k_steps(__m512* acc, const PairSub& w, const Q6PairScales& s, int j,
                                const BlockQ8Act* const* x) {
  const __m512 dlo = pair_dsc(s, 2 * j), dhi = pair_dsc(s, 2 * j + 1);
  for (int i = 0; i < RM; ++i) {
    const BlockQ8Act& a = *x[i];
    const __m512i sums = _mm512_set1_epi32(word(a.sum));
    __m512i lo = _mm512_madd_epi16(sums, _mm512_set1_epi32(0x0000FFE0));
    __m512i hi = _mm512_madd_epi16(sums, _mm512_set1_epi32(int32_t(0xFFE00000u)));
    for (int g = 0; g < 4; ++g) {
      lo = _mm512_dpbusd_epi32(lo, w.g[g], _mm512_set1_epi32(word(a.qs + 4 * g)));
      hi = _mm512_dpbusd_epi32(hi, w.g[g + 4], _mm512_set1_epi32(word(a.qs + 16 + 4 * g)));
    }
    const __m512 ad = _mm512_set1_ps(a.d);
    acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(lo), _mm512_mul_ps(dlo, ad), acc[i]);
    acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(hi), _mm512_mul_ps(dhi, ad), acc[i]);
  }
}

// Rows [n0, n0 + rows) (rows <= 16) of tokens [m0, m0 + RM): row groups ga and gb.
template <int RM, class Block>
static inline void matmul_kpair_tile(float* y, const BlockQ8Act* xq, const char* ga, const char* gb,
                                     const float* bias, int64_t K, int64_t ldy, int64_t m0, int64_t n0,
                                     int64_t rows) {
  __m512 acc[RM];
  for (int i = 0; i < RM; ++i) acc[i] = _mm512_setzero_ps();
  const int64_t nb = q_blocks(K);
  for (int64_t s = 0; s * kKSubs < nb; ++s) {
    const Block& a = k_block<Block>(ga, s);
    const Block& b = k_block<Block>(gb, s);
    typename PairScalesOf<Block>::type sc;
    pair_k_scales(a, b, sc);
    const int subs = block_subs(K, s);
    auto step = [&](int j) __attribute__((always_inline)) {
      constexpr size_t kSubBytes = sizeof(Block) / kKSubs;  // prefetch: each block's bytes in 8 steps
      for (size_t off = 0; off < kSubBytes; off += 64) {
        prefetch_ahead_a(&a, j * kSubBytes + off, gb, gb - ga);
        prefetch_ahead(&b, j * kSubBytes + off);
      }
      const PairSub w = load_pair_sub(a, b, subs, j);
      const BlockQ8Act* x[RM];
      for (int i = 0; i < RM; ++i) x[i] = xq + (m0 + i) * nb + s * kKSubs + j;
      pair_k_steps<RM>(acc, w, sc, j, x);
    };
    // Unrolled only where it measured faster (decode); q6k and M = 8 tiles were slower.
    if (RM == 1 && subs == kKSubs && !std::is_same<Block, BlockQ6Kx8>::value) {
#pragma GCC unroll 8
      for (int j = 0; j < kKSubs; ++j) step(j);
    } else {
      for (int j = 0; j < subs; ++j) step(j);
    }
  }
  store_pair_tile<RM>(y, acc, bias, ldy, m0, n0, rows);
}

template <class Block>
static void matmul_kpairs(float* y, const BlockQ8Act* xq, const void* wv, const float* bias, int64_t M,
                          int64_t K, int64_t ldy, int64_t n0, int64_t n1) {
  const int64_t group_bytes = k_group_bytes<Block>(K);
  int64_t n = n0;
  for (; n + kQRows < n1; n += 2 * kQRows) {
    const char* ga = static_cast<const char*>(wv) + (n / kQRows) * group_bytes;
    const char* gb = ga + group_bytes;
    const int64_t rows = n1 - n < 2 * kQRows ? n1 - n : 2 * kQRows;
    int64_t m = 0;
    for (; m + kPairTokens <= M; m += kPairTokens)
      matmul_kpair_tile<kPairTokens, Block>(y, xq, ga, gb, bias, K, ldy, m, n, rows);
    switch (M - m) {
      case 7: matmul_kpair_tile<7, Block>(y, xq, ga, gb, bias, K, ldy, m, n, rows); break;
      case 6: matmul_kpair_tile<6, Block>(y, xq, ga, gb, bias, K, ldy, m, n, rows); break;
      case 5: matmul_kpair_tile<5, Block>(y, xq, ga, gb, bias, K, ldy, m, n, rows); break;
      case 4: matmul_kpair_tile<4, Block>(y, xq, ga, gb, bias, K, ldy, m, n, rows); break;
      case 3: matmul_kpair_tile<3, Block>(y, xq, ga, gb, bias, K, ldy, m, n, rows); break;
      case 2: matmul_kpair_tile<2, Block>(y, xq, ga, gb, bias, K, ldy, m, n, rows); break;
      case 1: matmul_kpair_tile<1, Block>(y, xq, ga, gb, bias, K, ldy, m, n, rows); break;
      default: break;
    }
  }
  if (n < n1) matmul_k<Block>(y, xq, wv, bias, M, K, ldy, n, n1);  // a last lone row group
}

static KernelTable with_pair_kernels(KernelTable t) {
  t.matmul_q[kQ8] = matmul_pairs<BlockQ8x8>;
  t.matmul_q[kQ4] = matmul_pairs<BlockQ4x8>;
  t.matmul_q[kQ4K] = matmul_kpairs<BlockQ4Kx8>;
  t.matmul_q[kQ5K] = matmul_kpairs<BlockQ5Kx8>;
  t.matmul_q[kQ6K] = matmul_kpairs<BlockQ6Kx8>;
  return t;
}

}  // namespace avx512

const KernelTable* avx512_kernels() {
  static const KernelTable table =
      avx512::with_pair_kernels(avx512::with_quant_kernels(avx512::make_table("avx512")));
  return &table;
}

}  // namespace hearthlm
