"""Fuzz the model-folder loader: every input must either load (and run one token) or
raise a hearthlm.HearthlmError subclass. Any other exception, a crash or a hang is a
finding.

    pip install atheris
    python fuzz/fuzz_loader.py fuzz/corpus -max_total_time=600 -timeout=10   # atheris
    python fuzz/fuzz_loader.py --plain fuzz/corpus --seconds 30               # no atheris
    python fuzz/fuzz_loader.py --replay FILE_OR_DIR ...                       # re-run inputs

One input is a *bundle*: the files of a model folder, each as [1 byte file id]
[4 bytes little-endian length][bytes] (FILES below), decoded leniently so that any
bytes make some folder. The custom mutator is structure-aware: it mutates one file at
a time, either as bytes (libFuzzer's mutator) or, for JSON and the safetensors header,
as a JSON tree (values swapped for hostile ones: huge/negative ints, NaN, wrong types,
deep nesting), or by dropping/duplicating files. Seeds (fuzz/corpus/) come from
fuzz/make_corpus.py; inputs that once failed live in fuzz/regressions/ and are replayed
by tests/test_fuzz_loader.py.
"""
from __future__ import annotations

import json
import math
import os
import random
import shutil
import signal
import struct
import sys
import tempfile
import time

FILES = [
    "config.json",
    "model.safetensors",
    "model.safetensors.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "generation_config.json",
    "model-00001-of-00002.safetensors",
    "model-00002-of-00002.safetensors",
    "model.gguf",  # present: the bundle is loaded as this GGUF file instead of the folder
]
SHARDS = FILES[6:8]
JSON_FILES = {n for n in FILES if n.endswith(".json")}
MAGIC = b"HLMF"
MAX_FILE = 1 << 20


# ---- bundles ------------------------------------------------------------------------

def decode(data: bytes) -> dict:
    """Bytes -> {file name: bytes}. Total: never raises."""
    files: dict = {}
    i = 4 if data.startswith(MAGIC) else 0
    while i + 5 <= len(data):
        fid, n = data[i], struct.unpack_from("<I", data, i + 1)[0]
        i += 5
        files[FILES[fid % len(FILES)]] = data[i:i + min(n, MAX_FILE)]
        i += n
    return files


def encode(files: dict) -> bytes:
    out = bytearray(MAGIC)
    for name, blob in files.items():
        out += struct.pack("<BI", FILES.index(name), len(blob)) + blob
    return bytes(out)


# ---- structure-aware mutation -----------------------------------------------------------

HOSTILE = [0, -1, 1, 2, 3, 7, 255, 256, 65536, 2 ** 31 - 1, 2 ** 31, 2 ** 32, 2 ** 63 - 1, 2 ** 63, 2 ** 64 + 1,
           -2 ** 63, 10 ** 30, 0.0, -0.0, 0.5, 1e-300, 1e308, float("nan"), float("inf"), -float("inf"),
           True, False, None, "", "x", "F32", "BF16", "I8", "llama3", "linear", "\x00", "a/b", "..",
           [], [0], [0, 0], [2 ** 64, 1], [-1, 5], [[1]], {}, {"content": 5}, {"a": [1]}]


def deep(n: int):
    v: object = 0
    for _ in range(n):
        v = [v]
    return v


def mutate_tree(tree, rng: random.Random):
    """Replace, delete or add one node of a JSON tree (in place when possible)."""
    nodes = []  # (container, key)

    def walk(node, depth):
        if depth > 12:
            return
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for k, v in list(items):
            nodes.append((node, k))
            walk(v, depth + 1)

    walk(tree, 0)
    if not nodes:
        return rng.choice(HOSTILE + [deep(rng.choice([10, 1000, 100000]))])
    container, key = rng.choice(nodes)
    op = rng.random()
    if op < 0.6:
        value = rng.choice(HOSTILE)
        if rng.random() < 0.05:
            value = deep(rng.choice([100, 10000, 200000]))
        container[key] = value
    elif op < 0.75:
        if isinstance(container, dict):
            del container[key]
        else:
            container.pop(key)
    elif op < 0.9:
        v = container[key]
        if isinstance(v, int) and not isinstance(v, bool):
            container[key] = v + rng.choice([-1, 1, -v, v, 2 ** 32])
        elif isinstance(v, str):
            container[key] = v + rng.choice(["", "x", ".weight", "\u00e9"]) if rng.random() < 0.5 else v[:-1]
        else:
            container[key] = rng.choice(HOSTILE)
    else:  # copy another node's value here (a real but misplaced value)
        other_container, other_key = rng.choice(nodes)
        container[key] = json.loads(json.dumps(other_container[other_key], allow_nan=True))
    return tree


def dump_json(tree, rng: random.Random) -> bytes:
    try:
        text = json.dumps(tree, allow_nan=True)
    except (ValueError, RecursionError):
        text = "[" * 100000
    return text.encode("utf-8", "surrogatepass")


def mutate_safetensors(blob: bytes, rng: random.Random, byte_mutate) -> bytes:
    if len(blob) >= 8:
        n = struct.unpack_from("<Q", blob)[0]
        if 8 + n <= len(blob):
            try:
                header = json.loads(blob[8:8 + n])
            except (ValueError, RecursionError):
                header = None
            if header is not None and rng.random() < 0.7:
                raw = dump_json(mutate_tree(header, rng), rng)
                if rng.random() < 0.8:
                    raw += b" " * (-len(raw) % 8)
                return struct.pack("<Q", len(raw)) + raw + blob[8 + n:]
            op = rng.random()
            if op < 0.3:  # header length field lies
                return struct.pack("<Q", rng.choice([0, n - 1, n + 1, len(blob), 2 ** 63, 2 ** 64 - 1]) % 2 ** 64) + blob[8:]
            if op < 0.6:  # data truncated or extended
                return blob[:rng.randrange(len(blob) + 1)] if rng.random() < 0.5 else blob + b"\0" * rng.randrange(64)
    return byte_mutate(blob)


def mutate_gguf(blob: bytes, rng: random.Random) -> bytes:
    """A hostile integer over a length, count, dimension, type or offset field of the
    GGUF header (they are 4 or 8 bytes wide at arbitrary positions)."""
    b = bytearray(blob)
    if len(b) < 32:
        return bytes(b)
    end = min(len(b), 4096) - 8
    i = rng.randrange(4, end) if rng.random() < 0.7 else rng.choice([4, 8, 16, 24])
    width = rng.choice(["<I", "<Q"])
    value = rng.choice([v for v in HOSTILE if isinstance(v, int) and not isinstance(v, bool)])
    struct.pack_into(width, b, i, value % (2 ** (32 if width == "<I" else 64)))
    return bytes(b)


def mutate(data: bytes, rng: random.Random, byte_mutate, max_size: int) -> bytes:
    files = decode(data)
    op = rng.random()
    if not files or op < 0.05:
        files[rng.choice(FILES)] = b"{}"
    elif op < 0.12:
        del files[rng.choice(list(files))]
    elif op < 0.15 and "model.safetensors" in files:  # the same tensors as shards
        files[rng.choice(SHARDS)] = files["model.safetensors"]
    else:
        name = rng.choice(list(files))
        blob = files[name]
        if name.endswith(".safetensors"):
            files[name] = mutate_safetensors(blob, rng, byte_mutate)
        elif name.endswith(".gguf") and rng.random() < 0.5:
            files[name] = mutate_gguf(blob, rng)
        elif name in JSON_FILES and rng.random() < 0.75:
            try:
                tree = json.loads(blob)
                files[name] = dump_json(mutate_tree(tree, rng), rng)
            except (ValueError, RecursionError):
                files[name] = byte_mutate(blob)
        else:
            files[name] = byte_mutate(blob)
    out = encode(files)
    return out if len(out) <= max_size else byte_mutate(data)[:max_size]


def plain_byte_mutate(rng: random.Random):
    def m(blob: bytes) -> bytes:
        b = bytearray(blob)
        for _ in range(rng.randint(1, 4)):
            op = rng.random()
            if b and op < 0.5:
                b[rng.randrange(len(b))] = rng.randrange(256)
            elif b and op < 0.7:
                del b[rng.randrange(len(b)):][:rng.randint(1, 16)]
            elif op < 0.85:
                i = rng.randrange(len(b) + 1)
                b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
            else:
                b = b[:rng.randrange(len(b) + 1)]
        return bytes(b)
    return m


# ---- the property ------------------------------------------------------------------------

_work = None


def write_folder(files: dict) -> str:
    """A fresh folder per input: files of an earlier model may still be memory-mapped,
    and rewriting a mapped file in place could fault (SIGBUS) on a later access."""
    global _work
    if _work is None:
        _work = tempfile.mkdtemp(prefix="hearthlm-fuzz-")
    folder = os.path.join(_work, "m")
    if os.path.exists(folder):
        shutil.rmtree(folder)
    os.makedirs(folder)
    for name, blob in files.items():
        with open(os.path.join(folder, name), "wb") as f:
            f.write(blob)
    return folder


def check_input(data: bytes) -> None:
    """Load the folder and run one token; only HearthlmError may come out."""
    import hearthlm

    files = decode(data)
    folder = write_folder(files)
    try:
        model = hearthlm.load(os.path.join(folder, "model.gguf") if "model.gguf" in files else folder, n_threads=1)
        logits = model.logits([0])
        assert logits.shape == (1, model.vocab_size), logits.shape
        model.generate_ids([0], 2)  # reads eos ids from generation/tokenizer config
        if model.tokenizer is not None:
            ids = model.tokenizer.encode("hello world")
            model.tokenizer.decode(ids)
    except hearthlm.HearthlmError:
        pass


def load_corpus(paths) -> list:
    seeds = []
    for p in paths:
        if os.path.isdir(p):
            seeds += [os.path.join(p, f) for f in sorted(os.listdir(p)) if not f.startswith(".")]
        elif os.path.exists(p):
            seeds.append(p)
    return seeds


class Hang(Exception):
    pass


def run_plain(paths, seconds: float, seed: int, timeout: int = 10) -> int:
    """Structure-aware random mutation without coverage feedback (no atheris needed)."""
    import hearthlm  # noqa: F401 - not importable is a setup error, not a finding

    rng = random.Random(seed)
    seeds = [open(p, "rb").read() for p in load_corpus(paths)]
    if not seeds:
        print("no seeds", file=sys.stderr)
        return 2

    def on_alarm(signum, frame):
        raise Hang(f"input ran for more than {timeout} s")

    signal.signal(signal.SIGALRM, on_alarm)
    deadline, n = time.monotonic() + seconds, 0
    byte_mutate = plain_byte_mutate(rng)
    findings: dict = {}  # (type, innermost hearthlm frame) -> input file
    while time.monotonic() < deadline:
        data = rng.choice(seeds)
        for _ in range(rng.randint(1, 4)):
            data = mutate(data, rng, byte_mutate, 1 << 21)
        signal.alarm(timeout)
        try:
            check_input(data)
        except KeyboardInterrupt:
            raise
        except BaseException as e:  # noqa: B902 - every escape is a finding
            signal.alarm(0)
            key = (f"{type(e).__module__}.{type(e).__name__}", where(e))
            if key not in findings:
                path = os.path.abspath(f"crash-plain-{seed}-{n}")
                with open(path, "wb") as f:
                    f.write(data)
                findings[key] = path
                print(f"FINDING {key[0]} at {key[1]}: {str(e)[:200]}\n  input: {path}", flush=True)
        signal.alarm(0)
        n += 1
    print(f"plain fuzzing: {n} inputs in {seconds:.0f} s (seed {seed}), {len(findings)} distinct findings")
    return 1 if findings else 0


def where(e: BaseException) -> str:
    """The innermost traceback frame in hearthlm (else the innermost one)."""
    import traceback

    frames = traceback.extract_tb(e.__traceback__)
    ours = [f for f in frames if "hearthlm" in f.filename] or frames
    return f"{os.path.basename(ours[-1].filename)}:{ours[-1].lineno}" if ours else "?"


def replay(paths) -> int:
    failed = 0
    for p in load_corpus(paths):
        try:
            check_input(open(p, "rb").read())
            print(f"ok   {p}")
        except Exception as e:
            failed += 1
            print(f"FAIL {p}: {type(e).__name__}: {e}")
    return 1 if failed else 0


def main(argv) -> int:
    if argv[1:2] == ["--plain"]:
        args, seconds, seed = [], 30.0, int(time.time())
        it = iter(argv[2:])
        for a in it:
            if a == "--seconds":
                seconds = float(next(it))
            elif a == "--seed":
                seed = int(next(it))
            else:
                args.append(a)
        return run_plain(args, seconds, seed)
    if argv[1:2] == ["--replay"]:
        return replay(argv[2:])

    import atheris

    with atheris.instrument_imports(include=["hearthlm"]):
        import hearthlm  # noqa: F401

    def custom_mutator(data, max_size, seed):
        rng = random.Random(seed)
        return mutate(data, rng, lambda b: atheris.Mutate(b, max(len(b) + 64, 64)), max_size)

    atheris.Setup(argv, check_input, custom_mutator=custom_mutator)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
