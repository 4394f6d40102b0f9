// pybind11 module hearthlm._kernels: converts and checks arguments, releases the GIL,
// and calls ops.cpp. Every array must be C-contiguous with the exact dtype asked for;
// errors name the argument.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <stdexcept>
#include <string>

#include "bandwidth.h"
#include "binding_checks.h"
#include "cpu_features.h"
#include "dispatch.h"
#include "ops.h"

#include "sampler.h"

#if defined(HEARTHLM_OPENMP)
#include <omp.h>
#endif

namespace py = pybind11;

namespace hearthlm {
void bind_program(py::module_& m);  // program_bindings.cpp
}

using namespace hearthlm;
using namespace hearthlm::checks;

namespace {

const float* sampler_logits(const Sampler& s, const py::array& logits) {
  const float* lp = in_f32(logits, "logits", 1);
  expect(logits.shape(0) == s.vocab(),
         [&] { return "logits: expected " + std::to_string(s.vocab()) + " values, got " + shape_str(logits); });
  return lp;
}

const uint32_t* sampler_mask(const Sampler& s, const py::object& mask) {
  if (mask.is_none()) return nullptr;
  if (!py::isinstance<py::array>(mask)) throw py::type_error("mask: expected None or a uint32 array");
  py::array a = mask.cast<py::array>();  // a view: mask keeps the data alive
  check_layout(a, "mask", 'u', 4, 1);
  const int64_t words = (s.vocab() + 31) / 32;
  expect(a.shape(0) == words,
         [&] { return "mask: expected " + std::to_string(words) + " uint32 words, got " + shape_str(a); });
  return static_cast<const uint32_t*>(a.data());
}

// Sampler(vocab, seed, temperature, top_k, ...): holds the RNG state and the penalty
// window; parameters are validated by hearthlm.sampling.
void bind_sampler(py::module_& m) {
  py::class_<Sampler>(m, "Sampler")
      .def(py::init([](int64_t vocab, uint64_t seed, float temperature, int32_t top_k, float top_p,
                       float min_p, float repeat_penalty, int32_t repeat_last_n,
                       float presence_penalty, float frequency_penalty) {
             expect(vocab > 0, "vocab: must be positive, got " + std::to_string(vocab));
             SamplerParams p{temperature, top_k, top_p, min_p, repeat_penalty, repeat_last_n,
                             presence_penalty, frequency_penalty};
             return new Sampler(vocab, p, seed);
           }),
           py::arg("vocab"), py::arg("seed"), py::arg("temperature"), py::arg("top_k"),
           py::arg("top_p"), py::arg("min_p"), py::arg("repeat_penalty"), py::arg("repeat_last_n"),
           py::arg("presence_penalty"), py::arg("frequency_penalty"))
      .def("sample", [](Sampler& s, py::array logits, py::object mask) {
        const float* lp = sampler_logits(s, logits);
        const uint32_t* mp = sampler_mask(s, mask);
        int32_t token;
        {
          py::gil_scoped_release release;
          token = s.sample(lp, mp);
        }
        expect(token >= 0, "mask: allows no token");
        return token;
      }, py::arg("logits"), py::arg("mask") = py::none(),
         "The next token id; logits[vocab] float32 is not modified. mask: None or uint32 "
         "[ceil(vocab / 32)] bits of the allowed tokens.")
      .def("distribution", [](Sampler& s, py::array logits, py::object mask) {
        const float* lp = sampler_logits(s, logits);
        const uint32_t* mp = sampler_mask(s, mask);
        py::array_t<int32_t> ids(s.vocab());
        py::array_t<float> probs(s.vocab());
        int64_t n;
        {
          py::gil_scoped_release release;
          n = s.distribution(lp, mp, ids.mutable_data(), probs.mutable_data());
        }
        return py::make_tuple(ids[py::slice(0, n, 1)], probs[py::slice(0, n, 1)]);
      }, py::arg("logits"), py::arg("mask") = py::none(),
         "(ids, probs): the filtered, normalised distribution sample() draws from.")
      .def("sampled_logprobs", [](Sampler& s, py::array ids, py::array logprobs) {
        check_layout(ids, "ids", 'i', 4, 1);
        float* lp = out_f32(logprobs, "logprobs", 1);
        expect(ids.shape(0) == logprobs.shape(0) && ids.writeable(),
               "ids, logprobs: expected two writeable arrays of the same length");
        float chosen;
        int64_t n;
        {
          py::gil_scoped_release release;
          n = s.sampled_logprobs(ids.shape(0), &chosen, static_cast<int32_t*>(ids.mutable_data()), lp);
        }
        return py::make_tuple(chosen, n);
      }, py::arg("ids"), py::arg("logprobs"),
         "After sample(): (the chosen token's logprob, n); the n <= len(ids) most likely "
         "tokens of the distribution it was drawn from go to ids / logprobs.")
      .def("accept", [](Sampler& s, py::array ids) {
        const int32_t* ip = in_i32(ids, "ids");
        for (py::ssize_t i = 0; i < ids.shape(0); ++i)
          expect(ip[i] >= 0 && ip[i] < s.vocab(), [&] {
            return "ids: token id " + std::to_string(ip[i]) + " outside the vocabulary [0, " +
                   std::to_string(s.vocab()) + ")";
          });
        s.accept(ip, ids.shape(0));
      }, py::arg("ids"), "Append tokens to the penalty window.")
      .def("clear_history", &Sampler::clear_history);
}

}  // namespace

PYBIND11_MODULE(_kernels, m) {
  m.doc() = "hearthlm native kernels (SIMD + OpenMP), dispatched at run time by CPU features";

  m.def("cpu_features", [] {
    const CpuFeatures& f = cpu_features();
    py::dict d;
    d["sse4_2"] = f.sse42; d["avx2"] = f.avx2; d["fma"] = f.fma; d["f16c"] = f.f16c;
    d["avx512f"] = f.avx512f; d["avx512bw"] = f.avx512bw; d["avx512vl"] = f.avx512vl;
    d["avx512dq"] = f.avx512dq; d["avx512_vnni"] = f.avx512_vnni;
    d["avx512_bf16"] = f.avx512_bf16; d["avx_vnni"] = f.avx_vnni; d["amx_tile"] = f.amx_tile;
    d["amx_int8"] = f.amx_int8; d["amx_bf16"] = f.amx_bf16; d["neon"] = f.neon;
    d["dotprod"] = f.dotprod; d["i8mm"] = f.i8mm;
    return d;
  });
  m.attr("max_threads") = kMaxThreads;
  py::dict limits;  // the kernels' limits and block sizes, stated once (here) for Python
  limits["max_threads"] = kMaxThreads;
  limits["max_head_dim"] = kMaxHeadDim;
  limits["kv_q8_block"] = kQ8Block;
  m.attr("limits") = limits;
  m.def("supported_isas", &supported_isas);
  m.def("compiled_isas", &compiled_isas);
  m.def("select_isa", [](const std::string& name) {
    try {
      select_isa(name);
    } catch (const std::invalid_argument& e) {
      throw py::value_error(e.what());
    }
  });
  m.def("active_isa", [] { return std::string(active_kernels().isa); });
  m.def("openmp", [] {
#if defined(HEARTHLM_OPENMP)
    return true;
#else
    return false;
#endif
  });

  m.def("memory_read_bandwidth", [](int64_t nbytes, int n_threads, int reps) {
    threads_arg(n_threads);
    py::gil_scoped_release release;
    return memory_read_bandwidth(nbytes, n_threads, reps);
  }, py::arg("nbytes"), py::arg("n_threads"), py::arg("reps") = 3,
     "Best-of-reps read bandwidth in GB/s over a buffer of nbytes, with n_threads threads.");

  m.def("matmul", [](py::array y, py::array x, py::array w, py::object bias, const std::string& wtype,
                     int n_threads, py::object isa) {
    const WeightType wt = weight_type(wtype);
    const float* xp = in_f32(x, "x", 2);
    const MatmulJob job = matmul_job(y, w, bias, wt, x, "");
    const KernelTable& kt = table(isa);
    threads_arg(n_threads);
    py::gil_scoped_release release;
    matmul(kt, wt, job.y, xp, job.w, job.bias, x.shape(0), job.N, x.shape(1), n_threads);
  }, py::arg("y"), py::arg("x"), py::arg("w"), py::arg("bias"), py::arg("wtype"),
     py::arg("n_threads") = 1, py::arg("isa") = py::none());

  m.def("matmul_group", [](py::list ys, py::array x, py::list ws, py::list biases, const std::string& wtype,
                           int n_threads, py::object isa) {
    const WeightType wt = weight_type(wtype);
    const float* xp = in_f32(x, "x", 2);
    const size_t n = ys.size();
    expect(n >= 1 && n <= 8 && ws.size() == n && biases.size() == n,
           "ys/ws/biases: expected 1 to 8 matrices, the same number of each");
    MatmulJob jobs[8];
    for (size_t j = 0; j < n; ++j)
      jobs[j] = matmul_job(ys[j].cast<py::array>(), ws[j].cast<py::array>(), biases[j], wt, x,
                           ("[" + std::to_string(j) + "]").c_str());
    const KernelTable& kt = table(isa);
    threads_arg(n_threads);
    py::gil_scoped_release release;
    matmul_group(kt, wt, jobs, int(n), xp, x.shape(0), x.shape(1), n_threads);
  }, py::arg("ys"), py::arg("x"), py::arg("ws"), py::arg("biases"), py::arg("wtype"),
     py::arg("n_threads") = 1, py::arg("isa") = py::none(),
     "ys[i] = x · ws[i]ᵀ + biases[i] for several matrices of one weight type sharing x "
     "(one parallel region and one activation quantization for a single token).");

  m.def("rmsnorm", [](py::array out, py::array x, py::array w, float eps, int n_threads, py::object isa) {
    const float* xp = in_f32(x, "x", 2);
    const float* wp = in_f32(w, "w", 1);
    float* op = out_f32(out, "out", 2);
    expect(w.shape(0) == x.shape(1), "w: shape " + shape_str(w) + " does not match x " + shape_str(x));
    expect(out.shape(0) == x.shape(0) && out.shape(1) == x.shape(1), "out: shape " + shape_str(out) + " != x " + shape_str(x));
    const KernelTable& kt = table(isa);
    threads_arg(n_threads);
    py::gil_scoped_release release;
    rmsnorm(kt, op, xp, wp, x.shape(0), x.shape(1), eps, n_threads);
  }, py::arg("out"), py::arg("x"), py::arg("w"), py::arg("eps"), py::arg("n_threads") = 1,
     py::arg("isa") = py::none());

  m.def("layernorm", [](py::array out, py::array x, py::array w, py::array b, float eps, int n_threads,
                        py::object isa) {
    const float* xp = in_f32(x, "x", 2);
    const float* wp = in_f32(w, "w", 1);
    const float* bp = in_f32(b, "b", 1);
    float* op = out_f32(out, "out", 2);
    expect(w.shape(0) == x.shape(1) && b.shape(0) == x.shape(1),
           "w/b: shapes " + shape_str(w) + "/" + shape_str(b) + " do not match x " + shape_str(x));
    expect(out.shape(0) == x.shape(0) && out.shape(1) == x.shape(1), "out: shape " + shape_str(out) + " != x " + shape_str(x));
    const KernelTable& kt = table(isa);
    threads_arg(n_threads);
    py::gil_scoped_release release;
    layernorm(kt, op, xp, wp, bp, x.shape(0), x.shape(1), eps, n_threads);
  }, py::arg("out"), py::arg("x"), py::arg("w"), py::arg("b"), py::arg("eps"),
     py::arg("n_threads") = 1, py::arg("isa") = py::none());

  m.def("rope", [](py::array x, py::array cos, py::array sin, py::array pos, int64_t rot_dim,
                   int n_threads, py::object isa) {
    float* xp = out_f32(x, "x", 3);
    const float* cp = in_f32(cos, "cos", 2);
    const float* sp = in_f32(sin, "sin", 2);
    const int32_t* pp = in_i32(pos, "pos");
    const int64_t T = x.shape(0), n_heads = x.shape(1), head_dim = x.shape(2);
    expect(rot_dim > 0 && rot_dim % 2 == 0 && rot_dim <= head_dim,
           "rot_dim: must be even and in [2, head_dim], got " + std::to_string(rot_dim));
    expect(cos.shape(1) == rot_dim / 2 && sin.shape(0) == cos.shape(0) && sin.shape(1) == cos.shape(1),
           "cos/sin: expected [n_positions, rot_dim/2] tables, got " + shape_str(cos) + "/" + shape_str(sin));
    expect(pos.shape(0) == T, "pos: expected " + std::to_string(T) + " positions");
    for (int64_t t = 0; t < T; ++t)
      expect(pp[t] >= 0 && pp[t] < cos.shape(0),
             "pos: position " + std::to_string(pp[t]) + " outside the RoPE table of " +
                 std::to_string(cos.shape(0)) + " positions");
    const KernelTable& kt = table(isa);
    threads_arg(n_threads);
    py::gil_scoped_release release;
    rope(kt, xp, cp, sp, pp, T, n_heads, head_dim, rot_dim, n_threads);
  }, py::arg("x"), py::arg("cos"), py::arg("sin"), py::arg("pos"), py::arg("rot_dim"),
     py::arg("n_threads") = 1, py::arg("isa") = py::none());

  m.def("attention", [](py::array out, py::array q, py::array k, py::object k_scales, py::array v,
                        py::object v_scales, const std::string& kv_dtype, py::array kv_pos,
                        py::array q_pos, int32_t window, float scale, int n_threads, py::object isa,
                        float softcap) {
    float* op = out_f32(out, "out", 3);
    const float* qp = in_f32(q, "q", 3);
    const int64_t T = q.shape(0), n_heads = q.shape(1), head_dim = q.shape(2);
    const KVLayer kl = kv_layer(k, k_scales, kv_dtype, head_dim, "k");
    const KVLayer vl = kv_layer(v, v_scales, kv_dtype, head_dim, "v");
    const int32_t* kvp = in_i32(kv_pos, "kv_pos");
    const int32_t* qpp = in_i32(q_pos, "q_pos");
    expect(out.shape(0) == T && out.shape(1) == n_heads && out.shape(2) == head_dim,
           "out: shape " + shape_str(out) + " != q " + shape_str(q));
    expect(vl.n_kv_heads == kl.n_kv_heads && vl.n_slots == kl.n_slots,
           "k/v: shapes " + shape_str(k) + "/" + shape_str(v) + " differ");
    expect(n_heads % kl.n_kv_heads == 0, "q: n_heads must be a multiple of the kv heads");
    expect(head_dim <= kMaxHeadDim, "head_dim " + std::to_string(head_dim) + " exceeds " + std::to_string(kMaxHeadDim));
    expect(kv_pos.shape(0) == kl.n_slots && q_pos.shape(0) == T, "kv_pos/q_pos: wrong length");
    const KernelTable& kt = table(isa);
    threads_arg(n_threads);
    py::gil_scoped_release release;
    attention(kt, op, qp, kl, vl, kvp, qpp, T, n_heads, head_dim, window, scale, softcap, n_threads);
  }, py::arg("out"), py::arg("q"), py::arg("k"), py::arg("k_scales"), py::arg("v"), py::arg("v_scales"),
     py::arg("kv_dtype"), py::arg("kv_pos"), py::arg("q_pos"), py::arg("window"), py::arg("scale"),
     py::arg("n_threads") = 1, py::arg("isa") = py::none(), py::arg("softcap") = 0.0f);

  m.def("kv_store", [](py::array cache, py::object scales, const std::string& kv_dtype, py::array src,
                       int64_t slot0) {
    const float* sp = in_f32(src, "src", 3);
    const int64_t T = src.shape(0), head_dim = src.shape(2);
    const KVLayer c = kv_layer(cache, scales, kv_dtype, head_dim, "cache");
    if (!cache.writeable()) throw py::value_error("cache: array is read-only");
    expect(src.shape(1) == c.n_kv_heads, "src: shape " + shape_str(src) + " does not match cache " + shape_str(cache));
    expect(slot0 >= 0 && slot0 + T <= c.n_slots, "slot0: slots [" + std::to_string(slot0) + ", " +
           std::to_string(slot0 + T) + ") outside the cache of " + std::to_string(c.n_slots));
    py::gil_scoped_release release;
    kv_store(c, sp, T, head_dim, slot0);
  }, py::arg("cache"), py::arg("scales"), py::arg("kv_dtype"), py::arg("src"), py::arg("slot0"));

  m.def("kv_rotate", [](py::array cache, py::object scales, const std::string& kv_dtype, int64_t head_dim,
                        py::array cos, py::array sin, py::array which, int64_t rot_dim, int n_threads,
                        py::object isa) {
    const KVLayer c = kv_layer(cache, scales, kv_dtype, head_dim, "cache");
    const float* cp = in_f32(cos, "cos", 2);
    const float* sp = in_f32(sin, "sin", 2);
    const int32_t* wp = in_i32(which, "which");
    expect(rot_dim > 0 && rot_dim % 2 == 0 && rot_dim <= head_dim, "rot_dim: must be even and in [2, head_dim]");
    expect(cos.shape(1) == rot_dim / 2 && sin.shape(0) == cos.shape(0) && sin.shape(1) == cos.shape(1),
           "cos/sin: expected [n, rot_dim/2] tables");
    expect(which.shape(0) == c.n_slots, "which: expected one entry per slot");
    for (int64_t s = 0; s < c.n_slots; ++s)
      expect(wp[s] < cos.shape(0), "which: table row " + std::to_string(wp[s]) + " out of range");
    const KernelTable& kt = table(isa);
    threads_arg(n_threads);
    py::gil_scoped_release release;
    kv_rotate(kt, c, cp, sp, wp, head_dim, rot_dim, n_threads);
  }, py::arg("cache"), py::arg("scales"), py::arg("kv_dtype"), py::arg("head_dim"), py::arg("cos"),
     py::arg("sin"), py::arg("which"), py::arg("rot_dim"), py::arg("n_threads") = 1, py::arg("isa") = py::none());

  m.def("glu", [](py::array out, py::array gate, py::array up, int n_threads, py::object isa,
                  const std::string& activation) {
    float* op = out_f32(out, "out", 2);
    const float* gp = in_f32(gate, "gate", 2);
    const float* up_ = in_f32(up, "up", 2);
    expect(gate.size() == out.size() && up.size() == out.size(), "gate/up/out: sizes differ");
    const Activation act = activation_arg(activation);
    const KernelTable& kt = table(isa);
    threads_arg(n_threads);
    py::gil_scoped_release release;
    glu(kt, act, op, gp, up_, out.size(), n_threads);
  }, py::arg("out"), py::arg("gate"), py::arg("up"), py::arg("n_threads") = 1, py::arg("isa") = py::none(),
     py::arg("activation") = "silu", "out = activation(gate) * up; activation: 'silu' or 'gelu_tanh'.");

  m.def("add", [](py::array out, py::array a, py::array b, int n_threads, py::object isa, float b_scale) {
    float* op = out_f32(out, "out", 2);
    const float* ap = in_f32(a, "a", 2);
    const float* bp = in_f32(b, "b", 2);
    expect(a.size() == out.size() && b.size() == out.size(), "a/b/out: sizes differ");
    const KernelTable& kt = table(isa);
    threads_arg(n_threads);
    py::gil_scoped_release release;
    add(kt, op, ap, bp, b_scale, out.size(), n_threads);
  }, py::arg("out"), py::arg("a"), py::arg("b"), py::arg("n_threads") = 1, py::arg("isa") = py::none(),
     py::arg("b_scale") = 1.0f, "out = a + b_scale * b.");

  m.def("embed", [](py::array out, py::array table_, py::array ids, const std::string& wtype, py::object isa) {
    const WeightType wt = weight_type(wtype);
    float* op = out_f32(out, "out", 2);
    const int32_t* ip = in_i32(ids, "ids");
    // A quantized table does not carry its width (out's) nor its exact row count: ids
    // are checked against the padded rows, which dequantize to zeros.
    const int64_t T = ids.shape(0);
    const int64_t vocab = quantized(wt) ? table_.shape(0) * wt->block_rows : table_.shape(0);
    const int64_t dim = quantized(wt) ? out.shape(1) : table_.shape(1);
    const void* tp = quantized(wt) ? quant_data(table_, wt, "table", vocab, dim) : weight_data(table_, wt, "table", 2);
    expect(out.shape(0) == T && out.shape(1) == dim, [&] {
      return "out: expected (" + std::to_string(T) + ", " + std::to_string(dim) + "), got " + shape_str(out);
    });
    for (int64_t t = 0; t < T; ++t)
      expect(ip[t] >= 0 && ip[t] < vocab, [&] {
        return "ids: token id " + std::to_string(ip[t]) + " outside the vocabulary [0, " + std::to_string(vocab) + ")";
      });
    const KernelTable& kt = table(isa);
    py::gil_scoped_release release;
    embed(kt, wt, op, tp, ip, T, dim);
  }, py::arg("out"), py::arg("table"), py::arg("ids"), py::arg("wtype"), py::arg("isa") = py::none());

  m.def("formats", [] {
    py::list out;
    for (const WeightFormat& f : weight_formats()) {
      py::dict d;
      d["name"] = f.name;
      d["block_rows"] = f.block_rows;
      d["block_k"] = f.block_k;
      d["block_bytes"] = f.block_bytes;
      d["quantized"] = quantized(&f);
      d["safetensors"] = f.safetensors;
      d["numpy"] = f.numpy;
      d["bits_per_weight"] = 8.0 * double(f.block_bytes) / double(f.block_rows * f.block_k);
      d["gguf_type"] = f.gguf_type;
      out.append(d);
    }
    return out;
  }, "The weight formats the kernels read (csrc/formats.cpp): a matrix [N, K] is stored as "
     "ceil(N / block_rows) row groups of blocks of block_k weights, block_bytes each (see group_bytes).");

  m.def("group_bytes", [](const std::string& format, int64_t K) {
    const WeightType ft = weight_type(format, "format");
    expect(K > 0, "K: must be positive, got " + std::to_string(K));
    return ft->group_bytes(K);
  }, py::arg("format"), py::arg("K"),
     "Bytes of one row group of K weights in the format (K-quants: whole blocks, then a tail block "
     "holding only the sub-blocks of 32 that K needs).");

  m.def("quantize", [](py::array out, py::array w, const std::string& src, const std::string& format,
                       int n_threads, py::object importance) {
    const WeightType st = weight_type(src, "src"), ft = weight_type(format, "format");
    expect(!quantized(st), "src: expected a plain format ('f32', 'bf16' or 'f16'), got '" + src + "'");
    expect(quantized(ft), "format: expected one of " + format_names(true) + ", got '" + format + "'");
    const void* wp = weight_data(w, st, "w", 2);
    const int64_t N = w.shape(0), K = w.shape(1);
    expect(N > 0 && K > 0, "w: empty matrix " + shape_str(w));
    const void* op = quant_data(out, ft, "out", N, K);
    if (!out.writeable()) throw py::value_error("out: array is read-only");
    const float* ip = nullptr;
    py::array imp;
    if (!importance.is_none()) {
      imp = importance.cast<py::array>();
      ip = in_f32(imp, "importance", 1);
      expect(imp.shape(0) == K, "importance: expected " + std::to_string(K) + " values (one per column of w), got " +
                                    shape_str(imp));
      for (int64_t k = 0; k < K; ++k)
        expect(std::isfinite(ip[k]) && ip[k] >= 0.0f,
               "importance: values must be finite and >= 0, got " + std::to_string(ip[k]) + " at " + std::to_string(k));
    }
    threads_arg(n_threads);
    QuantizeStatus st_;
    {
      py::gil_scoped_release release;
      st_ = ft->quantize(const_cast<void*>(op), wp, st, N, K, ip, n_threads);
    }
    return py::make_tuple(st_.non_finite, st_.scale_overflow);
  }, py::arg("out"), py::arg("w"), py::arg("src"), py::arg("format"), py::arg("n_threads") = 1,
     py::arg("importance") = py::none(),
     "Quantize w [N, K] into out (importance [K]: weights of each column's squared error, used by "
     "the K-quants); returns (flat index of the first NaN/Inf, flat index of the first weight whose "
     "block scale overflows fp16), each -1 if none.");

  m.def("dequantize", [](py::array out, py::array w, const std::string& format) {
    const WeightType ft = weight_type(format, "format");
    expect(quantized(ft), "format: expected one of " + format_names(true) + ", got '" + format + "'");
    float* op = out_f32(out, "out", 2);
    const int64_t N = out.shape(0), K = out.shape(1);
    const void* wp = quant_data(w, ft, "w", N, K);
    const KernelTable& kt = active_kernels();
    py::gil_scoped_release release;
    for (int64_t n = 0; n < N; ++n) ft->row_to_f32(kt, op + n * K, wp, n, K);
  }, py::arg("out"), py::arg("w"), py::arg("format"));

  m.def("from_gguf", [](py::array out, py::array blocks, const std::string& format, int64_t N, int64_t K) {
    const WeightType ft = weight_type(format, "format");
    expect(quantized(ft) && ft->from_gguf, "format: expected one of " + format_names(true) + ", got '" + format + "'");
    expect(N > 0 && K > 0, "N, K: must be positive");
    expect(K % ft->gguf_k == 0, "K: GGUF rows hold whole blocks of " + std::to_string(ft->gguf_k) + " weights, got K = " +
                                    std::to_string(K));
    check_layout(blocks, "blocks", 'u', 1, 1);
    const int64_t want = N * ((K + ft->gguf_k - 1) / ft->gguf_k) * ft->gguf_bytes;
    expect(blocks.shape(0) == want, "blocks: expected " + std::to_string(want) + " bytes of GGUF blocks for [" +
                                        std::to_string(N) + ", " + std::to_string(K) + "], got " + shape_str(blocks));
    const void* op = quant_data(out, ft, "out", N, K);
    if (!out.writeable()) throw py::value_error("out: array is read-only");
    py::gil_scoped_release release;
    ft->from_gguf(const_cast<void*>(op), blocks.data(), N, K);
  }, py::arg("out"), py::arg("blocks"), py::arg("format"), py::arg("N"), py::arg("K"),
     "Convert a GGUF tensor [N, K] of the format's GGUF block type (Q8_0, Q4_0, Q4_K, Q5_K, Q6_K; "
     "bytes, rows of blocks) exactly into the format's blocks.");

  m.def("quantize_activations", [](py::array out, py::array x, py::object isa) {
    const float* xp = in_f32(x, "x", 2);
    check_layout(out, "out", 'u', 1, 3);
    const int64_t M = x.shape(0), K = x.shape(1);
    expect(out.shape(0) == M && out.shape(1) == q_blocks(K) && out.shape(2) == int64_t(sizeof(BlockQ8Act)),
           "out: expected (" + std::to_string(M) + ", " + std::to_string(q_blocks(K)) + ", " +
               std::to_string(sizeof(BlockQ8Act)) + "), got " + shape_str(out));
    if (!out.writeable()) throw py::value_error("out: array is read-only");
    auto* op = static_cast<BlockQ8Act*>(out.mutable_data());
    const KernelTable& kt = table(isa);
    py::gil_scoped_release release;
    for (int64_t m = 0; m < M; ++m) kt.quantize_act(op + m * q_blocks(K), xp + m * K, K);
  }, py::arg("out"), py::arg("x"), py::arg("isa") = py::none(),
     "The int8 activation blocks the quantized matmuls use: per block of 32, "
     "(float32 d, float32 dsum = d * (sum[0] + sum[1]), int16 sum[2] (of qs[0:16], qs[16:32]), int8 qs[32]).");

  bind_sampler(m);
  bind_program(m);
}
