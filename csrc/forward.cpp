#include "forward.h"

namespace hearthlm {
namespace {

constexpr int64_t kParallelMin = 1 << 16;  // multiply-adds per layer below which one thread is faster

// ys[i] = x · linears[i]ᵀ for projections of the same x [M, K]; runs of one weight type
// share one task list (and one quantization of x).
void project(const KernelTable& kt, const Linear* const* linears, float* const* ys, int n,
             const float* x, int64_t M, BlockQ8Act* xq) {
  for (int first = 0; first < n;) {
    MatmulJob jobs[team::kMaxJobs];
    int count = 0;
    const WeightType wt = linears[first]->wt;
    while (first + count < n && linears[first + count]->wt == wt) {
      const Linear& lin = *linears[first + count];
      jobs[count] = MatmulJob{ys[first + count], lin.w, lin.bias, lin.N};
      ++count;
    }
    team::matmul_group(kt, wt, jobs, count, x, M, linears[first]->K, xq);
    first += count;
  }
}

// Layer i's cache, given layer 0's.
KVLayer layer_cache(const KVLayer& first, int64_t i) {
  const int64_t rows = first.n_kv_heads * first.n_slots;
  KVLayer c = first;
  c.data = static_cast<char*>(first.data) + i * rows * first.row_stride * kv_element_bytes(first.type);
  if (c.scales) c.scales = first.scales + i * rows * (first.row_stride / kQ8Block);
  return c;
}

void attention_block(const KernelTable& kt, const ModelShape& s, const LayerWeights& layer,
                     const Activations& a, const KVLayer& k_cache, const KVLayer& v_cache,
                     const ForwardStep& step) {
  const int64_t T = step.T, kv_dim = s.n_kv_heads * s.head_dim;
  const Linear* qkv[] = {&layer.q, &layer.k, &layer.v};
  float* const qkv_out[] = {a.q, a.k, a.v};
  project(kt, qkv, qkv_out, 3, a.h, T, a.xq);                  // q, k, v [T, heads * head_dim]
  team::rope(kt, a.q, step.cos, step.sin, step.positions, T, s.n_heads, s.head_dim, s.rotary_dim);
  team::rope(kt, a.k, step.cos, step.sin, step.positions, T, s.n_kv_heads, s.head_dim, s.rotary_dim);
  for (int i = 0; i < step.n_segments; ++i) {
    const KVSegment& seg = step.segments[i];
    team::kv_store(k_cache, v_cache, a.k + seg.offset * kv_dim, a.v + seg.offset * kv_dim, seg.n,
                   s.head_dim, seg.slot0);
  }
  team::attention(kt, a.attn, a.q, k_cache, v_cache, step.slot_pos, step.positions, T, s.n_heads,
                  s.head_dim, layer.window, s.attn_scale, a.attention_partials);  // attn [T, n_heads * head_dim]
  const Linear* o[] = {&layer.o};
  float* const o_out[] = {a.h};
  project(kt, o, o_out, 1, a.attn, T, a.xq);                    // h [T, hidden]
}

void feed_forward_block(const KernelTable& kt, const ModelShape& s, const LayerWeights& layer,
                        const Activations& a, int64_t T) {
  const Linear* gate_up[] = {&layer.gate, &layer.up};
  float* const gate_up_out[] = {a.gate, a.up};
  project(kt, gate_up, gate_up_out, 2, a.h, T, a.xq);          // gate, up [T, intermediate]
  team::swiglu(kt, a.gate, a.gate, a.up, T * s.intermediate);
  const Linear* down[] = {&layer.down};
  float* const down_out[] = {a.h};
  project(kt, down, down_out, 1, a.gate, T, a.xq);              // h [T, hidden]
}

}  // namespace

void forward_layers(const KernelTable& kt, const ModelShape& s, const LayerWeights* layers,
                    int64_t n_layers, const Norm& final_norm, const Activations& a,
                    const KVLayer& k_cache, const KVLayer& v_cache, const ForwardStep& step,
                    int n_threads) {
  const int64_t T = step.T, H = s.hidden;
  if (T <= 0) return;
  const int64_t q_dim = s.n_heads * s.head_dim, kv_dim = s.n_kv_heads * s.head_dim;
  const int64_t layer_work = T * (H * (q_dim + 2 * kv_dim) + q_dim * H + 3 * H * s.intermediate);
#pragma omp parallel num_threads(n_threads) if (n_threads > 1 && layer_work >= kParallelMin)
  {
    // Each block leaves its output in h; add_norm adds it to the residual stream x
    // and normalizes x into h for the next block.
    team::norm(kt, a.h, a.x, layers[0].attn_norm.w, layers[0].attn_norm.b, T, H, s.norm_eps);
    for (int64_t i = 0; i < n_layers; ++i) {
      const LayerWeights& layer = layers[i];
      const Norm& next_norm = i + 1 < n_layers ? layers[i + 1].attn_norm : final_norm;
      attention_block(kt, s, layer, a, layer_cache(k_cache, i), layer_cache(v_cache, i), step);
      team::add_norm(kt, a.h, a.x, a.h, layer.mlp_norm.w, layer.mlp_norm.b, T, H, s.norm_eps);
      feed_forward_block(kt, s, layer, a, T);
      team::add_norm(kt, a.h, a.x, a.h, next_norm.w, next_norm.b, T, H, s.norm_eps);
    }
  }
}

}  // namespace hearthlm
