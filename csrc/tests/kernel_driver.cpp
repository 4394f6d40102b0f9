// Kernel driver: every KernelTable entry of every ISA path this CPU supports, checked
// against the scalar reference on awkward sizes. C++ only (no Python), so it runs on
// foreign CPUs under qemu-user: see tools/arm64_check.sh; natively it is built and
// run by tests/test_kernel_driver.py. Built by tools/build_kernel_driver.sh.
//
//   kernel_driver [--expect-isa NAME] [--isa NAME] [--emulated avx512] [-v]
//
// --expect-isa: fail unless dispatch picks NAME as the best path on this CPU.
// --isa:        check only that path (default: every supported path but scalar, which
//               is the reference; scalar alone when it is the only one).
// --emulated:   check the avx512 table even though the CPU lacks AVX-512: only for a
//               driver built with EMULATE_AVX512=1 (tools/build_kernel_driver.sh).
// Ends with a pytest-like line "N passed, M failed"; exit status 1 if any failed.
//
// A new KernelTable entry needs a check_* function and a line in kChecks (bottom); the
// driver fails while an entry of HEARTHLM_KERNEL_ENTRIES (kernels.h) has none.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "cpu_features.h"
#include "dispatch.h"
#include "kernels/convert.h"
#include "kernels/kernels.h"
#include "ops.h"
#include "quantize.h"

using namespace hearthlm;

namespace {

// ---- bookkeeping -------------------------------------------------------------------

struct Report {
  int passed = 0, failed = 0;
  bool verbose = false;
  // One case: ok, or a line saying which kernel, ISA, sizes and how far off.
  void check(bool ok, const std::string& what, const std::string& detail = "") {
    if (ok) {
      ++passed;
      if (verbose) std::printf("PASS %s\n", what.c_str());
    } else {
      ++failed;
      std::printf("FAIL %s %s\n", what.c_str(), detail.c_str());
    }
  }
};

// Deterministic values in [-1, 1) on every platform (std distributions are not).
struct Rng {
  uint64_t s = 0x9e3779b97f4a7c15ull;
  float next() {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return float((s >> 40) & 0xffffff) / float(1 << 23) - 1.0f;
  }
  std::vector<float> vec(int64_t n, float scale = 1.0f) {
    std::vector<float> v(size_t(n > 0 ? n : 0));
    for (float& x : v) x = next() * scale;
    return v;
  }
};

std::string sizes(std::initializer_list<std::pair<const char*, int64_t>> kv) {
  std::string s = "[";
  for (const auto& p : kv) s += std::string(s.size() > 1 ? " " : "") + p.first + "=" + std::to_string(p.second);
  return s + "]";
}

// got[i] vs ref[i] within tol[i] (NaN only where ref is NaN). Returns "" or a detail.
std::string compare(const float* got, const float* ref, const std::vector<double>& tol, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const bool ok = std::isnan(ref[i]) ? std::isnan(got[i])
                                       : !std::isnan(got[i]) && std::fabs(double(got[i]) - ref[i]) <= tol[size_t(i)];
    if (!ok) {
      char buf[160];
      std::snprintf(buf, sizeof buf, "at %lld: got %.9g, reference %.9g, tolerance %.3g", (long long)i,
                    got[i], ref[i], tol[size_t(i)]);
      return buf;
    }
  }
  return "";
}

std::vector<double> rel_tol(const std::vector<float>& ref, double rel, double abs) {
  std::vector<double> t(ref.size());
  for (size_t i = 0; i < ref.size(); ++i) t[i] = rel * std::fabs(ref[i]) + abs;
  return t;
}

uint16_t to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return uint16_t((u + 0x7fff + ((u >> 16) & 1)) >> 16);
}

uint16_t to_f16(float f) {  // round to nearest even; inputs here are in normal f16 range
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint32_t sign = (u >> 16) & 0x8000;
  const int32_t exp = int32_t((u >> 23) & 0xff) - 127 + 15;
  uint32_t mant = u & 0x7fffff;
  if (exp <= 0) return uint16_t(sign);
  uint32_t h = (uint32_t(exp) << 10) | (mant >> 13);
  const uint32_t rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest == 0x1000 && (h & 1))) ++h;
  return uint16_t(sign | h);
}

// ---- matmul (all weight types) and the threaded ops::matmul ------------------------

struct MatmulCase { int64_t M, N, K; };
const MatmulCase kMatmulCases[] = {{1, 1, 1},  {1, 67, 33}, {1, 5, 130}, {1, 19, 257}, {3, 17, 7},
                                   {4, 8, 16}, {7, 33, 67}, {5, 9, 257}, {67, 65, 17}, {130, 3, 9},
                                   {1, 4, 0},  {3, 5, 0},  {70, 7, 600},  // K = 0: y = bias; K > 2 blocks
                                   // small batches against wide rows: every token tile and ragged ends
                                   {2, 37, 300}, {5, 50, 129}, {8, 19, 64}, {11, 70, 45}, {16, 33, 520},
                                   {32, 21, 70}, {33, 9, 40},  // the last small batch, the first GEMM
                                   {48, 96, 513}, {37, 64, 256}};  // GEMM: whole tiles and panels, K blocks

template <class Wt>
void check_matmul_typed(const char* name, WeightType wt,
                        void (*KernelTable::*entry)(float*, const float*, const Wt*, const float*, int64_t,
                                                    int64_t, int64_t, int64_t, int64_t),
                        Wt (*encode)(float), float (*decode)(Wt), const KernelTable& t,
                        const KernelTable& ref, Report& r) {
  Rng rng;
  for (const MatmulCase& c : kMatmulCases)
    for (int with_bias = 0; with_bias < 2; ++with_bias) {
      const std::vector<float> x = rng.vec(c.M * c.K), w32 = rng.vec(c.N * c.K), bias = rng.vec(c.N);
      std::vector<Wt> w(w32.size());
      for (size_t i = 0; i < w.size(); ++i) w[i] = encode(w32[i]);
      // A sub-range of output columns [n0, n1) into a padded y: the rest must stay untouched.
      const int64_t n0 = c.N > 2 ? 1 : 0, n1 = c.N, ldy = c.N + 3;
      std::vector<float> y(size_t(c.M * ldy), -7.0f), y_ref(y);
      const float* b = with_bias ? bias.data() : nullptr;
      (ref.*entry)(y_ref.data(), x.data(), w.data(), b, c.M, c.K, ldy, n0, n1);
      (t.*entry)(y.data(), x.data(), w.data(), b, c.M, c.K, ldy, n0, n1);
      // Tolerance per output: 1e-5 * sqrt(K) * (sum_k |x w| + 1), for all N columns.
      std::vector<double> tol_full(size_t(c.M * c.N));
      for (int64_t m = 0; m < c.M; ++m)
        for (int64_t n = 0; n < c.N; ++n) {
          double mag = 1.0;
          for (int64_t k = 0; k < c.K; ++k) mag += std::fabs(x[m * c.K + k] * decode(w[n * c.K + k]));
          tol_full[size_t(m * c.N + n)] = 1e-5 * std::sqrt(double(c.K)) * mag;
        }
      std::vector<double> tol(y.size(), 0.0);  // padding and columns < n0: exact (untouched)
      for (int64_t m = 0; m < c.M; ++m)
        for (int64_t n = n0; n < n1; ++n) tol[size_t(m * ldy + n)] = tol_full[size_t(m * c.N + n)];
      const std::string what = std::string(name) + "[" + t.isa + "] " +
                               sizes({{"M", c.M}, {"N", c.N}, {"K", c.K}, {"bias", with_bias}});
      const std::string d = compare(y.data(), y_ref.data(), tol, int64_t(y.size()));
      r.check(d.empty(), what, d);
      // The same product through ops::matmul's thread split (1 and 3 threads).
      for (int threads : {1, 3}) {
        std::vector<float> y_ops(size_t(c.M * c.N), -7.0f), y_ops_ref(y_ops.size());
        (ref.*entry)(y_ops_ref.data(), x.data(), w.data(), b, c.M, c.K, c.N, 0, c.N);
        hearthlm::matmul(t, wt, y_ops.data(), x.data(), w.data(), b, c.M, c.N, c.K, threads);
        const std::string d_ops = compare(y_ops.data(), y_ops_ref.data(), tol_full, int64_t(y_ops.size()));
        r.check(d_ops.empty(), "ops::" + what + " threads=" + std::to_string(threads), d_ops);
      }
    }
}

float f32_id(float v) { return v; }
float bf16_dec(uint16_t v) { return bf16_to_float(v); }
float f16_dec(uint16_t v) { return f16_to_float(v); }

void check_matmul_f32(const KernelTable& t, const KernelTable& ref, Report& r) {
  check_matmul_typed<float>("matmul_f32", find_format("f32"), &KernelTable::matmul_f32, f32_id, f32_id, t, ref, r);
}
void check_matmul_bf16(const KernelTable& t, const KernelTable& ref, Report& r) {
  check_matmul_typed<uint16_t>("matmul_bf16", find_format("bf16"), &KernelTable::matmul_bf16, to_bf16, bf16_dec, t,
                               ref, r);
}
void check_matmul_f16(const KernelTable& t, const KernelTable& ref, Report& r) {
  check_matmul_typed<uint16_t>("matmul_f16", find_format("f16"), &KernelTable::matmul_f16, to_f16, f16_dec, t, ref,
                               r);
}

// ---- norms, RoPE, attention, elementwise -------------------------------------------

const int64_t kSizes[] = {1, 2, 3, 7, 8, 15, 16, 17, 33, 67, 259};

void check_rmsnorm(const KernelTable& t, const KernelTable& ref, Report& r) {
  Rng rng;
  for (int64_t n : kSizes) {
    const std::vector<float> x = rng.vec(n, 3.0f), w = rng.vec(n);
    std::vector<float> out(static_cast<size_t>(n)), out_ref(static_cast<size_t>(n));
    ref.rmsnorm(out_ref.data(), x.data(), w.data(), n, 1e-6f);
    t.rmsnorm(out.data(), x.data(), w.data(), n, 1e-6f);
    const std::string d = compare(out.data(), out_ref.data(), rel_tol(out_ref, 1e-5, 1e-6), n);
    r.check(d.empty(), std::string("rmsnorm[") + t.isa + "] " + sizes({{"n", n}}), d);
  }
}

void check_layernorm(const KernelTable& t, const KernelTable& ref, Report& r) {
  Rng rng;
  for (int64_t n : kSizes) {
    std::vector<float> x = rng.vec(n, 3.0f);
    for (float& v : x) v += 1.0f;  // a non-zero mean
    const std::vector<float> w = rng.vec(n), b = rng.vec(n);
    std::vector<float> out(static_cast<size_t>(n)), out_ref(static_cast<size_t>(n));
    ref.layernorm(out_ref.data(), x.data(), w.data(), b.data(), n, 1e-5f);
    t.layernorm(out.data(), x.data(), w.data(), b.data(), n, 1e-5f);
    const std::string d = compare(out.data(), out_ref.data(), rel_tol(out_ref, 1e-5, 1e-5), n);
    r.check(d.empty(), std::string("layernorm[") + t.isa + "] " + sizes({{"n", n}}), d);
  }
}

void check_rope(const KernelTable& t, const KernelTable& ref, Report& r) {
  struct C { int64_t n_heads, head_dim, rot_dim; };
  Rng rng;
  for (C c : {C{1, 2, 2}, C{3, 22, 22}, C{2, 64, 16}, C{4, 40, 10}, C{2, 130, 130}, C{5, 64, 64}, C{1, 256, 34}}) {
    const int64_t n = c.n_heads * c.head_dim, half = c.rot_dim / 2;
    const std::vector<float> x0 = rng.vec(n, 2.0f);
    std::vector<float> cs(static_cast<size_t>(half)), sn(static_cast<size_t>(half));
    for (int64_t i = 0; i < half; ++i) {
      const double angle = 37.0 * std::pow(10000.0, -2.0 * double(i) / double(c.rot_dim));
      cs[size_t(i)] = float(std::cos(angle));
      sn[size_t(i)] = float(std::sin(angle));
    }
    std::vector<float> x(x0), x_ref(x0);
    ref.rope(x_ref.data(), cs.data(), sn.data(), c.n_heads, c.head_dim, c.rot_dim);
    t.rope(x.data(), cs.data(), sn.data(), c.n_heads, c.head_dim, c.rot_dim);
    const std::string d = compare(x.data(), x_ref.data(), std::vector<double>(size_t(n), 1e-5 * 4), n);
    r.check(d.empty(), std::string("rope[") + t.isa + "] " +
                           sizes({{"heads", c.n_heads}, {"head_dim", c.head_dim}, {"rot_dim", c.rot_dim}}), d);
  }
}

// K/V rows of one kv head in a KV-cache storage type (kernels.h): f32, f16, bf16, or q8
// (rows padded to a multiple of 32 int8 values, one float scale per block of 32),
// written by ops::kv_store, as the cache is.
struct KVStore {
  std::vector<uint8_t> data;
  std::vector<float> scales;
  KVRows rows{nullptr, nullptr, 0};
};

KVStore make_kv(KVType type, const std::vector<float>& x, int64_t n_slots, int64_t head_dim) {
  KVStore s;
  const int64_t stride = type == kKVq8 ? (head_dim + kQ8Block - 1) / kQ8Block * kQ8Block : head_dim;
  s.data.assign(size_t(n_slots * stride * kv_element_bytes(type)), 0);
  s.scales.assign(size_t(n_slots * stride / kQ8Block + 1), 0.0f);
  const KVLayer layer{type, s.data.data(), type == kKVq8 ? s.scales.data() : nullptr, 1, n_slots, stride};
  kv_store(layer, x.data(), n_slots, head_dim, 0);
  s.rows = KVRows{s.data.data(), layer.scales, stride};
  return s;
}

const char* const kKVNames[kKVTypes] = {"f32", "f16", "bf16", "q8"};

void check_attention(const KernelTable& t, const KernelTable& ref, Report& r) {
  // n_t tokens at consecutive positions ending at q_pos (a prefill tile: the earlier
  // tokens see fewer slots), their rows pad floats apart beyond n_q * head_dim.
  struct C { int64_t n_slots, head_dim, n_q; int32_t q_pos, window; bool holes; float softcap; int64_t n_t, pad; };
  const C cases[] = {
      {1, 1, 1, 0, 0, false, 0, 1, 0},     {1, 8, 3, 0, 0, false, 0, 1, 0},   {7, 22, 2, 6, 0, false, 0, 1, 0},
      {63, 64, 4, 62, 0, false, 0, 1, 0},  {64, 64, 8, 63, 0, false, 0, 1, 0}, {65, 17, 1, 64, 0, false, 0, 1, 0},
      {130, 40, 5, 129, 0, true, 0, 1, 0}, {130, 40, 5, 70, 0, false, 0, 1, 0},  // later slots are in the future
      {100, 32, 2, 99, 5, false, 0, 1, 0}, {200, 256, 8, 199, 64, true, 0, 1, 0},
      {50, 16, 3, -1, 0, false, 0, 1, 0},  // q_pos before every slot: nothing visible, output zeros
      {3, 8, 1, 2, 1, false, 0, 1, 0},
      {130, 40, 5, 129, 0, true, 0.5f, 1, 0}, {67, 22, 3, 66, 9, false, 2.0f, 1, 0},  // soft-capped scores
      // tiles of tokens
      {130, 40, 2, 129, 0, true, 0, 16, 3}, {200, 64, 8, 150, 0, false, 0, 4, 0},   {70, 17, 1, 69, 0, false, 0, 32, 1},
      {300, 128, 3, 299, 50, true, 0, 10, 0}, {129, 24, 4, 70, 7, false, 1.5f, 8, 2},  // windows past the block
      {40, 8, 2, 5, 0, false, 0, 12, 0},  // the first tokens see nothing: zeros
      // rows in the vector lanes (n_t > 1, n_t * n_q >= W): row counts of 4..32 (padded to
      // W), key remainders of every size, d vectors past whole P·V tiles and a scalar tail
      {70, 1, 1, 69, 0, false, 0, 4, 0},   {69, 3, 4, 68, 0, true, 0, 2, 1},  {71, 9, 1, 70, 3, false, 0, 17, 2},
      {133, 33, 3, 132, 0, false, 0, 7, 0}, {67, 48, 5, 66, 0, true, 0.8f, 5, 4}, {75, 80, 2, 74, 20, false, 0, 16, 0},
      {256, 256, 8, 255, 0, false, 0, 4, 0}, {190, 112, 16, 120, 0, true, 0, 2, 0}, {64, 20, 1, 63, 0, false, 0, 31, 0},
      {77, 16, 1, 76, 0, false, 0, 8, 0},  {200, 64, 4, 199, 100, false, 0, 8, 3},  // a window ending mid-block
      {140, 24, 2, 10, 0, false, 0, 16, 0},  // positions 0..10 only: later slots unseen, early tokens see one slot
      {300, 64, 8, 299, 0, true, 0, 8, 0}, {129, 40, 3, 128, 30, false, 0, 21, 1},  // 64 and 63 rows
  };
  for (int type = 0; type < kKVTypes; ++type) {
    Rng rng;
    for (const C& c : cases) {
      const int64_t ld = c.n_q * c.head_dim + c.pad;
      const std::vector<float> q = rng.vec(c.n_t * ld, 2.0f), k = rng.vec(c.n_slots * c.head_dim, 2.0f),
                               v = rng.vec(c.n_slots * c.head_dim);
      const KVStore ks = make_kv(KVType(type), k, c.n_slots, c.head_dim);
      const KVStore vs = make_kv(KVType(type), v, c.n_slots, c.head_dim);
      std::vector<int32_t> pos(size_t(c.n_slots)), q_pos(size_t(c.n_t));
      for (int64_t j = 0; j < c.n_slots; ++j) pos[size_t(j)] = c.holes && j % 3 == 1 ? -1 : int32_t(j);
      for (int64_t i = 0; i < c.n_t; ++i) q_pos[size_t(i)] = c.q_pos - int32_t(c.n_t - 1 - i);
      const float scale = 1.0f / std::sqrt(float(c.head_dim));
      std::vector<float> out(size_t(c.n_t * ld), -7.0f), out_ref(out.size(), -7.0f);
      ref.attention[type](out_ref.data(), q.data(), ld, ks.rows, vs.rows, pos.data(), c.n_slots, q_pos.data(), c.n_t,
                          c.window, scale, c.softcap, c.n_q, c.head_dim);
      t.attention[type](out.data(), q.data(), ld, ks.rows, vs.rows, pos.data(), c.n_slots, q_pos.data(), c.n_t,
                        c.window, scale, c.softcap, c.n_q, c.head_dim);
      std::string d =  // the padding between rows untouched too (-7 in both)
          compare(out.data(), out_ref.data(), std::vector<double>(out.size(), 2e-5), int64_t(out.size()));
      // Each row alone (one token, then one head of it) gives the tile's bits exactly, so
      // decode, prefill and verify steps and any split of the heads agree.
      std::vector<float> alone(size_t(c.head_dim * c.n_q));
      auto alone_differs = [&](int64_t i, int64_t g0, int64_t n_q) {
        t.attention[type](alone.data(), q.data() + i * ld + g0 * c.head_dim, c.n_q * c.head_dim, ks.rows, vs.rows,
                          pos.data(), c.n_slots, q_pos.data() + i, 1, c.window, scale, c.softcap, n_q, c.head_dim);
        return std::memcmp(alone.data(), out.data() + i * ld + g0 * c.head_dim, size_t(n_q * c.head_dim) * sizeof(float));
      };
      for (int64_t i = 0; d.empty() && i < c.n_t; ++i) {
        if (alone_differs(i, 0, c.n_q)) d = "token " + std::to_string(i) + " alone differs from its tile's bits";
        for (int64_t g = 0; d.empty() && g < c.n_q; ++g)
          if (alone_differs(i, g, 1))
            d = "token " + std::to_string(i) + ", head " + std::to_string(g) + " alone differs from its tile's bits";
      }
      r.check(d.empty(), std::string("attention_") + kKVNames[type] + "[" + t.isa + "] " +
                             sizes({{"slots", c.n_slots}, {"head_dim", c.head_dim}, {"n_q", c.n_q},
                                    {"q_pos", c.q_pos}, {"window", c.window}, {"holes", c.holes},
                                    {"softcap", int64_t(c.softcap * 10)}, {"tokens", c.n_t}, {"pad", c.pad}}), d);
    }
  }
}

void check_glu(const char* name, void (*KernelTable::*entry)(float*, const float*, const float*, int64_t),
               const KernelTable& t, const KernelTable& ref, Report& r) {
  Rng rng;
  for (int64_t n : kSizes) {
    std::vector<float> gate = rng.vec(n, 12.0f);
    if (n > 3) gate[0] = -100.0f, gate[1] = 100.0f, gate[2] = 0.0f;  // saturation and zero
    const std::vector<float> up = rng.vec(n, 2.0f);
    std::vector<float> out(static_cast<size_t>(n)), out_ref(static_cast<size_t>(n));
    (ref.*entry)(out_ref.data(), gate.data(), up.data(), n);
    (t.*entry)(out.data(), gate.data(), up.data(), n);
    const std::string d = compare(out.data(), out_ref.data(), rel_tol(out_ref, 1e-5, 1e-6), n);
    r.check(d.empty(), std::string(name) + "[" + t.isa + "] " + sizes({{"n", n}}), d);
  }
}

void check_swiglu(const KernelTable& t, const KernelTable& ref, Report& r) {
  check_glu("swiglu", &KernelTable::swiglu, t, ref, r);
}

void check_gelu_tanh_glu(const KernelTable& t, const KernelTable& ref, Report& r) {
  check_glu("gelu_tanh_glu", &KernelTable::gelu_tanh_glu, t, ref, r);
}

void check_add(const KernelTable& t, const KernelTable& ref, Report& r) {
  Rng rng;
  for (int64_t n : kSizes) {
    const std::vector<float> a = rng.vec(n), b = rng.vec(n);
    std::vector<float> out(static_cast<size_t>(n)), out_ref(static_cast<size_t>(n));
    for (float s : {1.0f, 0.22f}) {  // b_scale 1 is exact (a fused multiply-add by 1 rounds once)
      ref.add(out_ref.data(), a.data(), b.data(), s, n);
      t.add(out.data(), a.data(), b.data(), s, n);
      const std::string d = compare(out.data(), out_ref.data(), s == 1.0f ? std::vector<double>(size_t(n), 0.0)
                                                                          : rel_tol(out_ref, 1e-6, 1e-7), n);
      r.check(d.empty(), std::string("add[") + t.isa + "] " + sizes({{"n", n}, {"b_scale_x100", int64_t(s * 100)}}), d);
    }
  }
}

// Every one of the 65536 16-bit patterns (inf, NaN, subnormals, ±0), bit-exact except
// that a NaN only has to stay a NaN; then odd lengths for the tails.
void check_widen(const char* name, void (*KernelTable::*entry)(float*, const uint16_t*, int64_t),
                 const KernelTable& t, const KernelTable& ref, Report& r) {
  std::vector<uint16_t> all(65536 + 5);
  for (size_t i = 0; i < all.size(); ++i) all[i] = uint16_t(i * 40503u);  // odd multiplier: a permutation
  for (int64_t n : {int64_t(all.size()), int64_t(1), int64_t(7), int64_t(17), int64_t(33)}) {
    std::vector<float> out(static_cast<size_t>(n)), out_ref(static_cast<size_t>(n));
    (ref.*entry)(out_ref.data(), all.data(), n);
    (t.*entry)(out.data(), all.data(), n);
    std::string d;
    for (int64_t i = 0; i < n && d.empty(); ++i) {
      const bool both_nan = std::isnan(out[size_t(i)]) && std::isnan(out_ref[size_t(i)]);
      if (!both_nan && std::memcmp(&out[size_t(i)], &out_ref[size_t(i)], 4) != 0)
        d = "pattern 0x" + std::to_string(all[size_t(i)]) + " differs";
    }
    r.check(d.empty(), std::string(name) + "[" + t.isa + "] " + sizes({{"n", n}}), d);
  }
}

void check_bf16_to_f32(const KernelTable& t, const KernelTable& ref, Report& r) {
  check_widen("bf16_to_f32", &KernelTable::bf16_to_f32, t, ref, r);
}
void check_f16_to_f32(const KernelTable& t, const KernelTable& ref, Report& r) {
  check_widen("f16_to_f32", &KernelTable::f16_to_f32, t, ref, r);
}

// ---- quantized: activation blocks and every format's matmul, bit for bit against scalar ----

void check_matmul_q(const KernelTable& t, const KernelTable& ref, Report& r) {
  const int64_t shapes[][3] = {{1, 67, 33}, {3, 17, 97}, {7, 33, 67}, {67, 13, 64}, {1, 300, 2100},
                               {2, 8, 32},  {5, 24, 513}, {4, 9, 256}, {9, 41, 800},
                               // small batches: every token tile, odd row-group counts, ragged last group
                               {8, 40, 96}, {16, 57, 64}, {6, 16, 1056}, {11, 23, 33}, {13, 64, 200},
                               {15, 31, 288}, {17, 48, 130}, {3, 19, 576},
                               // around and past the prefill-panel threshold (M > 32): every token-tile remainder,
                               // several K chunks with a tail, lone last row groups, more than one row chunk
                               {33, 40, 2080}, {257, 24, 96}, {29, 17, 4100}, {18, 32, 64}, {31, 9, 160},
                               {37, 16, 64}, {46, 8, 64}, {47, 16, 96}, {20, 16, 32}, {40, 8, 64}, {26, 16, 33},
                               {27, 8, 64}, {35, 100, 300}, {36, 24, 544}, {38, 50, 1000}, {32, 40, 600},
                               // AMX (from 512 tokens), token tiles of 16: remainders past a full tile,
                               // a lone last row group, K chunks of 8 blocks with a tail, and blocks
                               // left over from groups of 4
                               {512, 40, 100}, {515, 40, 100}, {517, 40, 100}, {518, 40, 100},
                               {519, 40, 100}, {520, 40, 100}, {521, 40, 100}, {524, 40, 100},
                               {526, 40, 100}, {530, 8, 288}, {545, 24, 330}, {528, 16, 600}};
  for (const WeightFormat& f : weight_formats()) {
    if (!quantized(&f)) continue;
    Rng rng;
    for (const auto& s : shapes) {
      const int64_t M = s[0], N = s[1], K = s[2], nb = q_blocks(K);
      const std::vector<float> w = rng.vec(N * K, 2.0f), bias = rng.vec(N);
      std::vector<float> x = rng.vec(M * K, 3.0f);
      for (int64_t k = 0; k < K; ++k) x[size_t(k)] = 0.0f;  // an all-zero token
      std::vector<uint8_t> wq(size_t(row_blocks(&f, N) * f.group_bytes(K)));  // K-quants: tail blocks past 256
      f.quantize(wq.data(), w.data(), find_format("f32"), N, K, nullptr, 1);
      std::vector<BlockQ8Act> xa(size_t(M * nb)), xr(size_t(M * nb));
      for (int64_t m = 0; m < M; ++m) {
        t.quantize_act(xa.data() + m * nb, x.data() + m * K, K);
        ref.quantize_act(xr.data() + m * nb, x.data() + m * K, K);
      }
      std::vector<float> ya(size_t(M * N), -7.0f), yr(ya.size(), -7.0f);
      t.matmul_q[f.quant](ya.data(), xa.data(), wq.data(), bias.data(), M, K, N, 0, N);
      ref.matmul_q[f.quant](yr.data(), xr.data(), wq.data(), bias.data(), M, K, N, 0, N);
      const std::string what = std::string("matmul_q[") + f.name + "][" + t.isa + "] " +
                               sizes({{"M", M}, {"N", N}, {"K", K}});
      r.check(std::memcmp(xa.data(), xr.data(), xa.size() * sizeof(BlockQ8Act)) == 0,
              "quantize_act for " + what, "activation blocks differ from scalar");
      r.check(std::memcmp(ya.data(), yr.data(), ya.size() * sizeof(float)) == 0, what,
              "not bit-identical to scalar");
      std::vector<float> y_ops(ya.size(), -7.0f);  // through ops::matmul's thread split
      hearthlm::matmul(t, &f, y_ops.data(), x.data(), wq.data(), bias.data(), M, N, K, 3);
      r.check(std::memcmp(y_ops.data(), yr.data(), ya.size() * sizeof(float)) == 0, "ops::" + what + " threads=3",
              "not bit-identical to scalar");
    }
  }
}

// ---- the list: one line per KernelTable entry. Add new kernels here. ---------------

struct Check {
  const char* entries;  // the KernelTable members it covers, space-separated
  void (*run)(const KernelTable& t, const KernelTable& ref, Report& r);
};
const Check kChecks[] = {
    {"matmul_f32", check_matmul_f32},   {"matmul_bf16", check_matmul_bf16},
    {"matmul_f16", check_matmul_f16},   {"rmsnorm", check_rmsnorm},
    {"layernorm", check_layernorm},     {"rope", check_rope},
    {"attention", check_attention},     {"swiglu", check_swiglu},
    {"gelu_tanh_glu", check_gelu_tanh_glu}, {"add", check_add},
    {"bf16_to_f32", check_bf16_to_f32}, {"f16_to_f32", check_f16_to_f32},
    {"quantize_act matmul_q", check_matmul_q},
};

bool covered(const std::string& entry) {
  for (const Check& c : kChecks)
    if ((" " + std::string(c.entries) + " ").find(" " + entry + " ") != std::string::npos) return true;
  return false;
}

// Dispatch's null check: a complete table passes, and a copy of it with any one entry
// null is refused with an error naming the ISA and that entry.
void check_null_entries(const KernelTable& ref, Report& r) {
  bool complete = true;
  try {
    check_kernel_table(ref, ref.isa);
  } catch (const std::exception& e) {
    complete = false;
    r.check(false, std::string("check_kernel_table(") + ref.isa + ")", e.what());
  }
  if (complete) r.check(true, std::string("check_kernel_table(") + ref.isa + ")");
  for_each_entry(ref, [&](const char* name, int slot, const auto&) {
    KernelTable t = ref;
    for_each_entry(t, [&](const char* n, int s, auto& entry) {
      if (std::strcmp(n, name) == 0 && s == slot) entry = nullptr;
    });
    const std::string what = "null " + std::string(name) + "[" + std::to_string(slot) + "] refused";
    try {
      check_kernel_table(t, ref.isa);
      r.check(false, what, "accepted");
    } catch (const std::logic_error& e) {
      const std::string msg = e.what();
      r.check(msg.find(std::string("'") + ref.isa + "'") != std::string::npos &&
                  msg.find(std::string(" ") + name + (slot < 0 ? " " : "[")) != std::string::npos,
              what, "message: " + msg);
    }
  });
}

}  // namespace

int main(int argc, char** argv) {
  std::string expect_isa, only_isa, emulated;
  Report r;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--expect-isa" && i + 1 < argc) expect_isa = argv[++i];
    else if (a == "--isa" && i + 1 < argc) only_isa = argv[++i];
    else if (a == "--emulated" && i + 1 < argc) emulated = argv[++i];
    else if (a == "-v") r.verbose = true;
    else {
      std::fprintf(stderr, "usage: %s [--expect-isa NAME] [--isa NAME] [--emulated avx512] [-v]\n", argv[0]);
      return 2;
    }
  }

  const CpuFeatures& f = cpu_features();
  std::string compiled, supported;
  for (const std::string& s : compiled_isas()) compiled += " " + s;
  for (const std::string& s : supported_isas()) supported += " " + s;
  std::printf("cpu features: sse4.2=%d avx2=%d fma=%d f16c=%d avx512f=%d avx512bw=%d avx512vl=%d avx512dq=%d "
              "neon=%d dotprod=%d i8mm=%d\n",
              f.sse42, f.avx2, f.fma, f.f16c, f.avx512f, f.avx512bw, f.avx512vl, f.avx512dq, f.neon, f.dotprod,
              f.i8mm);
  std::printf("compiled:%s\nsupported:%s\ndispatch picks: %s\n", compiled.c_str(), supported.c_str(),
              active_kernels().isa);
  if (!expect_isa.empty())
    r.check(expect_isa == active_kernels().isa, "dispatch picks " + expect_isa,
            std::string("(picked ") + active_kernels().isa + ")");

  std::vector<std::string> isas;
  if (!emulated.empty()) {
    isas.push_back(emulated);
  } else if (!only_isa.empty()) {
    isas.push_back(only_isa);
  } else {
    for (const std::string& s : supported_isas())
      if (s != "scalar") isas.push_back(s);
    if (isas.empty()) isas.push_back("scalar");  // still exercises the reference and ops
  }

  const KernelTable& ref = kernels_for("scalar");
  for (const std::string& isa : isas) {
    const KernelTable* t = nullptr;
    try {
#if defined(HEARTHLM_X86)
      if (isa == emulated && isa == "avx512") t = avx512_kernels();  // built for this CPU by SIMDe
#endif
      if (!t) t = &kernels_for(isa);
    } catch (const std::exception& e) {
      r.check(false, "select " + isa, e.what());
      continue;
    }
    std::printf("checking %s against scalar\n", t->isa);
    for (const Check& c : kChecks) c.run(*t, ref, r);
  }

  check_null_entries(ref, r);
  for_each_entry(ref, [&](const char* name, int slot, const auto&) {
    if (slot <= 0) r.check(covered(name), std::string("kChecks covers ") + name, "add a check_* for it");
  });

  std::printf("%d passed, %d failed\n", r.passed, r.failed);
  return r.failed ? 1 : 0;
}
