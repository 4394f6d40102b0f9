"""q8 / q4 quantized weights (the formats: csrc/kernels/quant.h).

* `quantize_tensor`: one tensor from the memory map -> interleaved superblocks, in C++,
  without an f32 copy of the tensor (peak memory: the quantized output).
* Quantized safetensors files: every quantized tensor is a U8 array of shape
  [ceil(N/8), ceil(K/32), 272 (q8) | 144 (q4)] holding the kernels' layout, so loading
  is a zero-copy memory map. The file's `__metadata__` says what they are:
      hearthlm.format          "hearthlm-quant"
      hearthlm.format_version  "1"
      hearthlm.dtype           "q8" | "q4" (the body; see head_dtype)
      hearthlm.tensors         JSON {tensor name: [format, N, K]}
  Norm weights and biases are stored unchanged.
* Folders of such files are written by hearthlm.quant_writer (`hearthlm quantize`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Optional

import numpy as np

from . import _kernels
from .errors import InvalidInputError, ModelFormatError
from .safetensors_io import CheckpointFiles, SafetensorsFile

QUANT_DTYPES = ("q8", "q4")
SUPERBLOCK_BYTES = {"q8": 272, "q4": 144}  # 8 rows x 32 weights: 8 x 34 / 8 x 18 bytes
FORMAT_NAME = "hearthlm-quant"
FORMAT_VERSION = 1
# The embedding table and the LM head: the one matrix that scores every token. With a
# q4 body they stay q8 by default: on the tiny test models that cuts KL(f32 || q4)
# by 15-45 % (tests/test_quant.py) for ~6 % more bytes per token on TinyLlama.
HEAD_TENSORS = ("model.embed_tokens.weight", "lm_head.weight")
DEFAULT_HEAD_DTYPE = {"q8": "q8", "q4": "q8"}
# safetensors dtype -> source type of the C++ quantizer (F64 goes through f32).
QUANTIZER_SOURCES = {"F32": "f32", "BF16": "bf16", "F16": "f16", "F64": "f32"}


@dataclass(frozen=True)
class QuantTensor:
    fmt: str    # "q8" | "q4"
    rows: int   # N
    cols: int   # K


def packed_shape(fmt: str, rows: int, cols: int) -> tuple:
    return (-(-rows // 8), -(-cols // 32), SUPERBLOCK_BYTES[fmt])


def head_dtype_for(dtype: str, head_dtype: Optional[str]) -> str:
    head = head_dtype or DEFAULT_HEAD_DTYPE[dtype]
    if head not in QUANT_DTYPES:
        raise InvalidInputError(f"head_dtype: expected one of {', '.join(QUANT_DTYPES)}, got {head!r}")
    return head


def quantize_tensor(raw: np.ndarray, stored_dtype: str, fmt: str, n_threads: int,
                    path: str, name: str) -> np.ndarray:
    """raw: [N, K] as stored (bf16 as uint16 bits) -> uint8 superblocks."""
    if stored_dtype == "F64":
        raw = raw.astype(np.float32)
    out = np.empty(packed_shape(fmt, *raw.shape), np.uint8)
    bad, overflow = _kernels.quantize(out, raw, QUANTIZER_SOURCES[stored_dtype], fmt, n_threads)
    K = raw.shape[1]
    if bad >= 0:
        raise ModelFormatError(
            f"{path}: tensor '{name}' has a non-finite weight at [{bad // K}, {bad % K}]; "
            f"cannot quantize it to {fmt}")
    if overflow >= 0:
        raise ModelFormatError(
            f"{path}: tensor '{name}' has a block at [{overflow // K}, {overflow % K}:] whose "
            f"{fmt} scale exceeds the fp16 range (weights of magnitude ~{65504 * (127 if fmt == 'q8' else 8):.3g}+)")
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
            raise ModelFormatError(f"{where}: metadata entry must be [q8|q4, N, K] with N, K > 0, got {entry!r}")
        fmt, rows, cols = entry
        info = f.tensors.get(name)
        if info is None:
            raise ModelFormatError(f"{where}: listed in hearthlm.tensors but not in the file")
        expected = packed_shape(fmt, rows, cols)
        if info.dtype != "U8" or tuple(info.shape) != expected:
            raise ModelFormatError(
                f"{where}: {fmt} weights [{rows}, {cols}] need U8 blocks {list(expected)} "
                f"(row groups, k blocks, bytes), found {info.dtype} {list(info.shape)}")
        out[name] = QuantTensor(fmt, rows, cols)
    return dtype, out
