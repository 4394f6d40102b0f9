// What one 32-k block of the amx path's q8/q4 matmul costs, piece by piece, on one
// thread (CPU time, so a busy machine disturbs it less): the tile dot at K = 64 and
// K = 32, a C tile's store, the AVX-512 float work of a 16 x 16 block (cvt, d_w·d_x,
// FMA, as csrc/kernels/amx/kernels_amx.cpp does it), and those pieces together the way
// the kernel issues them. Linux with AMX only.
//
//   g++ -O3 -mamx-tile -mamx-int8 -mavx512f bench/amx_pieces.cpp -o /tmp/amx_pieces && /tmp/amx_pieces
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <ctime>

namespace {

constexpr int kBlocks = 64;
constexpr long kReps = 50000;
alignas(64) int8_t A[kBlocks][16 * 64];
alignas(64) int8_t B[kBlocks][16 * 64];
alignas(64) int32_t C[4][16 * 16];
alignas(64) float dw[kBlocks][16], dx[kBlocks][16];

double now() {
  timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return double(t.tv_sec) + 1e-9 * double(t.tv_nsec);
}

// Tiles 0-3: C (16 x 64 bytes); 4, 6: A (16 rows x ka bytes); 5, 7: B (ka / 4 rows x 64).
void configure(int ka) {
  struct alignas(64) {
    uint8_t palette = 1, start_row = 0, reserved[14] = {};
    uint16_t colsb[16] = {};
    uint8_t rows[16] = {};
  } c;
  for (int t = 0; t < 4; ++t) c.rows[t] = 16, c.colsb[t] = 64;
  for (int t = 4; t < 8; t += 2) c.rows[t] = 16, c.colsb[t] = uint16_t(ka), c.rows[t + 1] = uint8_t(ka / 4), c.colsb[t + 1] = 64;
  __asm__ volatile("" ::: "memory");  // ldtilecfg is asm that tells the compiler nothing of c: store it first
  _tile_loadconfig(&c);
}

// The float work of block b from C buffer h.
inline void scale(__m512* acc, int h, int b) {
  const __m512 d = _mm512_load_ps(dw[b]);
  for (int i = 0; i < 16; ++i)
    acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_load_si512(C[h] + 16 * i)), _mm512_mul_ps(d, _mm512_set1_ps(dx[b][i])), acc[i]);
}

// body(acc, b) for blocks b, b + 1, b + 2, b + 3; the accumulators stay in registers.
template <class Body> void time(const char* name, Body body) {
  __m512 acc[16];
  for (int i = 0; i < 16; ++i) acc[i] = _mm512_setzero_ps();
  const double t = now();
  for (long r = 0; r < kReps; ++r)
    for (int b = 0; b < kBlocks; b += 4) {
      body(acc, b);
      __asm__ volatile("" : "+m"(C));  // tile stores write C behind the compiler's back
    }
  const double ns = (now() - t) / kReps / kBlocks * 1e9;
  for (int i = 1; i < 16; ++i) acc[0] = _mm512_add_ps(acc[0], acc[i]);  // every accumulator is used
  float sink[16];
  _mm512_storeu_ps(sink, acc[0]);
  std::printf("%-58s %6.2f ns per block%s\n", name, ns, sink[0] == 1.0f ? " " : "");
}

#define BLOCK(c, a, w, b)        \
  _tile_zero(c);                 \
  _tile_loadd(a, A[b], 32);      \
  _tile_loadd(w, B[b], 64);      \
  _tile_dpbssd(c, a, w);         \
  _tile_stored(c, C[c], 64)

}  // namespace

int main() {
  if (syscall(SYS_arch_prctl, 0x1023, 18) != 0) {
    std::printf("no AMX tile data permission (not Linux 5.16+ on an AMX CPU)\n");
    return 1;
  }
  for (int b = 0; b < kBlocks; ++b)
    for (int i = 0; i < 16; ++i) dw[b][i] = 1e-3f, dx[b][i] = 1e-3f;
  configure(64);
  time("tdpbssd, K = 64 (16 x 16 x 64)", [](__m512*, int) {
    _tile_dpbssd(0, 4, 5); _tile_dpbssd(1, 6, 7); _tile_dpbssd(2, 4, 5); _tile_dpbssd(3, 6, 7);
  });
  configure(32);
  time("tdpbssd, K = 32 (one block: 16 x 16 x 32)", [](__m512*, int) {
    _tile_dpbssd(0, 4, 5); _tile_dpbssd(1, 6, 7); _tile_dpbssd(2, 4, 5); _tile_dpbssd(3, 6, 7);
  });
  time("tilestored of a C tile", [](__m512*, int) {
    _tile_stored(0, C[0], 64); _tile_stored(1, C[1], 64); _tile_stored(2, C[2], 64); _tile_stored(3, C[3], 64);
  });
  time("float work of a 16 x 16 block", [](__m512* acc, int b) { for (int j = 0; j < 4; ++j) scale(acc, j, b + j); });
  time("tdpbssd (K = 32) with the float work", [](__m512* acc, int b) {
    _tile_dpbssd(0, 4, 5); _tile_dpbssd(1, 6, 7); _tile_dpbssd(2, 4, 5); _tile_dpbssd(3, 6, 7);
    for (int j = 0; j < 4; ++j) scale(acc, j, b + j);
  });
  time("tilestored with the float work (other buffers)", [](__m512* acc, int b) {
    _tile_stored(0, C[0], 64); _tile_stored(1, C[1], 64); _tile_stored(2, C[2], 64); _tile_stored(3, C[3], 64);
    for (int j = 0; j < 4; ++j) scale(acc, j ^ 2, b + j);
  });
  time("zero, load A and B, dot, store (4 C tiles)", [](__m512* acc, int b) {
    BLOCK(0, 4, 5, b); BLOCK(1, 6, 7, b + 1); BLOCK(2, 4, 5, b + 2); BLOCK(3, 6, 7, b + 3);
  });
  time("the kernel's order: 4 blocks' tiles, then their float work", [](__m512* acc, int b) {
    BLOCK(0, 4, 5, b); BLOCK(1, 6, 7, b + 1); BLOCK(2, 4, 5, b + 2); BLOCK(3, 6, 7, b + 3);
    for (int j = 0; j < 4; ++j) scale(acc, j, b + j);
  });
  _tile_release();
  return 0;
}
