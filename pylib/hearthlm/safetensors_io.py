"""Read safetensors files through a read-only memory map (or into memory given),
validating everything.

The format: 8 bytes little-endian header length, a JSON header mapping tensor names
to {dtype, shape, data_offsets: [begin, end]} (offsets relative to the end of the
header), then the data. Arrays returned here are zero-copy views of the map; bf16
tensors come back as uint16 bit patterns (numpy has no bfloat16).
"""
from __future__ import annotations

import json
import mmap
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Optional

import numpy as np

from .errors import ModelFormatError

# safetensors dtype name -> numpy dtype used to view the bytes.
DTYPES = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
MAX_HEADER_BYTES = 100 * 1024 * 1024
READ_SLICE_BYTES = 4 << 20  # read_into splits a tensor among threads in slices of at least this


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str  # safetensors name: "F32", "BF16", ...
    shape: tuple
    begin: int  # absolute byte offsets in the file
    end: int


class SafetensorsFile:
    """One safetensors file, memory-mapped read-only."""

    def __init__(self, path: str):
        self.path = str(path)
        self.tensors, self.metadata, self._map = self._open()

    def _open(self):
        try:
            size = os.path.getsize(self.path)
            f = open(self.path, "rb")
        except OSError as e:
            raise ModelFormatError(f"{self.path}: cannot open: {e.strerror}") from None
        with f:
            if size < 8:
                raise ModelFormatError(f"{self.path}: {size} bytes is too short for a safetensors header")
            header_len = int.from_bytes(f.read(8), "little")
            if header_len > min(size - 8, MAX_HEADER_BYTES):
                raise ModelFormatError(
                    f"{self.path}: header length {header_len} exceeds the file "
                    f"({size} bytes); the file is truncated or not safetensors")
            raw = f.read(header_len)
            try:
                header = json.loads(raw.decode("utf-8"))
            except (ValueError, RecursionError) as e:  # also bad UTF-8, > 4300-digit ints
                raise ModelFormatError(f"{self.path}: header is not valid JSON: {e}") from None
            if not isinstance(header, dict):
                raise ModelFormatError(f"{self.path}: header must be a JSON object")
            data_start = 8 + header_len
            data_size = size - data_start
            metadata = header.pop("__metadata__", None) or {}
            if not isinstance(metadata, dict):
                raise ModelFormatError(f"{self.path}: __metadata__ must be an object")
            tensors = {name: self._parse_entry(name, entry, data_start, data_size)
                       for name, entry in header.items()}
            mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size > 0 else None
        return tensors, metadata, mapped

    def _parse_entry(self, name, entry, data_start, data_size) -> TensorInfo:
        where = f"{self.path}: tensor '{name}'"
        if not isinstance(entry, dict):
            raise ModelFormatError(f"{where}: entry must be an object")
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if not isinstance(dtype, str) or dtype not in DTYPES:
            raise ModelFormatError(f"{where}: unknown dtype {dtype!r} (known: {', '.join(DTYPES)})")
        if (not isinstance(shape, list) or
                not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
            raise ModelFormatError(f"{where}: shape must be a list of non-negative integers, got {shape!r}")
        if (not isinstance(offsets, list) or len(offsets) != 2 or
                not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)):
            raise ModelFormatError(f"{where}: data_offsets must be [begin, end], got {offsets!r}")
        begin, end = offsets
        if not 0 <= begin <= end <= data_size:
            raise ModelFormatError(
                f"{where}: data_offsets [{begin}, {end}] point outside the data section "
                f"of {data_size} bytes (file truncated?)")
        n = 1
        for d in shape:
            n *= d  # Python ints: no overflow
        if n * DTYPES[dtype].itemsize != end - begin:
            raise ModelFormatError(
                f"{where}: shape {shape} of {dtype} needs {n * DTYPES[dtype].itemsize} bytes, "
                f"data_offsets give {end - begin}")
        return TensorInfo(name, dtype, tuple(shape), data_start + begin, data_start + end)

    def array(self, name: str) -> np.ndarray:
        """The tensor as a read-only numpy view of the map (copied only if misaligned)."""
        info = self.tensors[name]
        dt = DTYPES[info.dtype]
        count = (info.end - info.begin) // dt.itemsize
        if count == 0:
            return np.zeros(info.shape, dtype=dt)
        arr = np.frombuffer(self._map, dtype=dt, count=count, offset=info.begin).reshape(info.shape)
        if not arr.flags.aligned:
            arr = arr.copy()
        return arr

    def read_into(self, name: str, out: np.ndarray, n_threads: int = 1) -> None:
        """Read the tensor from the file (not through the map) into `out`, an array of
        its size, in up to n_threads slices read in parallel."""
        info = self.tensors[name]
        dst = memoryview(out.reshape(-1).view(np.uint8))
        n = info.end - info.begin
        if len(dst) != n:
            raise ValueError(f"{self.path}: tensor '{name}' has {n} bytes, the destination {len(dst)}")
        parts = max(1, min(n_threads, n // READ_SLICE_BYTES))
        step = -(-n // parts)

        def read(start: int) -> None:
            end = min(start + step, n)
            try:
                with open(self.path, "rb", buffering=0) as f:
                    f.seek(info.begin + start)
                    while start < end:
                        got = f.readinto(dst[start:end])
                        if not got:
                            raise ModelFormatError(f"{self.path}: tensor '{name}': the file ends early "
                                                   "(truncated after it was opened?)")
                        start += got
            except OSError as e:
                raise ModelFormatError(f"{self.path}: tensor '{name}': cannot read: {e.strerror}") from None

        if parts == 1:
            read(0)
            return
        with ThreadPoolExecutor(parts) as pool:
            list(pool.map(read, range(0, n, step)))


class CheckpointFiles:
    """All safetensors files of a model folder: one file or an index of shards."""

    def __init__(self, folder: str):
        self.folder = str(folder)
        single = os.path.join(self.folder, "model.safetensors")
        index = os.path.join(self.folder, "model.safetensors.index.json")
        self.files: dict[str, SafetensorsFile] = {}
        self.where: dict[str, str] = {}  # tensor name -> file name
        if os.path.exists(index):
            self._open_index(index)
        elif os.path.exists(single):
            self.files["model.safetensors"] = SafetensorsFile(single)
            self.where = {name: "model.safetensors" for name in self.files["model.safetensors"].tensors}
        else:
            raise ModelFormatError(
                f"{self.folder}: no model.safetensors or model.safetensors.index.json "
                "(only safetensors checkpoints are supported)")

    def _open_index(self, index: str) -> None:
        try:
            with open(index, encoding="utf-8") as f:
                weight_map = json.load(f).get("weight_map")
        except (OSError, ValueError, RecursionError, AttributeError) as e:
            raise ModelFormatError(f"{index}: cannot read the shard index: {e}") from None
        if not isinstance(weight_map, dict):
            raise ModelFormatError(f"{index}: 'weight_map' must map tensor names to files")
        for name, fname in weight_map.items():
            if (not isinstance(fname, str) or os.path.basename(fname) != fname or not fname
                    or "\0" in fname or fname in (".", "..")):
                raise ModelFormatError(f"{index}: tensor '{name}' maps to an invalid file name {fname!r}")
            if fname not in self.files:
                self.files[fname] = SafetensorsFile(os.path.join(self.folder, fname))
            if name not in self.files[fname].tensors:
                raise ModelFormatError(f"{index}: tensor '{name}' is not in {fname}")
            self.where[name] = fname

    def __contains__(self, name: str) -> bool:
        return name in self.where

    def info(self, name: str) -> TensorInfo:
        return self.files[self.where[name]].tensors[name]

    def path_of(self, name: str) -> str:
        return os.path.join(self.folder, self.where[name])

    def array(self, name: str) -> np.ndarray:
        return self.files[self.where[name]].array(name)

    def read_into(self, name: str, out: np.ndarray, n_threads: int = 1) -> None:
        self.files[self.where[name]].read_into(name, out, n_threads)


def write_safetensors(path: str, tensors, metadata: Optional[dict] = None) -> None:
    """Write tensors to `path` one at a time (peak memory: one tensor).

    tensors: list of (name, safetensors dtype, shape, producer) where producer() returns
    the array's bytes-compatible numpy array when it is that tensor's turn. Written to
    a temporary file first and renamed, so an interrupted write never leaves a
    half-file under the final name.
    """
    header: dict = {}
    offset = 0
    for name, dtype, shape, _ in tensors:
        n = DTYPES[dtype].itemsize
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # keep the data 8-byte aligned
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(len(raw).to_bytes(8, "little"))
            f.write(raw)
            for name, dtype, shape, produce in tensors:
                arr = np.ascontiguousarray(produce())
                expected = header[name]["data_offsets"][1] - header[name]["data_offsets"][0]
                if arr.nbytes != expected:
                    raise ValueError(f"{path}: tensor '{name}' produced {arr.nbytes} bytes, expected {expected}")
                f.write(arr.tobytes())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
