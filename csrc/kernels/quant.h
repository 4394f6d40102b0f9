// Quantized weight formats and the int8 activation blocks they multiply. Their names,
// sizes and quantizers are registered once in csrc/formats.cpp.
//
// Every format interleaves weight rows in groups of 8 so a GEMV reads one linear
// stream and each 32-bit lane of a 256-bit register is one output row: W [N, K] becomes
//   blocks [ceil(N/8)][ceil(K/block_k)]   (row group major, then k block;
//                                          K-quants: the last may be a tail block)
// Rows past N and k past K are padding: q = 0 with zero scales (and mins). Inside a
// block, 32 k x 8 rows of small integers are stored as "nibble chunks" or "byte groups":
//   byte groups (q8):   byte [g*32 + r*4 + i] = row r's k = 4g + i, g = 0..7
//   nibble chunks (q4): byte [c*32 + r*4 + i], c = 0..3: row r's k = 4c + i in the low
//                       nibble, k = 16 + 4c + i in the high nibble
//
// Block-32 formats, one fp16 scale d per row and 32 weights, w ≈ d·q:
//   q8: q in [-127, 127], d = amax / 127                    34 bytes per 32 weights (8.5 bpw)
//   q4: q in [-8, 7], d = m / -8, m = the element of largest |w| (first if tied), so m
//       itself maps to -8 exactly (ggml's Q4_0 rule)        18 bytes per 32 weights (4.5 bpw)
//   q = round-half-even(w / d) computed as w * (1 / d) with d already rounded to fp16,
//   clamped to the range; an all-zero block has d = 0 and q = 0.
//
// K-quant formats (llama.cpp's Q4_K / Q5_K / Q6_K semantics; GGUF blocks convert
// exactly): super-blocks of 256 k, each cut into sub-blocks; scales chosen by the
// quantizer (quantize.cpp) to minimise weighted squared error.
//   q4k: per row, fp16 d and dmin; per sub-block j of 32, 6-bit sc_j and m_j;
//        w = (d·sc_j)·q - (dmin·m_j), q in [0, 15]            144 bytes per 256 (4.5 bpw)
//   q5k: q4k with q in [0, 31] (a fifth bit per weight)       176 bytes per 256 (5.5 bpw)
//   q6k: per row, fp16 d; per 16 weights s, int8 sc_s;
//        w = (d·sc_s)·(q - 32), q in [0, 63]                  210 bytes per 256 (6.5625 bpw)
// A block is a header (scales) then per-sub-block arrays. When K is not a multiple of
// 256, a row group's last block is a tail block: the header, then each per-sub-block
// array cut to the sub-blocks that hold k < K (KTail), so K = 576 costs 2.25 blocks of
// bytes, not 3. Kernels read only those sub-blocks.
#pragma once
#include <cstddef>
#include <cstdint>

namespace hearthlm {

constexpr int64_t kQBlock = 32;  // weights per scale (K-quants: per sub-block), along K
constexpr int64_t kQRows = 8;    // rows interleaved per block
constexpr int64_t kKBlock = 256; // weights per K-quant super-block, along K
constexpr int kKSubs = int(kKBlock / kQBlock);  // sub-blocks of 32 per super-block

// The quantized formats with a matmul entry in the kernel table (kernels.h).
enum QuantFormat { kQ8 = 0, kQ4 = 1, kQ4K = 2, kQ6K = 3, kQ5K = 4, kQuantFormats = 5 };

struct BlockQ8x8 {
  uint16_t d[kQRows];  // fp16 scale of each row's block
  int8_t qs[kQRows * kQBlock];  // byte groups
};
static_assert(sizeof(BlockQ8x8) == kQRows * 34, "q8 is 34 bytes per 32 weights");

struct BlockQ4x8 {
  uint16_t d[kQRows];
  uint8_t qs[kQRows * kQBlock / 2];  // nibble chunks of q + 8
};
static_assert(sizeof(BlockQ4x8) == kQRows * 18, "q4 is 18 bytes per 32 weights");

// 8 rows x 256 k of q4k. Row r's 6-bit sc_j, m_j: low 4 bits in scales_lo[j*8 + r]
// (sc low nibble, m high nibble), high 2 bits in scales_hi[(j & 3)*8 + r] at bits
// 4*(j >> 2) (sc) and 4*(j >> 2) + 2 (m).
struct BlockQ4Kx8 {
  uint16_t d[kQRows];
  uint16_t dmin[kQRows];
  uint8_t scales_lo[kKSubs * kQRows];
  uint8_t scales_hi[kKSubs * kQRows / 2];
  uint8_t qs[kKSubs][kQRows * kQBlock / 2];  // sub-block j: nibble chunks of q
};
static_assert(sizeof(BlockQ4Kx8) == kQRows * 144, "q4k is 144 bytes per 256 weights");

// 8 rows x 256 k of q5k: q4k's header; sub-block j's low 4 bits in nibble chunks, its
// fifth bits in qh[r*4 + i] at bit g for k = 4g + i (g = 0..7).
struct BlockQ5Kx8 {
  uint16_t d[kQRows];
  uint16_t dmin[kQRows];
  uint8_t scales_lo[kKSubs * kQRows];
  uint8_t scales_hi[kKSubs * kQRows / 2];
  struct Sub {
    uint8_t qs[kQRows * kQBlock / 2];
    uint8_t qh[kQRows * kQBlock / 8];
  } sub[kKSubs];
};
static_assert(sizeof(BlockQ5Kx8) == kQRows * 176, "q5k is 176 bytes per 256 weights");

// 8 rows x 256 k of q6k. Sub-block j's low 4 bits in nibble chunks; its high 2 bits
// in qh[j][h*32 + r*4 + i] at bits 2c for k = 16h + 4c + i (c = 0..3).
struct BlockQ6Kx8 {
  uint16_t d[kQRows];
  int8_t scales[2 * kKSubs * kQRows];  // [s*8 + r], s = (k mod 256) / 16
  uint8_t ql[kKSubs][kQRows * kQBlock / 2];
  uint8_t qh[kKSubs][kQRows * kQBlock / 4];
};
static_assert(sizeof(BlockQ6Kx8) == kQRows * 210, "q6k is 210 bytes per 256 weights");

// One row of one K-quant super-block, unpacked (what the quantizer and the GGUF
// converter produce, and the scalar kernels read). q4k and q5k share the affine row.
struct AffineKRow {
  uint16_t d, dmin;
  uint8_t sc[kKSubs], m[kKSubs];  // 0..63
  uint8_t q[kKBlock];             // q4k: 0..15, q5k: 0..31
};
struct Q6KRow {
  uint16_t d;
  int8_t sc[2 * kKSubs];
  uint8_t q[kKBlock];  // 0..63
};
template <class Block> struct KRowOf { using type = AffineKRow; };
template <> struct KRowOf<BlockQ6Kx8> { using type = Q6KRow; };

// Activations, quantized on the fly per block of 32: d = amax / 127 (0 for an all-zero
// block), qs = round-half-even(x * (1 / d)) in [-127, 127], sum[h] = Σ qs[16h .. 16h+15]
// (for offsets and mins: q4's +8, q6k's -32 per 16) and dsum = d · float(sum[0] + sum[1])
// (q4k / q5k's mins; kept in memory so SIMD code broadcasts it with a load).
struct BlockQ8Act {
  float d, dsum;
  int16_t sum[2];
  int8_t qs[kQBlock];
};
static_assert(sizeof(BlockQ8Act) == 44, "activation block is 44 bytes");

static inline int64_t q_blocks(int64_t K) { return (K + kQBlock - 1) / kQBlock; }
static inline int64_t q_groups(int64_t N) { return (N + kQRows - 1) / kQRows; }
static inline int64_t k_blocks(int64_t K) { return (K + kKBlock - 1) / kKBlock; }

// Byte positions of row r (0..7), k (0..31) in the two layouts.
static inline int byte_group_at(int r, int k) { return (k >> 2) * 32 + r * 4 + (k & 3); }
static inline int nibble_at(int r, int k) { return ((k & 15) >> 2) * 32 + r * 4 + (k & 3); }
static inline int nibble(const uint8_t* qs, int r, int k) {
  const uint8_t byte = qs[nibble_at(r, k)];
  return k < 16 ? byte & 0x0F : byte >> 4;
}
static inline void set_nibble(uint8_t* qs, int r, int k, int v) {
  uint8_t& byte = qs[nibble_at(r, k)];
  byte = k < 16 ? uint8_t((byte & 0xF0) | v) : uint8_t((byte & 0x0F) | (v << 4));
}

// The integer value of row r (0..7), column k (0..31) of one block.
static inline int q_value(const BlockQ8x8& b, int r, int k) { return b.qs[byte_group_at(r, k)]; }
static inline int q_value(const BlockQ4x8& b, int r, int k) { return nibble(b.qs, r, k) - 8; }

// K-quant blocks with `subs` sub-blocks (kKSubs, or fewer in a tail block): the
// header's bytes, and each sub-block's share of the per-sub-block arrays.
template <class Block> struct KTail;
template <> struct KTail<BlockQ4Kx8> {
  static constexpr int64_t head = offsetof(BlockQ4Kx8, qs), sub = sizeof(BlockQ4Kx8::qs[0]);
};
template <> struct KTail<BlockQ5Kx8> {
  static constexpr int64_t head = offsetof(BlockQ5Kx8, sub), sub = sizeof(BlockQ5Kx8::Sub);
};
template <> struct KTail<BlockQ6Kx8> {
  static constexpr int64_t head = offsetof(BlockQ6Kx8, ql), sub = sizeof(BlockQ6Kx8::ql[0]) + sizeof(BlockQ6Kx8::qh[0]);
};
// Sub-blocks of super-block s in a row of K.
static inline int block_subs(int64_t K, int64_t s) {
  const int64_t left = q_blocks(K) - s * kKSubs;
  return left < kKSubs ? int(left) : kKSubs;
}
// Bytes of one row group of K weights (8 rows): whole blocks, then any tail block.
template <class Block> static inline int64_t k_group_bytes(int64_t K) {
  const int64_t full = K / kKBlock, subs = q_blocks(K) - full * kKSubs;
  return full * int64_t(sizeof(Block)) + (subs ? KTail<Block>::head + subs * KTail<Block>::sub : 0);
}
// Super-block s of a row group starting at `group`.
template <class Block> static inline const Block& k_block(const void* group, int64_t s) {
  return *reinterpret_cast<const Block*>(static_cast<const char*>(group) + s * int64_t(sizeof(Block)));
}
template <class Block> static inline Block& k_block(void* group, int64_t s) {
  return *reinterpret_cast<Block*>(static_cast<char*>(group) + s * int64_t(sizeof(Block)));
}
// q6k's high bits of sub-block j: the qh array follows the `subs` ql arrays.
static inline int64_t q6_qh_at(int subs, int j) {
  return KTail<BlockQ6Kx8>::head + subs * int64_t(sizeof(BlockQ6Kx8::ql[0])) + j * int64_t(sizeof(BlockQ6Kx8::qh[0]));
}
static inline const uint8_t* q6_qh(const BlockQ6Kx8& b, int subs, int j) {
  return reinterpret_cast<const uint8_t*>(&b) + q6_qh_at(subs, j);
}
static inline uint8_t* q6_qh(BlockQ6Kx8& b, int subs, int j) { return reinterpret_cast<uint8_t*>(&b) + q6_qh_at(subs, j); }

// Row r of a K-quant block of `subs` sub-blocks, unpacked (q past them: 0), and packed back.
template <class Block> static inline void unpack_affine_scales(const Block& b, int r, AffineKRow& o) {
  o.d = b.d[r];
  o.dmin = b.dmin[r];
  for (int j = 0; j < kKSubs; ++j) {
    const int lo = b.scales_lo[j * 8 + r], hi = b.scales_hi[(j & 3) * 8 + r] >> (4 * (j >> 2));
    o.sc[j] = uint8_t((lo & 15) | ((hi & 3) << 4));
    o.m[j] = uint8_t((lo >> 4) | ((hi & 12) << 2));
  }
}
template <class Block> static inline void pack_affine_scales(Block& b, int r, const AffineKRow& v) {
  b.d[r] = v.d;
  b.dmin[r] = v.dmin;
  for (int j = 0; j < kKSubs; ++j) {
    b.scales_lo[j * 8 + r] = uint8_t((v.sc[j] & 15) | ((v.m[j] & 15) << 4));
    uint8_t& hi = b.scales_hi[(j & 3) * 8 + r];
    const int shift = 4 * (j >> 2);
    hi = uint8_t((hi & ~(15 << shift)) | (((v.sc[j] >> 4) | ((v.m[j] >> 4) << 2)) << shift));
  }
}
static inline AffineKRow unpack_row(const BlockQ4Kx8& b, int r, int subs = kKSubs) {
  AffineKRow o{};
  unpack_affine_scales(b, r, o);
  for (int j = 0; j < subs; ++j)
    for (int k = 0; k < kQBlock; ++k) o.q[j * kQBlock + k] = uint8_t(nibble(b.qs[j], r, k));
  return o;
}
static inline void pack_row(BlockQ4Kx8& b, int r, const AffineKRow& v, int subs = kKSubs) {
  pack_affine_scales(b, r, v);
  for (int j = 0; j < subs; ++j)
    for (int k = 0; k < kQBlock; ++k) set_nibble(b.qs[j], r, k, v.q[j * kQBlock + k]);
}
static inline int q5_high_at(int r, int k) { return r * 4 + (k & 3); }
static inline AffineKRow unpack_row(const BlockQ5Kx8& b, int r, int subs = kKSubs) {
  AffineKRow o{};
  unpack_affine_scales(b, r, o);
  for (int j = 0; j < subs; ++j)
    for (int k = 0; k < kQBlock; ++k)
      o.q[j * kQBlock + k] = uint8_t(nibble(b.sub[j].qs, r, k) | (((b.sub[j].qh[q5_high_at(r, k)] >> (k >> 2)) & 1) << 4));
  return o;
}
static inline void pack_row(BlockQ5Kx8& b, int r, const AffineKRow& v, int subs = kKSubs) {
  pack_affine_scales(b, r, v);
  for (int j = 0; j < subs; ++j)
    for (int k = 0; k < kQBlock; ++k) {
      const int q = v.q[j * kQBlock + k];
      set_nibble(b.sub[j].qs, r, k, q & 15);
      uint8_t& hi = b.sub[j].qh[q5_high_at(r, k)];
      hi = uint8_t((hi & ~(1 << (k >> 2))) | ((q >> 4) << (k >> 2)));
    }
}
static inline int q6_high_at(int r, int k) { return (k >> 4) * 32 + r * 4 + (k & 3); }
static inline int q6_high_shift(int k) { return 2 * ((k & 15) >> 2); }
static inline Q6KRow unpack_row(const BlockQ6Kx8& b, int r, int subs = kKSubs) {
  Q6KRow o{};
  o.d = b.d[r];
  for (int s = 0; s < 2 * kKSubs; ++s) o.sc[s] = b.scales[s * 8 + r];
  for (int j = 0; j < subs; ++j)
    for (int k = 0; k < kQBlock; ++k)
      o.q[j * kQBlock + k] = uint8_t(nibble(b.ql[j], r, k) |
                                     (((q6_qh(b, subs, j)[q6_high_at(r, k)] >> q6_high_shift(k)) & 3) << 4));
  return o;
}
static inline void pack_row(BlockQ6Kx8& b, int r, const Q6KRow& v, int subs = kKSubs) {
  b.d[r] = v.d;
  for (int s = 0; s < 2 * kKSubs; ++s) b.scales[s * 8 + r] = v.sc[s];
  for (int j = 0; j < subs; ++j)
    for (int k = 0; k < kQBlock; ++k) {
      const int q = v.q[j * kQBlock + k];
      set_nibble(b.ql[j], r, k, q & 15);
      uint8_t& hi = q6_qh(b, subs, j)[q6_high_at(r, k)];
      hi = uint8_t((hi & ~(3 << q6_high_shift(k))) | ((q >> 4) << q6_high_shift(k)));
    }
}

}  // namespace hearthlm
