#include "quantize.h"

#include <math.h>

#include <algorithm>
#include <cstring>

#include "kernels/convert.h"
#include "kernels/quant.h"

namespace hearthlm {
namespace {

// Weights stored as f32, bf16 or f16.
struct Source {
  const void* w;
  enum { f32, bf16, f16 } kind;
  Source(const void* w_, WeightType src)
      : w(w_), kind(src->block_bytes == 4 ? f32 : std::strcmp(src->name, "bf16") == 0 ? bf16 : f16) {}
  float at(int64_t i) const {
    if (kind == f32) return static_cast<const float*>(w)[i];
    const uint16_t bits = static_cast<const uint16_t*>(w)[i];
    return kind == bf16 ? bf16_to_float(bits) : f16_to_float(bits);
  }
};

// Round half to even for |v| <= 2^22, without a libm call (the baseline x86-64 build
// has no roundss): adding 1.5·2^23 leaves no fraction bits, in the default rounding mode.
inline float round_even(float v) { return (v + 12582912.0f) - 12582912.0f; }
inline int nearest(float v) { return int(round_even(v)); }

// Row n's k in [k0, k0 + len) as floats, zero past K or N; non-finite values become 0
// and the first one's flat index is kept in `bad`.
void read_span(float* x, const Source& src, int64_t N, int64_t K, int64_t n, int64_t k0, int64_t len,
               int64_t& bad) {
  for (int64_t i = 0; i < len; ++i) {
    const int64_t k = k0 + i;
    float v = 0.0f;
    if (n < N && k < K) {
      v = src.at(n * K + k);
      if (!isfinite(v)) {
        bad = std::min(bad, n * K + k);
        v = 0.0f;
      }
    }
    x[i] = v;
  }
}

QuantizeStatus status(int64_t bad, int64_t overflow) {
  QuantizeStatus s;
  if (bad != INT64_MAX) s.non_finite = bad;
  if (overflow != INT64_MAX) s.scale_overflow = overflow;
  return s;
}

// ---- q8 / q4: one fp16 scale per 32 weights, by quant.h's fixed rules ----------------

// One block of 32 values -> fp16 scale + integers (clamping to the integer range
// before rounding is the same as after). Returns false if the scale overflows fp16.
bool quantize_block_q8(const float* x, uint16_t* d16, int8_t* q) {
  float amax = 0.0f;
  for (int k = 0; k < kQBlock; ++k) amax = std::max(amax, fabsf(x[k]));  // finite: no fmaxf call
  *d16 = float_to_f16(amax / 127.0f);
  const float d = f16_to_float(*d16), id = d != 0.0f ? 1.0f / d : 0.0f;
  for (int k = 0; k < kQBlock; ++k) q[k] = int8_t(round_even(std::clamp(x[k] * id, -127.0f, 127.0f)));
  return isfinite(d);
}

bool quantize_block_q4(const float* x, uint16_t* d16, int8_t* q) {
  float m = 0.0f;  // the value of largest magnitude (first one if tied)
  for (int k = 0; k < kQBlock; ++k)
    if (fabsf(x[k]) > fabsf(m)) m = x[k];
  *d16 = float_to_f16(m == 0.0f ? 0.0f : m / -8.0f);
  const float d = f16_to_float(*d16), id = d != 0.0f ? 1.0f / d : 0.0f;
  for (int k = 0; k < kQBlock; ++k) q[k] = int8_t(round_even(std::clamp(x[k] * id, -8.0f, 7.0f)));
  return isfinite(d);
}

void store(BlockQ8x8& b, int r, const int8_t* q) {
  for (int k = 0; k < kQBlock; ++k) b.qs[byte_group_at(r, k)] = q[k];
}

void store(BlockQ4x8& b, int r, const int8_t* q) {
  for (int k = 0; k < kQBlock; ++k) set_nibble(b.qs, r, k, q[k] + 8);
}

template <class Block>
QuantizeStatus quantize_blocks(void* outv, const void* w, WeightType src, int64_t N, int64_t K,
                               int n_threads) {
  Block* out = static_cast<Block*>(outv);
  const int64_t nb = q_blocks(K), groups = q_groups(N);
  constexpr bool q4 = sizeof(Block) == sizeof(BlockQ4x8);
  const Source source(w, src);
  int64_t bad = INT64_MAX, overflow = INT64_MAX;
#pragma omp parallel for schedule(dynamic, 8) num_threads(n_threads) reduction(min : bad, overflow)
  for (int64_t g = 0; g < groups; ++g) {
    for (int64_t b = 0; b < nb; ++b) {
      Block& blk = out[g * nb + b];
      for (int r = 0; r < kQRows; ++r) {
        const int64_t n = g * kQRows + r;
        float x[kQBlock];
        read_span(x, source, N, K, n, b * kQBlock, kQBlock, bad);
        int8_t q[kQBlock];
        const bool ok = q4 ? quantize_block_q4(x, &blk.d[r], q) : quantize_block_q8(x, &blk.d[r], q);
        if (!ok) overflow = std::min(overflow, n * K + b * kQBlock);
        store(blk, r, q);
      }
    }
  }
  return status(bad, overflow);
}

template <class Block>
void dequantize_blocks(float* out, const void* wv, int64_t row, int64_t K) {
  const Block* blocks = static_cast<const Block*>(wv) + (row / kQRows) * q_blocks(K);
  const int r = int(row % kQRows);
  for (int64_t k = 0; k < K; ++k) {
    const Block& b = blocks[k / kQBlock];
    out[k] = f16_to_float(b.d[r]) * float(q_value(b, r, int(k % kQBlock)));
  }
}

// ---- K-quants: searched scales ----------------------------------------------------------

// Per-element weights of the squared error: with an importance vector (mean squared
// activation of each input column), importance·sqrt(σ² + x²) with σ² = 2·mean(x²)
// over the super-block; without, the magnitude heuristics of llama.cpp's quantizer
// (q4k: rms + |x|, q6k: x²). All in float; zero weight everywhere means "uniform".
void error_weights(float* wt, const float* x, const float* imp, int64_t n, bool squared) {
  float sum_x2 = 0.0f;
  for (int64_t i = 0; i < n; ++i) sum_x2 += x[i] * x[i];
  const float sigma2 = 2.0f * sum_x2 / float(n), rms = sqrtf(sum_x2 / float(n));
  for (int64_t i = 0; i < n; ++i)
    wt[i] = imp ? imp[i] * sqrtf(sigma2 + x[i] * x[i]) : squared ? x[i] * x[i] : rms + fabsf(x[i]);
}

// The weighted least-squares s, off of x ≈ s·L + off for levels L (off <= 0: mins only
// subtract, so a positive offset refits the scale alone). Returns the weighted squared
// error, or INFINITY if no s >= 0 fits; *sum_wl2 = Σ wt·L².
template <class Level>
float fit_levels(const float* x, const float* wt, int n, const Level* L, float sum_w, float sum_x, float* s_out,
                 float* off_out, float* sum_wl2) {
  float sum_l = 0.0f, sum_l2 = 0.0f, sum_xl = 0.0f;
  for (int i = 0; i < n; ++i) {
    sum_l += wt[i] * L[i];
    sum_l2 += wt[i] * L[i] * L[i];
    sum_xl += wt[i] * L[i] * x[i];
  }
  const float D = sum_w * sum_l2 - sum_l * sum_l;
  if (D <= 0.0f) return INFINITY;
  float s = (sum_w * sum_xl - sum_x * sum_l) / D, off = (sum_l2 * sum_x - sum_l * sum_xl) / D;
  if (off > 0.0f) {
    off = 0.0f;
    s = sum_xl / sum_l2;
  }
  if (s < 0.0f) return INFINITY;
  float err = 0.0f;
  for (int i = 0; i < n; ++i) {
    const float e = s * L[i] + off - x[i];
    err += wt[i] * e * e;
  }
  *s_out = s;
  *off_out = off;
  *sum_wl2 = sum_l2;
  return err;
}

// x[n] ≈ s·L - mn with L in [0, nmax], s >= 0, mn >= 0: tries a range of grid steps
// around (max - min) / nmax, fits s and mn to each rounding by weighted least squares,
// keeps the best, then alternates rounding to the nearest levels of the fit and
// refitting while the error falls. Returns the weighted squared error; *sum_wl2 = Σ wt·L²
// of the final rounding (how much an error in s costs: the weight of s when scales are
// quantized).
float fit_affine(const float* x, const float* wt, int n, int nmax, float* s_out, float* mn_out, float* sum_wl2) {
  float lo = x[0], hi = x[0], sum_w = 0.0f, sum_x = 0.0f;
  for (int i = 0; i < n; ++i) {
    lo = std::min(lo, x[i]);
    hi = std::max(hi, x[i]);
    sum_w += wt[i];
    sum_x += wt[i] * x[i];
  }
  lo = std::min(lo, 0.0f);
  if (hi == lo || sum_w <= 0.0f) {
    *s_out = hi == lo ? 0.0f : (hi - lo) / float(nmax);
    *mn_out = -lo;
    *sum_wl2 = sum_w;
    return 0.0f;
  }
  float best_err = INFINITY, best_s = (hi - lo) / float(nmax), best_off = lo, best_l2 = sum_w;
  uint8_t L[kKBlock];
  constexpr int kSteps = 24;
  for (int is = 0; is <= kSteps; ++is) {
    const float iscale = (float(nmax) - 1.0f + 2.5f * float(is) / float(kSteps)) / (hi - lo);
    for (int i = 0; i < n; ++i) L[i] = uint8_t(std::clamp(nearest(iscale * (x[i] - lo)), 0, nmax));
    float s, off, l2;
    const float err = fit_levels(x, wt, n, L, sum_w, sum_x, &s, &off, &l2);
    if (err < best_err) {
      best_err = err;
      best_s = s;
      best_off = off;
      best_l2 = l2;
    }
  }
  constexpr int kRefits = 4;
  for (int round = 0; round < kRefits && best_s > 0.0f; ++round) {
    for (int i = 0; i < n; ++i) L[i] = uint8_t(std::clamp(nearest((x[i] - best_off) / best_s), 0, nmax));
    float s, off, l2;
    const float err = fit_levels(x, wt, n, L, sum_w, sum_x, &s, &off, &l2);
    if (!(err < best_err)) break;
    best_err = err;
    best_s = s;
    best_off = off;
    best_l2 = l2;
  }
  *s_out = best_s;
  *mn_out = -best_off;
  *sum_wl2 = best_l2;
  return best_err;
}

// x[n] ≈ s·L with L in [-nmax-1, nmax]: grid steps around max / -(nmax + 1) (the
// largest magnitude maps to the negative end), fitted by weighted least squares;
// *sum_wl2 as in fit_affine.
float fit_symmetric(const float* x, const float* wt, int n, int nmax, float* s_out, float* sum_wl2) {
  float m = 0.0f;
  for (int i = 0; i < n; ++i)
    if (fabsf(x[i]) > fabsf(m)) m = x[i];
  *s_out = 0.0f;
  *sum_wl2 = 0.0f;
  if (m == 0.0f) return 0.0f;
  float best_err = INFINITY;
  constexpr int kSteps = 18;
  for (int is = -kSteps / 2; is <= kSteps / 2; ++is) {
    const float iscale = -(float(nmax + 1) + 0.1f * float(is)) / m;
    float sum_xl = 0.0f, sum_l2 = 0.0f;
    int8_t L[kKBlock];
    for (int i = 0; i < n; ++i) {
      L[i] = int8_t(std::clamp(nearest(iscale * x[i]), -nmax - 1, nmax));
      sum_xl += wt[i] * x[i] * L[i];
      sum_l2 += wt[i] * L[i] * L[i];
    }
    if (sum_l2 <= 0.0f) continue;
    const float s = sum_xl / sum_l2;
    float err = 0.0f;
    for (int i = 0; i < n; ++i) {
      const float e = s * L[i] - x[i];
      err += wt[i] * e * e;
    }
    if (err < best_err) {
      best_err = err;
      *s_out = s;
      *sum_wl2 = sum_l2;
    }
  }
  return best_err;
}

// Sub-block scales v[n] >= 0 -> fp16 d and integers q in [0, nmax] (or, signed, in
// [-nmax-1, nmax]) minimising Σ sw·(v - d·q)² over a few grid steps (sw: a scale's
// Σ wt·L², a min's Σ wt: the weighted squared error an error in it adds), with d rounded to
// fp16 before it is judged. Returns false if d overflows fp16.
bool quantize_scales(const float* v, const float* sw, int n, int nmax, bool is_signed, uint16_t* d16,
                     int* q) {
  float m = 0.0f;
  for (int i = 0; i < n; ++i)
    if (fabsf(v[i]) > fabsf(m)) m = v[i];
  if (m == 0.0f) {
    *d16 = 0;
    for (int i = 0; i < n; ++i) q[i] = 0;
    return true;
  }
  const int top = is_signed ? nmax + 1 : nmax;  // signed: the largest maps to -(nmax + 1)
  float best_err = INFINITY;
  for (int is = 0; is <= 8; ++is) {
    const float d = f16_to_float(float_to_f16((is_signed ? -m : m) / (float(top) - 0.25f * float(is))));
    if (!isfinite(d)) return false;
    if (d == 0.0f) continue;
    int cand[2 * kKSubs];
    float err = 0.0f;
    for (int i = 0; i < n; ++i) {
      cand[i] = std::clamp(nearest(v[i] / d), is_signed ? -nmax - 1 : 0, nmax);
      const float e = v[i] - d * float(cand[i]);
      err += (sw[i] + 1e-30f) * e * e;
    }
    if (err < best_err) {
      best_err = err;
      *d16 = float_to_f16(d);
      for (int i = 0; i < n; ++i) q[i] = cand[i];
    }
  }
  if (best_err == INFINITY) {  // the scales underflow fp16
    *d16 = 0;
    for (int i = 0; i < n; ++i) q[i] = 0;
  }
  return true;
}

template <int NMax> int affine_level(float v, float ds, float dm) {
  return ds > 0.0f ? std::clamp(nearest((v + dm) / ds), 0, NMax) : 0;
}

// The weighted squared error of sub-block x[32] as ds·L - dm with the nearest levels L.
template <int NMax> float affine_error(const float* x, const float* wt, float ds, float dm) {
  float err = 0.0f;
  for (int i = 0; i < kQBlock; ++i) {
    const float e = ds * float(affine_level<NMax>(x[i], ds, dm)) - dm - x[i];
    err += wt[i] * e * e;
  }
  return err;
}

// Under super-block scales d and dmin, each sub-block's 6-bit sc and m: the least error
// of the rounding down or up of its fitted s / d and mn / dmin, each judged with its
// levels rounded again. Returns the super-block's weighted squared error.
template <int NMax>
float pick_scales(const float* x, const float* wt, const float* s, const float* mn, float d, float dmin, int* sc,
                  int* m) {
  float total = 0.0f;
  for (int j = 0; j < kKSubs; ++j) {
    const int a0 = d > 0.0f ? int(std::clamp(s[j] / d, 0.0f, 63.0f)) : 0;
    const int b0 = dmin > 0.0f ? int(std::clamp(mn[j] / dmin, 0.0f, 63.0f)) : 0;
    float best = INFINITY;
    for (int a = a0; a <= std::min(a0 + 1, 63); ++a)
      for (int b = b0; b <= std::min(b0 + 1, 63); ++b) {
        const float err = affine_error<NMax>(x + j * kQBlock, wt + j * kQBlock, d * float(a), dmin * float(b));
        if (err < best) {
          best = err;
          sc[j] = a;
          m[j] = b;
        }
      }
    total += best;
  }
  return total;
}

// One row's super-block x[256] (zero-padded) -> q4k's (NMax 15) or q5k's (31) integers:
// each sub-block's s, mn fitted, the super-block's d and dmin from their weighted
// rounding (quantize_scales), every sc, m picked under them (pick_scales); then d and dmin
// refitted by least squares to those integers and levels, while that lowers the error.
template <int NMax>
bool quantize_affine_row(const float* x, const float* imp, AffineKRow& o) {
  float wt[kKBlock], s[kKSubs], mn[kKSubs], sw[kKSubs], swl2[kKSubs];
  error_weights(wt, x, imp, kKBlock, false);
  for (int j = 0; j < kKSubs; ++j) {
    fit_affine(x + j * kQBlock, wt + j * kQBlock, int(kQBlock), NMax, &s[j], &mn[j], &swl2[j]);
    sw[j] = 0.0f;
    for (int i = 0; i < kQBlock; ++i) sw[j] += wt[j * kQBlock + i];
  }
  int sc[kKSubs], m[kKSubs];
  if (!quantize_scales(s, swl2, kKSubs, 63, false, &o.d, sc) || !quantize_scales(mn, sw, kKSubs, 63, false, &o.dmin, m))
    return false;
  float d = f16_to_float(o.d), dmin = f16_to_float(o.dmin);
  float err = pick_scales<NMax>(x, wt, s, mn, d, dmin, sc, m);
  constexpr int kRefits = 2;
  for (int round = 0; round < kRefits; ++round) {
    // x ≈ d·(sc·L) - dmin·m over the super-block: the 2 x 2 normal equations
    double a11 = 0, a12 = 0, a22 = 0, b1 = 0, b2 = 0;
    for (int j = 0; j < kKSubs; ++j)
      for (int i = 0; i < kQBlock; ++i) {
        const int k = j * int(kQBlock) + i;
        const double u = double(sc[j]) * affine_level<NMax>(x[k], d * float(sc[j]), dmin * float(m[j])), v = -m[j];
        a11 += wt[k] * u * u;
        a12 += wt[k] * u * v;
        a22 += wt[k] * v * v;
        b1 += wt[k] * u * x[k];
        b2 += wt[k] * v * x[k];
      }
    const double det = a11 * a22 - a12 * a12;
    if (!(det > 0.0)) break;
    const uint16_t d16 = float_to_f16(float(std::max(0.0, (b1 * a22 - b2 * a12) / det)));
    const uint16_t dmin16 = float_to_f16(float(std::max(0.0, (a11 * b2 - a12 * b1) / det)));
    const float d2 = f16_to_float(d16), dmin2 = f16_to_float(dmin16);
    if (!isfinite(d2) || !isfinite(dmin2)) break;
    int sc2[kKSubs], m2[kKSubs];
    const float err2 = pick_scales<NMax>(x, wt, s, mn, d2, dmin2, sc2, m2);
    if (!(err2 < err)) break;
    err = err2;
    o.d = d16;
    o.dmin = dmin16;
    d = d2;
    dmin = dmin2;
    std::copy(sc2, sc2 + kKSubs, sc);
    std::copy(m2, m2 + kKSubs, m);
  }
  for (int j = 0; j < kKSubs; ++j) {
    o.sc[j] = uint8_t(sc[j]);
    o.m[j] = uint8_t(m[j]);
    for (int i = 0; i < kQBlock; ++i)
      o.q[j * kQBlock + i] = uint8_t(affine_level<NMax>(x[j * kQBlock + i], d * float(sc[j]), dmin * float(m[j])));
  }
  return true;
}

bool quantize_q6k_row(const float* x, const float* imp, Q6KRow& o) {
  float wt[kKBlock], s[2 * kKSubs], sw[2 * kKSubs];
  error_weights(wt, x, imp, kKBlock, true);
  for (int j = 0; j < 2 * kKSubs; ++j) {
    float ww[16], sum_w = 0.0f;
    for (int i = 0; i < 16; ++i) sum_w += wt[j * 16 + i];
    for (int i = 0; i < 16; ++i) ww[i] = sum_w > 0.0f ? wt[j * 16 + i] : 1.0f;
    fit_symmetric(x + j * 16, ww, 16, 31, &s[j], &sw[j]);
  }
  int sc[2 * kKSubs];
  if (!quantize_scales(s, sw, 2 * kKSubs, 127, true, &o.d, sc)) return false;
  const float d = f16_to_float(o.d);
  for (int j = 0; j < 2 * kKSubs; ++j) {
    o.sc[j] = int8_t(sc[j]);
    const float ds = d * float(sc[j]);
    for (int i = 0; i < 16; ++i)
      o.q[j * 16 + i] = uint8_t(ds != 0.0f ? std::clamp(nearest(x[j * 16 + i] / ds), -32, 31) + 32 : 32);
  }
  return true;
}

// The bytes of super-block s of a row group (a tail block holds `subs` sub-blocks).
template <class Block> int64_t k_block_bytes(int subs) {
  return subs == kKSubs ? int64_t(sizeof(Block)) : KTail<Block>::head + subs * KTail<Block>::sub;
}

template <class Block, bool (*quantize_row)(const float*, const float*, typename KRowOf<Block>::type&)>
QuantizeStatus quantize_k(void* outv, const void* w, WeightType src, int64_t N, int64_t K,
                          const float* importance, int n_threads) {
  using Row = typename KRowOf<Block>::type;
  const int64_t ns = k_blocks(K), groups = q_groups(N), group_bytes = k_group_bytes<Block>(K);
  const Source source(w, src);
  int64_t bad = INT64_MAX, overflow = INT64_MAX;
#pragma omp parallel for schedule(dynamic, 4) num_threads(n_threads) reduction(min : bad, overflow)
  for (int64_t g = 0; g < groups; ++g) {
    char* group = static_cast<char*>(outv) + g * group_bytes;
    for (int64_t s = 0; s < ns; ++s) {
      const int subs = block_subs(K, s);
      Block& blk = k_block<Block>(group, s);
      std::memset(&blk, 0, size_t(k_block_bytes<Block>(subs)));
      float imp[kKBlock];
      if (importance)
        for (int64_t i = 0; i < kKBlock; ++i) imp[i] = s * kKBlock + i < K ? importance[s * kKBlock + i] : 0.0f;
      for (int r = 0; r < kQRows; ++r) {
        const int64_t n = g * kQRows + r;
        float x[kKBlock];
        read_span(x, source, N, K, n, s * kKBlock, kKBlock, bad);
        Row row{};
        if (n < N && !quantize_row(x, importance ? imp : nullptr, row)) {
          overflow = std::min(overflow, n * K + s * kKBlock);
          row = Row{};
        }
        pack_row(blk, r, row, subs);
      }
    }
  }
  return status(bad, overflow);
}

// Row `row` of K-quant blocks as floats: value(row, i) of each super-block's unpacked row.
template <class Block, class Value>
void dequantize_k(float* out, const void* w, int64_t row, int64_t K, Value value) {
  const char* group = static_cast<const char*>(w) + (row / kQRows) * k_group_bytes<Block>(K);
  for (int64_t s = 0; s * kKBlock < K; ++s) {
    const auto v = unpack_row(k_block<Block>(group, s), int(row % kQRows), block_subs(K, s));
    for (int64_t k = s * kKBlock; k < std::min(K, (s + 1) * kKBlock); ++k) out[k] = value(v, int(k - s * kKBlock));
  }
}

float affine_value(const AffineKRow& v, int i) {
  const int j = i / int(kQBlock);
  return f16_to_float(v.d) * float(v.sc[j]) * float(v.q[i]) - f16_to_float(v.dmin) * float(v.m[j]);
}

}  // namespace

QuantizeStatus quantize_q8(void* out, const void* w, WeightType src, int64_t N, int64_t K, const float*,
                           int n_threads) {
  return quantize_blocks<BlockQ8x8>(out, w, src, N, K, n_threads);
}
QuantizeStatus quantize_q4(void* out, const void* w, WeightType src, int64_t N, int64_t K, const float*,
                           int n_threads) {
  return quantize_blocks<BlockQ4x8>(out, w, src, N, K, n_threads);
}
QuantizeStatus quantize_q4k(void* out, const void* w, WeightType src, int64_t N, int64_t K,
                            const float* importance, int n_threads) {
  return quantize_k<BlockQ4Kx8, quantize_affine_row<15>>(out, w, src, N, K, importance, n_threads);
}
QuantizeStatus quantize_q5k(void* out, const void* w, WeightType src, int64_t N, int64_t K,
                            const float* importance, int n_threads) {
  return quantize_k<BlockQ5Kx8, quantize_affine_row<31>>(out, w, src, N, K, importance, n_threads);
}
QuantizeStatus quantize_q6k(void* out, const void* w, WeightType src, int64_t N, int64_t K,
                            const float* importance, int n_threads) {
  return quantize_k<BlockQ6Kx8, quantize_q6k_row>(out, w, src, N, K, importance, n_threads);
}

void dequantize_row_q8(float* out, const void* w, int64_t row, int64_t K) {
  dequantize_blocks<BlockQ8x8>(out, w, row, K);
}
void dequantize_row_q4(float* out, const void* w, int64_t row, int64_t K) {
  dequantize_blocks<BlockQ4x8>(out, w, row, K);
}

void dequantize_row_q4k(float* out, const void* w, int64_t row, int64_t K) {
  dequantize_k<BlockQ4Kx8>(out, w, row, K, affine_value);
}
void dequantize_row_q5k(float* out, const void* w, int64_t row, int64_t K) {
  dequantize_k<BlockQ5Kx8>(out, w, row, K, affine_value);
}
void dequantize_row_q6k(float* out, const void* w, int64_t row, int64_t K) {
  dequantize_k<BlockQ6Kx8>(out, w, row, K, [](const Q6KRow& v, int i) {
    return f16_to_float(v.d) * float(v.sc[i / 16]) * float(int(v.q[i]) - 32);
  });
}

// ---- GGUF blocks (ggml-common.h): rows of ceil(K / block) blocks -------------------------

namespace {

uint16_t half_at(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

template <class Block, class Unpack>
void convert_rows(void* outv, const uint8_t* in, int64_t N, int64_t K, int64_t per_block_k,
                  int64_t block_bytes, Unpack unpack) {
  Block* out = static_cast<Block*>(outv);
  const int64_t nb = (K + per_block_k - 1) / per_block_k, groups = q_groups(N);
  std::memset(out, 0, size_t(groups * nb) * sizeof(Block));
  for (int64_t n = 0; n < N; ++n)
    for (int64_t b = 0; b < nb; ++b) unpack(out[(n / kQRows) * nb + b], int(n % kQRows), in + (n * nb + b) * block_bytes);
}

// Q4_K / Q5_K's d, dmin and scales[12] (6-bit sc, m of 8 sub-blocks): get_scale_min_k4.
void affine_header(AffineKRow& v, const uint8_t* p) {
  v.d = half_at(p);
  v.dmin = half_at(p + 2);
  const uint8_t* s = p + 4;
  for (int j = 0; j < kKSubs; ++j) {
    v.sc[j] = j < 4 ? s[j] & 63 : (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4);
    v.m[j] = j < 4 ? s[j + 4] & 63 : (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}

}  // namespace

void from_gguf_q8(void* out, const void* blocks, int64_t N, int64_t K) {
  convert_rows<BlockQ8x8>(out, static_cast<const uint8_t*>(blocks), N, K, kQBlock, 34,
                          [](BlockQ8x8& b, int r, const uint8_t* p) {
                            b.d[r] = half_at(p);
                            store(b, r, reinterpret_cast<const int8_t*>(p + 2));
                          });
}

void from_gguf_q4(void* out, const void* blocks, int64_t N, int64_t K) {
  convert_rows<BlockQ4x8>(out, static_cast<const uint8_t*>(blocks), N, K, kQBlock, 18,
                          [](BlockQ4x8& b, int r, const uint8_t* p) {
                            b.d[r] = half_at(p);
                            for (int k = 0; k < 16; ++k) {
                              set_nibble(b.qs, r, k, p[2 + k] & 15);
                              set_nibble(b.qs, r, k + 16, p[2 + k] >> 4);
                            }
                          });
}

// Q4_K: header, qs[128]: sub-block 2p in the low nibbles of qs[32p .. 32p+31], 2p+1 in
// their high nibbles.
void from_gguf_q4k(void* out, const void* blocks, int64_t N, int64_t K) {
  convert_rows<BlockQ4Kx8>(out, static_cast<const uint8_t*>(blocks), N, K, kKBlock, 144,
                           [](BlockQ4Kx8& b, int r, const uint8_t* p) {
                             AffineKRow v;
                             affine_header(v, p);
                             const uint8_t* qs = p + 16;
                             for (int i = 0; i < kKBlock; ++i) {
                               const int j = i / 32, l = i % 32;
                               const uint8_t byte = qs[32 * (j / 2) + l];
                               v.q[i] = uint8_t(j % 2 ? byte >> 4 : byte & 15);
                             }
                             pack_row(b, r, v);
                           });
}

// Q5_K: header, qh[32], qs[128]: Q4_K's nibbles, and sub-block j's fifth bits at bit j
// of qh[l].
void from_gguf_q5k(void* out, const void* blocks, int64_t N, int64_t K) {
  convert_rows<BlockQ5Kx8>(out, static_cast<const uint8_t*>(blocks), N, K, kKBlock, 176,
                           [](BlockQ5Kx8& b, int r, const uint8_t* p) {
                             AffineKRow v;
                             affine_header(v, p);
                             const uint8_t *qh = p + 16, *qs = p + 48;
                             for (int i = 0; i < kKBlock; ++i) {
                               const int j = i / 32, l = i % 32;
                               const uint8_t byte = qs[32 * (j / 2) + l];
                               v.q[i] = uint8_t((j % 2 ? byte >> 4 : byte & 15) | (((qh[l] >> j) & 1) << 4));
                             }
                             pack_row(b, r, v);
                           });
}

// Q6_K: ql[128], qh[64], scales[16], d. Per half n of 128: k = 128n + 32t + l (t = 0..3)
// takes ql[64n + l + 32(t & 1)]'s nibble (t >> 1) and qh[32n + l]'s bits 2t..2t+1.
void from_gguf_q6k(void* out, const void* blocks, int64_t N, int64_t K) {
  convert_rows<BlockQ6Kx8>(out, static_cast<const uint8_t*>(blocks), N, K, kKBlock, 210,
                           [](BlockQ6Kx8& b, int r, const uint8_t* p) {
                             Q6KRow v;
                             const uint8_t *ql = p, *qh = p + 128;
                             for (int s = 0; s < 2 * kKSubs; ++s) v.sc[s] = int8_t(p[192 + s]);
                             v.d = half_at(p + 208);
                             for (int i = 0; i < kKBlock; ++i) {
                               const int n = i / 128, t = (i % 128) / 32, l = i % 32;
                               const uint8_t lo = ql[64 * n + l + 32 * (t & 1)];
                               const int low4 = t >> 1 ? lo >> 4 : lo & 15;
                               v.q[i] = uint8_t(low4 | (((qh[32 * n + l] >> (2 * t)) & 3) << 4));
                             }
                             pack_row(b, r, v);
                           });
}

}  // namespace hearthlm
