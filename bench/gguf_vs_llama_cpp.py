"""GGUF files made by llama.cpp's own quantizer, run by hearthlm (hearthlm.load on
the .gguf) and by llama.cpp (llama-bench) side by side: KL(f32 || file) and prefill /
decode speed, for Q4_0 / Q4_K_M / Q6_K / Q8_0 (or --types).

    python bench/gguf_vs_llama_cpp.py FOLDER [--types Q4_0,Q4_K_M,Q6_K,Q8_0] [--tokens 256]
        [--prompt 64] [--gen 32] [--reps 3] [--threads 2] [--llama-bench PATH] [--keep DIR]

FOLDER: a Llama-architecture HF folder (its f32 GGUF is written by
hearthlm.gguf_export). The quantizer: llama-cpp-python's llama_model_quantize. Speed:
for each type, hearthlm's and llama-bench's runs alternate (reps each); medians.
hearthlm's prefill is one feed of --prompt random ids, decode --gen single tokens;
llama-bench runs -p PROMPT -n GEN. --keep DIR keeps the quantized files there and
reuses them in later runs (quantize once, then time on a quiet machine). KL: mean over
positions of KL(softmax(hearthlm f32 on the folder) || softmax(hearthlm on the file)),
random ids, one window."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time

import numpy as np

import hearthlm
from kquant_kl import gguf_bpw, llama_quantize, mean_kl


def hearthlm_speed(model, prompt: np.ndarray, n_gen: int) -> tuple:
    """(prefill tokens/s, decode tokens/s) of one run."""
    s = model.session(n_ctx=len(prompt) + n_gen + 1)
    t0 = time.perf_counter()
    logits = s.feed(prompt)
    t1 = time.perf_counter()
    for _ in range(n_gen):
        logits = s.feed([int(np.argmax(logits))])
    t2 = time.perf_counter()
    return len(prompt) / (t1 - t0), n_gen / (t2 - t1)


def llama_bench_speed(binary: str, path: str, n_prompt: int, n_gen: int, threads: int) -> tuple:
    out = subprocess.run([binary, "-m", path, "-p", str(n_prompt), "-n", str(n_gen), "-t", str(threads),
                          "-r", "1", "-o", "json"], capture_output=True, text=True, check=True).stdout
    rows = json.loads(out)
    pp = next(r["avg_ts"] for r in rows if r["n_prompt"] > 0)
    tg = next(r["avg_ts"] for r in rows if r["n_gen"] > 0)
    return pp, tg


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder")
    p.add_argument("--types", default="Q4_0,Q4_K_M,Q6_K,Q8_0")
    p.add_argument("--tokens", type=int, default=256)
    p.add_argument("--prompt", type=int, default=64)
    p.add_argument("--gen", type=int, default=32)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--llama-bench", default=shutil.which("llama-bench"))
    p.add_argument("--keep", help="keep (and reuse) the quantized files in this folder")
    a = p.parse_args()
    from hearthlm.gguf_export import export_gguf

    src = export_gguf(a.folder, "f32")
    ref_model = hearthlm.load(a.folder, dtype="f32", n_threads=a.threads)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, ref_model.vocab_size, a.tokens)
    ref = ref_model.logits(ids)
    del ref_model
    prompt = rng.integers(0, 1000, a.prompt)
    rows = []
    with tempfile.TemporaryDirectory(dir=os.environ.get("KL_TMP")) as tmp:
        for name in a.types.split(","):
            if a.keep:
                os.makedirs(a.keep, exist_ok=True)
                path = os.path.join(a.keep, f"{os.path.basename(src)[:-len('.gguf')]}-{name}.gguf")
            else:
                path = os.path.join(tmp, f"{name}.gguf")
            if not os.path.exists(path):
                llama_quantize(src, path + ".tmp", name)
                os.replace(path + ".tmp", path)
            model = hearthlm.load(path, n_threads=a.threads)
            kl = mean_kl(ref, model.logits(ids))
            ours, theirs = [], []
            for _ in range(a.reps):
                ours.append(hearthlm_speed(model, prompt, a.gen))
                if a.llama_bench:
                    theirs.append(llama_bench_speed(a.llama_bench, path, a.prompt, a.gen, a.threads))
            med = lambda runs, i: float(np.median([r[i] for r in runs])) if runs else float("nan")
            rows.append((name, gguf_bpw(path), kl, med(ours, 0), med(theirs, 0), med(ours, 1), med(theirs, 1)))
            print(*rows[-1], flush=True)
            del model
            if not a.keep:
                os.remove(path)
    print(f"\n{a.folder}: KL on {a.tokens} random ids; prompt {a.prompt}, {a.gen} decoded, {a.threads} threads, "
          f"medians of {a.reps}; load average {os.getloadavg()[0]:.1f}\n")
    print("| llama.cpp file | bits/weight | KL(f32 ‖ hearthlm on it) | prefill tok/s hearthlm | llama.cpp | "
          "decode tok/s hearthlm | llama.cpp |\n|---|---|---|---|---|---|---|")
    for name, bpw, kl, pp, pp_l, tg, tg_l in rows:
        print(f"| {name} | {bpw:.3f} | {kl:.3e} | {pp:.1f} | {pp_l:.1f} | {tg:.1f} | {tg_l:.1f} |")


if __name__ == "__main__":
    main()
