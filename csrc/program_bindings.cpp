// hearthlm._kernels.LayerProgram: a model's layer program (program.h), every op checked
// once against its buffers, weights and the cache geometry; forward() runs it in one
// native call with the GIL released.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include "binding_checks.h"
#include "program.h"

namespace py = pybind11;

namespace hearthlm {
namespace {

using namespace checks;

// forward() keeps its per-call arrays on the stack: a program has at most these.
constexpr size_t kMaxBuffers = 64, kMaxCacheGroups = 8, kMaxTables = 8;

class LayerProgram {
 public:
  // layer_groups[i]: the cache group of layer i (groups numbered from 0, none empty).
  LayerProgram(const std::vector<std::pair<std::string, int64_t>>& buffers, const py::list& ops,
               const std::vector<int>& layer_groups, int64_t n_kv_heads, int64_t head_dim)
      : n_layers_(int64_t(layer_groups.size())), n_kv_heads_(n_kv_heads), head_dim_(head_dim) {
    expect(n_layers_ >= 1 && n_kv_heads >= 1 && head_dim >= 1, "cache: layers, kv heads and head_dim must be positive");
    expect(head_dim <= kMaxHeadDim, "head_dim " + std::to_string(head_dim) + " exceeds " + std::to_string(kMaxHeadDim));
    for (const int g : layer_groups) {
      expect(g >= 0 && g < n_layers_, "layer_groups: group " + std::to_string(g) + " outside [0, n_layers)");
      if (size_t(g) >= group_layers_.size()) group_layers_.resize(size_t(g) + 1, 0);
      layer_index_.push_back(group_layers_[size_t(g)]++);
    }
    layer_group_ = layer_groups;
    for (size_t g = 0; g < group_layers_.size(); ++g)
      expect(group_layers_[g] > 0, "layer_groups: group " + std::to_string(g) + " has no layer");
    for (const auto& [name, width] : buffers) {
      expect(width > 0, "buffers: '" + name + "' must have a positive width");
      expect(!ids_.count(name), "buffers: '" + name + "' named twice");
      ids_[name] = int(widths_.size());
      names_.push_back(name);
      widths_.push_back(width);
    }
    for (size_t i = 0; i < ops.size(); ++i) add(ops[i].cast<py::dict>(), "ops[" + std::to_string(i) + "]");
    expect(widths_.size() <= kMaxBuffers && group_layers_.size() <= kMaxCacheGroups && table_half_.size() <= kMaxTables,
           "a layer program has at most " + std::to_string(kMaxBuffers) + " buffers, " +
               std::to_string(kMaxCacheGroups) + " cache groups and " + std::to_string(kMaxTables) + " RoPE tables");
    fuse_add_norms();
    fuse_barriers();
  }

  int64_t scratch_bytes(int64_t T) const { return moe_offset(T) + moe_bytes(T); }
  size_t n_ops() const { return ops_.size(); }

  // caches: per cache group (k, k_scales, v, v_scales, slot_pos, slots, ranges). The
  // checks build their messages only when they fail: a decode step allocates nothing.
  void forward(const py::sequence& buffers, int64_t T, py::array scratch, const py::sequence& caches,
               const std::string& kv_dtype, py::array positions, const py::sequence& tables, int n_threads) {
    expect(T >= 1, [&] { return "T: at least one token, got " + std::to_string(T); });
    expect(buffers.size() == widths_.size(), [&] {
      return "buffers: expected " + std::to_string(widths_.size()) + " arrays, got " + std::to_string(buffers.size());
    });
    float* bufs[kMaxBuffers];
    for (size_t i = 0; i < widths_.size(); ++i) {
      py::array a = buffers[i].cast<py::array>();
      const auto name = [&] { return "buffers['" + names_[i] + "']"; };
      bufs[i] = out_f32(a, name, 2);
      expect(a.shape(0) >= T && a.shape(1) == widths_[i], [&] {
        return name() + ": expected at least (" + std::to_string(T) + ", " + std::to_string(widths_[i]) + "), got " +
               shape_str(a);
      });
    }
    check_layout(scratch, "scratch", 'u', 1, 1);
    expect(scratch.shape(0) >= scratch_bytes(T) && scratch.writeable(), [&] {
      return "scratch: expected a writable buffer of at least " + std::to_string(scratch_bytes(T)) + " bytes";
    });
    char* scratch_p = static_cast<char*>(scratch.mutable_data());
    expect(caches.size() == group_layers_.size(), [&] {
      return "caches: expected " + std::to_string(group_layers_.size()) + " cache groups, got " +
             std::to_string(caches.size());
    });
    CacheGroup groups[kMaxCacheGroups];
    for (size_t g = 0; g < caches.size(); ++g) groups[g] = cache_group(caches[g], g, kv_dtype, T);

    const int32_t* pos = in_i32(positions, "positions");
    expect(positions.shape(0) == T, [&] { return "positions: expected " + std::to_string(T) + " positions"; });
    expect(tables.size() == table_half_.size(), [&] {
      return "tables: expected " + std::to_string(table_half_.size()) + " (cos, sin) pairs, got " +
             std::to_string(tables.size());
    });
    RopeTable rope[kMaxTables];
    int64_t n_positions = INT64_MAX;
    for (size_t i = 0; i < tables.size(); ++i) {
      const auto name = [&] { return "tables[" + std::to_string(i) + "]"; };
      const py::tuple pair = tables[i].cast<py::tuple>();
      expect(pair.size() == 2, [&] { return name() + ": expected (cos, sin)"; });
      const py::array c = pair[0].cast<py::array>(), s = pair[1].cast<py::array>();
      const float* cp = in_f32(c, [&] { return name() + ".cos"; }, 2);
      const float* sp = in_f32(s, [&] { return name() + ".sin"; }, 2);
      expect(c.shape(1) == table_half_[i] && s.shape(0) == c.shape(0) && s.shape(1) == c.shape(1), [&] {
        return name() + ": expected [n_positions, " + std::to_string(table_half_[i]) + "] tables, got " +
               shape_str(c) + "/" + shape_str(s);
      });
      n_positions = std::min<int64_t>(n_positions, c.shape(0));
      rope[i] = RopeTable{cp, sp};
    }
    for (int64_t t = 0; t < T; ++t)
      expect(pos[t] >= 0 && (tables.size() == 0 || pos[t] < n_positions), [&] {
        return "positions: position " + std::to_string(pos[t]) + " outside the RoPE tables of " +
               std::to_string(n_positions) + " positions";
      });

    threads_arg(n_threads);

    const ProgramStep step{T, bufs, pos, rope, groups, reinterpret_cast<BlockQ8Act*>(scratch_p),
                           scratch_p + moe_offset(T)};
    const KernelTable& kt = active_kernels();
    py::gil_scoped_release release;
    run_program(kt, ops_, widths_, work_per_token_ / n_layers_, step, n_threads);
  }

 private:
  CacheGroup cache_group(const py::handle& spec, size_t g, const std::string& kv_dtype, int64_t T) const {
    const auto at = [g](const char* field) { return "caches[" + std::to_string(g) + "]" + field; };
    const py::tuple c = spec.cast<py::tuple>();
    expect(c.size() == 7, [&] { return at(": expected (k, k_scales, v, v_scales, slot_pos, slots, ranges)"); });
    const py::array k = c[0].cast<py::array>(), v = c[2].cast<py::array>();
    const py::array slot_pos = c[4].cast<py::array>(), slots = c[5].cast<py::array>(), ranges = c[6].cast<py::array>();
    const KVLayer k0 = kv_layer(k, py::object(c[1]), kv_dtype, head_dim_, [&] { return at(".k"); }, 4);
    const KVLayer v0 = kv_layer(v, py::object(c[3]), kv_dtype, head_dim_, [&] { return at(".v"); }, 4);
    const int64_t layers = group_layers_[g];
    expect(k.shape(0) == layers && k0.n_kv_heads == n_kv_heads_, [&] {
      return at(".k: expected ") + std::to_string(layers) + " layers of " + std::to_string(n_kv_heads_) +
             " kv heads, got " + shape_str(k);
    });
    expect(v.shape(0) == k.shape(0) && v0.n_kv_heads == k0.n_kv_heads && v0.n_slots == k0.n_slots,
           [&] { return at(".v: shape ") + shape_str(v) + " differs from k " + shape_str(k); });
    expect(k.writeable() && v.writeable(), [&] { return at(": k/v arrays are read-only"); });
    const int32_t* slot_pos_p = in_i32(slot_pos, [&] { return at(".slot_pos"); });
    expect(slot_pos.shape(0) == k0.n_slots,
           [&] { return at(".slot_pos: expected ") + std::to_string(k0.n_slots) + " slots"; });
    check_layout(slots, [&] { return at(".slots"); }, 'i', 8, 1);
    check_layout(ranges, [&] { return at(".ranges"); }, 'i', 8, 2);
    expect(slots.shape(0) >= T && ranges.shape(0) >= T && ranges.shape(1) == 2, [&] {
      return at(".slots/ranges: expected ") + std::to_string(T) + " slots and [" + std::to_string(T) +
             ", 2] (first, count) ranges, got " + shape_str(slots) + "/" + shape_str(ranges);
    });
    const auto* slot = static_cast<const int64_t*>(slots.data());
    const auto* range = static_cast<const SlotRange*>(ranges.data());
    for (int64_t t = 0; t < T; ++t) {
      const SlotRange& r = range[t];
      expect(r.first >= 0 && r.count >= 1 && r.first + r.count <= k0.n_slots, [&] {
        return at(".ranges: token ") + std::to_string(t) + "'s range (" + std::to_string(r.first) + ", " +
               std::to_string(r.count) + ") is outside the cache of " + std::to_string(k0.n_slots) + " slots";
      });
      expect(slot[t] >= r.first && slot[t] < r.first + r.count, [&] {
        return at(".slots: token ") + std::to_string(t) + "'s slot " + std::to_string(slot[t]) +
               " is outside its range";
      });
    }
    return CacheGroup{k0, v0, slot_pos_p, slot, range};
  }

  int64_t xq_bytes(int64_t T) const { return T * q_blocks(max_k_) * int64_t(sizeof(BlockQ8Act)); }
  int64_t moe_offset(int64_t T) const {  // after the activation blocks, 64-byte aligned
    return (xq_bytes(T) + 63) / 64 * 64;
  }
  int64_t moe_bytes(int64_t T) const {
    int64_t bytes = 0;
    for (const Op& op : ops_)
      if (op.kind == OpKind::moe)
        bytes = std::max(bytes, moe_scratch_bytes(T, int64_t(op.experts.size()), op.top_k, width(op.in), op.inter));
    return bytes;
  }

  int buffer(const py::dict& d, const char* key, const std::string& where) {
    expect(d.contains(key), where + ": missing '" + key + "'");
    const std::string name = d[key].cast<std::string>();
    const auto it = ids_.find(name);
    expect(it != ids_.end(), where + "." + key + ": no buffer named '" + name + "'");
    return it->second;
  }

  static py::object field(const py::dict& d, const char* key, const std::string& where) {
    expect(d.contains(key), where + ": missing '" + key + "'");
    return d[key];
  }

  int64_t width(int id) const { return widths_[size_t(id)]; }

  void expect_width(int id, int64_t w, const std::string& what) const {
    expect(width(id) == w, what + ": buffer '" + names_[size_t(id)] + "' has width " + std::to_string(width(id)) +
                               ", expected " + std::to_string(w));
  }

  void add(const py::dict& d, const std::string& where) {
    const std::string kind = field(d, "op", where).cast<std::string>();
    const std::string at = where + " (" + kind + ")";
    Op op;
    if (kind == "norm") {
      op.kind = OpKind::norm;
      op.out = buffer(d, "out", at);
      op.in = buffer(d, "in", at);
      op.group = field(d, "group", at).cast<int64_t>();
      op.eps = field(d, "eps", at).cast<float>();
      expect(op.group >= 1 && width(op.in) % op.group == 0,
             at + ": group " + std::to_string(op.group) + " does not divide the width " + std::to_string(width(op.in)));
      expect_width(op.out, width(op.in), at);
      const py::array w = keep(field(d, "weight", at));
      expect(w.ndim() == 2 && w.shape(1) == op.group && (w.shape(0) == 1 || w.shape(0) == width(op.in) / op.group),
             at + ": weight must be [1 or " + std::to_string(width(op.in) / op.group) + ", " +
                 std::to_string(op.group) + "], got " + shape_str(w));
      op.w = in_f32(w, (at + ".weight").c_str(), 2);
      op.w_period = w.shape(0);
      const py::object b = field(d, "bias", at);
      if (!b.is_none()) {
        const py::array ba = keep(b);
        expect(ba.ndim() == 2 && ba.shape(0) == w.shape(0) && ba.shape(1) == w.shape(1),
               at + ": bias shape " + shape_str(ba) + " differs from the weight's " + shape_str(w));
        op.b = in_f32(ba, (at + ".bias").c_str(), 2);
      }
    } else if (kind == "matmul") {
      op.kind = OpKind::matmul;
      op.in = buffer(d, "in", at);
      const py::list outs = field(d, "outs", at).cast<py::list>();
      const py::list lins = field(d, "linears", at).cast<py::list>();
      expect(outs.size() >= 1 && outs.size() <= size_t(team::kMaxJobs) && outs.size() == lins.size(),
             at + ": 1 to " + std::to_string(team::kMaxJobs) + " outputs, one linear each");
      op.n_lin = int(outs.size());
      for (int j = 0; j < op.n_lin; ++j) {
        const std::string name = outs[size_t(j)].cast<std::string>();
        expect(ids_.count(name), at + ".outs: no buffer named '" + name + "'");
        op.outs[j] = ids_[name];
        expect(op.outs[j] != op.in, at + ": output '" + name + "' is also the input");
        op.lin[j] = linear(lins[size_t(j)], at + ".linears[" + std::to_string(j) + "]", width(op.outs[j]), width(op.in));
        work_per_token_ += op.lin[j].N * op.lin[j].K;
      }
      max_k_ = std::max(max_k_, width(op.in));
    } else if (kind == "rope") {
      op.kind = OpKind::rope;
      op.in = buffer(d, "in", at);
      op.n_heads = field(d, "heads", at).cast<int64_t>();
      op.head_dim = field(d, "head_dim", at).cast<int64_t>();
      op.rotary_dim = field(d, "rotary_dim", at).cast<int64_t>();
      op.table = field(d, "table", at).cast<int>();
      expect(op.n_heads >= 1 && op.head_dim >= 1, at + ": heads and head_dim must be positive");
      expect_width(op.in, op.n_heads * op.head_dim, at);
      expect(op.rotary_dim >= 2 && op.rotary_dim % 2 == 0 && op.rotary_dim <= op.head_dim,
             at + ": rotary_dim must be even and in [2, head_dim], got " + std::to_string(op.rotary_dim));
      expect(op.table >= 0 && op.table < 64, at + ": table index out of range");
      if (size_t(op.table) >= table_half_.size()) table_half_.resize(size_t(op.table) + 1, 0);
      int64_t& half = table_half_[size_t(op.table)];
      expect(half == 0 || half == op.rotary_dim / 2, at + ": table " + std::to_string(op.table) +
             " is used with another rotary_dim");
      half = op.rotary_dim / 2;
    } else if (kind == "kv_store") {
      op.kind = OpKind::kv_store;
      op.in = buffer(d, "k", at);
      op.in2 = buffer(d, "v", at);
      cache_layer(d, at, op);
      op.head_dim = head_dim_;
      expect_width(op.in, n_kv_heads_ * head_dim_, at);
      expect_width(op.in2, n_kv_heads_ * head_dim_, at);
    } else if (kind == "attention") {
      op.kind = OpKind::attention;
      op.out = buffer(d, "out", at);
      op.in = buffer(d, "q", at);
      cache_layer(d, at, op);
      op.n_heads = field(d, "heads", at).cast<int64_t>();
      op.head_dim = head_dim_;
      op.window = field(d, "window", at).cast<int32_t>();
      op.attn_scale = field(d, "scale", at).cast<float>();
      op.softcap = field(d, "softcap", at).cast<float>();
      expect(op.n_heads >= 1 && op.n_heads % n_kv_heads_ == 0,
             at + ": heads must be a positive multiple of the " + std::to_string(n_kv_heads_) + " kv heads");
      expect(op.window >= 0 && op.softcap >= 0.0f, at + ": window and softcap must not be negative");
      expect_width(op.in, op.n_heads * head_dim_, at);
      expect_width(op.out, op.n_heads * head_dim_, at);
    } else if (kind == "glu") {
      op.kind = OpKind::glu;
      op.out = buffer(d, "out", at);
      op.in = buffer(d, "gate", at);
      op.in2 = buffer(d, "up", at);
      op.act = activation_arg(field(d, "activation", at).cast<std::string>());
      expect_width(op.in, width(op.out), at);
      expect_width(op.in2, width(op.out), at);
    } else if (kind == "add" || kind == "scale") {
      op.kind = kind == "add" ? OpKind::add : OpKind::scale;
      op.out = buffer(d, "out", at);
      if (op.kind == OpKind::add) {
        op.in = buffer(d, "in", at);
        expect_width(op.in, width(op.out), at);
      }
      op.factor = field(d, "factor", at).cast<float>();
    } else if (kind == "moe") {
      add_moe(d, op, at);
    } else {
      expect(false, at + ": unknown op '" + kind + "'");
    }
    ops_.push_back(op);
  }

  // Router [n_experts, H] and per expert (gate [I, H], up [I, H], down [H, I]) of one weight type.
  void add_moe(const py::dict& d, Op& op, const std::string& at) {
    op.kind = OpKind::moe;
    op.out = buffer(d, "out", at);
    op.in = buffer(d, "in", at);
    expect(op.out != op.in, at + ": the output is also the input");
    const int64_t H = width(op.in);
    expect_width(op.out, H, at);
    const py::list experts = field(d, "experts", at).cast<py::list>();
    const int64_t E = int64_t(experts.size());
    op.top_k = field(d, "top_k", at).cast<int64_t>();
    op.inter = field(d, "intermediate", at).cast<int64_t>();
    op.norm_topk = field(d, "norm_topk", at).cast<bool>();
    expect(E >= 1 && E <= INT32_MAX && op.top_k >= 1 && op.top_k <= E,
           at + ": top_k " + std::to_string(op.top_k) + " must be in [1, the " + std::to_string(E) + " experts]");
    expect(op.inter >= 1, at + ": intermediate must be positive");
    op.lin[0] = linear(field(d, "router", at), at + ".router", E, H);
    op.n_lin = 1;
    expect(op.lin[0].bias == nullptr, at + ".router: a bias is not supported");
    for (int64_t e = 0; e < E; ++e) {
      const std::string name = at + ".experts[" + std::to_string(e) + "]";
      const py::tuple t = experts[size_t(e)].cast<py::tuple>();
      expect(t.size() == 3, name + ": expected (gate, up, down)");
      const Linear gate = linear(t[0], name + ".gate", op.inter, H), up = linear(t[1], name + ".up", op.inter, H);
      const Linear down = linear(t[2], name + ".down", H, op.inter);
      if (e == 0) op.expert_wt = gate.wt;
      expect(gate.wt == op.expert_wt && up.wt == op.expert_wt && down.wt == op.expert_wt,
             name + ": every expert's gate, up and down must share one weight type");
      expect(!gate.bias && !up.bias && !down.bias, name + ": biases are not supported");
      op.experts.push_back(Expert{gate.w, up.w, down.w});
    }
    work_per_token_ += E * H + op.top_k * 3 * op.inter * H;
  }

  // The op's model layer as (cache group, index within the group).
  void cache_layer(const py::dict& d, const std::string& at, Op& op) const {
    const int64_t layer = field(d, "layer", at).cast<int64_t>();
    expect(layer >= 0 && layer < n_layers_, at + ": cache layer " + std::to_string(layer) + " outside [0, " +
           std::to_string(n_layers_) + ")");
    op.cache_group = layer_group_[size_t(layer)];
    op.layer = layer_index_[size_t(layer)];
  }

  // add(x += f·d) then norm(out = norm(x)) over whole rows: one op, one pass over x.
  void fuse_add_norms() {
    std::vector<Op> fused;
    for (size_t i = 0; i < ops_.size(); ++i) {
      const Op& a = ops_[i];
      if (a.kind == OpKind::add && i + 1 < ops_.size()) {
        const Op& n = ops_[i + 1];
        if (n.kind == OpKind::norm && n.in == a.out && n.group == width(a.out) && n.w_period == 1) {
          Op f = n;
          f.kind = OpKind::add_norm;
          f.in = a.out;
          f.in2 = a.in;
          f.factor = a.factor;
          fused.push_back(f);
          ++i;
          continue;
        }
      }
      fused.push_back(a);
    }
    ops_ = fused;
  }

  // Barriers that guard no data crossing threads go. A norm (whole rows) or glu
  // feeding a matmul whose weights are all quantized quantizes its own output rows, so
  // the matmul skips its quantization pass and barrier. A rope followed by another
  // rope or by the kv_store of what it rotated skips its barrier: both split the
  // tokens alike (static), so each thread reads only rows it wrote itself.
  void fuse_barriers() {
    for (size_t i = 0; i + 1 < ops_.size(); ++i) {
      Op& a = ops_[i];
      Op& next = ops_[i + 1];
      const bool whole_rows = (a.kind == OpKind::norm && a.group == width(a.out) && a.w_period == 1) ||
                              a.kind == OpKind::add_norm || a.kind == OpKind::glu;
      if (whole_rows && next.kind == OpKind::matmul && next.in == a.out) {
        bool all_quantized = true;
        for (int j = 0; j < next.n_lin; ++j) all_quantized = all_quantized && quantized(next.lin[j].wt);
        a.quantize_out = next.x_quantized = all_quantized;
      }
      if (a.kind == OpKind::rope &&
          ((next.kind == OpKind::rope && next.in != a.in) || (next.kind == OpKind::kv_store && next.in == a.in)))
        a.wait = false;
    }
  }

  Linear linear(const py::handle& spec, const std::string& name, int64_t N, int64_t K) {
    const py::tuple t = spec.cast<py::tuple>();
    expect(t.size() == 3, name + ": expected (weight, bias or None, wtype)");
    const WeightType wt = weight_type(t[2].cast<std::string>());
    const py::array w = keep(t[0]);
    const std::string wn = name + ".weight";
    const void* wp = quantized(wt) ? quant_data(w, wt, wn.c_str(), N, K) : weight_data(w, wt, wn.c_str(), 2);
    expect(quantized(wt) || (w.shape(0) == N && w.shape(1) == K),
           wn + ": expected (" + std::to_string(N) + ", " + std::to_string(K) + "), got " + shape_str(w));
    Linear lin{wt, wp, nullptr, N, K};
    if (!t[1].is_none()) {
      const py::array b = keep(t[1]);
      lin.bias = in_f32(b, (name + ".bias").c_str(), 1);
      expect(b.shape(0) == N, name + ".bias: expected " + std::to_string(N) + " elements, got " + shape_str(b));
    }
    return lin;
  }

  py::array keep(const py::handle& obj) {  // the program holds a reference to every weight
    py::array a = obj.cast<py::array>();
    alive_.append(a);
    return a;
  }

  int64_t n_layers_, n_kv_heads_, head_dim_;
  std::vector<int> layer_group_;           // each layer's cache group
  std::vector<int64_t> layer_index_;       // ... and its index within the group
  std::vector<int64_t> group_layers_;      // layers of each group
  std::map<std::string, int> ids_;
  std::vector<std::string> names_;
  std::vector<int64_t> widths_;
  std::vector<Op> ops_;
  std::vector<int64_t> table_half_;  // rotary_dim / 2 of each RoPE table
  int64_t max_k_ = 1, work_per_token_ = 0;
  py::list alive_;
};

}  // namespace

void bind_program(py::module_& m) {
  py::class_<LayerProgram>(m, "LayerProgram")
      .def(py::init<const std::vector<std::pair<std::string, int64_t>>&, const py::list&, const std::vector<int>&,
                    int64_t, int64_t>(),
           py::arg("buffers"), py::arg("ops"), py::arg("layer_groups"), py::arg("n_kv_heads"), py::arg("head_dim"),
           "buffers: [(name, width)] of the float32 activation rows; ops: one dict per op (see "
           "hearthlm/models/program.py); layer_groups: each layer's cache group (0, 1, ...), n_kv_heads, "
           "head_dim: the KV cache's geometry.")
      .def("scratch_bytes", &LayerProgram::scratch_bytes, py::arg("T"),
           "Bytes of the scratch buffer forward() needs for T tokens.")
      .def_property_readonly("n_ops", &LayerProgram::n_ops, "Ops after fusing each add with the norm after it.")
      .def("forward", &LayerProgram::forward, py::arg("buffers"), py::arg("T"), py::arg("scratch"),
           py::arg("caches"), py::arg("kv_dtype"), py::arg("positions"), py::arg("tables"), py::arg("n_threads"),
           "Run the program on the first T rows of every buffer (buffers in declaration order): token t "
           "at positions[t]. caches: per cache group (k, k_scales, v, v_scales, slot_pos, slots, ranges): "
           "the group's layers [layers, kv heads, slots, row] (scales None unless q8), each slot's position "
           "(int32, -1 empty), and per token its slot slots[t] (int64) and the slots ranges[t] = (first, "
           "count) (int64 [T, 2]) that hold its own sequence.");
}

}  // namespace hearthlm
