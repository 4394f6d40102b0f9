// Weight quantization to q8 / q4 (formats in kernels/quant.h). Runs once per tensor
// at load or export, so it is plain C++ threaded with OpenMP, not per ISA.
#pragma once
#include <cstdint>

#include "ops.h"

namespace hearthlm {

struct QuantizeStatus {
  int64_t non_finite = -1;      // flat index of the first NaN/Inf weight, or -1
  int64_t scale_overflow = -1;  // flat index of the first weight whose block scale
                                // exceeds the fp16 range (|w| >~ 8.3e6 for q8), or -1
};

// out: [ceil(N/8), ceil(K/32)] superblocks of `format` (q8 or q4); w: [N, K] stored as
// `src` (f32, bf16 or f16). Padding rows and columns are written as zeros.
QuantizeStatus quantize_weights(void* out, WeightType format, const void* w, WeightType src,
                                int64_t N, int64_t K, int n_threads);

// out[K] = row `row` of a quantized [N, K] weight, as float32 (d·q).
void dequantize_row(float* out, const void* w, WeightType format, int64_t row, int64_t K);

}  // namespace hearthlm
