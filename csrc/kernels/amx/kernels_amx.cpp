// AMX-INT8 (Sapphire Rapids and later): the avx512 table with q8 and q4 matmuls of
// several tokens on tiles. Compiled with the avx512 flags plus -mamx-tile -mamx-int8;
// only entered when cpuid, XCR0 and the OS's tile-data permission allow it
// (cpu_features.cpp).
//
// One TDPBSSD (s8 x s8) per 32-k block: A = a tile of up to 16 tokens' activation
// bytes (16 x 32), B = a pair of row groups' weights as signed bytes (8 k quads x 16
// rows x 4, the byte-group layout of quant.h, two groups side by side), C = 16 tokens
// x 16 rows of exact int32 dot products. C goes through memory to AVX-512, which does
// the scalar twin's float work per block in block order (cvt, d_w·d_x, FMA), so
// results are bit-identical to it. Measured here (bench/README.md, "AMX"), the tiles do
// not run alongside that float work: a block's tile store and its 48 vector ops take
// about as long as the zero / load / dot / store of the tiles themselves, so a 16 x 16
// block costs ~24 ns instead of the dot's ~6.
#include <immintrin.h>

#include <cstring>
#include <type_traits>

#include "kernels/convert.h"
#include "kernels/kernels.h"

namespace hearthlm {
namespace amx {
namespace {

constexpr int kTileTokens = 16;  // rows of an A and a C tile
constexpr int kPairRows = 2 * kQRows;
// Below this many tokens the avx512 path runs. Quiet, 2 threads, weights from DRAM
// (bench/README.md, "AMX"): amx took 1.15-1.29x avx512's time at M = 16..256 and
// 0.98 / 1.18 (q4 / q8) at 512, while end-to-end prefill of 512-token chunks (the
// session's largest forward) ran 1.06-1.07x faster on amx. So only chunks that large.
constexpr int64_t kMinTokens = 512;
// Weights are staged kPanelPairs pairs (64 rows, an ops.cpp task) by kChunkBlocks
// blocks at a time (18 KB, and 4.5 KB of a token tile: in L1; 16 blocks were no faster).
constexpr int64_t kPanelPairs = 4;
constexpr int64_t kChunkBlocks = 8;

// Palette 1: tiles 0-3 hold C (tokens x 16 int32), 4 and 6 A (tokens x 32 bytes), 5 and
// 7 B (8 k quads x 64 bytes), so four blocks' tiles are in flight at once.
struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0, reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};
// GCC's tile loads (and ldtilecfg) are asm that tells the compiler nothing of the memory
// they read: this barrier makes every store before it happen before them.
static inline void tiles_read_memory() { __asm__ volatile("" ::: "memory"); }

static void configure(int tokens) {
  TileConfig c;
  for (int t = 0; t < 4; ++t) c.rows[t] = uint8_t(tokens), c.colsb[t] = 4 * kPairRows;
  for (int t = 4; t < 8; t += 2) {
    c.rows[t] = uint8_t(tokens), c.colsb[t] = kQBlock;
    c.rows[t + 1] = kQBlock / 4, c.colsb[t + 1] = 4 * kPairRows;
  }
  tiles_read_memory();
  _tile_loadconfig(&c);
}

// One 32-k block of a pair of row groups (a B tile and the 16 rows' scales) and of a
// token tile (an A tile and the tokens' scales), staged per K chunk.
struct alignas(64) TokenBlock {
  int8_t q[kTileTokens][kQBlock];
  float d[kTileTokens];
};
struct alignas(64) PairBlock {
  int8_t q[kQBlock / 4][4 * kPairRows];  // k quad g: row r's 4 bytes at 4r (r < 8: group a)
  float d[kPairRows];
};

#include "kernels/avx512/pair_loads.inc"
static inline void stage(PairBlock& p, const BlockQ8x8& a, const BlockQ8x8& b) {
  for (int g = 0; g < kQBlock / 4; ++g) _mm512_store_si512(p.q[g], halves(a.qs + 32 * g, b.qs + 32 * g));
  _mm512_store_ps(p.d, pair_scales(a.d, b.d));
}
// Nibble chunk c holds k quad c (low nibbles) and c + 4 (high), as q + 8.
static inline void stage(PairBlock& p, const BlockQ4x8& a, const BlockQ4x8& b) {
  const __m512i low = _mm512_set1_epi8(0x0F), eight = _mm512_set1_epi8(8);
  for (int c = 0; c < 4; ++c) {
    const __m512i v = halves(a.qs + 32 * c, b.qs + 32 * c);
    _mm512_store_si512(p.q[c], _mm512_sub_epi8(_mm512_and_si512(v, low), eight));
    _mm512_store_si512(p.q[c + 4], _mm512_sub_epi8(_mm512_and_si512(_mm512_srli_epi16(v, 4), low), eight));
  }
  _mm512_store_ps(p.d, pair_scales(a.d, b.d));
}

// acc[i] += float(C[i]) · (d_w · d_x[i]) for the RM tokens of one block (the scalar twin's FMA).
template <int RM>
static inline void scale_block(__m512* acc, const int32_t* c, const PairBlock& w, const TokenBlock& a) {
  const __m512 dw = _mm512_load_ps(w.d);
  for (int i = 0; i < RM; ++i)
    acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_load_si512(c + kPairRows * i)),
                             _mm512_mul_ps(dw, _mm512_set1_ps(a.d[i])), acc[i]);
}

// Block b's dot products into C tile C (A and B tiles: A, B), stored to out.
#define HEARTHLM_AMX_BLOCK(C, A, B, b, out) \
  _tile_zero(C);                             \
  _tile_loadd(A, a[b].q, kQBlock);           \
  _tile_loadd(B, w[b].q, 4 * kPairRows);     \
  _tile_dpbssd(C, A, B);                     \
  _tile_stored(C, out[C], 4 * kPairRows)

// y[m0 + i][n0 + r] (i < RM, r in mask) over blocks [0, bn) of a chunk: from 0 on the
// first chunk, else from the partial sums y holds (float32, stored and reloaded exactly);
// bias added on the last. Four blocks' tiles are issued before their float work.
template <int RM>
static void pair_tile(float* y, const TokenBlock* a, const PairBlock* w, int64_t bn, int64_t ldy, int64_t m0,
                      int64_t n0, __mmask16 mask, const float* bias, bool first, bool last) {
  alignas(64) int32_t c[4][kTileTokens * kPairRows];
  __m512 acc[RM];
  for (int i = 0; i < RM; ++i) acc[i] = first ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(mask, y + (m0 + i) * ldy + n0);
  int64_t b = 0;
  for (; b + 4 <= bn; b += 4) {
    HEARTHLM_AMX_BLOCK(0, 4, 5, b, c);
    HEARTHLM_AMX_BLOCK(1, 6, 7, b + 1, c);
    HEARTHLM_AMX_BLOCK(2, 4, 5, b + 2, c);
    HEARTHLM_AMX_BLOCK(3, 6, 7, b + 3, c);
    for (int j = 0; j < 4; ++j) scale_block<RM>(acc, c[j], w[b + j], a[b + j]);
  }
  for (; b < bn; ++b) {
    HEARTHLM_AMX_BLOCK(0, 4, 5, b, c);
    scale_block<RM>(acc, c[0], w[b], a[b]);
  }
  const __m512 bv = last && bias ? _mm512_maskz_loadu_ps(mask, bias + n0) : _mm512_setzero_ps();
  for (int i = 0; i < RM; ++i)
    _mm512_mask_storeu_ps(y + (m0 + i) * ldy + n0, mask, last && bias ? _mm512_add_ps(acc[i], bv) : acc[i]);
}
#undef HEARTHLM_AMX_BLOCK

// Every pair of a chunk against one token tile of rm <= RM tokens (RM: the largest, a
// compile-time height).
template <int RM>
static void token_tile(int rm, float* y, const TokenBlock* a, const PairBlock (*w)[kChunkBlocks], int64_t pairs,
                       int64_t bn, int64_t ldy, int64_t m0, int64_t n0, int64_t n1, const float* bias, bool first,
                       bool last) {
  if constexpr (RM > 1)
    if (rm < RM) return token_tile<RM - 1>(rm, y, a, w, pairs, bn, ldy, m0, n0, n1, bias, first, last);
  for (int64_t p = 0; p < pairs; ++p) {
    const int64_t n = n0 + kPairRows * p, rows = n1 - n < kPairRows ? n1 - n : kPairRows;
    pair_tile<RM>(y, a, w[p], bn, ldy, m0, n, __mmask16((1u << rows) - 1), bias, first, last);
  }
}

// Rows [n0, n1) (at most kPanelPairs pairs) of all M tokens, one K chunk at a time.
template <class Block>
static void panel(float* y, const BlockQ8Act* xq, const Block* w, const float* bias, int64_t M, int64_t nb,
                  int64_t ldy, int64_t n0, int64_t n1) {
  PairBlock wp[kPanelPairs][kChunkBlocks];
  TokenBlock ta[kChunkBlocks];
  const int64_t pairs = (n1 - n0 + kPairRows - 1) / kPairRows;
  int configured = 0;
  for (int64_t b0 = 0; b0 < nb || b0 == 0; b0 += kChunkBlocks) {  // K = 0 still writes the bias
    const int64_t bn = nb - b0 < kChunkBlocks ? nb - b0 : kChunkBlocks;
    for (int64_t p = 0; p < pairs; ++p) {
      const Block* ga = w + (n0 / kQRows + 2 * p) * nb + b0;
      const bool lone = n0 + kPairRows * p + kQRows >= n1;  // a last lone row group: itself again, masked off
      const Block* gb = lone ? ga : ga + nb;
      for (int64_t b = 0; b < bn; ++b) stage(wp[p][b], ga[b], gb[b]);
    }
    tiles_read_memory();
    const bool first = b0 == 0, last = b0 + bn >= nb;
    for (int64_t m0 = 0; m0 < M; m0 += kTileTokens) {
      const int rm = int(M - m0 < kTileTokens ? M - m0 : kTileTokens);
      if (rm != configured) configure(configured = rm);
      for (int i = 0; i < rm; ++i)
        for (int64_t b = 0; b < bn; ++b) {
          const BlockQ8Act& x = xq[(m0 + i) * nb + b0 + b];
          _mm256_store_si256((__m256i*)ta[b].q[i], _mm256_loadu_si256((const __m256i*)x.qs));
          ta[b].d[i] = x.d;
        }
      tiles_read_memory();
      token_tile<kTileTokens>(rm, y, ta, wp, pairs, bn, ldy, m0, n0, n1, bias, first, last);
    }
  }
}

template <class Block>
static void matmul_tiles(float* y, const BlockQ8Act* xq, const void* wv, const float* bias, int64_t M, int64_t K,
                         int64_t ldy, int64_t n0, int64_t n1) {
  if (M < kMinTokens)
    return avx512_kernels()->matmul_q[std::is_same<Block, BlockQ8x8>::value ? kQ8 : kQ4](y, xq, wv, bias, M, K, ldy, n0, n1);
  const Block* w = static_cast<const Block*>(wv);
  for (int64_t n = n0; n < n1; n += kPairRows * kPanelPairs)
    panel(y, xq, w, bias, M, q_blocks(K), ldy, n, n1 - n < kPairRows * kPanelPairs ? n1 : n + kPairRows * kPanelPairs);
  _tile_release();
}

}  // namespace
}  // namespace amx

const KernelTable* amx_kernels() {
  static const KernelTable table = [] {
    KernelTable t = *avx512_kernels();
    t.isa = "amx";
    t.matmul_q[kQ8] = amx::matmul_tiles<BlockQ8x8>;
    t.matmul_q[kQ4] = amx::matmul_tiles<BlockQ4x8>;
    return t;
  }();
  return &table;
}

}  // namespace hearthlm
