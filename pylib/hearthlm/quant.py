"""Quantized weights (the formats: csrc/kernels/quant.h, registered in csrc/formats.cpp).

* `tensor_format`: which format each matrix gets for a quantized dtype (the mixes).
* `quantize_tensor`: one tensor from the memory map -> interleaved blocks, in C++,
  without an f32 copy of the tensor (peak memory: the quantized output).
* Quantized safetensors files: every quantized tensor is a U8 array of shape
  [row groups, bytes per row group] (formats.Format.packed_shape; files written before
  K-quant tail blocks hold the same bytes as [row groups, k blocks, block bytes])
  holding the kernels' layout, so loading is a zero-copy memory map. The file's `__metadata__`
  says what they are:
      hearthlm.format          "hearthlm-quant"
      hearthlm.format_version  "1"
      hearthlm.dtype           the dtype asked for ("q4", "q4k", ...)
      hearthlm.tensors         JSON {tensor name: [format, N, K]}
  Norm weights and biases are stored unchanged.
* Folders of such files are written by hearthlm.quant_writer (`hearthlm quantize`).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Optional

import numpy as np

from . import _kernels
from .errors import InvalidInputError, ModelFormatError
from .safetensors_io import CheckpointFiles, SafetensorsFile

from .formats import FORMATS, PLAIN, QUANTIZED as QUANT_DTYPES

FORMAT_NAME = "hearthlm-quant"
FORMAT_VERSION = 1
# The embedding table and the LM head: the one matrix that scores every token.
HEAD_TENSORS = ("model.embed_tokens.weight", "lm_head.weight")  # after any ModelArgs.prefix
# safetensors dtype -> source type of the C++ quantizer (F64 goes through f32).
QUANTIZER_SOURCES = {**{FORMATS[p].safetensors: p for p in PLAIN}, "F64": "f32"}
K_QUANTS = ("q4k", "q5k", "q6k")  # the formats whose quantizer uses importance weights


@dataclass(frozen=True)
class QuantTensor:
    fmt: str    # a quantized format name
    rows: int   # N
    cols: int   # K


def packed_shape(fmt: str, rows: int, cols: int) -> tuple:
    return FORMATS[fmt].packed_shape(rows, cols)


def check_dtype(dtype: Optional[str]) -> None:
    if dtype is not None and dtype not in PLAIN and dtype not in QUANT_DTYPES:
        raise InvalidInputError(f"dtype: expected one of {', '.join([*PLAIN, *QUANT_DTYPES])}, got {dtype!r}")


def check_head_dtype(head_dtype: Optional[str]) -> None:
    if head_dtype is not None and head_dtype not in QUANT_DTYPES:
        raise InvalidInputError(f"head_dtype: expected one of {', '.join(QUANT_DTYPES)}, got {head_dtype!r}")


def more_bits(layer: int, n_layers: int) -> bool:
    """llama.cpp's use_more_bits: the first and last eighth of the layers, and every
    third one between."""
    return layer < n_layers // 8 or layer >= 7 * n_layers // 8 or (layer - n_layers // 8) % 3 == 2


_SENSITIVE = re.compile(r"^model\.layers\.(\d+)\.(self_attn\.v_proj|mlp\.down_proj)\.weight$")


def tensor_format(name: str, dtype: str, head_dtype: Optional[str], n_layers: int, tied: bool) -> str:
    """The format of matrix `name` when a model is quantized to `dtype`:
    q8, q6k: everything in that format.
    q4:  the body q4, the embedding table and LM head q8 (on the tiny test models that
         cuts KL(f32 || q4) by 15-45 % for ~6 % more bytes per token on TinyLlama).
    q4k, q5k: llama.cpp's Q4_K_M / Q5_K_M recipe: the LM head (the embedding table
         when tied) q6k, attention V and FFN down q6k in the more_bits layers, the rest
         q4k / q5k.
    head_dtype, when given, is the format of both head tensors."""
    mix = dtype in ("q4k", "q5k")
    if name.endswith(HEAD_TENSORS):
        if head_dtype is not None:
            return head_dtype
        if dtype == "q4":
            return "q8"
        if mix and (name.endswith("lm_head.weight") or tied):
            return "q6k"
        return dtype
    m = _SENSITIVE.match(name)
    if mix and m and more_bits(int(m.group(1)), n_layers):
        return "q6k"
    return dtype


def layer_count(names) -> int:
    """Decoder layers in a checkpoint, from its tensor names."""
    layers = [int(m.group(1)) for m in (re.match(r"^model\.layers\.(\d+)\.", n) for n in names) if m]
    return max(layers) + 1 if layers else 0


def quantize_tensor(raw: np.ndarray, stored_dtype: str, fmt: str, n_threads: int,
                    path: str, name: str, importance: Optional[np.ndarray] = None) -> np.ndarray:
    """raw: [N, K] as stored (bf16 as uint16 bits) -> uint8 blocks. importance [K]:
    the weight of each input column's squared error (K-quants)."""
    if stored_dtype == "F64":
        raw = raw.astype(np.float32)
    out = np.empty(packed_shape(fmt, *raw.shape), np.uint8)
    bad, overflow = _kernels.quantize(out, raw, QUANTIZER_SOURCES[stored_dtype], fmt, n_threads, importance)
    K = raw.shape[1]
    if bad >= 0:
        raise ModelFormatError(
            f"{path}: tensor '{name}' has a non-finite weight at [{bad // K}, {bad % K}]; "
            f"cannot quantize it to {fmt}")
    if overflow >= 0:
        raise ModelFormatError(
            f"{path}: tensor '{name}' has a block at [{overflow // K}, {overflow % K}:] whose "
            f"{fmt} scale exceeds the fp16 range (weights too large for {fmt}; use f32 or bf16)")
    return out


# ---- quantized files ----------------------------------------------------------------------

def read_quant_metadata(files: CheckpointFiles) -> tuple[Optional[str], dict]:
    """(body dtype, {tensor name: QuantTensor}) of a quantized checkpoint, or (None, {})
    for an ordinary one. Every recorded tensor is checked against its file entry."""
    body, tensors = None, {}
    for f in files.files.values():
        if any(k.startswith("hearthlm.") for k in f.metadata):
            dtype, found = _read_file_metadata(f)
            if body not in (None, dtype):
                raise ModelFormatError(f"{f.path}: quantized to {dtype}, other shards to {body}")
            body = dtype
            tensors.update(found)
    return body, tensors


def _read_file_metadata(f: SafetensorsFile) -> tuple[str, dict]:
    md = f.metadata
    if md.get("hearthlm.format") != FORMAT_NAME:
        raise ModelFormatError(
            f"{f.path}: unknown weight format {md.get('hearthlm.format')!r} in the metadata "
            f"(this hearthlm reads {FORMAT_NAME!r})")
    try:
        version = int(md.get("hearthlm.format_version", ""))
    except ValueError:
        raise ModelFormatError(f"{f.path}: hearthlm.format_version must be an integer, "
                               f"got {md.get('hearthlm.format_version')!r}") from None
    if version > FORMAT_VERSION:
        raise ModelFormatError(
            f"{f.path}: {FORMAT_NAME} version {version} is newer than this hearthlm reads "
            f"({FORMAT_VERSION}); upgrade hearthlm")
    if version < 1:
        raise ModelFormatError(f"{f.path}: invalid {FORMAT_NAME} version {version}")
    dtype = md.get("hearthlm.dtype")
    if dtype not in QUANT_DTYPES:
        raise ModelFormatError(f"{f.path}: hearthlm.dtype must be one of {', '.join(QUANT_DTYPES)}, got {dtype!r}")
    try:
        entries = json.loads(md.get("hearthlm.tensors", ""))
    except json.JSONDecodeError as e:
        raise ModelFormatError(f"{f.path}: hearthlm.tensors is not valid JSON: {e}") from None
    if not isinstance(entries, dict):
        raise ModelFormatError(f"{f.path}: hearthlm.tensors must map tensor names to [format, N, K]")
    out = {}
    for name, entry in entries.items():
        where = f"{f.path}: tensor '{name}'"
        if (not isinstance(entry, list) or len(entry) != 3 or entry[0] not in QUANT_DTYPES or
                not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in entry[1:])):
            raise ModelFormatError(f"{where}: metadata entry must be [{'|'.join(QUANT_DTYPES)}, N, K] "
                                   f"with N, K > 0, got {entry!r}")
        fmt, rows, cols = entry
        info = f.tensors.get(name)
        if info is None:
            raise ModelFormatError(f"{where}: listed in hearthlm.tensors but not in the file")
        expected = packed_shape(fmt, rows, cols)
        if info.dtype != "U8" or info.shape[0] != expected[0] or int(np.prod(info.shape[1:])) != expected[1]:
            raise ModelFormatError(
                f"{where}: {fmt} weights [{rows}, {cols}] need U8 blocks {list(expected)} "
                f"(row groups, bytes per row group), found {info.dtype} {list(info.shape)} "
                "(K-quant files written before tail blocks: quantize again)")
        out[name] = QuantTensor(fmt, rows, cols)
    return dtype, out
