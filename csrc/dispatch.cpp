#include "dispatch.h"

#include <stdexcept>

#include "cpu_features.h"

namespace hearthlm {
namespace {

struct Path {
  const char* name;
  const KernelTable* (*table)();
  bool (*supported)(const CpuFeatures&);
  const char* requires_;
};

const std::vector<Path>& paths() {
  static const std::vector<Path> all = {
      {"scalar", scalar_kernels, [](const CpuFeatures&) { return true; }, "nothing"},
#if defined(HEARTHLM_X86)
      {"avx2", avx2_kernels,
       [](const CpuFeatures& f) { return f.avx2 && f.fma && f.f16c; }, "AVX2, FMA and F16C"},
      {"avx512", avx512_kernels,
       [](const CpuFeatures& f) {
         return f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq && f.avx512_vnni;
       },
       "AVX-512 F, BW, VL, DQ and VNNI (with OS support for ZMM state)"},
#endif
#if defined(HEARTHLM_ARM64)
      {"neon", neon_kernels, [](const CpuFeatures& f) { return f.neon; }, "NEON"},
      {"dotprod", dotprod_kernels, [](const CpuFeatures& f) { return f.neon && f.dotprod; },
       "NEON with the dot-product extension (SDOT)"},
#endif
  };
  return all;
}

const Path& find_path(const std::string& name) {
  for (const Path& p : paths())
    if (name == p.name) return p;
  std::string known;
  for (const Path& p : paths()) known += std::string(known.empty() ? "" : ", ") + p.name;
  throw std::invalid_argument("unknown ISA '" + name + "'; this build has: " + known);
}

const KernelTable* best_table() {
  const KernelTable* best = scalar_kernels();
  for (const Path& p : paths())
    if (p.supported(cpu_features())) best = p.table();
  return best;
}

const KernelTable* g_active = nullptr;

}  // namespace

std::vector<std::string> supported_isas() {
  std::vector<std::string> out;
  for (const Path& p : paths())
    if (p.supported(cpu_features())) out.push_back(p.name);
  return out;
}

std::vector<std::string> compiled_isas() {
  std::vector<std::string> out;
  for (const Path& p : paths()) out.push_back(p.name);
  return out;
}

const KernelTable& kernels_for(const std::string& name) {
  const Path& p = find_path(name);
  if (!p.supported(cpu_features()))
    throw std::invalid_argument("ISA '" + name + "' needs " + p.requires_ +
                                ", which this CPU/OS does not provide");
  return *p.table();
}

void select_isa(const std::string& name) { g_active = &kernels_for(name); }

const KernelTable& active_kernels() {
  if (!g_active) g_active = best_table();
  return *g_active;
}

}  // namespace hearthlm
