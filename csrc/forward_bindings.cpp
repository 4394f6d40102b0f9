// hearthlm._kernels.LayerStack: the weights of every layer, checked once against the
// model's shape, and forward() running them all in one native call (forward.h).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <string>
#include <vector>

#include "binding_checks.h"
#include "forward.h"

namespace py = pybind11;

namespace hearthlm {
namespace {

using namespace checks;

class LayerStack {
 public:
  LayerStack(const ModelShape& shape, const py::list& layers, const py::tuple& final_norm)
      : shape_(shape) {
    const ModelShape& s = shape_;
    expect(s.hidden > 0 && s.n_heads > 0 && s.n_kv_heads > 0 && s.head_dim > 0 && s.intermediate > 0,
           "shape: every dimension must be positive");
    expect(s.n_heads % s.n_kv_heads == 0, "n_heads must be a multiple of n_kv_heads");
    expect(s.head_dim <= kMaxHeadDim, "head_dim " + std::to_string(s.head_dim) + " exceeds " +
                                          std::to_string(kMaxHeadDim));
    expect(s.rotary_dim > 0 && s.rotary_dim % 2 == 0 && s.rotary_dim <= s.head_dim,
           "rotary_dim: must be even and in [2, head_dim], got " + std::to_string(s.rotary_dim));
    expect(layers.size() >= 1, "layers: at least one layer");
    const int64_t H = s.hidden, q_dim = s.n_heads * s.head_dim, kv_dim = s.n_kv_heads * s.head_dim;
    max_k_ = std::max({H, q_dim, s.intermediate});
    for (size_t i = 0; i < layers.size(); ++i) {
      const py::dict l = layers[i].cast<py::dict>();
      const std::string p = "layers[" + std::to_string(i) + "].";
      LayerWeights w;
      w.attn_norm = norm(l["attn_norm"], p + "attn_norm");
      w.q = linear(l["q"], p + "q", q_dim, H);
      w.k = linear(l["k"], p + "k", kv_dim, H);
      w.v = linear(l["v"], p + "v", kv_dim, H);
      w.o = linear(l["o"], p + "o", H, q_dim);
      w.mlp_norm = norm(l["mlp_norm"], p + "mlp_norm");
      w.gate = linear(l["gate"], p + "gate", s.intermediate, H);
      w.up = linear(l["up"], p + "up", s.intermediate, H);
      w.down = linear(l["down"], p + "down", H, s.intermediate);
      w.window = l["window"].cast<int32_t>();
      layers_.push_back(w);
    }
    final_norm_ = norm(final_norm, "final_norm");
  }

  int64_t n_layers() const { return int64_t(layers_.size()); }
  // The scratch buffer of forward(): T tokens' quantized activations, then the
  // attention partials.
  int64_t xq_bytes(int64_t T) const { return T * q_blocks(max_k_) * int64_t(sizeof(BlockQ8Act)); }
  int64_t scratch_bytes(int64_t T) const {
    return xq_bytes(T) + attention_partials_floats(shape_.n_heads, shape_.head_dim) * int64_t(sizeof(float));
  }

  // Checks every buffer, cache and index against the shape, then runs the layers with
  // the GIL released.
  void forward(py::array x, py::array h, py::array q, py::array k, py::array v, py::array attn,
               py::array gate, py::array up, py::array scratch, py::array k_cache, py::object k_scales,
               py::array v_cache, py::object v_scales, const std::string& kv_dtype, py::array slot_pos,
               py::array positions, py::array cos, py::array sin, py::array segments, int n_threads) {
    const ModelShape& s = shape_;
    const int64_t T = x.shape(0);
    const int64_t q_dim = s.n_heads * s.head_dim, kv_dim = s.n_kv_heads * s.head_dim;
    Activations a{activation(x, "x", T, s.hidden), activation(h, "h", T, s.hidden),
                  activation(q, "q", T, q_dim), activation(k, "k", T, kv_dim),
                  activation(v, "v", T, kv_dim), activation(attn, "attn", T, q_dim),
                  activation(gate, "gate", T, s.intermediate), activation(up, "up", T, s.intermediate),
                  nullptr, nullptr};
    check_layout(scratch, "scratch", 'u', 1, 1);
    expect(scratch.shape(0) >= scratch_bytes(T) && scratch.writeable(),
           "scratch: expected a writable buffer of at least " + std::to_string(scratch_bytes(T)) + " bytes");
    char* scratch_p = static_cast<char*>(scratch.mutable_data());
    a.xq = reinterpret_cast<BlockQ8Act*>(scratch_p);
    a.attention_partials = reinterpret_cast<float*>(scratch_p + xq_bytes(T));

    const KVLayer k_layer0 = kv_layer(k_cache, k_scales, kv_dtype, s.head_dim, "k_cache", 4);
    const KVLayer v_layer0 = kv_layer(v_cache, v_scales, kv_dtype, s.head_dim, "v_cache", 4);
    expect(k_cache.shape(0) == n_layers() && k_layer0.n_kv_heads == s.n_kv_heads,
           "k_cache: expected " + std::to_string(n_layers()) + " layers of " +
               std::to_string(s.n_kv_heads) + " kv heads, got " + shape_str(k_cache));
    expect(v_cache.shape(0) == k_cache.shape(0) && v_layer0.n_kv_heads == k_layer0.n_kv_heads && v_layer0.n_slots == k_layer0.n_slots,
           "v_cache: shape " + shape_str(v_cache) + " differs from k_cache " + shape_str(k_cache));
    expect(k_cache.writeable() && v_cache.writeable(), "k_cache/v_cache: arrays are read-only");

    const int32_t* slot_pos_p = in_i32(slot_pos, "slot_pos");
    expect(slot_pos.shape(0) == k_layer0.n_slots, "slot_pos: expected " + std::to_string(k_layer0.n_slots) + " slots");
    const int32_t* pos = in_i32(positions, "positions");
    const float* cos_p = in_f32(cos, "cos", 2);
    const float* sin_p = in_f32(sin, "sin", 2);
    expect(cos.shape(1) == s.rotary_dim / 2 && sin.shape(0) == cos.shape(0) && sin.shape(1) == cos.shape(1),
           "cos/sin: expected [n_positions, rotary_dim/2] tables, got " + shape_str(cos) + "/" + shape_str(sin));
    expect(positions.shape(0) == T, "positions: expected " + std::to_string(T) + " positions");
    for (int64_t t = 0; t < T; ++t)
      expect(pos[t] >= 0 && pos[t] < cos.shape(0), "positions: position " + std::to_string(pos[t]) +
             " outside the RoPE table of " + std::to_string(cos.shape(0)) + " positions");

    check_layout(segments, "segments", 'i', 8, 2);
    expect(segments.shape(1) == 3 && segments.shape(0) >= 1 && segments.shape(0) <= 8,
           "segments: expected 1 to 8 rows of (offset, slot0, n), got " + shape_str(segments));
    const auto* seg = static_cast<const KVSegment*>(segments.data());
    int64_t covered = 0;
    for (py::ssize_t i = 0; i < segments.shape(0); ++i) {
      expect(seg[i].offset == covered && seg[i].n >= 1 && seg[i].slot0 >= 0 &&
                 seg[i].slot0 + seg[i].n <= k_layer0.n_slots,
             "segments: row " + std::to_string(i) + " does not continue the tokens in the cache's slots");
      covered += seg[i].n;
    }
    expect(covered == T, "segments: cover " + std::to_string(covered) + " tokens, expected " + std::to_string(T));
    threads_arg(n_threads);

    const ForwardStep step{T, pos, cos_p, sin_p, slot_pos_p, seg, int(segments.shape(0))};
    const KernelTable& kt = active_kernels();
    py::gil_scoped_release release;
    forward_layers(kt, s, layers_.data(), n_layers(), final_norm_, a, k_layer0, v_layer0, step, n_threads);
  }

 private:
  Norm norm(const py::handle& spec, const std::string& name) {
    const py::tuple t = spec.cast<py::tuple>();
    expect(t.size() == 2, name + ": expected (weight, bias or None)");
    const py::array w = keep(t[0]);
    expect(w.ndim() == 1 && w.shape(0) == shape_.hidden, name + ".weight: expected (" +
           std::to_string(shape_.hidden) + ",), got " + shape_str(w));
    Norm n{in_f32(w, (name + ".weight").c_str(), 1), nullptr};
    if (!t[1].is_none()) {
      const py::array b = keep(t[1]);
      expect(b.ndim() == 1 && b.shape(0) == shape_.hidden, name + ".bias: expected (" +
             std::to_string(shape_.hidden) + ",), got " + shape_str(b));
      n.b = in_f32(b, (name + ".bias").c_str(), 1);
    }
    return n;
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

  py::array keep(const py::handle& obj) {  // the stack holds a reference to every weight
    py::array a = obj.cast<py::array>();
    alive_.append(a);
    return a;
  }

  static float* activation(py::array& a, const char* name, int64_t T, int64_t width) {
    float* p = out_f32(a, name, 2);
    expect(a.shape(0) == T && a.shape(1) == width, std::string(name) + ": expected (" + std::to_string(T) +
           ", " + std::to_string(width) + "), got " + shape_str(a));
    return p;
  }

  ModelShape shape_;
  std::vector<LayerWeights> layers_;
  Norm final_norm_;
  int64_t max_k_;
  py::list alive_;
};

}  // namespace

void bind_forward(py::module_& m) {
  py::class_<LayerStack>(m, "LayerStack")
      .def(py::init([](int64_t hidden, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim,
                       int64_t rotary_dim, int64_t intermediate, float norm_eps, float attn_scale,
                       py::list layers, py::tuple final_norm) {
             const ModelShape shape{hidden, n_heads, n_kv_heads, head_dim, rotary_dim, intermediate,
                                    norm_eps, attn_scale};
             return new LayerStack(shape, layers, final_norm);
           }),
           py::arg("hidden"), py::arg("n_heads"), py::arg("n_kv_heads"), py::arg("head_dim"),
           py::arg("rotary_dim"), py::arg("intermediate"), py::arg("norm_eps"), py::arg("attn_scale"),
           py::arg("layers"), py::arg("final_norm"),
           "layers: one dict per layer with attn_norm, mlp_norm: (weight, bias or None); q, k, v, o, "
           "gate, up, down: (weight, bias or None, wtype); window: int. final_norm: (weight, bias or None).")
      .def("scratch_bytes", &LayerStack::scratch_bytes, py::arg("T"),
           "Bytes of the scratch buffer forward() needs for T tokens.")
      .def("forward", &LayerStack::forward, py::arg("x"), py::arg("h"), py::arg("q"), py::arg("k"),
           py::arg("v"), py::arg("attn"), py::arg("gate"), py::arg("up"), py::arg("scratch"),
           py::arg("k_cache"), py::arg("k_scales"), py::arg("v_cache"), py::arg("v_scales"),
           py::arg("kv_dtype"), py::arg("slot_pos"), py::arg("positions"), py::arg("cos"), py::arg("sin"),
           py::arg("segments"), py::arg("n_threads"),
           "Run x [T, hidden] (embedded tokens) through every layer, writing each layer's k, v "
           "into the cache slots of `segments` ([n, 3] int64 rows of (offset, slot0, n)); "
           "leaves h = final_norm(x).");
}

}  // namespace hearthlm
