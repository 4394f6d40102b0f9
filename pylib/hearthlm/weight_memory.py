"""Anonymous memory for weights copied out of the checkpoint instead of used from its
memory map: one mapping, 2 MB aligned and advised MADV_HUGEPAGE before anything
touches it, so the kernels read the weights through 2 MB pages. A file map's 4 KB
pages cost TLB misses that make bf16 decode read ~15 % slower (bench/bf16_mapping.py).
A copy is private to the process; a map shares the page cache with other processes."""
from __future__ import annotations

import mmap
import sys
from typing import Optional

import numpy as np

HUGE_PAGE = 2 << 20
ALIGN = 64  # each tensor starts on a cache line
THP_SETTING = "/sys/kernel/mm/transparent_hugepage/enabled"


def huge_pages() -> bool:
    """Transparent huge pages can back an madvise'd anonymous mapping here."""
    if not sys.platform.startswith("linux") or not hasattr(mmap, "MADV_HUGEPAGE"):
        return False
    try:
        with open(THP_SETTING) as f:
            return "[never]" not in f.read()
    except OSError:
        return False


def available_bytes() -> Optional[int]:
    """/proc/meminfo's MemAvailable (free memory plus reclaimable page cache), or None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def copy_by_default(nbytes: int) -> bool:
    """mmap=None: copy when huge pages make the copy faster to read and it takes at most
    half of the memory available (a model that barely fits stays mapped, where the
    kernel can page it instead of running out of memory)."""
    available = available_bytes()
    return huge_pages() and available is not None and nbytes <= available // 2


def arena_for(sizes, mmap: Optional[bool]) -> Optional["Arena"]:
    """Where tensors of `sizes` bytes used as stored go: an Arena to copy them into, or
    None to keep them in the file's map. mmap True maps, False copies, None lets
    copy_by_default decide."""
    copy = copy_by_default(sum(sizes)) if mmap is None else not mmap
    return Arena(sizes) if copy and sizes else None


class Arena:
    """Anonymous memory for tensors of up to `sizes` bytes, handed out one by one. Pages
    are allocated on first touch, so room that is never filled costs no memory."""

    def __init__(self, sizes):
        capacity = sum(-(-n // ALIGN) * ALIGN for n in sizes)
        size = capacity + HUGE_PAGE
        if huge_pages():
            self._map = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
            self._map.madvise(mmap.MADV_HUGEPAGE)
            whole = np.frombuffer(self._map, np.uint8)
        else:
            whole = np.empty(size, np.uint8)
        start = -whole.ctypes.data % HUGE_PAGE
        self._free = whole[start:start + capacity]
        self.used = 0

    def take(self, shape: tuple, dtype: np.dtype) -> np.ndarray:
        """An uninitialised array in the arena's next free bytes."""
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        start = -(-self.used // ALIGN) * ALIGN
        if start + nbytes > len(self._free):
            raise MemoryError(f"weight arena of {len(self._free)} bytes cannot hold {nbytes} more")
        self.used = start + nbytes
        return self._free[start:start + nbytes].view(dtype).reshape(shape)
