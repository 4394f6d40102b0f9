// What the CPU and the operating system support, probed once at import.
#pragma once

namespace hearthlm {

struct CpuFeatures {
  // x86: each flag is set only when the CPU reports it AND the OS saves the
  // registers it needs (XCR0 via xgetbv); AMX also needs the OS's permission to use
  // the tile data (requested here once per process, on Linux).
  bool sse42 = false;
  bool avx2 = false;
  bool fma = false;
  bool f16c = false;
  bool avx512f = false;
  bool avx512bw = false;
  bool avx512vl = false;
  bool avx512dq = false;
  bool avx512_vnni = false;
  bool avx512_bf16 = false;
  bool avx_vnni = false;
  bool amx_tile = false;
  bool amx_int8 = false;
  bool amx_bf16 = false;
  // arm64
  bool neon = false;
  bool dotprod = false;
  bool i8mm = false;
};

const CpuFeatures& cpu_features();

}  // namespace hearthlm
