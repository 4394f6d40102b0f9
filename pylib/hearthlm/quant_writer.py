"""`quantize(src, dst, dtype)`: write a quantized copy of a model folder (`hearthlm quantize`).

The weights go to one model.safetensors in hearthlm's quantized format (hearthlm.quant);
config, tokenizer, generation and license files are copied, nothing else. Everything is
written into a temporary folder inside `dst` and moved into place when complete, so an
interrupted run leaves no half-written model and nothing beside `dst`.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Callable, Optional

from .errors import FileWriteError, InvalidInputError
from .quant import (FORMAT_NAME, FORMAT_VERSION, K_QUANTS, QUANT_DTYPES, QUANTIZER_SOURCES, check_head_dtype,
                    layer_count, packed_shape, quantize_tensor, read_quant_metadata, tensor_format)
from .safetensors_io import CheckpointFiles, write_safetensors

# The files of a model folder besides its weights that a loader reads (hearthlm or
# transformers); license files travel with weights derived from the original.
COPIED_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                "special_tokens_map.json", "added_tokens.json", "chat_template.jinja", "tokenizer.model",
                "vocab.json", "merges.txt")
LICENSE_PREFIXES = ("LICENSE", "LICENCE", "NOTICE", "USE_POLICY")

Progress = Callable[[int, int], None]  # (source bytes quantized so far, total)


def file_metadata(dtype: str, recorded: dict) -> dict:
    """The safetensors `__metadata__` of a quantized file; recorded: {name: [format, N, K]}."""
    return {"format": "pt", "hearthlm.format": FORMAT_NAME, "hearthlm.format_version": str(FORMAT_VERSION),
            "hearthlm.dtype": dtype, "hearthlm.tensors": json.dumps(recorded, separators=(",", ":"))}


def copied_files(src: str) -> list[str]:
    return sorted(e for e in os.listdir(src) if os.path.isfile(os.path.join(src, e)) and
                  (e in COPIED_FILES or e.upper().startswith(LICENSE_PREFIXES)))


def quantize(src, dst, dtype: str = "q4", head_dtype: Optional[str] = None,
             n_threads: Optional[int] = None, calibration=None, progress: Optional[Progress] = None) -> str:
    """Write a copy of the model folder `src` to `dst` with every matrix quantized for
    `dtype` (a quantized format; each matrix's format: quant.tensor_format, `head_dtype`
    for the embedding table and LM head if given). `calibration`: a UTF-8 text file; the
    model is run on it (hearthlm.calibration) and the K-quant formats weight each input
    column's squared error by its mean squared activation. `dst` must not exist or be
    an empty folder. progress(done, total), if given, is called with the source bytes
    quantized so far. Returns dst."""
    from .cpu import physical_cores
    from .model import model_folder
    from .models import model_args, read_config

    if dtype not in QUANT_DTYPES:
        raise InvalidInputError(f"dtype: expected one of {', '.join(QUANT_DTYPES)}, got {dtype!r}")
    check_head_dtype(head_dtype)
    if calibration is not None and dtype not in K_QUANTS:
        raise InvalidInputError(f"calibration: only the K-quant dtypes ({', '.join(K_QUANTS)}) use "
                                f"importance weights, not {dtype}")
    src, dst = model_folder(src), os.path.abspath(os.fspath(dst))
    check_destination(dst)
    model_args(read_config(src), os.path.join(src, "config.json"))  # an architecture we can run
    files = CheckpointFiles(src)
    if read_quant_metadata(files)[0] is not None:
        raise InvalidInputError(f"{src}: already quantized")
    n_threads = n_threads or physical_cores()
    importance = {}
    if calibration is not None:
        from .calibration import importance_from_text
        importance = importance_from_text(src, calibration)

    plan, recorded, total = [], {}, 0
    n_layers, tied = layer_count(files.where), "lm_head.weight" not in files
    for name in files.where:
        info = files.info(name)
        if len(info.shape) == 2 and info.dtype in QUANTIZER_SOURCES:
            fmt = tensor_format(name, dtype, head_dtype, n_layers, tied)
            recorded[name] = [fmt, *info.shape]
            total += info.end - info.begin
            plan.append((name, "U8", packed_shape(fmt, *info.shape), fmt, info))
        else:
            plan.append((name, info.dtype, info.shape, None, info))
    plan.sort(key=lambda p: p[3] is None)  # blocks first: their sizes keep 16-byte alignment
    done = 0

    def producer(name, fmt, info):
        def make():
            nonlocal done
            raw = files.array(name)
            if fmt is None:
                return raw
            out = quantize_tensor(raw, info.dtype, fmt, n_threads, files.path_of(name), name,
                                  importance.get(name) if fmt in K_QUANTS else None)
            done += info.end - info.begin
            if progress is not None:
                progress(done, total)
            return out
        return make

    metadata = file_metadata(dtype, recorded)
    if progress is not None:
        progress(0, total)

    def fill(tmp: str) -> None:
        for entry in copied_files(src):
            shutil.copyfile(os.path.join(src, entry), os.path.join(tmp, entry))
        write_safetensors(os.path.join(tmp, "model.safetensors"),
                          [(name, st, shape, producer(name, fmt, info)) for name, st, shape, fmt, info in plan],
                          metadata)

    write_folder(dst, fill)
    return dst


def check_destination(dst: str) -> None:
    if os.path.isdir(dst):
        if os.listdir(dst):
            raise InvalidInputError(f"{dst}: is not an empty folder; refusing to overwrite")
    elif os.path.lexists(dst):
        raise InvalidInputError(f"{dst}: is a file; the destination must be a new or empty folder")


def write_folder(dst: str, fill: Callable[[str], None]) -> None:
    """fill(tmp) writes the files into a temporary folder inside `dst` (created if
    absent), and they move into `dst` when it returns. On failure nothing is left: not
    the temporary folder, not a `dst` created here. An OSError becomes a FileWriteError
    naming the path at fault (`dst` for anything written)."""
    created, tmp, moved = False, None, []
    try:
        if not os.path.isdir(dst):
            os.makedirs(dst)
            created = True
        tmp = tempfile.mkdtemp(prefix=".partial-", dir=dst)
        fill(tmp)
        if os.listdir(dst) != [os.path.basename(tmp)]:
            raise InvalidInputError(f"{dst}: files appeared in it while writing; not overwriting them")
        for entry in os.listdir(tmp):
            os.rename(os.path.join(tmp, entry), os.path.join(dst, entry))
            moved.append(entry)
        os.rmdir(tmp)
    except BaseException as e:
        for entry in moved:
            os.remove(os.path.join(dst, entry))
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if created:
            shutil.rmtree(dst, ignore_errors=True)
        if isinstance(e, OSError) and not isinstance(e, FileWriteError):
            name = os.fspath(e.filename) if e.filename else ""
            where = name if name and not name.startswith(dst + os.sep) and name != dst else dst
            raise FileWriteError(f"{where}: cannot write the quantized model: {e.strerror}") from None
        raise
