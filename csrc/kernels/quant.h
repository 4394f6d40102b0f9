// Quantized weight formats q8 and q4, and the int8 activation blocks they multiply.
//
// Both formats cut every weight row into blocks of 32 consecutive k, each with one
// fp16 scale d, and store w ≈ d·q:
//   q8: q in [-127, 127], d = amax / 127                    34 bytes per 32 weights (8.5 bpw)
//   q4: q in [-8, 7], d = m / -8, m = the element of largest |w| (first if tied), so m
//       itself maps to -8 exactly (ggml's Q4_0 rule)        18 bytes per 32 weights (4.5 bpw)
// q = round-half-even(w / d) computed as w * (1 / d) with d already rounded to fp16,
// clamped to the range; an all-zero block has d = 0 and q = 0.
//
// Layout (the same in memory and in hearthlm's quantized safetensors files): rows are
// interleaved in groups of 8 so a GEMV reads one linear stream and each 32-bit lane
// of a 256-bit register is one output row. W [N, K] becomes
//   superblocks [ceil(N/8)][ceil(K/32)]   (row group major, then k block)
// Rows past N and k past K are padding: q = 0 (scale 0 for padded rows).
#pragma once
#include <cstdint>

namespace hearthlm {

constexpr int64_t kQBlock = 32;  // weights per scale, along K
constexpr int64_t kQRows = 8;    // rows interleaved per superblock

// q8: qs[g*32 + r*4 + i] = q[row r][k = 4g + i] for g = 0..7, i = 0..3.
struct BlockQ8x8 {
  uint16_t d[kQRows];  // fp16 scale of each row's block
  int8_t qs[kQRows * kQBlock];
};
static_assert(sizeof(BlockQ8x8) == kQRows * 34, "q8 is 34 bytes per 32 weights");

// q4: byte qs[c*32 + r*4 + i] for c = 0..3 holds row r's k = 4c + i in its low nibble
// and k = 16 + 4c + i in its high nibble, each as the unsigned value q + 8 in [0, 15].
struct BlockQ4x8 {
  uint16_t d[kQRows];
  uint8_t qs[kQRows * kQBlock / 2];
};
static_assert(sizeof(BlockQ4x8) == kQRows * 18, "q4 is 18 bytes per 32 weights");

// Activations, quantized on the fly per block of 32: d = amax / 127 (0 for an all-zero
// block), qs = round-half-even(x * (1 / d)) in [-127, 127], sum = Σ qs (for q4's +8 offset).
struct BlockQ8Act {
  float d;
  int32_t sum;
  int8_t qs[kQBlock];
};
static_assert(sizeof(BlockQ8Act) == 40, "activation block is 40 bytes");

static inline int64_t q_blocks(int64_t K) { return (K + kQBlock - 1) / kQBlock; }
static inline int64_t q_groups(int64_t N) { return (N + kQRows - 1) / kQRows; }

// The integer value of row r (0..7), column k (0..31) of one superblock.
static inline int q_value(const BlockQ8x8& b, int r, int k) {
  return b.qs[(k >> 2) * 32 + r * 4 + (k & 3)];
}
static inline int q_value(const BlockQ4x8& b, int r, int k) {
  const uint8_t byte = b.qs[((k & 15) >> 2) * 32 + r * 4 + (k & 3)];
  return (k < 16 ? byte & 0x0F : byte >> 4) - 8;
}

}  // namespace hearthlm
