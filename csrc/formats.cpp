#include "formats.h"

#include <cstring>

#include "quantize.h"

namespace hearthlm {
namespace {

// Plain formats: row-major elements, the kernel table's float matmuls.
template <class T, void (*KernelTable::*Entry)(float*, const float*, const T*, const float*, int64_t,
                                                int64_t, int64_t, int64_t, int64_t)>
void plain_matmul(const KernelTable& kt, float* y, const float* x, const BlockQ8Act*, const void* w,
                  const float* bias, int64_t M, int64_t K, int64_t ldy, int64_t n0, int64_t n1) {
  (kt.*Entry)(y, x, static_cast<const T*>(w), bias, M, K, ldy, n0, n1);
}

void f32_row(const KernelTable&, float* out, const void* w, int64_t row, int64_t K) {
  std::memcpy(out, static_cast<const float*>(w) + row * K, size_t(K) * sizeof(float));
}
template <void (*KernelTable::*Widen)(float*, const uint16_t*, int64_t)>
void half_row(const KernelTable& kt, float* out, const void* w, int64_t row, int64_t K) {
  (kt.*Widen)(out, static_cast<const uint16_t*>(w) + row * K, K);
}

// Bytes of a row group of K weights: whole blocks (plain formats: elements, q8 / q4:
// blocks of 32), or the K-quants' blocks and tail block.
template <int64_t Bytes> int64_t elements_bytes(int64_t K) { return K * Bytes; }
template <class Block> int64_t blocks_bytes(int64_t K) { return q_blocks(K) * int64_t(sizeof(Block)); }

// Quantized formats: KernelTable::matmul_q[Q] on the activation blocks.
template <int Q>
void quant_matmul(const KernelTable& kt, float* y, const float*, const BlockQ8Act* xq, const void* w,
                  const float* bias, int64_t M, int64_t K, int64_t ldy, int64_t n0, int64_t n1) {
  kt.matmul_q[Q](y, xq, w, bias, M, K, ldy, n0, n1);
}
template <void (*Dequantize)(float*, const void*, int64_t, int64_t)>
void quant_row(const KernelTable&, float* out, const void* w, int64_t row, int64_t K) {
  Dequantize(out, w, row, K);
}

}  // namespace

const std::vector<WeightFormat>& weight_formats() {
  static const std::vector<WeightFormat> table = {
      // name, block rows, k, bytes, group bytes, quant, safetensors, numpy, matmul, row_to_f32,
      // quantize, GGUF type, k, bytes, converter
      {"f32", 1, 1, 4, elements_bytes<4>, -1, "F32", "<f4", plain_matmul<float, &KernelTable::matmul_f32>,
       f32_row, nullptr, 0, 1, 4, nullptr},
      {"bf16", 1, 1, 2, elements_bytes<2>, -1, "BF16", "<u2", plain_matmul<uint16_t, &KernelTable::matmul_bf16>,
       half_row<&KernelTable::bf16_to_f32>, nullptr, 30, 1, 2, nullptr},
      {"f16", 1, 1, 2, elements_bytes<2>, -1, "F16", "<f2", plain_matmul<uint16_t, &KernelTable::matmul_f16>,
       half_row<&KernelTable::f16_to_f32>, nullptr, 1, 1, 2, nullptr},
      {"q8", kQRows, kQBlock, sizeof(BlockQ8x8), blocks_bytes<BlockQ8x8>, kQ8, "", "", quant_matmul<kQ8>,
       quant_row<dequantize_row_q8>, quantize_q8, 8, kQBlock, 34, from_gguf_q8},
      {"q4", kQRows, kQBlock, sizeof(BlockQ4x8), blocks_bytes<BlockQ4x8>, kQ4, "", "", quant_matmul<kQ4>,
       quant_row<dequantize_row_q4>, quantize_q4, 2, kQBlock, 18, from_gguf_q4},
      {"q4k", kQRows, kKBlock, sizeof(BlockQ4Kx8), k_group_bytes<BlockQ4Kx8>, kQ4K, "", "", quant_matmul<kQ4K>,
       quant_row<dequantize_row_q4k>, quantize_q4k, 12, kKBlock, 144, from_gguf_q4k},
      {"q5k", kQRows, kKBlock, sizeof(BlockQ5Kx8), k_group_bytes<BlockQ5Kx8>, kQ5K, "", "", quant_matmul<kQ5K>,
       quant_row<dequantize_row_q5k>, quantize_q5k, 13, kKBlock, 176, from_gguf_q5k},
      {"q6k", kQRows, kKBlock, sizeof(BlockQ6Kx8), k_group_bytes<BlockQ6Kx8>, kQ6K, "", "", quant_matmul<kQ6K>,
       quant_row<dequantize_row_q6k>, quantize_q6k, 14, kKBlock, 210, from_gguf_q6k},
  };
  return table;
}

WeightType find_format(const std::string& name) {
  for (const WeightFormat& f : weight_formats())
    if (name == f.name) return &f;
  return nullptr;
}

}  // namespace hearthlm
