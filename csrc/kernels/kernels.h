// The kernel table: one instance per ISA (scalar reference, AVX2, AVX-512, AMX, NEON),
// chosen at import by dispatch.cpp. Every entry is single-threaded and works on a
// slice of the problem; ops.cpp splits work across OpenMP threads and calls these.
// Conventions: outputs first, dimensions last; all activations are float32.
#pragma once
#include <cstddef>
#include <cstdint>

#include "kernels/quant.h"

namespace hearthlm {

// Storage types of the KV cache. q8: each row of head_dim is padded to a multiple of
// 32 int8 values, one float scale per block of 32 (value = scale * q).
enum KVType { kKVf32 = 0, kKVf16 = 1, kKVbf16 = 2, kKVq8 = 3, kKVTypes = 4 };
constexpr const char* kKVTypeNames[kKVTypes] = {"f32", "f16", "bf16", "q8"};  // the kv_dtype names
constexpr int64_t kQ8Block = 32;
// Bytes per stored value of each KV storage type (q8's scales are kept apart).
inline int64_t kv_element_bytes(KVType t) { return t == kKVf32 ? 4 : t == kKVq8 ? 1 : 2; }

// One kv head of the cache: rows [n_slots, row_stride] of `data` in the storage type,
// and for q8 the per-block scales [n_slots, row_stride / kQ8Block].
struct KVRows {
  const void* data;
  const float* scales;
  int64_t row_stride;  // elements per row: head_dim, or head_dim padded to 32 for q8
};

// Each ISA fills its table member by member, by name (never positionally), starting
// from KernelTable{} (all null); dispatch.cpp refuses a table that leaves one null.
struct KernelTable {
  const char* isa = nullptr;

  // y[m*ldy + n] = sum_k x[m*K + k] * w[n*K + k] + (bias ? bias[n] : 0)
  // for 0 <= m < M and n0 <= n < n1. W is [N, K] row-major (PyTorch Linear layout).
  void (*matmul_f32)(float* y, const float* x, const float* w, const float* bias,
                     int64_t M, int64_t K, int64_t ldy, int64_t n0, int64_t n1);
  // Same with W stored as bfloat16 / IEEE half (raw 16-bit patterns).
  void (*matmul_bf16)(float* y, const float* x, const uint16_t* w, const float* bias,
                      int64_t M, int64_t K, int64_t ldy, int64_t n0, int64_t n1);
  void (*matmul_f16)(float* y, const float* x, const uint16_t* w, const float* bias,
                     int64_t M, int64_t K, int64_t ldy, int64_t n0, int64_t n1);

  // One row of n: out = x / sqrt(mean(x^2) + eps) * w
  void (*rmsnorm)(float* out, const float* x, const float* w, int64_t n, float eps);
  // One row of n: out = (x - mean) / sqrt(var + eps) * w + b
  void (*layernorm)(float* out, const float* x, const float* w, const float* b, int64_t n,
                    float eps);

  // Hugging Face rotate-half RoPE, in place, on one token: x is [n_heads, head_dim];
  // the first rot_dim dims of each head rotate, pairs (i, i + rot_dim/2).
  // cos/sin: [rot_dim/2] for this token's position.
  void (*rope)(float* x, const float* cos, const float* sin, int64_t n_heads, int64_t head_dim,
               int64_t rot_dim);

  // Softmax attention of n_t tokens' n_q query heads that share one kv head, one entry
  // per KVType (the cache is read in its storage type, never converted as a whole).
  // q, out: token i's n_q rows of head_dim at q + i * ld (ld >= n_q * head_dim floats);
  // k, v: that kv head's rows, each read once for all n_t * n_q rows (a prefill tile).
  // Slot j is attended by token i iff 0 <= kv_pos[j] <= q_pos[i] and (window <= 0 or
  // q_pos[i] - kv_pos[j] < window). n_t * n_q <= kMaxRows, head_dim <= kMaxHeadDim.
  // score_j = scale * q·k_j, then softcap * tanh(score_j / softcap) when softcap > 0
  // (Gemma 2's logit soft-capping).
  void (*attention[kKVTypes])(float* out, const float* q, int64_t ld, KVRows k, KVRows v,
                              const int32_t* kv_pos, int64_t n_slots, const int32_t* q_pos,
                              int64_t n_t, int32_t window, float scale, float softcap,
                              int64_t n_q, int64_t head_dim);

  // out = silu(gate) * up
  void (*swiglu)(float* out, const float* gate, const float* up, int64_t n);
  // out = gelu_tanh(gate) * up, gelu_tanh(g) = g/2 (1 + tanh(√(2/π) (g + 0.044715 g³)))
  void (*gelu_tanh_glu)(float* out, const float* gate, const float* up, int64_t n);
  // out = a + b_scale * b
  void (*add)(float* out, const float* a, const float* b, float b_scale, int64_t n);
  // Widen 16-bit floats to float32.
  void (*bf16_to_f32)(float* out, const uint16_t* in, int64_t n);
  void (*f16_to_f32)(float* out, const uint16_t* in, int64_t n);

  // Quantized weights (formats in quant.h). One row of activations x[K] -> xq[ceil(K/32)]
  // int8 blocks, the tail block zero-padded.
  void (*quantize_act)(BlockQ8Act* xq, const float* x, int64_t K);
  // matmul_q[format]: y[m*ldy + n] = Σ_k w[n,k]·x[m,k] (+ bias[n]) for 0 <= m < M and
  // n0 <= n < n1, with w in that format's blocks [ceil(N/8), blocks along K] and x as
  // xq [M, ceil(K/32)]; n0 is a multiple of 8. Every 32-k block b contributes exact
  // int32 dot products scaled in fp32 (q8/q4: dw[n,b]·xq[m,b].d; K-quants: the
  // sub-block scale and min), summed per row in order with the same FMAs on every ISA,
  // so every ISA gives bit-identical results.
  void (*matmul_q[kQuantFormats])(float* y, const BlockQ8Act* xq, const void* w, const float* bias,
                                  int64_t M, int64_t K, int64_t ldy, int64_t n0, int64_t n1);
};

// Every function-pointer member of KernelTable, by name (the null check, the kernel
// driver). The static_assert below fails when a member is added here but not there.
#define HEARTHLM_KERNEL_ENTRIES(X)                                                              \
  X(matmul_f32) X(matmul_bf16) X(matmul_f16) X(rmsnorm) X(layernorm) X(rope) X(attention) \
  X(swiglu) X(gelu_tanh_glu) X(add) X(bf16_to_f32) X(f16_to_f32) X(quantize_act) X(matmul_q)

// Calls f(name, slot, pointer) for every function pointer of t: slot -1 for a single
// entry, else the index into an array entry (attention: KVType, matmul_q: QuantFormat).
template <class P, class F> void visit_entry(const char* name, P& p, F& f) { f(name, -1, p); }
template <class P, size_t N, class F> void visit_entry(const char* name, P (&p)[N], F& f) {
  for (int i = 0; i < int(N); ++i) f(name, i, p[i]);
}
template <class Table, class F> void for_each_entry(Table& t, F f) {
#define HEARTHLM_VISIT(e) visit_entry(#e, t.e, f);
  HEARTHLM_KERNEL_ENTRIES(HEARTHLM_VISIT)
#undef HEARTHLM_VISIT
}
template <class P> struct EntryPointers { static constexpr size_t n = 1; };
template <class P, size_t N> struct EntryPointers<P[N]> { static constexpr size_t n = N; };
#define HEARTHLM_COUNT(e) +EntryPointers<decltype(KernelTable::e)>::n
static_assert(sizeof(KernelTable) == sizeof(const char*) + (0 HEARTHLM_KERNEL_ENTRIES(HEARTHLM_COUNT)) * sizeof(void (*)()),
              "a KernelTable member is missing from HEARTHLM_KERNEL_ENTRIES");
#undef HEARTHLM_COUNT

constexpr int64_t kMaxGroup = 8;       // query heads of one token per attention call
constexpr int64_t kMaxRows = 64;       // query rows (tokens x heads) per attention call
constexpr int64_t kMaxHeadDim = 256;
constexpr int64_t kAttentionBlock = 64;  // kv slots scored per online-softmax step

const KernelTable* scalar_kernels();
#if defined(HEARTHLM_X86)
const KernelTable* avx2_kernels();
const KernelTable* avx512_kernels();
#endif
#if defined(HEARTHLM_AMX)
const KernelTable* amx_kernels();
#endif
#if defined(HEARTHLM_ARM64)
const KernelTable* neon_kernels();
const KernelTable* dotprod_kernels();
#endif

}  // namespace hearthlm
