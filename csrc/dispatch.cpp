#include "dispatch.h"

#include <stdexcept>

#include "cpu_features.h"
#include "formats.h"

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
#if defined(HEARTHLM_AMX)
      {"amx", amx_kernels,
       [](const CpuFeatures& f) {
         return f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq && f.avx512_vnni && f.amx_tile && f.amx_int8;
       },
       "the avx512 path's features plus AMX-TILE and AMX-INT8 (with the OS's tile-data permission)"},
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

// "matmul_q[q4k]", "attention[bf16]", "rope": an entry of the table by name.
std::string entry_name(const char* name, int slot) {
  if (slot < 0) return name;
  std::string what = std::to_string(slot);
  if (std::string(name) == "attention" && slot < kKVTypes) what = kKVTypeNames[slot];
  if (std::string(name) == "matmul_q")
    for (const WeightFormat& f : weight_formats())
      if (f.quant == slot) what = f.name;
  return std::string(name) + "[" + what + "]";
}

// A path's table, after checking that it fills every entry.
const KernelTable* checked(const Path& p) {
  const KernelTable* t = p.table();
  check_kernel_table(*t, p.name);
  return t;
}

const KernelTable* best_table() {
  const KernelTable* best = checked(paths().front());
  for (const Path& p : paths())
    if (p.supported(cpu_features())) best = checked(p);
  return best;
}

const KernelTable* g_active = nullptr;

}  // namespace

void check_kernel_table(const KernelTable& t, const std::string& isa) {
  if (!t.isa || isa != t.isa)
    throw std::logic_error("kernel table of ISA '" + isa + "' is named '" + (t.isa ? t.isa : "(null)") + "'");
  for_each_entry(t, [&](const char* name, int slot, const auto& entry) {
    if (!entry)
      throw std::logic_error("kernel table of ISA '" + isa + "' leaves " + entry_name(name, slot) +
                             " null: fill it in csrc/kernels/ (kernels_" + isa + ".cpp)");
  });
}

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
  return *checked(p);
}

void select_isa(const std::string& name) { g_active = &kernels_for(name); }

const KernelTable& active_kernels() {
  if (!g_active) g_active = best_table();
  return *g_active;
}

}  // namespace hearthlm
