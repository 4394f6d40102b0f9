"""KL(f32 || quantized) side by side on the same weights: hearthlm's q4 / q4k / q5k (the
Q4_K_M- and Q5_K_M-like mixes) / q6k, and, with --llama-cpp, llama.cpp's Q4_0 / Q4_K_M /
Q5_K_M / Q6_K / Q8_0
made by llama.cpp's own quantizer (llama-cpp-python's llama_model_quantize) from an
f32 GGUF of the folder. The files are loaded by hearthlm (hearthlm.load on the .gguf:
blocks converted exactly, Q/K rows un-permuted) and run by hearthlm's kernels, so the
rows compare the quantizers on the same kernels (llama.cpp's own inference would also
quantize activations per 256 instead of per 32). Bytes per weight count the 2-D matrices only.

    [LLAMA_CPP_BIN=DIR] python bench/kquant_kl.py FOLDER [--tokens 512] [--ctx 256]
        [--calibration FILE.txt] [--llama-cpp] [--text FILE.txt] [--quantized q4k=DIR,...]
        [--types q4k,Q4_K_M]

Quantized copies go to a temporary folder ($KL_TMP if set). Token ids: the encoded
--text if given (needs the folder's tokenizer), else random ids (seed 0). KL is the
mean over positions of KL(softmax(f32) || softmax(quantized)), in nats; the reference
is hearthlm's own f32 run."""
from __future__ import annotations

import argparse
import json
import os
import tempfile

import numpy as np

import hearthlm
from hearthlm.perplexity_eval import log_softmax

LLAMA_FTYPES = {"Q4_0": 2, "Q8_0": 7, "Q4_K_M": 15, "Q5_K_M": 17, "Q6_K": 18}  # llama_ftype


def mean_kl(ref: np.ndarray, ours: np.ndarray) -> float:
    lp, lq = log_softmax(ref), log_softmax(ours)
    return float((np.exp(lp) * (lp - lq)).sum(-1).mean())


def windows(ids: list, n_ctx: int) -> list:
    return [ids[i:i + n_ctx] for i in range(0, len(ids), n_ctx)]


def hearthlm_logits(folder, ids, n_ctx, dtype=None) -> np.ndarray:
    model = hearthlm.load(folder, dtype=dtype)
    return np.concatenate([model.logits(w) for w in windows(ids, n_ctx)])


def folder_bpw(folder: str) -> float:
    from hearthlm.safetensors_io import CheckpointFiles
    files = CheckpointFiles(folder)
    meta = {}
    for f in files.files.values():
        meta.update(json.loads(f.metadata.get("hearthlm.tensors", "{}")))
    nbytes = sum(files.info(n).end - files.info(n).begin for n in meta)
    return 8 * nbytes / sum(rows * cols for _, rows, cols in meta.values())


def gguf_bpw(path: str) -> float:
    import gguf
    reader = gguf.GGUFReader(path)
    mats = [t for t in reader.tensors if len(t.shape) == 2]
    return 8 * sum(int(t.n_bytes) for t in mats) / sum(int(t.n_elements) for t in mats)


def llama_quantize(src: str, dst: str, name: str) -> None:
    """llama.cpp's quantizer: the llama-quantize tool found in $LLAMA_CPP_BIN (or on
    PATH), else llama-cpp-python's llama_model_quantize."""
    import shutil
    import subprocess
    tool = shutil.which("llama-quantize", path=os.environ.get("LLAMA_CPP_BIN"))
    if tool:
        subprocess.run([tool, src, dst, name, "2"], check=True, capture_output=True)
        return
    import llama_cpp
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = LLAMA_FTYPES[name]
    params.nthread = 2
    if llama_cpp.llama_model_quantize(src.encode(), dst.encode(), params) != 0:
        raise RuntimeError(f"llama_model_quantize failed for {name}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder")
    p.add_argument("--tokens", type=int, default=512)
    p.add_argument("--ctx", type=int, default=256)
    p.add_argument("--text", help="evaluate on this text instead of random ids")
    p.add_argument("--calibration", help="also q4k / q5k / q6k with importance weights from this text")
    p.add_argument("--llama-cpp", action="store_true")
    p.add_argument("--types", default="q4,q4k,q5k,q6k," + ",".join(LLAMA_FTYPES),
                   help="rows to run: hearthlm dtypes and (with --llama-cpp) llama.cpp types")
    p.add_argument("--quantized", default="", help="reuse folders already written by hearthlm quantize: "
                   "DTYPE=FOLDER,... (e.g. q4k=/tmp/tl-q4k)")
    a = p.parse_args()
    reuse = dict(item.split("=", 1) for item in a.quantized.split(",") if item)
    types = a.types.split(",")

    f32 = hearthlm.load(a.folder, dtype="f32")
    if a.text:
        ids = f32.tokenizer.encode(open(a.text, encoding="utf-8").read())[:a.tokens]
    else:
        ids = np.random.default_rng(0).integers(0, f32.vocab_size, a.tokens).tolist()
    del f32
    ref = hearthlm_logits(a.folder, ids, a.ctx, "f32")
    rows = []
    with tempfile.TemporaryDirectory(dir=os.environ.get("KL_TMP")) as tmp:
        runs = [(d, None) for d in ("q4", "q4k", "q5k", "q6k") if d in types]
        if a.calibration:
            runs += [(d, a.calibration) for d in ("q4k", "q5k", "q6k") if d in types]
        for dtype, calib in runs:
            dst = reuse.get(dtype) if not calib else None
            if dst is None:
                dst = os.path.join(tmp, f"{dtype}{'-imatrix' if calib else ''}")
                hearthlm.quantize(a.folder, dst, dtype, calibration=calib)
            kl = mean_kl(ref, hearthlm_logits(dst, ids, a.ctx))
            rows.append((f"hearthlm {dtype}{' + calibration' if calib else ''}", folder_bpw(dst), kl))
            print(*rows[-1], flush=True)
        if a.llama_cpp:
            from hearthlm.gguf_export import export_gguf
            src = export_gguf(a.folder, "f32")
            for name in (t for t in LLAMA_FTYPES if t in types):
                dst = os.path.join(tmp, f"{name}.gguf")
                llama_quantize(src, dst, name)
                rows.append((f"llama.cpp {name} (its blocks, hearthlm kernels)", gguf_bpw(dst),
                             mean_kl(ref, hearthlm_logits(dst, ids, a.ctx))))
                print(*rows[-1], flush=True)
                os.remove(dst)
    print(f"\n{a.folder}: {len(ids)} tokens, windows of {a.ctx}\n")
    print("| weights | bits per weight (matrices) | KL(f32 ‖ ·) |\n|---|---|---|")
    for name, bpw, kl in rows:
        print(f"| {name} | {bpw:.3f} | {kl:.3e} |")


if __name__ == "__main__":
    main()
