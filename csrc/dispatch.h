// The active kernel table: the best one the CPU supports, or the one asked for.
#pragma once
#include <string>
#include <vector>

#include "kernels/kernels.h"

namespace hearthlm {

// Paths this build contains and this CPU + OS can run, slowest first.
std::vector<std::string> supported_isas();
// Every path compiled into this build (supported or not).
std::vector<std::string> compiled_isas();
// Select a path by name; throws std::invalid_argument naming what is missing.
void select_isa(const std::string& name);
const KernelTable& active_kernels();
// Throws std::logic_error naming the ISA and the entry if t leaves an entry null
// (every table is checked so before its first use).
void check_kernel_table(const KernelTable& t, const std::string& isa);
// The kernel table of a named path (for tests that compare paths side by side).
const KernelTable& kernels_for(const std::string& name);

}  // namespace hearthlm
