"""KL(f32 || quantized) side by side on the same weights: hearthlm's q4 / q4k / q5k (the
Q4_K_M- and Q5_K_M-like mixes) / q6k, and, with --llama-cpp, llama.cpp's Q4_0 / Q4_K_M /
Q5_K_M / Q6_K / Q8_0
made by llama.cpp's own quantizer (llama-cpp-python's llama_model_quantize) from an
f32 GGUF of the folder. The files are loaded by hearthlm (hearthlm.load on the .gguf:
blocks converted exactly, Q/K rows un-permuted) and run by hearthlm's kernels, so the
rows compare the quantizers on the same kernels (llama.cpp's own inference would also
quantize activations per 256 instead of per 32). Bytes per weight count the 2-D matrices only.

    [LLAMA_CPP_BIN=DIR] python bench/kquant_kl.py FOLDER [--tokens 512] [--ctx 256]
        [--seeds 0,1,2] [--calibration FILE.txt] [--llama-cpp] [--text FILE.txt]
        [--quantized LABEL=PATH,...] [--types q4k,Q4_K_M,like:Q4_K_M] [--versus Q4_K_M]

Quantized copies go to a temporary folder ($KL_TMP if set). Token ids, one set of
--tokens per seed: random ids drawn with that seed, or with --text the seed-th slice of
--tokens of the encoded text (needs the folder's tokenizer). KL is the mean over positions
of KL(softmax(f32) || softmax(quantized)), in nats, per set and its mean over the sets;
the reference is hearthlm's own f32 run. --versus adds each row's KL over all positions
as a ratio to one row's, with a standard error from a bootstrap over the windows.

`like:NAME` (with --llama-cpp) is llama.cpp's NAME file with every tensor it stored as a
K-quant (Q4_K, Q5_K, Q6_K) replaced by hearthlm's quantization of the same weights into
the same format, the rest (its fallbacks for rows not a multiple of 256: Q5_0, Q5_1,
Q8_0) kept: the two quantizers compared on the same tensors at the same bytes. On models
whose every row is a multiple of 256 it is the hearthlm mix itself."""
from __future__ import annotations

import argparse
import json
import os
import tempfile

import numpy as np

import hearthlm
from hearthlm.formats import FORMATS
from hearthlm.perplexity_eval import log_softmax

LLAMA_FTYPES = {"Q4_0": 2, "Q8_0": 7, "Q4_K_M": 15, "Q5_K_M": 17, "Q6_K": 18}  # llama_ftype


def position_kl(ref: np.ndarray, ours: np.ndarray) -> np.ndarray:
    """KL(softmax(ref) || softmax(ours)) at each position."""
    lp, lq = log_softmax(ref), log_softmax(ours)
    return (np.exp(lp) * (lp - lq)).sum(-1)


def mean_kl(ref: np.ndarray, ours: np.ndarray) -> float:
    return float(position_kl(ref, ours).mean())


def ratio_and_error(kl: np.ndarray, ref: np.ndarray, n_ctx: int, draws: int = 2000) -> tuple:
    """mean(kl) / mean(ref) over the same positions, and its standard error from a
    bootstrap over windows (positions of one window are not independent)."""
    a, b = (np.add.reduceat(v, np.arange(0, len(v), n_ctx)) for v in (kl, ref))
    picks = np.random.default_rng(0).integers(0, len(a), (draws, len(a)))
    return a.sum() / b.sum(), float(np.std(a[picks].sum(1) / b[picks].sum(1)))


def windows(ids: list, n_ctx: int) -> list:
    return [ids[i:i + n_ctx] for i in range(0, len(ids), n_ctx)]


def model_logits(model, id_sets: list, n_ctx: int) -> list:
    """One model's logits [tokens, vocab] for each id set."""
    return [np.concatenate([model.logits(w) for w in windows(ids, n_ctx)]) for ids in id_sets]


def hearthlm_logits(folder, id_sets, n_ctx, dtype=None) -> list:
    return model_logits(hearthlm.load(folder, dtype=dtype), id_sets, n_ctx)


def id_sets_for(folder: str, seeds: list, tokens: int, text: str = None) -> list:
    if text is None:
        vocab = hearthlm.load(folder).vocab_size
        return [np.random.default_rng(s).integers(0, vocab, tokens).tolist() for s in seeds]
    ids = hearthlm.load(folder).tokenizer.encode(open(text, encoding="utf-8").read())
    if len(ids) < (max(seeds) + 1) * tokens:
        raise SystemExit(f"{text}: {len(ids)} tokens, seed {max(seeds)} needs {(max(seeds) + 1) * tokens}")
    return [ids[s * tokens:(s + 1) * tokens] for s in seeds]


def like_llama_cpp(folder: str, gguf_path: str, n_threads: int = 2):
    """hearthlm.load of llama.cpp's file with its K-quant tensors quantized by hearthlm
    from the folder's weights (the same format), its other tensors as llama.cpp wrote them."""
    from unittest import mock

    from hearthlm import gguf_load
    from hearthlm.quant import quantize_tensor
    from hearthlm.safetensors_io import CheckpointFiles

    files = CheckpointFiles(folder)
    k_types = {FORMATS[f].gguf_type: f for f in ("q4k", "q5k", "q6k")}

    class Ours(gguf_load.GGUFWeights):
        def tensor(self, name, shape):
            t, _ = self._rows(name, shape)
            fmt = k_types.get(int(t.ggml_type))
            if fmt is None:
                return super().tensor(name, shape)
            self.formats[name] = fmt
            info = files.info(name)
            return quantize_tensor(files.array(name), info.dtype, fmt, n_threads, files.path_of(name), name)

    with mock.patch.object(gguf_load, "GGUFWeights", Ours):  # the loader builds its reader by this name
        return hearthlm.load(gguf_path)


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
    p.add_argument("--tokens", type=int, default=512, help="tokens per id set")
    p.add_argument("--ctx", type=int, default=256)
    p.add_argument("--seeds", default="0", help="id sets: random-id seeds, or slices of --text")
    p.add_argument("--text", help="evaluate on this text instead of random ids")
    p.add_argument("--calibration", help="also q4k / q5k / q6k with importance weights from this text")
    p.add_argument("--llama-cpp", action="store_true")
    p.add_argument("--versus", help="a row's name (or part of it): every row's KL as a ratio to its KL")
    p.add_argument("--types", default="q4,q4k,q5k,q6k," + ",".join(LLAMA_FTYPES),
                   help="rows to run: hearthlm dtypes, (with --llama-cpp) llama.cpp types and like:TYPE")
    p.add_argument("--quantized", default="", help="also rows of files already written: LABEL=PATH,... "
                   "(a hearthlm quantize folder or a .gguf, e.g. old-q4k=/tmp/tl-q4k)")
    a = p.parse_args()
    extra = [item.split("=", 1) for item in a.quantized.split(",") if item]
    types = a.types.split(",")
    seeds = [int(s) for s in a.seeds.split(",")]

    id_sets = id_sets_for(a.folder, seeds, a.tokens, a.text)
    ref = hearthlm_logits(a.folder, id_sets, a.ctx, "f32")
    rows = []

    def row(name, bpw, logits):
        rows.append((name, bpw, [position_kl(r, q) for r, q in zip(ref, logits)]))
        print(name, bpw, *(k.mean() for k in rows[-1][2]), flush=True)

    for label, path in extra:
        row(label, gguf_bpw(path) if path.endswith(".gguf") else folder_bpw(path), hearthlm_logits(path, id_sets, a.ctx))
    with tempfile.TemporaryDirectory(dir=os.environ.get("KL_TMP")) as tmp:
        runs = [(d, None) for d in ("q4", "q4k", "q5k", "q6k") if d in types]
        if a.calibration:
            runs += [(d, a.calibration) for d in ("q4k", "q5k", "q6k") if d in types]
        for dtype, calib in runs:
            dst = os.path.join(tmp, f"{dtype}{'-imatrix' if calib else ''}")
            hearthlm.quantize(a.folder, dst, dtype, calibration=calib)
            row(f"hearthlm {dtype}{' + calibration' if calib else ''}", folder_bpw(dst),
                hearthlm_logits(dst, id_sets, a.ctx))
        if a.llama_cpp:
            from hearthlm.gguf_export import export_gguf
            src = export_gguf(a.folder, "f32")
            for name in (t for t in LLAMA_FTYPES if t in types or f"like:{t}" in types):
                dst = os.path.join(tmp, f"{name}.gguf")
                llama_quantize(src, dst, name)
                if name in types:
                    row(f"llama.cpp {name} (its blocks, hearthlm kernels)", gguf_bpw(dst),
                        hearthlm_logits(dst, id_sets, a.ctx))
                if f"like:{name}" in types:
                    row(f"hearthlm in llama.cpp's {name} formats", gguf_bpw(dst),
                        model_logits(like_llama_cpp(a.folder, dst), id_sets, a.ctx))
                os.remove(dst)
    print(f"\n{a.folder}: {len(id_sets)} id sets (seeds {a.seeds}{' of ' + a.text if a.text else ''}) "
          f"of {a.tokens} tokens, windows of {a.ctx}\n")
    versus = next((kls for name, _, kls in rows if a.versus and a.versus in name), None)
    print(f"| weights | bits per weight (matrices) | KL(f32 ‖ ·), mean | per id set |"
          f"{f' ÷ {a.versus} (± s.e.) |' if versus else ''}\n|---|---|---|---|{'---|' if versus else ''}")
    for name, bpw, kls in rows:
        cells = [name, f"{bpw:.3f}", f"{np.mean(np.concatenate(kls)):.4e}", " / ".join(f"{k.mean():.4e}" for k in kls)]
        if versus:
            cells.append("{:.4f} ± {:.4f}".format(*ratio_and_error(np.concatenate(kls), np.concatenate(versus), a.ctx)))
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
