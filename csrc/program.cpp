#include "program.h"

namespace hearthlm {
namespace {

constexpr int64_t kParallelMin = 1 << 16;  // multiply-adds per call below which one thread is faster

// Layer i of a cache group, given its first layer.
KVLayer layer_cache(const KVLayer& first, int64_t i) {
  const int64_t rows = first.n_kv_heads * first.n_slots;
  KVLayer c = first;
  c.data = static_cast<char*>(first.data) + i * rows * first.row_stride * kv_element_bytes(first.type);
  if (c.scales) c.scales = first.scales + i * rows * (first.row_stride / kQ8Block);
  return c;
}

// outs[i] = x · lin[i]ᵀ; runs of one weight type, or of quantized formats (a q4k Q, K
// with a q6k V), share one task list (and one quantization of x).
void matmul(const KernelTable& kt, const Op& op, const ProgramStep& s) {
  const float* x = s.buffers[op.in];
  for (int first = 0; first < op.n_lin;) {
    MatmulJob jobs[team::kMaxJobs];
    int count = 0;
    const WeightType wt = op.lin[first].wt;
    auto joins = [&](WeightType other) { return other == wt || (quantized(wt) && quantized(other)); };
    while (first + count < op.n_lin && joins(op.lin[first + count].wt)) {
      const Linear& lin = op.lin[first + count];
      jobs[count] = MatmulJob{s.buffers[op.outs[first + count]], lin.w, lin.bias, lin.N, lin.wt};
      ++count;
    }
    team::matmul_group(kt, wt, jobs, count, x, s.T, op.lin[first].K, s.xq, op.x_quantized);
    first += count;
  }
}

void run(const KernelTable& kt, const Op& op, const std::vector<int64_t>& widths, const ProgramStep& s) {
  const int64_t T = s.T;
  float* out = op.out >= 0 ? s.buffers[op.out] : nullptr;
  float* in = op.in >= 0 ? s.buffers[op.in] : nullptr;
  const float* in2 = op.in2 >= 0 ? s.buffers[op.in2] : nullptr;
  BlockQ8Act* xq = op.quantize_out ? s.xq : nullptr;
  switch (op.kind) {
    case OpKind::norm:
      team::norm(kt, out, in, op.w, op.b, T * widths[op.in] / op.group, op.group, op.eps, op.w_period, xq);
      break;
    case OpKind::add_norm:
      team::add_norm(kt, out, in, in2, op.factor, op.w, op.b, T, op.group, op.eps, xq);
      break;
    case OpKind::matmul:
      matmul(kt, op, s);
      break;
    case OpKind::rope: {
      const RopeTable& t = s.tables[op.table];
      team::rope(kt, in, t.cos, t.sin, s.positions, T, op.n_heads, op.head_dim, op.rotary_dim, op.wait);
      break;
    }
    case OpKind::kv_store: {
      const CacheGroup& c = s.caches[op.cache_group];
      team::kv_store(layer_cache(c.k, op.layer), layer_cache(c.v, op.layer), in, in2, T, op.head_dim, c.slots);
      break;
    }
    case OpKind::attention: {
      const CacheGroup& c = s.caches[op.cache_group];
      team::attention(kt, out, in, layer_cache(c.k, op.layer), layer_cache(c.v, op.layer), c.slot_pos,
                      s.positions, T, op.n_heads, op.head_dim, op.window, op.attn_scale, op.softcap, c.ranges);
      break;
    }
    case OpKind::glu:
      team::glu(kt, op.act, out, in, in2, T, widths[op.out], xq);
      break;
    case OpKind::add:
      team::add(kt, out, out, in, op.factor, T * widths[op.out]);
      break;
    case OpKind::scale:
      team::scale(out, op.factor, T * widths[op.out]);
      break;
    case OpKind::moe:
      team::moe(kt, out, in, op.lin[0].wt, op.lin[0].w, op.expert_wt, op.experts.data(), int64_t(op.experts.size()),
                op.top_k, op.norm_topk, T, widths[op.in], op.inter, s.moe_scratch);
      break;
  }
}

}  // namespace

void run_program(const KernelTable& kt, const std::vector<Op>& ops, const std::vector<int64_t>& widths,
                 int64_t work_per_token, const ProgramStep& step, int n_threads) {
  if (step.T <= 0) return;
  team::on_team(n_threads, step.T * work_per_token >= kParallelMin, [&] {
    for (const Op& op : ops) run(kt, op, widths, step);
  });
}

}  // namespace hearthlm
