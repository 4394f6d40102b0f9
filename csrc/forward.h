// The layers of the network in one parallel region: per layer
//   h = norm(x); q, k, v = h·Wqᵀ, h·Wkᵀ, h·Wvᵀ; rope(q, k); cache ← k, v;
//   attn = attention(q, cache); x += attn·Woᵀ; h = norm(x);
//   x += down(silu(h·Wgateᵀ) * h·Wupᵀ)
// then h = final_norm(x). The threads stay in the region from the first layer to the
// last, meeting at the barriers that end each step, so a token costs no thread
// start-ups and no Python between kernels. No allocation here.
#pragma once
#include <cstdint>

#include "ops.h"

namespace hearthlm {

struct Linear {  // y = x · wᵀ (+ bias): w is [N, K] (or its quantized superblocks)
  WeightType wt;
  const void* w;
  const float* bias;
  int64_t N, K;
};

struct Norm {  // RMSNorm when b is null, else LayerNorm
  const float* w;
  const float* b;
};

struct LayerWeights {
  Norm attn_norm;
  Linear q, k, v, o;
  Norm mlp_norm;
  Linear gate, up, down;
  int32_t window;  // sliding window in tokens, 0 = full attention
};

struct ModelShape {
  int64_t hidden, n_heads, n_kv_heads, head_dim, rotary_dim, intermediate;
  float norm_eps, attn_scale;
};

// Row-major activations of T tokens: x, h [T, hidden]; q, attn [T, n_heads*head_dim];
// k, v [T, n_kv_heads*head_dim]; gate, up [T, intermediate]; xq: room for
// T * ceil(max K / 32) quantized activation blocks; attention_partials:
// attention_partials_floats(n_heads, head_dim) floats (ops.h).
struct Activations {
  float *x, *h, *q, *k, *v, *attn, *gate, *up;
  BlockQ8Act* xq;
  float* attention_partials;
};

// Tokens [offset, offset + n) of this call go to cache slots [slot0, slot0 + n).
struct KVSegment {
  int64_t offset, slot0, n;
};

// The new tokens and where they go: positions[T] index the RoPE tables cos/sin
// [n_positions, rotary_dim/2]; slot_pos[n_slots] is the position held by each cache
// slot, already including the new tokens (-1 = empty).
struct ForwardStep {
  int64_t T;
  const int32_t* positions;
  const float *cos, *sin;
  const int32_t* slot_pos;
  const KVSegment* segments;
  int n_segments;
};

// x (the embedded tokens) in, h = final_norm(x after every layer) out; n_layers >= 1.
// k_cache, v_cache: layer 0's cache, the caches of the other layers following it
// in order (KVCache's [n_layers, n_kv_heads, n_slots, row] arrays).
void forward_layers(const KernelTable& kt, const ModelShape& shape, const LayerWeights* layers,
                    int64_t n_layers, const Norm& final_norm, const Activations& a,
                    const KVLayer& k_cache, const KVLayer& v_cache, const ForwardStep& step,
                    int n_threads);

}  // namespace hearthlm
