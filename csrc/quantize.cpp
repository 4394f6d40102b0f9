#include "quantize.h"

#include <math.h>

#include <algorithm>

#include "kernels/convert.h"
#include "kernels/quant.h"

namespace hearthlm {
namespace {

float source_value(const void* w, WeightType src, int64_t i) {
  switch (src) {
    case WeightType::bf16: return bf16_to_float(static_cast<const uint16_t*>(w)[i]);
    case WeightType::f16: return f16_to_float(static_cast<const uint16_t*>(w)[i]);
    default: return static_cast<const float*>(w)[i];
  }
}

// Round half to even for |v| <= 2^22, without a libm call (the baseline x86-64 build
// has no roundss): adding 1.5·2^23 leaves no fraction bits, in the default rounding mode.
inline float round_even(float v) { return (v + 12582912.0f) - 12582912.0f; }

// One block of 32 values -> fp16 scale + integers, by the rules of quant.h (clamping
// to the integer range before rounding is the same as after). Returns false if the
// scale overflows fp16.
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
  for (int k = 0; k < kQBlock; ++k) b.qs[(k >> 2) * 32 + r * 4 + (k & 3)] = q[k];
}

void store(BlockQ4x8& b, int r, const int8_t* q) {
  for (int k = 0; k < kQBlock; ++k) {
    uint8_t& byte = b.qs[((k & 15) >> 2) * 32 + r * 4 + (k & 3)];
    const uint8_t u = uint8_t(q[k] + 8);
    byte = k < 16 ? uint8_t((byte & 0xF0) | u) : uint8_t((byte & 0x0F) | (u << 4));
  }
}

template <class Block>
QuantizeStatus quantize(Block* out, const void* w, WeightType src, int64_t N, int64_t K,
                        int n_threads) {
  const int64_t nb = q_blocks(K), groups = q_groups(N);
  constexpr bool q4 = sizeof(Block) == sizeof(BlockQ4x8);
  int64_t bad = INT64_MAX, overflow = INT64_MAX;
#pragma omp parallel for schedule(dynamic, 8) num_threads(n_threads) reduction(min : bad, overflow)
  for (int64_t g = 0; g < groups; ++g) {
    for (int64_t b = 0; b < nb; ++b) {
      Block& blk = out[g * nb + b];
      for (int r = 0; r < kQRows; ++r) {
        const int64_t n = g * kQRows + r;
        float x[kQBlock] = {};
        for (int64_t k = b * kQBlock; k < std::min(K, (b + 1) * kQBlock) && n < N; ++k) {
          const float v = source_value(w, src, n * K + k);
          if (!isfinite(v)) bad = std::min(bad, n * K + k);
          x[k - b * kQBlock] = isfinite(v) ? v : 0.0f;
        }
        int8_t q[kQBlock];
        const bool ok = q4 ? quantize_block_q4(x, &blk.d[r], q) : quantize_block_q8(x, &blk.d[r], q);
        if (!ok) overflow = std::min(overflow, n * K + b * kQBlock);
        store(blk, r, q);
      }
    }
  }
  QuantizeStatus s;
  if (bad != INT64_MAX) s.non_finite = bad;
  if (overflow != INT64_MAX) s.scale_overflow = overflow;
  return s;
}

template <class Block>
void dequantize(float* out, const Block* w, int64_t row, int64_t K) {
  const Block* blocks = w + (row / kQRows) * q_blocks(K);
  const int r = int(row % kQRows);
  for (int64_t k = 0; k < K; ++k) {
    const Block& b = blocks[k / kQBlock];
    out[k] = f16_to_float(b.d[r]) * float(q_value(b, r, int(k % kQBlock)));
  }
}

}  // namespace

QuantizeStatus quantize_weights(void* out, WeightType format, const void* w, WeightType src,
                                int64_t N, int64_t K, int n_threads) {
  if (format == WeightType::q8)
    return quantize(static_cast<BlockQ8x8*>(out), w, src, N, K, n_threads);
  return quantize(static_cast<BlockQ4x8*>(out), w, src, N, K, n_threads);
}

void dequantize_row(float* out, const void* w, WeightType format, int64_t row, int64_t K) {
  if (format == WeightType::q8)
    dequantize(out, static_cast<const BlockQ8x8*>(w), row, K);
  else
    dequantize(out, static_cast<const BlockQ4x8*>(w), row, K);
}

}  // namespace hearthlm
