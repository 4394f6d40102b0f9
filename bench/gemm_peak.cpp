// One matmul kernel alone (1 thread, operands hot in cache) against the peak of the
// instruction it is built on, timed alternately in one process by the thread's CPU
// time, so a busy machine slows both sides alike: the int8 kernels (q4, q8) against
// 12 chains of vpdpbusd (avx512) or maddubs+madd+add (avx2), the float ones (bf16,
// f16, f32) against 12 chains of FMA. Prints each round and the median share.
// Built and run by bench/gemm_peak.sh:
//   gemm_peak ISA FORMAT [M N K]     (defaults: M = 256, N = 2048, K = 2048)
#include <time.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "formats.h"
#include "kernels/convert.h"
#include "kernels/kernels.h"
#include "peak_loops.h"

using namespace hearthlm;

namespace {

double cpu_now() {
  timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return double(t.tv_sec) + 1e-9 * double(t.tv_nsec);
}

// Operations per second of a peak loop, by this thread's CPU time.
double rate(long (*loop)()) {
  const double t = cpu_now();
  const long ops = loop();
  return double(ops) / (cpu_now() - t);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s avx512|avx2 q4|q8|bf16|f16|f32 [M N K]\n", argv[0]);
    return 2;
  }
  const bool avx512 = std::strcmp(argv[1], "avx512") == 0;
  const KernelTable& t = avx512 ? *avx512_kernels() : *avx2_kernels();
  const char* name = argv[2];
  const int64_t M = argc > 3 ? std::atol(argv[3]) : 256, N = argc > 4 ? std::atol(argv[4]) : 2048,
                K = argc > 5 ? std::atol(argv[5]) : 2048;
  const WeightType f = find_format(name);
  std::vector<float> w(size_t(N * K)), x(size_t(M * K)), y(size_t(M * N));
  srand(1);
  for (float& v : w) v = float(rand()) / float(RAND_MAX) - 0.5f;
  for (float& v : x) v = float(rand()) / float(RAND_MAX) - 0.5f;
  std::vector<uint8_t> wq;
  std::vector<uint16_t> w16(w.size());
  for (size_t i = 0; i < w.size(); ++i) w16[i] = std::strcmp(name, "f16") == 0 ? float_to_f16(w[i]) : float_to_bf16(w[i]);
  const int64_t nb = q_blocks(K);
  std::vector<BlockQ8Act> xq(size_t(M * nb));
  if (quantized(f)) {
    wq.resize(size_t(row_blocks(f, N) * f->group_bytes(K)));
    f->quantize(wq.data(), w.data(), find_format("f32"), N, K, nullptr, 1);
    for (int64_t m = 0; m < M; ++m) t.quantize_act(xq.data() + m * nb, x.data() + m * K, K);
  }
  auto run = [&] {
    if (quantized(f)) t.matmul_q[f->quant](y.data(), xq.data(), wq.data(), nullptr, M, K, N, 0, N);
    else if (std::strcmp(name, "f32") == 0) t.matmul_f32(y.data(), x.data(), w.data(), nullptr, M, K, N, 0, N);
    else if (std::strcmp(name, "bf16") == 0) t.matmul_bf16(y.data(), x.data(), w16.data(), nullptr, M, K, N, 0, N);
    else t.matmul_f16(y.data(), x.data(), w16.data(), nullptr, M, K, N, 0, N);
  };
  long (*peak)() = quantized(f) ? (avx512 ? peak::int8_vnni512 : peak::int8_avx2)
                                : (avx512 ? peak::fma_avx512 : peak::fma_avx2);
  const char* peak_name = quantized(f) ? (avx512 ? "vpdpbusd" : "maddubs") : "fma";
  std::vector<double> share;
  run();
  for (int r = 0; r < 7; ++r) {
    const double p = rate(peak);
    int reps = 0;
    const double t0 = cpu_now();
    double s;
    do {
      run();
      ++reps;
      s = cpu_now() - t0;
    } while (s < 0.3);
    const double g = 2.0 * double(M * N * K) * reps / s;
    share.push_back(g / p);
    std::printf("round %d: kernel %.1f GOP/s, %s peak %.1f GOP/s: %.1f %%\n", r, g / 1e9, peak_name, p / 1e9, 100 * g / p);
  }
  std::sort(share.begin(), share.end());
  std::printf("%s %s M=%ld N=%ld K=%ld: median %.1f %% of the %s %s peak\n", argv[1], name, long(M), long(N), long(K),
              100 * share[share.size() / 2], argv[1], peak_name);
  return 0;
}
