// NEON kernels for arm64 (Apple Silicon, Graviton, Raspberry Pi 5, ...). NEON is
// mandatory on arm64, so this path needs no extra compiler flags.
#include <arm_neon.h>
#include <math.h>
#include <string.h>

#include "kernels/convert.h"
#include "kernels/kernels.h"

namespace hearthlm {
namespace neon {

#include "kernels/neon/vec_neon.inc"

#include "kernels/simd_kernels.inc"

}  // namespace neon

const KernelTable* neon_kernels() {
  // Quantized kernels: the scalar ones; CPUs with dotprod take the "dotprod" path.
  static const KernelTable table = [] {
    KernelTable t = neon::make_table("neon");
    const KernelTable& s = *scalar_kernels();
    t.quantize_act = s.quantize_act;
    for (int f = 0; f < kQuantFormats; ++f) t.matmul_q[f] = s.matmul_q[f];
    return t;
  }();
  return &table;
}

}  // namespace hearthlm
