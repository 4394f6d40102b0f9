#include "ops.h"

#include <math.h>

#include <algorithm>
#include <cstring>
#include <vector>

#if defined(HEARTHLM_OPENMP)
#include <omp.h>
#endif

#include "kernels/convert.h"

namespace hearthlm {
namespace {

constexpr int64_t kRowChunk = 16;      // output rows per GEMV task: 64 bytes of y
constexpr int64_t kGemmMinBlockM = 64;   // tokens per GEMM task, at least
constexpr int64_t kGemmMaxBlockM = 256;  // and at most (the x block stays in L2)
constexpr int64_t kGemmBlockN = 64;      // weight rows per GEMM task
constexpr int64_t kElementwiseMin = 1 << 15;  // below this, one thread is faster
constexpr int64_t kMatmulMin = 1 << 16;       // multiply-adds below which one thread is faster

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

int team_size() {
#if defined(HEARTHLM_OPENMP)
  return omp_get_num_threads();
#else
  return 1;
#endif
}

// body(i) for i in [0, n), handed out one at a time among the team; a team of one
// loops directly (outside a parallel region, libgomp allocates every dynamic loop's
// work share).
template <class Body>
void dynamic_for(int64_t n, Body&& body) {
  if (team_size() == 1) {
    for (int64_t i = 0; i < n; ++i) body(i);
    return;
  }
#pragma omp for schedule(dynamic, 1)
  for (int64_t i = 0; i < n; ++i) body(i);
}

// Activation blocks for quantized matmuls: grown once per calling thread, never
// allocated per call once the largest batch has been seen.
BlockQ8Act* activation_scratch(int64_t n_blocks) {
  static thread_local std::vector<BlockQ8Act> scratch;
  if (int64_t(scratch.size()) < n_blocks) scratch.resize(n_blocks);
  return scratch.data();
}

// RMSNorm, or LayerNorm when b is given, of one row.
void norm_row(const KernelTable& kt, float* out, const float* x, const float* w, const float* b,
              int64_t n, float eps) {
  if (b) kt.layernorm(out, x, w, b, n, eps);
  else kt.rmsnorm(out, x, w, n, eps);
}

// y[m0:m1, n0:n1] of one job.
void matmul_tile(const KernelTable& kt, WeightType wt, const MatmulJob& job, const float* x,
                 const BlockQ8Act* xq, int64_t K, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  (job.wt ? job.wt : wt)->matmul(kt, job.y + m0 * job.N, x + m0 * K, xq ? xq + m0 * q_blocks(K) : nullptr, job.w,
                                 job.bias, m1 - m0, K, job.N, n0, n1);
}

// The tasks of a matmul_group: every matrix cut into (token block, row block) tiles,
// listed job by job with consecutive tiles sharing weights. One token: row chunks of
// a multiple of 16 rows (so of the 8-row quantized groups), ~4 per thread per matrix,
// so cores finish together. Several tokens: blocks of 64 weight rows, each against as
// many tokens as still leaves ~4 tasks per thread (a kernel packs or unpacks its
// weights once per call, so the more tokens share them the better; up to 256).
struct TaskList {
  int64_t rows[team::kMaxJobs], first[team::kMaxJobs + 1];
  int64_t block_m, blocks_m;  // tokens per task, token blocks
  int64_t work;               // multiply-adds
  TaskList(const MatmulJob* jobs, int n_jobs, int64_t M, int64_t K, int n_threads) {
    static_assert(kRowChunk % kQRows == 0 && kGemmBlockN % kQRows == 0, "tiles hold whole row groups");
    int64_t row_blocks = 0;
    for (int j = 0; j < n_jobs; ++j) row_blocks += ceil_div(jobs[j].N, kGemmBlockN);
    const int64_t wanted = ceil_div(4 * int64_t(n_threads), row_blocks > 0 ? row_blocks : 1);
    blocks_m = M == 1 ? 1 : std::max(ceil_div(M, kGemmMaxBlockM), std::min(wanted, ceil_div(M, kGemmMinBlockM)));
    block_m = ceil_div(M, blocks_m);
    first[0] = 0;
    work = 0;
    for (int j = 0; j < n_jobs; ++j) {
      rows[j] = M == 1 ? ceil_div(ceil_div(jobs[j].N, int64_t(n_threads) * 4), kRowChunk) * kRowChunk
                       : kGemmBlockN;
      first[j + 1] = first[j] + (jobs[j].N > 0 ? ceil_div(jobs[j].N, rows[j]) * blocks_m : 0);
      work += M * jobs[j].N * K;
    }
  }
};

}  // namespace

namespace team {

void matmul_group(const KernelTable& kt, WeightType wt, const MatmulJob* jobs, int n_jobs,
                  const float* x, int64_t M, int64_t K, BlockQ8Act* xq, bool x_quantized) {
  if (M <= 0) return;
  if (quantized(wt) && !x_quantized) {
    const int64_t nb = q_blocks(K);
#pragma omp for schedule(static)
    for (int64_t m = 0; m < M; ++m) kt.quantize_act(xq + m * nb, x + m * K, K);
  }
  const TaskList tasks(jobs, n_jobs, M, K, team_size());
  dynamic_for(tasks.first[n_jobs], [&](int64_t c) {
    int j = 0;
    while (c >= tasks.first[j + 1]) ++j;
    const int64_t tile = c - tasks.first[j];
    const int64_t bn = tile / tasks.blocks_m, bm = tile % tasks.blocks_m;
    const int64_t m0 = bm * tasks.block_m, m1 = std::min(m0 + tasks.block_m, M);
    const int64_t n0 = bn * tasks.rows[j], n1 = n0 + tasks.rows[j] < jobs[j].N ? n0 + tasks.rows[j] : jobs[j].N;
    matmul_tile(kt, wt, jobs[j], x, xq, K, m0, m1, n0, n1);
  });
}

void norm(const KernelTable& kt, float* out, const float* x, const float* w, const float* b,
          int64_t M, int64_t n, float eps, int64_t w_period, BlockQ8Act* xq) {
#pragma omp for schedule(static)
  for (int64_t m = 0; m < M; ++m) {
    const int64_t wo = (m % w_period) * n;
    norm_row(kt, out + m * n, x + m * n, w + wo, b ? b + wo : nullptr, n, eps);
    if (xq) kt.quantize_act(xq + m * q_blocks(n), out + m * n, n);
  }
}

void add_norm(const KernelTable& kt, float* out, float* x, const float* delta, float delta_scale,
              const float* w, const float* b, int64_t M, int64_t n, float eps, BlockQ8Act* xq) {
#pragma omp for schedule(static)
  for (int64_t m = 0; m < M; ++m) {
    kt.add(x + m * n, x + m * n, delta + m * n, delta_scale, n);
    norm_row(kt, out + m * n, x + m * n, w, b, n, eps);
    if (xq) kt.quantize_act(xq + m * q_blocks(n), out + m * n, n);
  }
}

void add(const KernelTable& kt, float* out, const float* a, const float* b, float b_scale, int64_t n) {
  constexpr int64_t chunk = 4096;
#pragma omp for schedule(static)
  for (int64_t i0 = 0; i0 < n; i0 += chunk)
    kt.add(out + i0, a + i0, b + i0, b_scale, i0 + chunk < n ? chunk : n - i0);
}

void scale(float* x, float s, int64_t n) {
#pragma omp for schedule(static)
  for (int64_t i = 0; i < n; ++i) x[i] *= s;
}

void rope(const KernelTable& kt, float* x, const float* cos, const float* sin,
          const int32_t* pos, int64_t T, int64_t n_heads, int64_t head_dim, int64_t rot_dim, bool wait) {
  const int64_t half = rot_dim / 2;
#pragma omp for schedule(static) nowait
  for (int64_t t = 0; t < T; ++t)
    kt.rope(x + t * n_heads * head_dim, cos + int64_t(pos[t]) * half,
            sin + int64_t(pos[t]) * half, n_heads, head_dim, rot_dim);
  if (wait) {
#pragma omp barrier
  }
}

void glu(const KernelTable& kt, Activation act, float* out, const float* gate, const float* up,
         int64_t M, int64_t n, BlockQ8Act* xq) {
  constexpr int64_t chunk = 4096;  // a multiple of 32: chunks quantize into whole blocks
  static_assert(chunk % kQBlock == 0, "glu chunks hold whole activation blocks");
  const auto kernel = act == Activation::silu ? kt.swiglu : kt.gelu_tanh_glu;
  const int64_t per_row = ceil_div(n, chunk);
#pragma omp for schedule(static)
  for (int64_t c = 0; c < M * per_row; ++c) {
    const int64_t m = c / per_row, i0 = (c % per_row) * chunk, len = std::min(chunk, n - i0);
    const int64_t at = m * n + i0;
    kernel(out + at, gate + at, up + at, len);
    if (xq) kt.quantize_act(xq + m * q_blocks(n) + i0 / kQBlock, out + at, len);
  }
}

}  // namespace team

void matmul(const KernelTable& kt, WeightType wt, float* y, const float* x, const void* w,
            const float* bias, int64_t M, int64_t N, int64_t K, int n_threads) {
  const MatmulJob job{y, w, bias, N};
  matmul_group(kt, wt, &job, 1, x, M, K, n_threads);
}

void matmul_group(const KernelTable& kt, WeightType wt, const MatmulJob* jobs, int n_jobs,
                  const float* x, int64_t M, int64_t K, int n_threads) {
  if (M <= 0) return;
  BlockQ8Act* xq = quantized(wt) ? activation_scratch(M * q_blocks(K)) : nullptr;
  const TaskList tasks(jobs, n_jobs, M, K, n_threads);
  team::on_team(n_threads, tasks.first[n_jobs] > 1 && tasks.work >= kMatmulMin, [&] {
    team::matmul_group(kt, wt, jobs, n_jobs, x, M, K, xq);
  });
}

void rmsnorm(const KernelTable& kt, float* out, const float* x, const float* w, int64_t M,
             int64_t n, float eps, int n_threads) {
  team::on_team(n_threads, M * n >= kElementwiseMin, [&] {
    team::norm(kt, out, x, w, nullptr, M, n, eps);
  });
}

void layernorm(const KernelTable& kt, float* out, const float* x, const float* w,
               const float* b, int64_t M, int64_t n, float eps, int n_threads) {
  team::on_team(n_threads, M * n >= kElementwiseMin, [&] {
    team::norm(kt, out, x, w, b, M, n, eps);
  });
}

void rope(const KernelTable& kt, float* x, const float* cos, const float* sin,
          const int32_t* pos, int64_t T, int64_t n_heads, int64_t head_dim, int64_t rot_dim,
          int n_threads) {
  team::on_team(n_threads, T * n_heads * head_dim >= kElementwiseMin, [&] {
    team::rope(kt, x, cos, sin, pos, T, n_heads, head_dim, rot_dim);
  });
}

namespace {

// Rows of kv head h.
KVRows head_rows(const KVLayer& c, int64_t h) {
  const int64_t row0 = h * c.n_slots;
  return KVRows{static_cast<const char*>(c.data) + row0 * c.row_stride * kv_element_bytes(c.type),
                c.scales ? c.scales + row0 * (c.row_stride / kQ8Block) : nullptr, c.row_stride};
}

// Row r (= head * n_slots + slot) of a cache, to and from float32.
void load_row(const KVLayer& c, int64_t r, float* out, int64_t n) {
  const int64_t at = r * c.row_stride;
  switch (c.type) {
    case kKVf32: std::memcpy(out, static_cast<const float*>(c.data) + at, n * 4); break;
    case kKVf16:
      for (int64_t i = 0; i < n; ++i) out[i] = f16_to_float(static_cast<const uint16_t*>(c.data)[at + i]);
      break;
    case kKVbf16:
      for (int64_t i = 0; i < n; ++i) out[i] = bf16_to_float(static_cast<const uint16_t*>(c.data)[at + i]);
      break;
    default:
      for (int64_t i = 0; i < n; ++i)
        out[i] = c.scales[r * (c.row_stride / kQ8Block) + i / kQ8Block] *
                 float(static_cast<const int8_t*>(c.data)[at + i]);
  }
}

void store_row(const KVLayer& c, int64_t r, const float* in, int64_t n) {
  const int64_t at = r * c.row_stride;
  switch (c.type) {
    case kKVf32: std::memcpy(static_cast<float*>(c.data) + at, in, n * 4); break;
    case kKVf16:
      for (int64_t i = 0; i < n; ++i) static_cast<uint16_t*>(c.data)[at + i] = float_to_f16(in[i]);
      break;
    case kKVbf16:
      for (int64_t i = 0; i < n; ++i) static_cast<uint16_t*>(c.data)[at + i] = float_to_bf16(in[i]);
      break;
    default: {  // blocks of 32: scale = amax / 127, q = round(x / scale); padding is 0
      int8_t* q = static_cast<int8_t*>(c.data) + at;
      float* scales = c.scales + r * (c.row_stride / kQ8Block);
      for (int64_t b = 0; b * kQ8Block < c.row_stride; ++b) {
        const int64_t d0 = b * kQ8Block, d1 = d0 + kQ8Block < n ? d0 + kQ8Block : n;
        float amax = 0.0f;
        for (int64_t i = d0; i < d1; ++i) amax = fmaxf(amax, fabsf(in[i]));
        const float scale = amax / 127.0f, inv = amax > 0.0f ? 127.0f / amax : 0.0f;
        scales[b] = scale;
        for (int64_t i = d0; i < d0 + kQ8Block; ++i)
          q[i] = i < d1 ? int8_t(nearbyintf(fminf(fmaxf(in[i] * inv, -127.0f), 127.0f))) : 0;
      }
    }
  }
}

// Rows [j0, ...) of a kv head's rows.
KVRows rows_from(const KVRows& r, KVType type, int64_t j0) {
  return KVRows{static_cast<const char*>(r.data) + j0 * r.row_stride * kv_element_bytes(type),
                r.scales ? r.scales + j0 * (r.row_stride / kQ8Block) : nullptr, r.row_stride};
}

}  // namespace

namespace team {

void attention(const KernelTable& kt, float* out, const float* q, const KVLayer& k,
               const KVLayer& v, const int32_t* kv_pos, const int32_t* q_pos, int64_t T,
               int64_t n_heads, int64_t head_dim, int32_t window, float scale, float softcap,
               const SlotRange* ranges) {
  // Each task: one kv head, a group of up to kMaxGroup of its query heads and a tile of
  // consecutive tokens (so each K and V block is read once for the whole tile, not once
  // per token: prefill and verify steps). The kernel's rows do not depend on which rows
  // share a call, so neither tiles nor groups change a bit of the result. With too few
  // tasks for the team (one token, few kv heads), the groups are split: threads then
  // read the same K and V, mostly from the shared cache.
  const int64_t n_kv_heads = k.n_kv_heads;
  if (T <= 0 || n_heads <= 0 || n_kv_heads <= 0) return;  // no heads: nothing to write
  const int64_t n_rep = n_heads / n_kv_heads, threads = team_size();
  int64_t group = n_rep < kMaxGroup ? n_rep : kMaxGroup;
  int64_t tile = kMaxRows / group;  // tokens per task
  auto head_tasks = [&] { return ceil_div(T, tile) * n_kv_heads * ceil_div(n_rep, group); };
  while (tile > 1 && head_tasks() < 2 * threads) tile = ceil_div(tile, 2);
  while (group > 1 && head_tasks() < 2 * threads) group = ceil_div(group, 2);
  const int64_t groups_per_kv = ceil_div(n_rep, group), n_tiles = ceil_div(T, tile);
  const int64_t ld = n_heads * head_dim;
  const auto kernel = kt.attention[k.type];
  dynamic_for(n_tiles * n_kv_heads * groups_per_kv, [&](int64_t task) {
    // consecutive tasks: the tiles of one kv head (threads working at once share its K and V in cache)
    const int64_t tile_index = task % n_tiles, head_group = task / n_tiles;
    const int64_t t0 = T * tile_index / n_tiles, t1 = T * (tile_index + 1) / n_tiles;  // balanced
    const int64_t kvh = head_group / groups_per_kv;
    const int64_t h0 = kvh * n_rep + (head_group % groups_per_kv) * group;
    const int64_t n_q = h0 + group <= (kvh + 1) * n_rep ? group : (kvh + 1) * n_rep - h0;
    for (int64_t t = t0, u; t < t1; t = u) {  // runs of tokens that attend the same slots
      const int64_t first = ranges ? ranges[t].first : 0, count = ranges ? ranges[t].count : k.n_slots;
      for (u = t + 1; u < t1 && (!ranges || (ranges[u].first == first && ranges[u].count == count));) ++u;
      const int64_t offset = t * ld + h0 * head_dim;
      kernel(out + offset, q + offset, ld, rows_from(head_rows(k, kvh), k.type, first),
             rows_from(head_rows(v, kvh), v.type, first), kv_pos + first, count, q_pos + t, u - t, window, scale,
             softcap, n_q, head_dim);
    }
  });
}

}  // namespace team

namespace {

// The regions of team::moe's scratch, each 64-byte aligned; base null: offsets only.
struct MoeScratch {
  BlockQ8Act* xq;   // [T * top_k, q_blocks(max(H, I))] quantized rows of one matmul
  float* logits;    // [T, n_experts]
  float* weight;    // [T, top_k]: each token's chosen experts' weights
  int32_t* expert;  // [T, top_k]: ... and the experts
  int32_t* row;     // [T, top_k]: ... and their rows in the grouped order
  int32_t* token;   // [T * top_k]: the token of each grouped row
  int64_t* first;   // [n_experts + 1]: expert e's grouped rows are [first[e], first[e + 1])
  int64_t* tasks;   // [n_experts + 1]: expert e's matmul tasks start at tasks[e]
  float* xg;        // [T * top_k, H]: the grouped rows of x, then the experts' outputs
  float* gate;      // [T * top_k, I]
  float* up;        // [T * top_k, I]
  int64_t bytes = 0;

  MoeScratch(char* base, int64_t T, int64_t E, int64_t k, int64_t H, int64_t I) {
    const int64_t R = T * k;
    xq = take<BlockQ8Act>(base, R * q_blocks(std::max(H, I)));
    logits = take<float>(base, T * E);
    weight = take<float>(base, R);
    expert = take<int32_t>(base, R);
    row = take<int32_t>(base, R);
    token = take<int32_t>(base, R);
    first = take<int64_t>(base, E + 1);
    tasks = take<int64_t>(base, E + 1);
    xg = take<float>(base, R * H);
    gate = take<float>(base, R * I);
    up = take<float>(base, R * I);
  }

  template <typename V>
  V* take(char* base, int64_t n) {
    V* p = base ? reinterpret_cast<V*>(base + bytes) : nullptr;
    bytes += ceil_div(n * int64_t(sizeof(V)), 64) * 64;
    return p;
  }
};

// p = softmax(logits[E]); the top_k experts by p (the first of equals first), with
// weights p, or p / Σ p over the chosen when norm_topk.
void route(const float* logits, int64_t E, int64_t top_k, bool norm_topk, int32_t* expert, float* weight) {
  float top = logits[0];
  for (int64_t e = 1; e < E; ++e) top = std::max(top, logits[e]);
  float sum = 0.0f;
  for (int64_t e = 0; e < E; ++e) sum += expf(logits[e] - top);
  float chosen = 0.0f;
  for (int64_t j = 0; j < top_k; ++j) {
    int64_t best = -1;
    for (int64_t e = 0; e < E; ++e) {
      if (std::find(expert, expert + j, int32_t(e)) != expert + j) continue;
      if (best < 0 || logits[e] > logits[best]) best = e;
    }
    expert[j] = int32_t(best);
    weight[j] = expf(logits[best] - top) / sum;
    chosen += weight[j];
  }
  if (norm_topk)
    for (int64_t j = 0; j < top_k; ++j) weight[j] /= chosen;
}

// Tiles of an expert's n rows against `mats` matrices of N rows: (matrix, row block of
// kGemmBlockN, token block of up to kGemmMaxBlockM).
int64_t expert_tiles(int64_t n, int64_t mats, int64_t N) {
  return n == 0 ? 0 : mats * ceil_div(N, kGemmBlockN) * ceil_div(n, kGemmMaxBlockM);
}

// Every expert's matmuls as one task list (one barrier, not one per expert): y_m rows
// [first[e], first[e+1]) = x rows · expert e's matrix m ᵀ, for the mats matrices of
// N rows, K columns that which(e, m) gives. xq: the quantized rows of x.
template <typename Which>
void expert_matmuls(const KernelTable& kt, WeightType wt, const MoeScratch& s, int64_t E, int64_t mats,
                    float* const* y, const float* x, int64_t N, int64_t K, Which which) {
  const int64_t row_blocks = ceil_div(N, kGemmBlockN), nb = q_blocks(K);
  const int64_t n_tasks = s.tasks[E];
  dynamic_for(n_tasks, [&](int64_t c) {
    const int64_t e = std::upper_bound(s.tasks, s.tasks + E + 1, c) - s.tasks - 1;
    const int64_t r0 = s.first[e], n = s.first[e + 1] - r0, tile = c - s.tasks[e];
    const int64_t blocks_m = ceil_div(n, kGemmMaxBlockM), block_m = ceil_div(n, blocks_m);
    const int64_t m = tile / (row_blocks * blocks_m), bn = tile / blocks_m % row_blocks, bm = tile % blocks_m;
    const MatmulJob job{y[m] + r0 * N, which(e, m), nullptr, N};
    const int64_t n0 = bn * kGemmBlockN, m0 = bm * block_m;
    matmul_tile(kt, wt, job, x + r0 * K, quantized(wt) ? s.xq + r0 * nb : nullptr, K, m0, std::min(m0 + block_m, n),
                n0, std::min(n0 + kGemmBlockN, N));
  });
}

}  // namespace

int64_t moe_scratch_bytes(int64_t T, int64_t n_experts, int64_t top_k, int64_t hidden, int64_t inter) {
  return MoeScratch(nullptr, T, n_experts, top_k, hidden, inter).bytes;
}

namespace team {

void moe(const KernelTable& kt, float* out, const float* x, WeightType router_wt, const void* router,
         WeightType wt, const Expert* experts, int64_t n_experts, int64_t top_k, bool norm_topk, int64_t T,
         int64_t H, int64_t I, void* scratch) {
  const int64_t E = n_experts, k = top_k, R = T * k;
  const MoeScratch s(static_cast<char*>(scratch), T, E, k, H, I);
  const MatmulJob logits{s.logits, router, nullptr, E};
  matmul_group(kt, router_wt, &logits, 1, x, T, H, s.xq);
#pragma omp for schedule(static)
  for (int64_t t = 0; t < T; ++t) route(s.logits + t * E, E, k, norm_topk, s.expert + t * k, s.weight + t * k);
#pragma omp single
  {  // counting sort of the (token, choice) pairs by expert
    std::fill(s.first, s.first + E + 1, int64_t(0));
    for (int64_t c = 0; c < R; ++c) ++s.first[s.expert[c] + 1];
    for (int64_t e = 0; e < E; ++e) s.first[e + 1] += s.first[e];
    for (int64_t c = 0; c < R; ++c) {
      const int64_t r = s.first[s.expert[c]]++;
      s.row[c] = int32_t(r);
      s.token[r] = int32_t(c / k);
    }
    for (int64_t e = E; e > 0; --e) s.first[e] = s.first[e - 1];  // back to each expert's first row
    s.first[0] = 0;
  }
  // The grouped rows of x (quantized ones straight from x), then gate and up of every
  // expert: their tiles share a row count, so one prefix of tiles serves both phases.
  const bool q = quantized(wt);
  const int64_t nbh = q_blocks(H);
#pragma omp for schedule(static)
  for (int64_t r = 0; r < R; ++r) {
    const float* src = x + int64_t(s.token[r]) * H;
    if (q) kt.quantize_act(s.xq + r * nbh, src, H);
    else std::memcpy(s.xg + r * H, src, size_t(H) * sizeof(float));
  }
#pragma omp single
  {
    s.tasks[0] = 0;
    for (int64_t e = 0; e < E; ++e) s.tasks[e + 1] = s.tasks[e] + expert_tiles(s.first[e + 1] - s.first[e], 2, I);
  }
  float* const gate_up[2] = {s.gate, s.up};
  expert_matmuls(kt, wt, s, E, 2, gate_up, s.xg, I, H,
                 [&](int64_t e, int64_t m) { return m == 0 ? experts[e].gate : experts[e].up; });
  glu(kt, Activation::silu, s.gate, s.gate, s.up, R, I, q ? s.xq : nullptr);  // quantized for down
#pragma omp single
  for (int64_t e = 0; e < E; ++e) s.tasks[e + 1] = s.tasks[e] + expert_tiles(s.first[e + 1] - s.first[e], 1, H);
  float* const down[1] = {s.xg};
  expert_matmuls(kt, wt, s, E, 1, down, s.gate, H, I, [&](int64_t e, int64_t) { return experts[e].down; });
#pragma omp for schedule(static)
  for (int64_t t = 0; t < T; ++t) {  // each token gathers its experts' outputs: no write races
    float* o = out + t * H;
    std::fill(o, o + H, 0.0f);
    for (int64_t j = 0; j < k; ++j) kt.add(o, o, s.xg + int64_t(s.row[t * k + j]) * H, s.weight[t * k + j], H);
  }
}

void kv_store(const KVLayer& k_dst, const KVLayer& v_dst, const float* k, const float* v,
              int64_t T, int64_t head_dim, const int64_t* slots) {
  const int64_t n_kv_heads = k_dst.n_kv_heads;
#pragma omp for schedule(static)
  for (int64_t t = 0; t < T; ++t)
    for (int64_t h = 0; h < n_kv_heads; ++h) {
      const int64_t at = (t * n_kv_heads + h) * head_dim;
      store_row(k_dst, h * k_dst.n_slots + slots[t], k + at, head_dim);
      store_row(v_dst, h * v_dst.n_slots + slots[t], v + at, head_dim);
    }
}

}  // namespace team

void attention(const KernelTable& kt, float* out, const float* q, const KVLayer& k,
               const KVLayer& v, const int32_t* kv_pos, const int32_t* q_pos, int64_t T,
               int64_t n_heads, int64_t head_dim, int32_t window, float scale, float softcap,
               int n_threads) {
  team::on_team(n_threads, T * n_heads > 1 && T * k.n_slots * n_heads * head_dim >= kMatmulMin, [&] {
    team::attention(kt, out, q, k, v, kv_pos, q_pos, T, n_heads, head_dim, window, scale, softcap, nullptr);
  });
}

void kv_store(const KVLayer& dst, const float* src, int64_t T, int64_t head_dim, int64_t slot0) {
  for (int64_t t = 0; t < T; ++t)
    for (int64_t h = 0; h < dst.n_kv_heads; ++h)
      store_row(dst, h * dst.n_slots + slot0 + t, src + (t * dst.n_kv_heads + h) * head_dim, head_dim);
}

void kv_rotate(const KernelTable& kt, const KVLayer& cache, const float* cos, const float* sin,
               const int32_t* which, int64_t head_dim, int64_t rot_dim, int n_threads) {
  const int64_t rows = cache.n_kv_heads * cache.n_slots, half = rot_dim / 2;
#pragma omp parallel for num_threads(n_threads) if (rows * head_dim >= kElementwiseMin)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t row_table = which[r % cache.n_slots];
    if (row_table < 0) continue;
    float tmp[kMaxHeadDim];
    load_row(cache, r, tmp, head_dim);
    kt.rope(tmp, cos + row_table * half, sin + row_table * half, 1, head_dim, rot_dim);
    store_row(cache, r, tmp, head_dim);
  }
}

void glu(const KernelTable& kt, Activation act, float* out, const float* gate, const float* up,
         int64_t n, int n_threads) {
  team::on_team(n_threads, n >= kElementwiseMin, [&] {
    team::glu(kt, act, out, gate, up, 1, n);
  });
}

void add(const KernelTable& kt, float* out, const float* a, const float* b, float b_scale,
         int64_t n, int n_threads) {
  team::on_team(n_threads, n >= kElementwiseMin, [&] {
    team::add(kt, out, a, b, b_scale, n);
  });
}

void embed(const KernelTable& kt, WeightType wt, float* out, const void* table,
           const int32_t* ids, int64_t T, int64_t dim) {
  for (int64_t t = 0; t < T; ++t) wt->row_to_f32(kt, out + t * dim, table, ids[t], dim);
}

}  // namespace hearthlm
