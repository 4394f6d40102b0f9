"""CPU facts: instruction sets detected and chosen, physical cores, ISA selection."""
from __future__ import annotations

import os

from . import _kernels
from .errors import UnsupportedISAError


def select_isa(name: str) -> None:
    """Force a kernel path ('scalar', 'avx2', 'avx512', 'amx', 'neon', 'dotprod'); unsupported is an error."""
    try:
        _kernels.select_isa(name)
    except ValueError as e:
        raise UnsupportedISAError(f"HEARTHLM_ISA={name}: {e}") from None


def apply_isa_from_environment() -> None:
    name = os.environ.get("HEARTHLM_ISA", "").strip().lower()
    if name:
        select_isa(name)


def physical_cores() -> int:
    """Cores this process may run on, counting SMT siblings once."""
    try:
        cpus = os.sched_getaffinity(0)
    except AttributeError:  # macOS, Windows
        return max(1, (os.cpu_count() or 2) // 2)
    cores = set()
    for cpu in cpus:
        path = f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list"
        try:
            with open(path) as f:
                cores.add(f.read().strip())
        except OSError:
            cores.add(str(cpu))
    return max(1, len(cores))


def cpu_info() -> dict:
    """What the CPU offers, which kernel paths this build has, and which one runs."""
    return {
        "features": {k: v for k, v in _kernels.cpu_features().items()},
        "compiled_isas": _kernels.compiled_isas(),
        "supported_isas": _kernels.supported_isas(),
        "active_isa": _kernels.active_isa(),
        "openmp": _kernels.openmp(),
        "physical_cores": physical_cores(),
    }
