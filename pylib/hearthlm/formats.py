"""The weight formats the kernels read: the one table in csrc/formats.cpp, as Python
sees it (names, block geometry, bytes), so no size or name is restated here."""
from __future__ import annotations

from dataclasses import dataclass

from . import _kernels


@dataclass(frozen=True)
class Format:
    name: str
    block_rows: int      # rows interleaved per block (1: plain row-major elements)
    block_k: int         # weights per block along K
    block_bytes: int
    quantized: bool
    safetensors: str     # plain formats: the safetensors dtype used in place
    numpy: str           # plain formats: the numpy dtype of the elements
    bits_per_weight: float
    gguf_type: int       # ggml type id of the GGUF blocks that convert exactly

    def packed_shape(self, rows: int, cols: int) -> tuple:
        """The uint8 array [row groups, bytes per row group] of a quantized [rows, cols]
        (K-quants: whole blocks, then a tail block of the sub-blocks cols needs)."""
        return (-(-rows // self.block_rows), _kernels.group_bytes(self.name, cols))


FORMATS = {f["name"]: Format(**f) for f in _kernels.formats()}
PLAIN = tuple(name for name, f in FORMATS.items() if not f.quantized)
QUANTIZED = tuple(name for name, f in FORMATS.items() if f.quantized)
