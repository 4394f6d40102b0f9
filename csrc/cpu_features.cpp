#include "cpu_features.h"

#if defined(HEARTHLM_X86)
#include <cpuid.h>
#include <cstdint>
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif
#elif defined(HEARTHLM_ARM64) && defined(__linux__)
#include <sys/auxv.h>
#elif defined(HEARTHLM_ARM64) && defined(__APPLE__)
#include <sys/sysctl.h>
#endif

namespace hearthlm {
namespace {

#if defined(HEARTHLM_X86)
uint64_t read_xcr0() {
  uint32_t lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (uint64_t(hi) << 32) | lo;
}

// Linux (5.16+) gives a process the AMX tile data state only when it asks, once
// (ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA); elsewhere the tiles stay unused.
bool amx_permitted() {
#if defined(__linux__)
  return syscall(SYS_arch_prctl, 0x1023, 18) == 0;
#else
  return false;
#endif
}

CpuFeatures probe() {
  CpuFeatures f;
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const bool osxsave = c & (1u << 27);
  f.sse42 = c & (1u << 20);
  const bool cpu_fma = c & (1u << 12), cpu_f16c = c & (1u << 29), cpu_avx = c & (1u << 28);
  const uint64_t xcr0 = osxsave ? read_xcr0() : 0;
  const bool os_avx = (xcr0 & 0x6) == 0x6;             // XMM and YMM state
  const bool os_avx512 = os_avx && (xcr0 & 0xe0) == 0xe0;  // opmask, ZMM_Hi256, Hi16_ZMM
  const bool os_amx = (xcr0 & 0x60000) == 0x60000;     // XTILECFG and XTILEDATA
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return f;
  if (cpu_avx && os_avx) {
    f.avx2 = b & (1u << 5);
    f.fma = cpu_fma;
    f.f16c = cpu_f16c;
  }
  if (os_avx512) {
    f.avx512f = b & (1u << 16);
    f.avx512dq = b & (1u << 17);
    f.avx512bw = b & (1u << 30);
    f.avx512vl = b & (1u << 31);
    f.avx512_vnni = c & (1u << 11);
  }
  if (os_amx && (d & (1u << 24)) && amx_permitted()) {
    f.amx_bf16 = d & (1u << 22);
    f.amx_tile = d & (1u << 24);
    f.amx_int8 = d & (1u << 25);
  }
  unsigned a1, b1, c1, d1;
  if (__get_cpuid_count(7, 1, &a1, &b1, &c1, &d1)) {
    f.avx_vnni = os_avx && (a1 & (1u << 4));
    f.avx512_bf16 = os_avx512 && (a1 & (1u << 5));
  }
  return f;
}
#elif defined(HEARTHLM_ARM64)
CpuFeatures probe() {
  CpuFeatures f;
  f.neon = true;  // mandatory on arm64
#if defined(__linux__)
  const unsigned long hwcap = getauxval(AT_HWCAP), hwcap2 = getauxval(AT_HWCAP2);
  f.dotprod = hwcap & (1ul << 20);  // HWCAP_ASIMDDP
  f.i8mm = hwcap2 & (1ul << 13);    // HWCAP2_I8MM
#elif defined(__APPLE__)
  int v = 0;
  size_t n = sizeof(v);
  if (sysctlbyname("hw.optional.arm.FEAT_DotProd", &v, &n, nullptr, 0) == 0) f.dotprod = v;
  n = sizeof(v);
  v = 0;
  if (sysctlbyname("hw.optional.arm.FEAT_I8MM", &v, &n, nullptr, 0) == 0) f.i8mm = v;
#endif
  return f;
}
#else
CpuFeatures probe() { return CpuFeatures{}; }
#endif

}  // namespace

const CpuFeatures& cpu_features() {
  static const CpuFeatures features = probe();
  return features;
}

}  // namespace hearthlm
