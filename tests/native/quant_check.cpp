// The quantized kernels of every ISA path this CPU runs against the scalar twin, bit
// for bit, without Python: for arm64 paths checked under QEMU (KERNELS.md §8).
//
//   S="csrc/dispatch.cpp csrc/cpu_features.cpp csrc/quantize.cpp csrc/kernels/scalar/kernels_scalar.cpp"
//   aarch64-linux-gnu-g++ -O2 -std=c++17 -Icsrc -DHEARTHLM_ARM64=1 -c csrc/kernels/neon/kernels_dotprod.cpp \
//       -march=armv8.2-a+dotprod -o /tmp/dotprod.o
//   aarch64-linux-gnu-g++ -O2 -std=c++17 -Icsrc -DHEARTHLM_ARM64=1 tests/native/quant_check.cpp $S \
//       csrc/kernels/neon/kernels_neon.cpp /tmp/dotprod.o -o /tmp/quant_check
//   qemu-aarch64 -L /usr/aarch64-linux-gnu -cpu max /tmp/quant_check         # scalar, neon, dotprod
//   qemu-aarch64 -L /usr/aarch64-linux-gnu -cpu cortex-a57 /tmp/quant_check  # no dotprod
// On x86, compile kernels_avx2.cpp / kernels_avx512.cpp with their CMake flags and
// -DHEARTHLM_X86=1 instead; an AVX-512 VNNI machine (or Intel SDE) runs the avx512 path.
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "dispatch.h"
#include "quantize.h"

using namespace hearthlm;

void matmul(const KernelTable& t, float* y, const BlockQ8Act* xq, const BlockQ8x8* w,
            const float* bias, int64_t M, int64_t N, int64_t K) {
  t.matmul_q8(y, xq, w, bias, M, K, N, 0, N);
}
void matmul(const KernelTable& t, float* y, const BlockQ8Act* xq, const BlockQ4x8* w,
            const float* bias, int64_t M, int64_t N, int64_t K) {
  t.matmul_q4(y, xq, w, bias, M, K, N, 0, N);
}

template <class Block>
int check(const KernelTable& kt, WeightType fmt, int64_t M, int64_t N, int64_t K, std::mt19937& rng) {
  std::normal_distribution<float> normal;
  std::vector<float> w(N * K), x(M * K);
  for (float& v : w) v = normal(rng);
  for (float& v : x) v = normal(rng);
  for (int64_t k = 0; k < K; ++k) x[k] = 0.0f;  // an all-zero token
  std::vector<Block> wq(q_groups(N) * q_blocks(K));
  quantize_weights(wq.data(), fmt, w.data(), WeightType::f32, N, K, 1);
  const KernelTable& ref = *scalar_kernels();
  std::vector<BlockQ8Act> xa(M * q_blocks(K)), xr(M * q_blocks(K));
  for (int64_t m = 0; m < M; ++m) {
    kt.quantize_act(xa.data() + m * q_blocks(K), x.data() + m * K, K);
    ref.quantize_act(xr.data() + m * q_blocks(K), x.data() + m * K, K);
  }
  std::vector<float> bias(N), ya(M * N), yr(M * N);
  for (float& v : bias) v = normal(rng);
  matmul(kt, ya.data(), xa.data(), wq.data(), bias.data(), M, N, K);
  matmul(ref, yr.data(), xr.data(), wq.data(), bias.data(), M, N, K);
  const bool same_act = std::memcmp(xa.data(), xr.data(), xa.size() * sizeof(BlockQ8Act)) == 0;
  const bool same_y = std::memcmp(ya.data(), yr.data(), ya.size() * sizeof(float)) == 0;
  std::printf("%-8s %s M=%-3lld N=%-3lld K=%-4lld activations %s, y %s\n", kt.isa,
              fmt == WeightType::q8 ? "q8" : "q4", (long long)M, (long long)N, (long long)K,
              same_act ? "equal" : "DIFFER", same_y ? "equal" : "DIFFER");
  return same_act && same_y ? 0 : 1;
}

int main() {
  std::mt19937 rng(0);
  const int64_t sizes[][3] = {{1, 67, 33}, {3, 17, 97}, {7, 33, 67}, {67, 13, 64}, {1, 300, 2100}};
  int failures = 0;
  for (const std::string& isa : supported_isas()) {
    const KernelTable& kt = kernels_for(isa);
    for (const auto& s : sizes) {
      failures += check<BlockQ8x8>(kt, WeightType::q8, s[0], s[1], s[2], rng);
      failures += check<BlockQ4x8>(kt, WeightType::q4, s[0], s[1], s[2], rng);
    }
  }
  std::printf("%s\n", failures ? "FAILED" : "all equal");
  return failures ? 1 : 0;
}
