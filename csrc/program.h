// The layer program: a model family's layers written as a short list of native ops over
// named activation buffers (pylib/hearthlm/models/program.py builds it; the binding
// checks every op against the buffers, weights and cache once). run_program executes
// the whole list inside one OpenMP parallel region: every op is a team op (ops.h) that
// shares its work among the threads and ends in a barrier, so a forward pass costs no
// thread start-ups and no Python between ops. Nothing is allocated here.
#pragma once
#include <cstdint>
#include <vector>

#include "ops.h"

namespace hearthlm {

struct Linear {  // y = x · wᵀ (+ bias): w is [N, K] (or its quantized superblocks)
  WeightType wt;
  const void* w;
  const float* bias;
  int64_t N, K;
};

enum class OpKind {
  norm,       // out = norm(in) per row of `group` values, weights w[w_period, group]
  add_norm,   // in += factor * in2; out = norm(in) (an add followed by a norm of its sum)
  matmul,     // outs[i] = in · lin[i]ᵀ, one task list for all
  rope,       // in rotated in place: n_heads heads of head_dim, rotary_dim dims, table
  kv_store,   // in (k), in2 (v) of the tokens -> their slots of cache layer `layer`
  attention,  // out = attention(in = q, cache layer `layer`)
  glu,        // out = act(in) * in2
  add,        // out += factor * in
  scale,      // out *= factor
  moe,        // out = mixture of experts(in): router lin[0], the top_k of experts
};

struct Op {
  OpKind kind;
  int out = -1, in = -1, in2 = -1;  // buffer indices
  // norm / add_norm
  const float* w = nullptr;
  const float* b = nullptr;  // LayerNorm bias, null for RMSNorm
  int64_t group = 0, w_period = 1;
  float eps = 0.0f;
  // matmul
  int n_lin = 0;
  Linear lin[team::kMaxJobs];
  int outs[team::kMaxJobs];
  // rope / attention / kv_store: `layer` is the index within cache group `cache_group`
  int64_t n_heads = 0, head_dim = 0, rotary_dim = 0, layer = 0;
  int cache_group = 0;
  int table = 0;
  int32_t window = 0;  // sliding window in tokens, 0 = full attention
  float attn_scale = 0.0f, softcap = 0.0f;
  // glu, add, scale
  Activation act = Activation::silu;
  float factor = 1.0f;
  // moe: experts of intermediate size `inter`
  WeightType expert_wt = nullptr;  // set with the first expert
  std::vector<Expert> experts;
  int64_t top_k = 0, inter = 0;
  bool norm_topk = false;
  // Set by the binding's fusion pass: quantize_out (norm, add_norm, glu): also write
  // out's int8 blocks into the step's xq, for the quantized matmul that follows, whose
  // x_quantized is then set; wait false (rope): the op ends without a barrier.
  bool quantize_out = false, x_quantized = false, wait = true;
};

struct RopeTable {  // cos, sin [n_positions, half]
  const float *cos, *sin;
};

// The caches of one group of layers that share a slot layout (the full-context layers,
// or the layers of one sliding window, whose cache holds only the recent tokens):
// token t is stored in slot slots[t] and attends the slots ranges[t] (its own
// sequence's); slot_pos[k.n_slots] is the position held by each slot, already
// including the new tokens (-1 = empty). k, v: the group's first layer, the others
// following in order.
struct CacheGroup {
  KVLayer k, v;
  const int32_t* slot_pos;
  const int64_t* slots;
  const SlotRange* ranges;
};

// One call: T tokens, of one sequence or of several: token t has position
// positions[t]. buffers[i]: [T, width_i] row-major; caches: one per cache group.
struct ProgramStep {
  int64_t T;
  float* const* buffers;
  const int32_t* positions;
  const RopeTable* tables;
  const CacheGroup* caches;
  BlockQ8Act* xq;             // T * ceil(max K / 32) activation blocks
  void* moe_scratch;          // moe_scratch_bytes of the largest moe op
};

// work_per_token: multiply-adds of the program's matmuls for one token (below
// kParallelMin per call it runs on one thread).
void run_program(const KernelTable& kt, const std::vector<Op>& ops, const std::vector<int64_t>& widths,
                 int64_t work_per_token, const ProgramStep& step, int n_threads);

}  // namespace hearthlm
