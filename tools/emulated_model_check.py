"""End-to-end model check for runs under CPU emulation (tools/qemu_x86_check.sh).

    python tools/emulated_model_check.py build DIR          # tiny models (needs torch)
    python tools/emulated_model_check.py run DIR OUT.npz    # hearthlm only, no torch
    python tools/emulated_model_check.py compare A.npz B.npz [--rtol R]

`run` imports only hearthlm and numpy, so it can run on an emulated CPU where torch
might not; its results are compared against a native `run`. The comparison is
relative to the largest logit of each model: |a - b| <= rtol * max|b|.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

# (tiny_models variant, dtype stored in the checkpoint, dtype hearthlm loads it as)
MODELS = [("stablelm", "f32", "f32"), ("llama-gqa-tied", "bf16", "bf16"), ("mistral-window", "f32", "f16")]
PROMPT = 19
GREEDY = 8


def folder(root: str, variant: str, stored: str) -> str:
    return os.path.join(root, f"{variant}-{stored}")


def build(root: str) -> None:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
    import tiny_models

    for variant, stored, _ in MODELS:
        path = folder(root, variant, stored)
        if not os.path.exists(os.path.join(path, "config.json")):
            tiny_models.build(variant, path, dtype=stored)


def run(root: str, out: str) -> None:
    import hearthlm

    results = {"cpu_info": json.dumps(hearthlm.cpu_info())}
    for variant, stored, load_as in MODELS:
        model = hearthlm.load(folder(root, variant, stored), dtype=load_as)
        ids = np.random.default_rng(7).integers(0, model.vocab_size, PROMPT).tolist()
        key = f"{variant}-{stored}-as-{load_as}"
        results[key + "/logits"] = model.logits(ids)
        results[key + "/greedy"] = np.array(model.generate_ids(ids, GREEDY), np.int64)
    np.savez(out, **results)
    print(f"active_isa={hearthlm.cpu_info()['active_isa']} models={len(MODELS)} -> {out}")


def compare(a_path: str, b_path: str, rtol: float) -> int:
    a, b = np.load(a_path), np.load(b_path)
    isa_a = json.loads(str(a["cpu_info"]))["active_isa"]
    isa_b = json.loads(str(b["cpu_info"]))["active_isa"]
    failed = 0
    for key in sorted(k for k in b.files if k != "cpu_info"):
        if key not in a.files:
            print(f"FAIL {key}: missing in {a_path}")
            failed += 1
            continue
        x, y = a[key], b[key]
        if key.endswith("/greedy"):
            ok = np.array_equal(x, y)
            detail = "identical" if ok else f"{x.tolist()} != {y.tolist()}"
        else:
            diff = float(np.max(np.abs(x.astype(np.float64) - y))) / float(np.max(np.abs(y)))
            ok = x.shape == y.shape and diff <= rtol
            detail = "bit-identical" if np.array_equal(x, y) else f"max |diff| / max |ref| = {diff:.2e}"
        print(f"{'PASS' if ok else 'FAIL'} {key} ({isa_a} vs {isa_b}): {detail}")
        failed += not ok
    return 1 if failed else 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("build").add_argument("dir")
    r = sub.add_parser("run")
    r.add_argument("dir")
    r.add_argument("out")
    c = sub.add_parser("compare")
    c.add_argument("a")
    c.add_argument("b")
    c.add_argument("--rtol", type=float, default=1e-5)
    args = p.parse_args()
    if args.cmd == "build":
        build(args.dir)
        return 0
    if args.cmd == "run":
        run(args.dir, args.out)
        return 0
    return compare(args.a, args.b, args.rtol)


if __name__ == "__main__":
    sys.exit(main())
