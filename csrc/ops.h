// Whole operations over a batch of tokens: each splits its work across OpenMP threads
// and calls the single-threaded kernels of the given table. No allocation here.
//
// The ops of the forward pass come twice: op(...) opens its own parallel region of
// n_threads, and team::op(...) is called by every thread of an enclosing region
// (forward.cpp runs a whole forward pass in one) and shares the work out with
// orphaned `omp for` loops, each ending in a barrier. Called outside a region, team::op runs whole on
// the calling thread. op(...) is the region around team::op.
#pragma once
#include <cstdint>

#include "formats.h"
#include "kernels/kernels.h"

namespace hearthlm {

// Weights w in format wt (formats.h): plain formats are [N, K] row-major; quantized
// ones are blocks [ceil(N/8), k blocks] (kernels/quant.h), and x is quantized to int8
// blocks on the fly.

// y[M, N] = x[M, K] · w[N, K]ᵀ (+ bias[N])
void matmul(const KernelTable& kt, WeightType wt, float* y, const float* x, const void* w,
            const float* bias, int64_t M, int64_t N, int64_t K, int n_threads);
// Several matrices applied to the same x (Q, K, V; gate, up): y_i[M, N_i] = x · w_iᵀ
// (+ bias_i), all of one weight type (or of quantized formats, each job naming its own:
// the same activation blocks feed them all). For one token (decode) this is one
// parallel region over the rows of every matrix, and quantized weights quantize x once.
struct MatmulJob {
  float* y;
  const void* w;
  const float* bias;
  int64_t N;
  WeightType wt = nullptr;  // this job's quantized format, if not the group's
};
void matmul_group(const KernelTable& kt, WeightType wt, const MatmulJob* jobs, int n_jobs,
                  const float* x, int64_t M, int64_t K, int n_threads);
// Row-wise norms over x[M, n].
void rmsnorm(const KernelTable& kt, float* out, const float* x, const float* w, int64_t M,
             int64_t n, float eps, int n_threads);
void layernorm(const KernelTable& kt, float* out, const float* x, const float* w,
               const float* b, int64_t M, int64_t n, float eps, int n_threads);
// x[T, n_heads, head_dim] rotated in place; cos/sin tables [n_positions, rot_dim/2];
// pos[T] indexes them (checked by the caller).
void rope(const KernelTable& kt, float* x, const float* cos, const float* sin,
          const int32_t* pos, int64_t T, int64_t n_heads, int64_t head_dim, int64_t rot_dim,
          int n_threads);
// One layer's K or V cache in its storage type: data [n_kv_heads, n_slots, row_stride]
// (+ q8 scales [n_kv_heads, n_slots, row_stride / kQ8Block]).
struct KVLayer {
  KVType type;
  void* data;
  float* scales;
  int64_t n_kv_heads, n_slots, row_stride;
};

// Slots [first, first + count) of a cache.
struct SlotRange {
  int64_t first, count;
};

// out, q: [T, n_heads, head_dim]; kv_pos[n_slots]: the position held by each slot
// (-1 = empty); q_pos[T].
void attention(const KernelTable& kt, float* out, const float* q, const KVLayer& k,
               const KVLayer& v, const int32_t* kv_pos, const int32_t* q_pos, int64_t T,
               int64_t n_heads, int64_t head_dim, int32_t window, float scale, float softcap,
               int n_threads);
// Write src [T, n_kv_heads, head_dim] into slots [slot0, slot0 + T), converting.
void kv_store(const KVLayer& dst, const float* src, int64_t T, int64_t head_dim, int64_t slot0);
// Rotate the cached rows of slot s by table row which[s] (cos/sin [n, rot_dim/2]) in
// place, through float32 for 16-bit and q8 storage; which[s] < 0 leaves slot s alone.
void kv_rotate(const KernelTable& kt, const KVLayer& cache, const float* cos, const float* sin,
               const int32_t* which, int64_t head_dim, int64_t rot_dim, int n_threads);
// The gated feed-forward's activation: out = act(gate) * up.
enum class Activation { silu, gelu_tanh };
void glu(const KernelTable& kt, Activation act, float* out, const float* gate, const float* up,
         int64_t n, int n_threads);
// out = a + b_scale * b
void add(const KernelTable& kt, float* out, const float* a, const float* b, float b_scale,
         int64_t n, int n_threads);
// out[T, dim] = table[ids[t], :] widened (or dequantized) to float32.
void embed(const KernelTable& kt, WeightType wt, float* out, const void* table,
           const int32_t* ids, int64_t T, int64_t dim);

// One expert of a mixture-of-experts feed-forward: down(silu(x · gateᵀ) * (x · upᵀ));
// gate, up [I, H] and down [H, I], no biases.
struct Expert {
  const void *gate, *up, *down;
};
// Bytes of the scratch team::moe needs for T tokens.
int64_t moe_scratch_bytes(int64_t T, int64_t n_experts, int64_t top_k, int64_t hidden, int64_t inter);

namespace team {

// f(), a sequence of team ops, on a team of n_threads when `worth_it`; else on the
// calling thread alone, as a team of one without entering a parallel region (which
// costs a small model's decode step more than its ops).
template <class F>
void on_team(int n_threads, bool worth_it, F&& f) {
  if (n_threads > 1 && worth_it) {
#pragma omp parallel num_threads(n_threads)
    f();
  } else {
    f();
  }
}

constexpr int kMaxJobs = 8;  // matrices per matmul_group
// xq: [M, ceil(K/32)] activation blocks shared by the team, used when wt is quantized;
// x_quantized: xq already holds x's blocks (a fused norm or glu wrote them).
void matmul_group(const KernelTable& kt, WeightType wt, const MatmulJob* jobs, int n_jobs,
                  const float* x, int64_t M, int64_t K, BlockQ8Act* xq, bool x_quantized = false);
// RMSNorm (b null) or LayerNorm of the rows of x[M, n]; row m uses the weights (and
// bias) w[m % w_period] of w[w_period, n] (per-head weights: w_period = heads).
// xq (optional, [M, ceil(n/32)]): each out row also quantized for the next matmul by
// the thread that wrote it, so the matmul needs no quantization pass and barrier.
void norm(const KernelTable& kt, float* out, const float* x, const float* w, const float* b,
          int64_t M, int64_t n, float eps, int64_t w_period = 1, BlockQ8Act* xq = nullptr);
// x += delta_scale * delta, then out = norm(x), row by row (a residual connection
// into the next norm); xq as for norm.
void add_norm(const KernelTable& kt, float* out, float* x, const float* delta, float delta_scale,
              const float* w, const float* b, int64_t M, int64_t n, float eps, BlockQ8Act* xq = nullptr);
// out = a + b_scale * b
void add(const KernelTable& kt, float* out, const float* a, const float* b, float b_scale, int64_t n);
// x *= s
void scale(float* x, float s, int64_t n);
// Token t is rotated by the thread the same static split of T gives every per-token
// op; wait false: no barrier at the end (the next op only touches the tokens this
// thread rotated, or other buffers).
void rope(const KernelTable& kt, float* x, const float* cos, const float* sin,
          const int32_t* pos, int64_t T, int64_t n_heads, int64_t head_dim, int64_t rot_dim, bool wait = true);
// ranges[T]: the slots each token may attend (its own sequence's), or null for the
// whole cache.
void attention(const KernelTable& kt, float* out, const float* q, const KVLayer& k,
               const KVLayer& v, const int32_t* kv_pos, const int32_t* q_pos, int64_t T,
               int64_t n_heads, int64_t head_dim, int32_t window, float scale, float softcap,
               const SlotRange* ranges);
// k and v rows of T tokens [T, n_kv_heads, head_dim] into slots[t] of both caches,
// token by token in rope's static split (so a rope of k just before needs no barrier).
void kv_store(const KVLayer& k_dst, const KVLayer& v_dst, const float* k, const float* v,
              int64_t T, int64_t head_dim, const int64_t* slots);
// out[M, n] = act(gate) * up; xq (optional, [M, ceil(n/32)]): out also quantized, as
// for norm.
void glu(const KernelTable& kt, Activation act, float* out, const float* gate, const float* up,
         int64_t M, int64_t n, BlockQ8Act* xq = nullptr);
// out[T, H] = Σ over the top_k experts e of each token of p_e · expert_e(x), where p =
// softmax(x · routerᵀ) over the n_experts (renormalized over the chosen ones when
// norm_topk). Tokens are grouped by expert: each expert multiplies only the rows routed
// to it, so one token reads only its top_k experts' weights; all experts' tiles form
// one task list. Every expert's matrices are of type expert_wt. scratch:
// moe_scratch_bytes(T, ...) bytes shared by the team.
void moe(const KernelTable& kt, float* out, const float* x, WeightType router_wt, const void* router,
         WeightType expert_wt, const Expert* experts, int64_t n_experts, int64_t top_k, bool norm_topk,
         int64_t T, int64_t H, int64_t I, void* scratch);

}  // namespace team

}  // namespace hearthlm
