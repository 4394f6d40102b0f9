"""Float GEMM variants against the library's, interleaved in one process (1 thread, by
CPU time): each variant file (bench/gemm_variants/*.inc) defines gemm<WL>(y, x, w, bias,
M, K, ldy, n0, n1) like csrc/kernels/simd_kernels.inc and is compiled into its own
namespace beside the library's AVX-512 (or --avx2) kernels; "main" is the library's own
GEMM. Every round times one pass over all N rows, in calls of --rows rows (as ops.cpp's
tasks would), for each variant in turn; prints the median GOP/s of each and its ratio
to main's, beside the best of the f32 FMA peak loop.

    python bench/gemm_variants.py [--avx2] [--type bf16|f16|f32] [--seconds 8]
        [--M 256 --N 2048 --K 2048 --rows 256] bench/gemm_variants/blis_xtile.inc ...
"""
import argparse
import glob
import os
import subprocess
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAIN_START, MAIN_END = "// GEMM (M > 1), BLIS-style", "// How far ahead of its loads the GEMV"


def main_gemm() -> str:
    """The library's GEMM: its constants, pack_panels, gemm_tile and gemm."""
    src = open(os.path.join(ROOT, "csrc", "kernels", "simd_kernels.inc")).read()
    return src[src.index(MAIN_START):src.index(MAIN_END)]


def program(isa: str, wtype: str, n_variants: int) -> str:
    load = {"bf16": "LoadBF16", "f16": "LoadF16", "f32": "LoadF32"}[wtype]
    weights = "w.data()" if wtype == "f32" else "w16.data()"
    calls = "\n".join(f"    case {i}: var{i}::gemm<{load}>(y.data(), x.data(), {weights}, nullptr, M, K, N, n0, n1); break;"
                      for i in range(n_variants))
    return f"""
using namespace hearthlm;
using namespace hearthlm::{isa};
static double cpu_now() {{ timespec t; clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }}
int main(int argc, char** argv) {{
  const int64_t M = atol(argv[1]), N = atol(argv[2]), K = atol(argv[3]), rows = atol(argv[4]);
  const double seconds = atof(argv[5]);
  std::vector<float> w(size_t(N * K)), x(size_t(M * K)), y(size_t(M * N));
  srand(1);
  for (float& v : w) v = float(rand()) / float(RAND_MAX) - 0.5f;
  for (float& v : x) v = float(rand()) / float(RAND_MAX) - 0.5f;
  std::vector<uint16_t> w16(w.size());
  for (size_t i = 0; i < w.size(); ++i) w16[i] = {"float_to_f16" if wtype == "f16" else "float_to_bf16"}(w[i]);
  auto call = [&](int v, int64_t n0, int64_t n1) {{
    switch (v) {{
{calls}
    }}
  }};
  const int NV = {n_variants};
  std::vector<std::vector<double>> gops(NV);
  std::vector<double> err(NV, 0.0);
  for (int v = 0; v < NV; ++v) {{  // each against float64 sums of the same inputs
    for (int64_t n = 0; n < N; n += rows) call(v, n, std::min(N, n + rows));
    for (int64_t m = 0; m < M; m += 37)
      for (int64_t n = 0; n < N; n += 13) {{
        double s = 0;
        for (int64_t k = 0; k < K; ++k) s += double(x[m * K + k]) * double({"w[n * K + k]" if wtype == "f32" else ("f16_to_float(w16[n * K + k])" if wtype == "f16" else "bf16_to_float(w16[n * K + k])")});
        err[v] = std::max(err[v], std::fabs(s - y[m * N + n]) / (1.0 + std::fabs(s)));
      }}
  }}
  long (*volatile peak_loop)() = peak::fma_{isa};  // called, not inlined (inlined it can read lower)
  double peak = 0;
  for (const double end = cpu_now() + seconds; cpu_now() < end;) {{
    double t = cpu_now();
    const long ops = peak_loop();
    peak = std::max(peak, ops / (cpu_now() - t));
    for (int v = 0; v < NV; ++v) {{
      t = cpu_now();
      for (int64_t n = 0; n < N; n += rows) call(v, n, std::min(N, n + rows));
      gops[v].push_back(2.0 * M * N * K / (cpu_now() - t) / 1e9);
    }}
  }}
  std::printf("peak %.1f GOP/s (best of the FMA loop)\\n", peak / 1e9);
  for (int v = 0; v < NV; ++v) {{
    std::sort(gops[v].begin(), gops[v].end());
    gops[v].push_back(gops[v][gops[v].size() / 2]);
  }}
  for (int v = 0; v < NV; ++v)
    std::printf("%d %.1f %.2f %.3f %.2g %zu\\n", v, gops[v].back(), 100 * gops[v].back() * 1e9 / peak,
                gops[v].back() / gops[0].back(), err[v], gops[v].size() - 1);
}}
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("variants", nargs="*")
    p.add_argument("--avx2", action="store_true")
    p.add_argument("--type", default="bf16", choices=["bf16", "f16", "f32"])
    p.add_argument("--M", type=int, default=256)
    p.add_argument("--N", type=int, default=2048)
    p.add_argument("--K", type=int, default=2048)
    p.add_argument("--rows", type=int, default=256, help="weight rows per call")
    p.add_argument("--seconds", type=float, default=8.0)
    a = p.parse_args()
    isa = "avx2" if a.avx2 else "avx512"
    objdir = os.path.join(ROOT, "build", "gemm-peak")
    os.makedirs(objdir, exist_ok=True)
    subprocess.run([os.path.join(ROOT, "tools", "build_kernel_driver.sh"), os.path.join(objdir, "kernel_driver")],
                   check=True, capture_output=True, env={**os.environ, "BASE_FLAGS": "-O3 -DNDEBUG"})
    objs = [o for o in sorted(glob.glob(os.path.join(objdir, "kernel_driver.objs", "*.o")))
            if not o.endswith(("kernel_driver.o", f"{isa}_kernels_{isa}.o"))]
    with tempfile.TemporaryDirectory() as tmp:
        names = ["main"] + [os.path.basename(v) for v in a.variants]
        bodies = [main_gemm()] + [open(v).read() for v in a.variants]
        src = ["#include <time.h>", "#include <algorithm>", "#include <cmath>", "#include <cstdio>", "#include <cstdlib>",
               "#include <vector>", f'#include "kernels/{isa}/kernels_{isa}.cpp"', '#include "peak_loops.h"']
        for i, body in enumerate(bodies):  # inner names hide the library's own
            src += [f"namespace hearthlm {{ namespace {isa} {{ namespace var{i} {{", body, "}}}"]
        cpp, exe = os.path.join(tmp, "variants.cpp"), os.path.join(tmp, "variants")
        open(cpp, "w").write("\n".join(src) + program(isa, a.type, len(bodies)))
        flags = (["-mavx2", "-mfma", "-mf16c"] if a.avx2 else
                 "-mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni -mavx2 -mfma -mf16c".split())
        subprocess.run(["g++", "-std=c++17", "-O3", "-DNDEBUG", "-DHEARTHLM_X86=1", "-fopenmp", "-fno-math-errno", *flags,
                        f"-I{ROOT}/csrc", f"-I{ROOT}/bench", cpp, *objs, "-o", exe, "-lm"], check=True)
        print(f"load average before: {os.getloadavg()[0]:.2f}; {isa} {a.type} M={a.M} N={a.N} K={a.K}, "
              f"{a.rows} rows per call")
        out = subprocess.run([exe, str(a.M), str(a.N), str(a.K), str(a.rows), str(a.seconds)],
                             check=True, capture_output=True, text=True).stdout.splitlines()
    print(out[0])
    for line in out[1:]:
        i, g, share, ratio, err, n = line.split()
        print(f"{names[int(i)]:<20} median {float(g):6.1f} GOP/s = {float(share):5.1f} % of the peak   "
              f"x{float(ratio):.3f} of main   max rel. error {float(err):.1e}   ({n} passes)")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
