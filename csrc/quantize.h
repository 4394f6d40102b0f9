// The quantizers, dequantizers and GGUF block converters of the quantized formats
// (layouts in kernels/quant.h), referenced by the format table (formats.cpp). They run
// once per tensor at load or export, so they are plain C++ threaded with OpenMP, not
// per ISA. q8 / q4 follow quant.h's fixed rules; q4k / q5k / q6k search their scales (and
// mins) for the least weighted squared error.
#pragma once
#include <cstdint>

#include "formats.h"

namespace hearthlm {

// out: the format's blocks; w: [N, K] stored as `src` (f32, bf16 or f16); importance
// [K] or null. Padding rows and columns are written as zeros.
QuantizeStatus quantize_q8(void* out, const void* w, WeightType src, int64_t N, int64_t K,
                           const float* importance, int n_threads);
QuantizeStatus quantize_q4(void* out, const void* w, WeightType src, int64_t N, int64_t K,
                           const float* importance, int n_threads);
QuantizeStatus quantize_q4k(void* out, const void* w, WeightType src, int64_t N, int64_t K,
                            const float* importance, int n_threads);
QuantizeStatus quantize_q5k(void* out, const void* w, WeightType src, int64_t N, int64_t K,
                            const float* importance, int n_threads);
QuantizeStatus quantize_q6k(void* out, const void* w, WeightType src, int64_t N, int64_t K,
                            const float* importance, int n_threads);

// out[K] = row `row` of a quantized [N, K] weight, as float32.
void dequantize_row_q8(float* out, const void* w, int64_t row, int64_t K);
void dequantize_row_q4(float* out, const void* w, int64_t row, int64_t K);
void dequantize_row_q4k(float* out, const void* w, int64_t row, int64_t K);
void dequantize_row_q5k(float* out, const void* w, int64_t row, int64_t K);
void dequantize_row_q6k(float* out, const void* w, int64_t row, int64_t K);

// GGUF Q8_0 / Q4_0 / Q4_K / Q5_K / Q6_K blocks of a [N, K] tensor -> the format's blocks.
void from_gguf_q8(void* out, const void* blocks, int64_t N, int64_t K);
void from_gguf_q4(void* out, const void* blocks, int64_t N, int64_t K);
void from_gguf_q4k(void* out, const void* blocks, int64_t N, int64_t K);
void from_gguf_q5k(void* out, const void* blocks, int64_t N, int64_t K);
void from_gguf_q6k(void* out, const void* blocks, int64_t N, int64_t K);

}  // namespace hearthlm
