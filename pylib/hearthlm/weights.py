"""Weights of one model, taken from the memory-mapped checkpoint in the dtype the
kernels will read. A tensor already stored in that dtype is used in place (zero
copy), or copied into huge-page memory (weight_memory); anything else is converted
(or quantized) once, tensor by tensor, and the bytes mapped, copied and converted
are counted."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from .errors import ModelFormatError, UnsupportedModelError
from .formats import FORMATS, PLAIN
from .quant import (QUANT_DTYPES, QuantTensor, layer_count, quantize_tensor, read_quant_metadata,
                    tensor_format)
from .safetensors_io import CheckpointFiles
from .weight_memory import arena_for

# Plain kernel weight types and how each is held in numpy.
WEIGHT_DTYPES = {p: np.dtype(FORMATS[p].numpy) for p in PLAIN}
# safetensors dtype -> kernel weight type that can use it in place.
IN_PLACE = {FORMATS[p].safetensors: p for p in PLAIN}


@dataclass
class Linear:
    """y = x · weightᵀ + bias. weight: [out_features, in_features], or for a quantized
    format its uint8 blocks (formats.Format.packed_shape, csrc/kernels/quant.h)."""
    weight: np.ndarray
    wtype: str               # a format name (formats.FORMATS)
    bias: Optional[np.ndarray] = None  # float32 [out_features]


@dataclass
class Norm:
    """RMSNorm (bias None) or LayerNorm. weight, bias: [dim] or per group [groups, dim]
    float32."""
    weight: np.ndarray
    bias: Optional[np.ndarray]
    eps: float


def bf16_bits_to_f32(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """Round to nearest even, as torch does; NaN stays NaN."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    return np.where(np.isnan(x), np.uint16(0x7FC0), rounded)


def split_rows(weight: np.ndarray, wtype: str, sizes) -> list:
    """A [N, K] matrix cut into consecutive row blocks of `sizes` rows, each in the
    same format. Float blocks are views. Quantized blocks hold 8 rows each: a block
    starting on a multiple of 8 rows and ending on one (or at N) is a view; for q8/q4
    any other is repacked row by row, which is exact since every row has its own scales."""
    n_rows = sum(sizes)
    starts = np.cumsum([0, *sizes[:-1]])
    if wtype not in QUANT_DTYPES:
        return [weight[a:a + n] for a, n in zip(starts, sizes)]
    nbytes = FORMATS[wtype].block_bytes
    blocks = weight[:1].size // nbytes
    chunks = (nbytes - 16) // 32  # qs[c*32 + r*4 + i]: per chunk c, 4 bytes of each row r
    pad_q = 0 if wtype == "q8" else 0x88  # q = 0 (q4 stores q + 8 in each nibble)
    out = []
    for a, n in zip(starts, sizes):
        end, first, last = a + n, a // 8, (a + n + 7) // 8
        part = weight[first:last]
        if a % 8 == 0 and (end % 8 == 0 or end == n_rows):
            out.append(part)
            continue
        if wtype not in ("q8", "q4"):
            raise UnsupportedModelError(f"{wtype} weights cut at row {a} (not a multiple of 8): "
                                        "only q8 and q4 rows can be repacked; use one of them")
        part = part.reshape(last - first, blocks, nbytes)
        rows, lo = (last - first) * 8, a - first * 8  # unpack the groups holding these rows
        scales = part[..., :16].reshape(-1, blocks, 8, 2).transpose(0, 2, 1, 3).reshape(rows, blocks, 2)
        qs = part[..., 16:].reshape(-1, blocks, chunks, 8, 4).transpose(0, 3, 1, 2, 4)
        qs = qs.reshape(rows, blocks, chunks, 4)
        g = (n + 7) // 8
        d = np.zeros((g * 8, blocks, 2), np.uint8)
        q = np.full((g * 8, blocks, chunks, 4), pad_q, np.uint8)
        d[:n], q[:n] = scales[lo:lo + n], qs[lo:lo + n]
        d = d.reshape(g, 8, blocks, 2).transpose(0, 2, 1, 3).reshape(g, blocks, 16)
        q = q.reshape(g, 8, blocks, chunks, 4).transpose(0, 2, 3, 1, 4).reshape(g, blocks, nbytes - 16)
        out.append(np.ascontiguousarray(np.concatenate([d, q], axis=2)).reshape(g, -1))
    return out


def float_weights(f32: np.ndarray, wtype: str, path: str, name: str) -> np.ndarray:
    """An f32 matrix as the kernels' float weight type wtype (f32: itself)."""
    if wtype == "f32":
        return f32
    if wtype == "bf16":
        return f32_to_bf16_bits(f32)
    with np.errstate(over="ignore"):
        out = f32.astype(np.float16)
    if not np.array_equal(np.isfinite(out), np.isfinite(f32)):
        raise ModelFormatError(f"{path}: tensor '{name}' has values beyond the f16 range (±65504); "
                               "load it as bf16 or f32")
    return out


class WeightReader:
    """Reads named tensors from a checkpoint, checking shapes against config.json.

    wtype: the kernels' weight type. For a quantized dtype, float matrices are quantized
    as they are read, each to quant.tensor_format's choice (head_wtype: the embedding
    table and LM head, if given), and the matrices of a quantized checkpoint are used in
    place in whatever format each was stored.
    mmap: matrices used as stored stay in the file's map (True) or are read into one
    huge-page Arena (False); None: weight_memory.copy_by_default decides.
    progress(done, total), if given, is called with the source bytes quantized or
    copied so far."""

    def __init__(self, files: CheckpointFiles, wtype: str, head_wtype: Optional[str] = None,
                 n_threads: int = 1, progress: Optional[Callable[[int, int], None]] = None,
                 mmap: Optional[bool] = None):
        self.files = files
        self.wtype = wtype
        self.head_wtype = head_wtype
        self.n_layers = layer_count(files.where)
        self.tied = "lm_head.weight" not in files
        self.n_threads = n_threads
        self.stored_quant, self.quantized = read_quant_metadata(files)
        self.converted_bytes = self.mapped_bytes = self.copied_bytes = 0
        matrices = [n for n in files.where if n in self.quantized or len(files.info(n).shape) == 2]
        as_stored = [self._bytes(n) for n in matrices if self._as_stored(n)]
        self.arena = arena_for(as_stored, mmap)
        to_quantize = 0
        if wtype in QUANT_DTYPES:
            to_quantize = sum(self._bytes(n) for n in matrices if n not in self.quantized)
        self.progress, self.done_bytes = progress, 0
        self.total_bytes = to_quantize + (0 if self.arena is None else sum(as_stored))
        if progress is not None and self.total_bytes:
            progress(0, self.total_bytes)

    def _bytes(self, name: str) -> int:
        return self.files.info(name).end - self.files.info(name).begin

    def _as_stored(self, name: str) -> bool:
        """The kernels read this tensor as stored in the file."""
        return name in self.quantized or IN_PLACE.get(self.files.info(name).dtype) == self.wtype_for(name)

    def _advance(self, source_bytes: int) -> None:
        self.done_bytes += source_bytes
        if self.progress is not None:
            self.progress(self.done_bytes, self.total_bytes)

    def _keep(self, name: str, mapped: np.ndarray) -> np.ndarray:
        """A tensor used as stored: the map's view, or its copy in the arena."""
        if self.arena is None:
            self.mapped_bytes += mapped.nbytes
            return mapped
        out = self.arena.take(mapped.shape, mapped.dtype)
        self.files.read_into(name, out, self.n_threads)
        out.flags.writeable = False
        self.copied_bytes += out.nbytes
        self._advance(out.nbytes)
        return out

    def wtype_for(self, name: str) -> str:
        if name in self.quantized:
            return self.quantized[name].fmt
        if self.wtype not in QUANT_DTYPES:
            return self.wtype
        return tensor_format(name, self.wtype, self.head_wtype, self.n_layers, self.tied)

    def _quantized(self, name: str, shape: tuple, q: QuantTensor) -> np.ndarray:
        if (q.rows, q.cols) != tuple(shape):
            raise ModelFormatError(
                f"{self.files.path_of(name)}: tensor '{name}' holds {q.fmt} weights of shape "
                f"[{q.rows}, {q.cols}], but config.json implies {list(shape)}")
        return self._keep(name, self.files.array(name))

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
        """A weight matrix in its kernel dtype (wtype_for): in place if stored so, else
        converted or quantized."""
        if name in self.quantized:
            return self._quantized(name, shape, self.quantized[name])
        wtype = self.wtype_for(name)
        if wtype in QUANT_DTYPES and self.stored_quant is not None:
            raise ModelFormatError(
                f"{self.files.path_of(name)}: tensor '{name}' is not quantized in this quantized "
                "checkpoint (not listed in its hearthlm.tensors metadata)")
        raw = self._raw(name, shape)
        stored = self.files.info(name).dtype
        if wtype in QUANT_DTYPES:
            out = quantize_tensor(raw, stored, wtype, self.n_threads, self.files.path_of(name), name)
            self.converted_bytes += out.nbytes
            self._advance(raw.nbytes)
            return out
        if IN_PLACE.get(stored) == wtype:
            return self._keep(name, raw)
        out = float_weights(self._as_f32(name, raw), wtype, self.files.path_of(name), name)
        self.converted_bytes += out.nbytes
        return out

    def vector(self, name: str, shape: tuple) -> np.ndarray:
        """Norm weights and biases: always float32 (small, read every token)."""
        raw = self._raw(name, shape)
        return np.ascontiguousarray(self._as_f32(name, raw), dtype=np.float32).copy()

    def linear(self, prefix: str, out_features: int, in_features: int, bias: bool) -> Linear:
        weight = self.tensor(f"{prefix}.weight", (out_features, in_features))
        b = self.vector(f"{prefix}.bias", (out_features,)) if bias else None
        return Linear(weight, self.wtype_for(f"{prefix}.weight"), b)


class Weights:
    """A family's declared tensors (name -> shape), read once through a WeightReader:
    matrices in the kernels' weight type, vectors (norms, biases) as float32."""

    def __init__(self, reader: WeightReader, specs: dict):
        self.reader = reader
        self.specs = specs
        self.tensors = {name: reader.tensor(name, shape) if len(shape) == 2 else reader.vector(name, shape)
                        for name, shape in specs.items()}

    def linear(self, prefix: str) -> Linear:
        name = f"{prefix}.weight"
        return Linear(self.tensors[name], self.reader.wtype_for(name), self.tensors.get(f"{prefix}.bias"))

    def linear_rows(self, prefix: str, sizes) -> list:
        """The linear `prefix` cut by output rows into one Linear per entry of `sizes`
        (fused projections: Phi-3's qkv_proj, gate_up_proj)."""
        whole = self.linear(prefix)
        starts = np.cumsum([0, *sizes[:-1]])
        return [Linear(weight, whole.wtype, None if whole.bias is None else whole.bias[a:a + n])
                for weight, a, n in zip(split_rows(whole.weight, whole.wtype, list(sizes)), starts, sizes)]

    def norm(self, prefix: str, eps: float, offset: float = 0.0) -> Norm:
        """offset: added to the weight once (Gemma's RMSNorm scales by 1 + weight)."""
        weight = self.tensors[f"{prefix}.weight"]
        if offset:
            weight = (weight + np.float32(offset)).astype(np.float32)
        return Norm(weight, self.tensors.get(f"{prefix}.bias"), eps)
