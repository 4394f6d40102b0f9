// Argument checks shared by the pybind11 bindings: every array must be C-contiguous
// with the exact dtype asked for, and errors name the argument.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>
#include <type_traits>

#include "dispatch.h"
#include "ops.h"

namespace hearthlm {
namespace checks {

namespace py = pybind11;

inline const KernelTable& table(const py::object& isa) {
  return isa.is_none() ? active_kernels() : kernels_for(isa.cast<std::string>());
}

// An argument's name or a failed check's message: a string, or a callable that builds
// it, so that the checks on the per-token path build no strings unless they fail.
template <class Text>
inline std::string text(const Text& t) {
  if constexpr (std::is_invocable_v<const Text&>)
    return t();
  else
    return std::string(t);
}

template <class Name>
inline void check_layout(const py::array& a, const Name& name, char kind, int itemsize, int ndim) {
  if (a.dtype().kind() != kind || a.itemsize() != itemsize)
    throw py::type_error(text(name) + ": expected dtype kind '" + kind + "' of " + std::to_string(itemsize) +
                         " bytes, got " + py::str(a.dtype()).cast<std::string>());
  if (a.ndim() != ndim)
    throw py::value_error(text(name) + ": expected " + std::to_string(ndim) + " dimensions, got " +
                          std::to_string(a.ndim()));
  if (!(a.flags() & py::array::c_style)) throw py::value_error(text(name) + ": array must be C-contiguous");
}

template <class Name>
inline const float* in_f32(const py::array& a, const Name& name, int ndim) {
  check_layout(a, name, 'f', 4, ndim);
  return static_cast<const float*>(a.data());
}

template <class Name>
inline float* out_f32(py::array& a, const Name& name, int ndim) {
  check_layout(a, name, 'f', 4, ndim);
  if (!a.writeable()) throw py::value_error(text(name) + ": array is read-only");
  return static_cast<float*>(a.mutable_data());
}

template <class Name>
inline const int32_t* in_i32(const py::array& a, const Name& name) {
  check_layout(a, name, 'i', 4, 1);
  return static_cast<const int32_t*>(a.data());
}

template <class Message>
inline void expect(bool ok, const Message& what) {
  if (!ok) throw py::value_error(text(what));
}

inline std::string shape_str(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + ")";
}

inline std::string format_names(bool quantized_only) {
  std::string names;
  for (const WeightFormat& f : weight_formats())
    if (!quantized_only || quantized(&f)) names += std::string(names.empty() ? "'" : ", '") + f.name + "'";
  return names;
}

inline WeightType weight_type(const std::string& name, const char* what = "wtype") {
  const WeightType wt = find_format(name);
  if (!wt) throw py::value_error(std::string(what) + ": expected one of " + format_names(false) + ", got '" + name + "'");
  return wt;
}

// Quantized weights of a logical [N, K] matrix: uint8 [row groups, bytes per row group],
// or the same bytes as [row groups, k blocks, block bytes] (files written before tail blocks).
template <class Name>
inline const void* quant_data(const py::array& w, WeightType wt, const Name& name, int64_t N, int64_t K) {
  check_layout(w, name, 'u', 1, w.ndim() == 3 ? 3 : 2);
  const int64_t groups = row_blocks(wt, N), bytes = wt->group_bytes(K);
  expect(w.shape(0) == groups && (w.ndim() == 2 ? w.shape(1) : w.shape(1) * w.shape(2)) == bytes, [&] {
    return text(name) + ": expected quantized shape (" + std::to_string(groups) + ", " + std::to_string(bytes) +
           ") for [" + std::to_string(N) + ", " + std::to_string(K) + "] " + wt->name + " weights, got " +
           shape_str(w);
  });
  return w.data();
}

// Weight storage of a plain format: float32 for f32; any 2-byte dtype (uint16 /
// float16) for bf16 and f16.
template <class Name>
inline const void* weight_data(const py::array& w, WeightType wt, const Name& name, int ndim) {
  if (wt->block_bytes == 4) return in_f32(w, name, ndim);
  if (w.itemsize() != 2) throw py::type_error(text(name) + ": 16-bit weights expected");
  check_layout(w, name, w.dtype().kind(), 2, ndim);
  return w.data();
}

inline Activation activation_arg(const std::string& name) {
  if (name == "silu") return Activation::silu;
  if (name == "gelu_tanh") return Activation::gelu_tanh;
  throw py::value_error("activation: expected 'silu' or 'gelu_tanh', got '" + name + "'");
}

inline KVType kv_type(const std::string& name) {
  for (int t = 0; t < kKVTypes; ++t)
    if (name == kKVTypeNames[t]) return KVType(t);
  std::string known;
  for (int t = 0; t < kKVTypes; ++t) known += std::string(t ? ", '" : "'") + kKVTypeNames[t] + "'";
  throw py::value_error("kv_dtype: expected one of " + known + ", got '" + name + "'");
}

// A K or V cache [n_kv_heads, n_slots, row_stride] in its storage type, with float32
// scales [n_kv_heads, n_slots, row_stride / 32] for q8; or, with ndim 4, the caches of
// every layer [n_layers, ...] as one array (KVLayer of layer 0; see kv_layers).
template <class Name>
inline KVLayer kv_layer(const py::array& data, const py::object& scales, const std::string& kv_dtype,
                        int64_t head_dim, const Name& name, int ndim = 3) {
  const KVType t = kv_type(kv_dtype);
  const char kind = t == kKVf32 ? 'f' : t == kKVq8 ? 'i' : data.dtype().kind();
  check_layout(data, name, kind, int(kv_element_bytes(t)), ndim);
  const int d = ndim - 3;  // the kv-head dimension
  KVLayer c{t, const_cast<void*>(data.data()), nullptr, data.shape(d), data.shape(d + 1), data.shape(d + 2)};
  if (t == kKVq8) {
    expect(c.row_stride % kQ8Block == 0 && c.row_stride >= head_dim && c.row_stride < head_dim + kQ8Block,
           [&] { return text(name) + ": q8 rows must be head_dim padded to a multiple of 32"; });
    if (scales.is_none()) throw py::value_error(text(name) + ": q8 needs scales");
    py::array sc = scales.cast<py::array>();
    const float* sp = in_f32(sc, "scales", ndim);
    bool same = sc.shape(d + 2) == c.row_stride / kQ8Block;
    for (int i = 0; i < d + 2; ++i) same = same && sc.shape(i) == data.shape(i);
    expect(same, [&] { return text(name) + ": scales shape " + shape_str(sc) + " does not match " + shape_str(data); });
    c.scales = const_cast<float*>(sp);
  } else {
    expect(c.row_stride == head_dim, [&] {
      return text(name) + ": rows of " + std::to_string(c.row_stride) + " elements, expected head_dim " +
             std::to_string(head_dim);
    });
  }
  return c;
}

// More threads than this is never useful and can exhaust the process's thread limit,
// which libgomp does not survive (segfault), so it is refused up front.
inline constexpr int kMaxThreads = 1024;

// y = x · wᵀ (+ bias): checks shapes against x and returns the job for ops. index: "" or
// the matrix's "[j]" in a group, appended to the argument names.
inline MatmulJob matmul_job(py::array y, py::array w, const py::object& bias, WeightType wt, const py::array& x,
                            const char* index) {
  const int64_t M = x.shape(0), K = x.shape(1);
  const auto yn = [&] { return "y" + std::string(index); };
  const auto wn = [&] { return "w" + std::string(index); };
  const auto bn = [&] { return "bias" + std::string(index); };
  float* yp = out_f32(y, yn, 2);
  // Quantized weights do not carry N: it is y's width.
  const int64_t N = quantized(wt) ? y.shape(1) : w.shape(0);
  const void* wp = quantized(wt) ? quant_data(w, wt, wn, N, K) : weight_data(w, wt, wn, 2);
  expect(quantized(wt) || w.shape(1) == K,
         [&] { return wn() + ": shape " + shape_str(w) + " does not match x " + shape_str(x); });
  expect(y.shape(0) == M && y.shape(1) == N, [&] {
    return yn() + ": expected shape (" + std::to_string(M) + ", " + std::to_string(N) + "), got " + shape_str(y);
  });
  const float* bp = nullptr;
  if (!bias.is_none()) {
    py::array b = bias.cast<py::array>();
    bp = in_f32(b, bn, 1);
    expect(b.shape(0) == N,
           [&] { return bn() + ": expected " + std::to_string(N) + " elements, got " + shape_str(b); });
  }
  return MatmulJob{yp, wp, bp, N};
}

inline int threads_arg(int n_threads) {
  if (n_threads < 1 || n_threads > kMaxThreads)
    throw py::value_error("n_threads must be in [1, " + std::to_string(kMaxThreads) + "], got " +
                          std::to_string(n_threads));
  return n_threads;
}

}  // namespace checks
}  // namespace hearthlm
