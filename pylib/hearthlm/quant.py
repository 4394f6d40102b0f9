"""Quantized weights (the formats: csrc/kernels/quant.h, registered in csrc/formats.cpp).

* `tensor_format`: which format each matrix gets for a quantized dtype (the mixes).
* `quantize_tensor`: one tensor from the memory map -> interleaved blocks, in C++,
  without an f32 copy of the tensor (peak memory: the quantized output).
* Quantized safetensors files: every quantized tensor is a U8 array of shape
  [row groups, k blocks, block bytes] (formats.Format.packed_shape) holding the
  kernels' layout, so loading is a zero-copy memory map. The file's `__metadata__`
  says what they are:
      hearthlm.format          "hearthlm-quant"
      hearthlm.format_version  "1"
      hearthlm.dtype           the dtype asked for ("q4", "q4k", ...)
      hearthlm.tensors         JSON {tensor name: [format, N, K]}
  Norm weights and biases are stored unchanged.
* `quantize(src, dst, dtype)`: writes such a model folder (`hearthlm quantize`).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from typing import Optional

import numpy as np

from . import _kernels
from .errors import InvalidInputError, ModelFormatError
from .safetensors_io import CheckpointFiles, SafetensorsFile, write_safetensors

from .formats import FORMATS, PLAIN, QUANTIZED as QUANT_DTYPES

FORMAT_NAME = "hearthlm-quant"
FORMAT_VERSION = 1
# The embedding table and the LM head: the one matrix that scores every token.
HEAD_TENSORS = ("model.embed_tokens.weight", "lm_head.weight")
# safetensors dtype -> source type of the C++ quantizer (F64 goes through f32).
QUANTIZER_SOURCES = {**{FORMATS[p].safetensors: p for p in PLAIN}, "F64": "f32"}
K_QUANTS = ("q4k", "q6k")  # the formats whose quantizer uses importance weights
PROGRESS_MIN_BYTES = 256 << 20  # show progress when quantizing more than this
WEIGHT_FILE_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack",
                        ".gguf", ".onnx")


@dataclass(frozen=True)
class QuantTensor:
    fmt: str    # a quantized format name
    rows: int   # N
    cols: int   # K


def packed_shape(fmt: str, rows: int, cols: int) -> tuple:
    return FORMATS[fmt].packed_shape(rows, cols)


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
    q4k: llama.cpp's Q4_K_M recipe: the LM head (the embedding table when tied) q6k,
         attention V and FFN down q6k in the more_bits layers, the rest q4k.
    head_dtype, when given, is the format of both head tensors."""
    if name in HEAD_TENSORS:
        if head_dtype is not None:
            return head_dtype
        if dtype == "q4":
            return "q8"
        if dtype == "q4k":
            return "q6k" if name == "lm_head.weight" or tied else "q4k"
        return dtype
    m = _SENSITIVE.match(name)
    if dtype == "q4k" and m and more_bits(int(m.group(1)), n_layers):
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


class Progress:
    """One self-overwriting line on stderr while quantizing a large model."""

    def __init__(self, what: str, total_bytes: int):
        self.what, self.total, self.done = what, total_bytes, 0
        self.enabled = total_bytes >= PROGRESS_MIN_BYTES

    def advance(self, nbytes: int) -> None:
        self.done += nbytes
        if self.enabled:
            print(f"\rhearthlm: {self.what}: {100 * self.done // max(self.total, 1):3d}% "
                  f"({self.done / 1e9:.2f} / {self.total / 1e9:.2f} GB)", end="", file=sys.stderr, flush=True)

    def finish(self) -> None:
        if self.enabled and self.done:
            print(file=sys.stderr, flush=True)


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
        if info.dtype != "U8" or tuple(info.shape) != expected:
            raise ModelFormatError(
                f"{where}: {fmt} weights [{rows}, {cols}] need U8 blocks {list(expected)} "
                f"(row groups, k blocks, bytes), found {info.dtype} {list(info.shape)}")
        out[name] = QuantTensor(fmt, rows, cols)
    return dtype, out


# ---- writing a quantized model folder -------------------------------------------------------

def quantize(src, dst, dtype: str = "q4", head_dtype: Optional[str] = None,
             n_threads: Optional[int] = None, calibration=None) -> str:
    """Write a copy of the model folder `src` to `dst` with every matrix quantized for
    `dtype` (a quantized format; each matrix's format: tensor_format, `head_dtype` for
    the embedding table and LM head if given). `calibration`: a UTF-8 text file; the
    model is run on it (hearthlm.calibration) and the K-quant formats weight each input
    column's squared error by its mean squared activation. config, tokenizer and
    generation files are copied. `dst` must not exist or be empty; it is written under
    a temporary name and renamed when complete. Returns dst."""
    from .cpu import physical_cores
    from .models import model_args, read_config

    if dtype not in QUANT_DTYPES:
        raise InvalidInputError(f"dtype: expected one of {', '.join(QUANT_DTYPES)}, got {dtype!r}")
    check_head_dtype(head_dtype)
    if calibration is not None and dtype not in K_QUANTS:
        raise InvalidInputError(f"calibration: only the K-quant dtypes ({', '.join(K_QUANTS)}) use "
                                f"importance weights, not {dtype}")
    src, dst = os.fspath(src), os.path.abspath(os.fspath(dst))
    if not os.path.isdir(src):
        raise ModelFormatError(f"{src}: not a directory (expected a Hugging Face model folder)")
    if os.path.exists(dst) and (not os.path.isdir(dst) or os.listdir(dst)):
        raise InvalidInputError(f"{dst}: already exists and is not an empty directory; refusing to overwrite")
    model_args(read_config(src), os.path.join(src, "config.json"))  # an architecture we can run
    files = CheckpointFiles(src)
    if read_quant_metadata(files)[0] is not None:
        raise InvalidInputError(f"{src}: already quantized")
    n_threads = n_threads or physical_cores()
    importance = {}
    if calibration is not None:
        from .calibration import importance_from_text
        importance = importance_from_text(src, calibration)

    plan, recorded, to_quantize = [], {}, 0
    n_layers, tied = layer_count(files.where), "lm_head.weight" not in files
    for name in files.where:
        info = files.info(name)
        if len(info.shape) == 2 and info.dtype in QUANTIZER_SOURCES:
            fmt = tensor_format(name, dtype, head_dtype, n_layers, tied)
            recorded[name] = [fmt, *info.shape]
            to_quantize += info.end - info.begin
            plan.append((name, "U8", packed_shape(fmt, *info.shape), fmt, info))
        else:
            plan.append((name, info.dtype, info.shape, None, info))
    plan.sort(key=lambda p: p[3] is None)  # blocks first: their sizes keep 16-byte alignment
    progress = Progress(f"quantizing to {dtype}", to_quantize)

    def producer(name, fmt, info):
        def make():
            raw = files.array(name)
            if fmt is None:
                return raw
            out = quantize_tensor(raw, info.dtype, fmt, n_threads, files.path_of(name), name,
                                  importance.get(name) if fmt in K_QUANTS else None)
            progress.advance(info.end - info.begin)
            return out
        return make

    metadata = {"format": "pt", "hearthlm.format": FORMAT_NAME,
                "hearthlm.format_version": str(FORMAT_VERSION), "hearthlm.dtype": dtype,
                "hearthlm.tensors": json.dumps(recorded, separators=(",", ":"))}
    parent = os.path.dirname(dst)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(dst)}.partial-", dir=parent)
    try:
        for entry in os.listdir(src):
            path = os.path.join(src, entry)
            if (os.path.isfile(path) and not entry.endswith(WEIGHT_FILE_SUFFIXES)
                    and entry != "model.safetensors.index.json"):
                shutil.copy2(path, os.path.join(tmp, entry))
        write_safetensors(os.path.join(tmp, "model.safetensors"),
                          [(name, st, shape, producer(name, fmt, info)) for name, st, shape, fmt, info in plan],
                          metadata)
        progress.finish()
        if os.path.isdir(dst):
            os.rmdir(dst)  # empty (checked above); fails rather than overwrite if it filled since
        os.rename(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dst
