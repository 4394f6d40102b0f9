"""Read a GGUF file (or the shards of a split one) through a read-only memory map,
validating everything: every length, count, dimension, type, offset and alignment
is checked against the file before it is used, and any fault is a ModelFormatError
naming the file and the field.

The format (little-endian): "GGUF", version u32 (2 or 3), tensor count u64, metadata
count u64; metadata entries (key string, value type u32, value); tensor entries (name
string, n_dims u32, dims u64 each, innermost first, ggml type u32, data offset u64);
then, at general.alignment (default 32), the data. Strings are u64 length + UTF-8.

The gguf package's GGUFReader parses the same thing but builds a numpy view per
string (tens of seconds for a 128k-token vocabulary); its type tables are used here."""
from __future__ import annotations

import math
import mmap
import os
import re
import struct
from dataclasses import dataclass

import numpy as np

from .errors import ModelFormatError, UnsupportedModelError

SPLIT = re.compile(r"^(.*)-(\d{5})-of-(\d{5})\.gguf$")
SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
STRING, ARRAY = 8, 9
MAX_DIMS = 4
MAX_ELEMENTS = 1 << 40


def gguf_package():
    try:
        import gguf
    except ImportError:
        raise UnsupportedModelError("reading .gguf files needs the gguf package: "
                                    "pip install 'hearthlm[gguf]'") from None
    return gguf


@dataclass(frozen=True)
class GGUFTensor:
    name: str
    ggml_type: int
    dims: tuple       # innermost first, as GGUF lists them
    path: str         # the shard holding it
    data: np.ndarray  # uint8 [outer dims..., bytes of one row], a view of the map

    @property
    def shape(self) -> tuple:
        """Outer dimension first (numpy order)."""
        return tuple(reversed(self.dims))


class _Cursor:
    def __init__(self, path: str, buf):
        self.path, self.buf, self.pos = path, buf, 0
        self.field = "header"

    def fail(self, why: str):
        raise ModelFormatError(f"{self.path}: {self.field}: {why}")

    def unpack(self, fmt: str):
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.buf):
            self.fail(f"the file ends at byte {len(self.buf)} (truncated?)")
        value = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += size
        return value

    def string(self) -> str:
        n = self.unpack("<Q")
        if n > len(self.buf) - self.pos:
            self.fail(f"string length {n} runs past the end of the file")
        raw = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw.decode("utf-8", errors="replace")  # llama.cpp keeps such vocabulary bytes too

    def value(self, vtype: int, depth: int = 0):
        if vtype in SCALARS:
            return self.unpack(SCALARS[vtype])
        if vtype == STRING:
            return self.string()
        if vtype != ARRAY or depth > 1:
            self.fail(f"unknown value type {vtype}")
        itype, count = self.unpack("<I"), self.unpack("<Q")
        if count > len(self.buf) - self.pos:
            self.fail(f"array of {count} items runs past the end of the file")
        if itype in SCALARS and itype != 7:
            dtype = np.dtype(SCALARS[itype])
            if count * dtype.itemsize > len(self.buf) - self.pos:
                self.fail(f"array of {count} items runs past the end of the file")
            arr = np.frombuffer(self.buf, dtype, count, self.pos)
            self.pos += count * dtype.itemsize
            return arr.tolist()
        return [self.value(itype, depth + 1) for _ in range(count)]


class GGUFFile:
    """All shards of a GGUF model: metadata from the first, tensors from all."""

    def __init__(self, path: str):
        self.path = path
        self.fields: dict = {}
        self.tensors: dict = {}
        self._maps = []
        for i, shard in enumerate(shard_paths(path)):
            fields = self._read(shard)
            if i == 0:
                self.fields = fields

    def _read(self, path: str) -> dict:
        try:
            size = os.path.getsize(path)
            with open(path, "rb") as f:
                buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        except OSError as e:
            raise ModelFormatError(f"{path}: cannot open: {e.strerror}") from None
        self._maps.append(buf)
        c = _Cursor(path, buf)
        if c.unpack("<4s") != b"GGUF":
            c.fail("not a GGUF file (no GGUF magic)")
        c.field = "version"
        version = c.unpack("<I")
        if version not in (2, 3):
            c.fail(f"GGUF version {version} is not supported (2 or 3)")
        c.field = "tensor count"
        n_tensors = c.unpack("<Q")
        c.field = "metadata count"
        n_kv = c.unpack("<Q")
        if n_tensors > size // 24 or n_kv > size // 12:
            c.fail(f"{n_tensors} tensors / {n_kv} metadata entries cannot fit in {size} bytes")
        fields: dict = {}
        for i in range(n_kv):
            c.field = f"metadata entry {i}"
            key = c.string()
            c.field = f"metadata '{key}'"
            if key in fields:
                c.fail("appears twice")
            fields[key] = c.value(c.unpack("<I"))
        align = fields.get("general.alignment", 32)
        c.field = "metadata 'general.alignment'"
        if not isinstance(align, int) or isinstance(align, bool) or align <= 0 or align & (align - 1):
            c.fail(f"must be a power of two, got {align!r}")
        infos = []
        for i in range(n_tensors):
            c.field = f"tensor entry {i}"
            name = c.string()
            c.field = f"tensor '{name}'"
            n_dims = c.unpack("<I")
            if not 1 <= n_dims <= MAX_DIMS:
                c.fail(f"{n_dims} dimensions (1 to {MAX_DIMS} allowed)")
            dims = tuple(c.unpack("<Q") for _ in range(n_dims))
            infos.append((name, dims, c.unpack("<I"), c.unpack("<Q"), c.field))
        data_start = -(-c.pos // align) * align
        gguf = gguf_package()
        for name, dims, ggml_type, offset, field in infos:
            c.field = field
            if name in self.tensors:
                c.fail("appears twice (in this file or another shard)")
            if any(d <= 0 for d in dims) or math.prod(dims) > MAX_ELEMENTS:
                c.fail(f"dimensions {list(dims)} are not positive or too large")
            try:
                block, block_bytes = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(ggml_type)]
            except (ValueError, KeyError):
                c.fail(f"unknown ggml type {ggml_type}")
            if dims[0] % block:
                c.fail(f"row length {dims[0]} is not a multiple of the type's block of {block}")
            if offset % align:
                c.fail(f"data offset {offset} is not aligned to general.alignment {align}")
            row_bytes = dims[0] // block * block_bytes
            nbytes = math.prod(dims[1:]) * row_bytes
            begin = data_start + offset
            if begin + nbytes > size:
                c.fail(f"{nbytes} bytes at offset {offset} run past the end of the file "
                       f"({size} bytes; truncated?)")
            data = np.frombuffer(buf, np.uint8, nbytes, begin).reshape(*reversed(dims[1:]), row_bytes)
            self.tensors[name] = GGUFTensor(name, ggml_type, dims, path, data)
        return fields

    def get(self, key: str, default=None):
        return self.fields.get(key, default)

    def number(self, key: str, default=None):
        value = self.fields.get(key, default)
        if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool)
                                  or not math.isfinite(value)):
            raise ModelFormatError(f"{self.path}: metadata '{key}' must be a number, got {str(value)[:80]}")
        return value

    def strings(self, key: str) -> list:
        value = self.fields.get(key)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ModelFormatError(f"{self.path}: metadata '{key}' must be an array of strings")
        return value

    def numbers(self, key: str) -> list:
        value = self.fields.get(key)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                  for v in value):
            raise ModelFormatError(f"{self.path}: metadata '{key}' must be an array of numbers")
        return value


def shard_paths(path: str) -> list:
    """[path], or for the first file of a split GGUF every shard's path."""
    m = SPLIT.match(path)
    if not m:
        return [path]
    n = int(m.group(3))
    if int(m.group(2)) != 1 or n < 1:
        raise ModelFormatError(f"{path}: give the first file of a split GGUF (-00001-of-{m.group(3)}.gguf)")
    return [f"{m.group(1)}-{i:05d}-of-{n:05d}.gguf" for i in range(1, n + 1)]
