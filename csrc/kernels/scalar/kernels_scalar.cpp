// Plain scalar reference kernels: the twin every SIMD path is tested against, and
// the path taken on CPUs without AVX2 / NEON. Written for clarity, not speed.
#include <math.h>

#include "kernels/convert.h"
#include "kernels/kernels.h"

namespace hearthlm {
namespace scalar {

template <class LoadW, class W>
static void matmul(float* y, const float* x, const W* w, const float* bias, int64_t M,
                   int64_t K, int64_t ldy, int64_t n0, int64_t n1, LoadW load_w) {
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = n0; n < n1; ++n) {
      float acc = 0.0f;
      for (int64_t k = 0; k < K; ++k) acc += x[m * K + k] * load_w(w[n * K + k]);
      y[m * ldy + n] = acc + (bias ? bias[n] : 0.0f);
    }
}

static void matmul_f32(float* y, const float* x, const float* w, const float* bias, int64_t M,
                       int64_t K, int64_t ldy, int64_t n0, int64_t n1) {
  matmul(y, x, w, bias, M, K, ldy, n0, n1, [](float v) { return v; });
}

static void matmul_bf16(float* y, const float* x, const uint16_t* w, const float* bias,
                        int64_t M, int64_t K, int64_t ldy, int64_t n0, int64_t n1) {
  matmul(y, x, w, bias, M, K, ldy, n0, n1, bf16_to_float);
}

static void matmul_f16(float* y, const float* x, const uint16_t* w, const float* bias, int64_t M,
                       int64_t K, int64_t ldy, int64_t n0, int64_t n1) {
  matmul(y, x, w, bias, M, K, ldy, n0, n1, f16_to_float);
}

static void rmsnorm(float* out, const float* x, const float* w, int64_t n, float eps) {
  double ss = 0.0;
  for (int64_t i = 0; i < n; ++i) ss += double(x[i]) * x[i];
  const float inv = float(1.0 / sqrt(ss / double(n) + eps));
  for (int64_t i = 0; i < n; ++i) out[i] = x[i] * inv * w[i];
}

static void layernorm(float* out, const float* x, const float* w, const float* b, int64_t n,
                      float eps) {
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) sum += x[i];
  const double mean = sum / double(n);
  double var = 0.0;
  for (int64_t i = 0; i < n; ++i) var += (x[i] - mean) * (x[i] - mean);
  const float inv = float(1.0 / sqrt(var / double(n) + eps));
  for (int64_t i = 0; i < n; ++i) out[i] = float(x[i] - mean) * inv * w[i] + b[i];
}

static void rope(float* x, const float* cos, const float* sin, int64_t n_heads,
                 int64_t head_dim, int64_t rot_dim) {
  const int64_t half = rot_dim / 2;
  for (int64_t h = 0; h < n_heads; ++h) {
    float* xh = x + h * head_dim;
    for (int64_t i = 0; i < half; ++i) {
      const float a = xh[i], b = xh[i + half];
      xh[i] = a * cos[i] - b * sin[i];
      xh[i + half] = b * cos[i] + a * sin[i];
    }
  }
}

// Element d of row j of a kv head, in float, for each storage type.
struct ReadF32 {
  static float at(KVRows r, int64_t j, int64_t d) {
    return static_cast<const float*>(r.data)[j * r.row_stride + d];
  }
};
struct ReadF16 {
  static float at(KVRows r, int64_t j, int64_t d) {
    return f16_to_float(static_cast<const uint16_t*>(r.data)[j * r.row_stride + d]);
  }
};
struct ReadBF16 {
  static float at(KVRows r, int64_t j, int64_t d) {
    return bf16_to_float(static_cast<const uint16_t*>(r.data)[j * r.row_stride + d]);
  }
};
struct ReadQ8 {
  static float at(KVRows r, int64_t j, int64_t d) {
    const float scale = r.scales[j * (r.row_stride / kQ8Block) + d / kQ8Block];
    return scale * float(static_cast<const int8_t*>(r.data)[j * r.row_stride + d]);
  }
};

template <class Read>
static void attention(float* out, const float* q, int64_t ld, KVRows k, KVRows v, const int32_t* kv_pos,
                      int64_t n_slots, const int32_t* q_pos, int64_t n_t, int32_t window, float scale,
                      float softcap, int64_t n_q, int64_t head_dim) {
  auto score = [&](const float* qg, int64_t j) {
    float s = 0.0f;
    for (int64_t d = 0; d < head_dim; ++d) s += qg[d] * Read::at(k, j, d);
    s *= scale;
    return softcap > 0.0f ? softcap * tanhf(s / softcap) : s;
  };
  for (int64_t i = 0; i < n_t; ++i) {
    auto visible = [&](int64_t j) {
      const int32_t p = kv_pos[j];
      return p >= 0 && p <= q_pos[i] && (window <= 0 || q_pos[i] - p < window);
    };
    for (int64_t g = 0; g < n_q; ++g) {
      const float* qg = q + i * ld + g * head_dim;
      float* og = out + i * ld + g * head_dim;
      // Two passes: the maximum score, then exp-weighted sums.
      float max_score = -INFINITY;
      for (int64_t j = 0; j < n_slots; ++j)
        if (visible(j)) max_score = fmaxf(max_score, score(qg, j));
      for (int64_t d = 0; d < head_dim; ++d) og[d] = 0.0f;
      if (max_score == -INFINITY) continue;  // nothing visible
      double denom = 0.0;
      for (int64_t j = 0; j < n_slots; ++j) {
        if (!visible(j)) continue;
        const float e = expf(score(qg, j) - max_score);
        denom += e;
        for (int64_t d = 0; d < head_dim; ++d) og[d] += e * Read::at(v, j, d);
      }
      const float inv = float(1.0 / denom);
      for (int64_t d = 0; d < head_dim; ++d) og[d] *= inv;
    }
  }
}

static void swiglu(float* out, const float* gate, const float* up, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
}

static void gelu_tanh_glu(float* out, const float* gate, const float* up, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    out[i] = 0.5f * g * (1.0f + tanhf(0.7978845608028654f * (g + 0.044715f * g * g * g))) * up[i];
  }
}

static void add(float* out, const float* a, const float* b, float b_scale, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b_scale * b[i];
}

static void bf16_to_f32(float* out, const uint16_t* in, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = bf16_to_float(in[i]);
}

static void f16_to_f32(float* out, const uint16_t* in, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = f16_to_float(in[i]);
}

static void quantize_act(BlockQ8Act* xq, const float* x, int64_t K) {
  for (int64_t b = 0; b < q_blocks(K); ++b) {
    const int64_t k0 = b * kQBlock, n = K - k0 < kQBlock ? K - k0 : kQBlock;
    float amax = 0.0f;
    for (int64_t i = 0; i < n; ++i) amax = fmaxf(amax, fabsf(x[k0 + i]));
    const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    int32_t sum[2] = {0, 0};
    for (int64_t i = 0; i < kQBlock; ++i) {
      const int q = i < n ? int(nearbyintf(x[k0 + i] * id)) : 0;  // round half to even
      xq[b].qs[i] = int8_t(q);
      sum[i / 16] += q;
    }
    xq[b].d = d;
    xq[b].sum[0] = int16_t(sum[0]);
    xq[b].sum[1] = int16_t(sum[1]);
    xq[b].dsum = d * float(sum[0] + sum[1]);
  }
}

template <class Block>
static void matmul_q(float* y, const BlockQ8Act* xq, const void* wv, const float* bias, int64_t M,
                     int64_t K, int64_t ldy, int64_t n0, int64_t n1) {
  const Block* w = static_cast<const Block*>(wv);
  const int64_t nb = q_blocks(K);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = n0; n < n1; ++n) {
      const Block* row = w + (n / kQRows) * nb;  // the blocks of n's row group
      const int r = int(n % kQRows);
      float acc = 0.0f;
      for (int64_t b = 0; b < nb; ++b) {
        const BlockQ8Act& a = xq[m * nb + b];
        int32_t isum = 0;
        for (int k = 0; k < kQBlock; ++k) isum += q_value(row[b], r, k) * a.qs[k];
        acc = fmaf(float(isum), f16_to_float(row[b].d[r]) * a.d, acc);
      }
      y[m * ldy + n] = bias ? acc + bias[n] : acc;
    }
}

// q4k / q5k, per 32-k block: acc += Σ q·a · (d·sc)·a.d, then acc -= (dmin·m)·a.dsum.
template <class Block>
static void matmul_affine_k(float* y, const BlockQ8Act* xq, const void* w, const float* bias, int64_t M,
                            int64_t K, int64_t ldy, int64_t n0, int64_t n1) {
  const int64_t nb = q_blocks(K), group_bytes = k_group_bytes<Block>(K);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = n0; n < n1; ++n) {
      const char* group = static_cast<const char*>(w) + (n / kQRows) * group_bytes;
      const int r = int(n % kQRows);
      float acc = 0.0f;
      for (int64_t b = 0; b < nb; ++b) {
        const int64_t s = b / kKSubs;
        const AffineKRow v = unpack_row(k_block<Block>(group, s), r, block_subs(K, s));
        const int j = int(b % kKSubs);
        const BlockQ8Act& a = xq[m * nb + b];
        int32_t isum = 0;
        for (int k = 0; k < kQBlock; ++k) isum += int(v.q[j * kQBlock + k]) * a.qs[k];
        const float dsc = f16_to_float(v.d) * float(v.sc[j]), dm = f16_to_float(v.dmin) * float(v.m[j]);
        acc = fmaf(float(isum), dsc * a.d, acc);
        acc = fmaf(-dm, a.dsum, acc);
      }
      y[m * ldy + n] = bias ? acc + bias[n] : acc;
    }
}

// q6k, per half h of each 32-k block: acc += Σ (q - 32)·a · (d·sc)·a.d.
static void matmul_q6k(float* y, const BlockQ8Act* xq, const void* w, const float* bias, int64_t M,
                       int64_t K, int64_t ldy, int64_t n0, int64_t n1) {
  const int64_t nb = q_blocks(K), group_bytes = k_group_bytes<BlockQ6Kx8>(K);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = n0; n < n1; ++n) {
      const char* group = static_cast<const char*>(w) + (n / kQRows) * group_bytes;
      const int r = int(n % kQRows);
      float acc = 0.0f;
      for (int64_t b = 0; b < nb; ++b) {
        const int64_t s = b / kKSubs;
        const Q6KRow v = unpack_row(k_block<BlockQ6Kx8>(group, s), r, block_subs(K, s));
        const int j = int(b % kKSubs);
        const BlockQ8Act& a = xq[m * nb + b];
        for (int h = 0; h < 2; ++h) {
          int32_t isum = 0;
          for (int k = 16 * h; k < 16 * h + 16; ++k) isum += (int(v.q[j * kQBlock + k]) - 32) * a.qs[k];
          acc = fmaf(float(isum), f16_to_float(v.d) * float(v.sc[2 * j + h]) * a.d, acc);
        }
      }
      y[m * ldy + n] = bias ? acc + bias[n] : acc;
    }
}

}  // namespace scalar

const KernelTable* scalar_kernels() {
  static const KernelTable table = [] {
    using namespace scalar;
    KernelTable t{};
    t.isa = "scalar";
    t.matmul_f32 = matmul_f32;
    t.matmul_bf16 = matmul_bf16;
    t.matmul_f16 = matmul_f16;
    t.rmsnorm = rmsnorm;
    t.layernorm = layernorm;
    t.rope = rope;
    t.attention[kKVf32] = attention<ReadF32>;
    t.attention[kKVf16] = attention<ReadF16>;
    t.attention[kKVbf16] = attention<ReadBF16>;
    t.attention[kKVq8] = attention<ReadQ8>;
    t.swiglu = swiglu;
    t.gelu_tanh_glu = gelu_tanh_glu;
    t.add = add;
    t.bf16_to_f32 = bf16_to_f32;
    t.f16_to_f32 = f16_to_f32;
    t.quantize_act = quantize_act;
    t.matmul_q[kQ8] = matmul_q<BlockQ8x8>;
    t.matmul_q[kQ4] = matmul_q<BlockQ4x8>;
    t.matmul_q[kQ4K] = matmul_affine_k<BlockQ4Kx8>;
    t.matmul_q[kQ6K] = matmul_q6k;
    t.matmul_q[kQ5K] = matmul_affine_k<BlockQ5Kx8>;
    return t;
  }();
  return &table;
}

}  // namespace hearthlm
