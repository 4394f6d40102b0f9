"""Weights of one model, taken from the memory-mapped checkpoint in the dtype the
kernels will read. A tensor already stored in that dtype is used in place (zero
copy); anything else is converted once, and the bytes converted are counted."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from .errors import ModelFormatError
from .safetensors_io import CheckpointFiles

# Kernel weight types and how each is held in numpy.
WEIGHT_DTYPES = {"f32": np.dtype("<f4"), "bf16": np.dtype("<u2"), "f16": np.dtype("<f2")}
# safetensors dtype -> kernel weight type that can use it in place.
IN_PLACE = {"F32": "f32", "BF16": "bf16", "F16": "f16"}


@dataclass
class Linear:
    """y = x · weightᵀ + bias. weight: [out_features, in_features]."""
    weight: np.ndarray
    wtype: str               # "f32" | "bf16" | "f16"
    bias: Optional[np.ndarray] = None  # float32 [out_features]

    @property
    def out_features(self) -> int:
        return self.weight.shape[0]


def bf16_bits_to_f32(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """Round to nearest even, as torch does; NaN stays NaN."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    return np.where(np.isnan(x), np.uint16(0x7FC0), rounded)


class WeightReader:
    """Reads named tensors from a checkpoint, checking shapes against config.json."""

    def __init__(self, files: CheckpointFiles, wtype: str):
        self.files = files
        self.wtype = wtype
        self.converted_bytes = 0
        self.mapped_bytes = 0

    def _raw(self, name: str, shape: tuple) -> np.ndarray:
        if name not in self.files:
            raise ModelFormatError(f"{self.files.folder}: tensor '{name}' is missing from the checkpoint")
        info = self.files.info(name)
        if tuple(info.shape) != tuple(shape):
            raise ModelFormatError(
                f"{self.files.path_of(name)}: tensor '{name}' has shape {list(info.shape)}, "
                f"but config.json implies {list(shape)}")
        if info.dtype not in ("F32", "BF16", "F16", "F64"):
            raise ModelFormatError(
                f"{self.files.path_of(name)}: tensor '{name}' has dtype {info.dtype}; "
                "weights must be F32, BF16, F16 or F64")
        return self.files.array(name)

    def _as_f32(self, name: str, raw: np.ndarray) -> np.ndarray:
        dtype = self.files.info(name).dtype
        if dtype == "BF16":
            return bf16_bits_to_f32(raw)
        return raw.astype(np.float32)

    def tensor(self, name: str, shape: tuple) -> np.ndarray:
        """A weight matrix in the kernel dtype: in place if stored so, else converted."""
        raw = self._raw(name, shape)
        stored = self.files.info(name).dtype
        if IN_PLACE.get(stored) == self.wtype:
            self.mapped_bytes += raw.nbytes
            return raw
        f32 = self._as_f32(name, raw)
        if self.wtype == "f32":
            out = f32
        elif self.wtype == "bf16":
            out = f32_to_bf16_bits(f32)
        else:
            with np.errstate(over="ignore"):
                out = f32.astype(np.float16)
            if not np.array_equal(np.isfinite(out), np.isfinite(f32)):
                raise ModelFormatError(
                    f"{self.files.path_of(name)}: tensor '{name}' has values beyond the f16 range "
                    "(±65504); load it as bf16 or f32")
        self.converted_bytes += out.nbytes
        return out

    def vector(self, name: str, shape: tuple) -> np.ndarray:
        """Norm weights and biases: always float32 (small, read every token)."""
        raw = self._raw(name, shape)
        return np.ascontiguousarray(self._as_f32(name, raw), dtype=np.float32).copy()

    def linear(self, prefix: str, out_features: int, in_features: int, bias: bool) -> Linear:
        weight = self.tensor(f"{prefix}.weight", (out_features, in_features))
        b = self.vector(f"{prefix}.bias", (out_features,)) if bias else None
        return Linear(weight, self.wtype, b)
