// The weight formats the kernels read, in one table (formats.cpp): name, block
// geometry, quantizer and dequantizer, and how a matmul reaches its kernel-table entry.
// Python reads the same table (hearthlm._kernels.formats()), so sizes and names are
// written only here. Adding a format is one entry plus its kernels.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/kernels.h"

namespace hearthlm {

struct WeightFormat;
using WeightType = const WeightFormat*;

struct QuantizeStatus {
  int64_t non_finite = -1;      // flat index of the first NaN/Inf weight, or -1
  int64_t scale_overflow = -1;  // flat index of the first weight whose block scale
                                // exceeds the fp16 range, or -1
};

struct WeightFormat {
  const char* name;
  // A matrix [N, K] is stored as blocks [ceil(N / block_rows), ceil(K / block_k)] of
  // block_bytes each; plain formats have block_rows = block_k = 1 (row-major elements).
  // K-quants cut a row group's last block to the sub-blocks it needs (quant.h), so a
  // row group of K weights takes group_bytes(K) bytes.
  int64_t block_rows, block_k, block_bytes;
  int64_t (*group_bytes)(int64_t K);
  int quant;               // QuantFormat (KernelTable::matmul_q), or -1 for plain floats
  const char* safetensors;  // plain formats: the safetensors dtype used in place
  const char* numpy;        // plain formats: the numpy dtype holding the elements
  // Rows [n0, n1) of y[M, ldy] = x · wᵀ (+ bias): x [M, K] floats, xq its activation
  // blocks (quantized formats).
  void (*matmul)(const KernelTable& kt, float* y, const float* x, const BlockQ8Act* xq, const void* w,
                 const float* bias, int64_t M, int64_t K, int64_t ldy, int64_t n0, int64_t n1);
  // out[K] = row `row` of w [N, K] as float32.
  void (*row_to_f32)(const KernelTable& kt, float* out, const void* w, int64_t row, int64_t K);
  // Quantized formats: out = blocks of w [N, K] stored as `src` (a plain format);
  // importance [K] (or null) weights the squared error of each input column.
  QuantizeStatus (*quantize)(void* out, const void* w, WeightType src, int64_t N, int64_t K,
                             const float* importance, int n_threads);
  // Quantized formats: GGUF's block type that converts exactly (ggml type id, bytes
  // per block of gguf_k weights of one row), and the conversion of a [N, K] tensor of
  // such blocks (rows of ceil(K / gguf_k) blocks) into out.
  int gguf_type;
  int64_t gguf_k, gguf_bytes;
  void (*from_gguf)(void* out, const void* blocks, int64_t N, int64_t K);
};

inline bool quantized(WeightType wt) { return wt->quant >= 0; }
inline int64_t row_blocks(WeightType wt, int64_t N) { return (N + wt->block_rows - 1) / wt->block_rows; }

const std::vector<WeightFormat>& weight_formats();
// The format called `name`, or nullptr.
WeightType find_format(const std::string& name);

}  // namespace hearthlm
