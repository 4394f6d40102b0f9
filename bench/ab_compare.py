"""Old build against new, interleaved: `hearthlm bench --json` run alternately by two
Python environments (each with its own hearthlm installed), the medians of each
engine's prefill and decode tokens/s, and new / old. --old-model / --new-model give
each side its own model folder (one build, two models: q4 against q4k).

    python bench/ab_compare.py --old /work/venv-old/bin/python --new .venv/bin/python \
        --rounds 5 -- --shape smollm2-135m --dtype q4 --prompt 256 --gen 64 --reps 1
    python bench/ab_compare.py --old .venv/bin/python --new .venv/bin/python \
        --old-model TL-Q4 --new-model TL-Q4K --rounds 5 -- --threads 2 --reps 1
"""
import argparse
import json
import statistics
import subprocess


def bench(python: str, args: list, env: dict = None) -> dict:
    """One `hearthlm bench --json` run's first engine (env: the child's environment)."""
    out = subprocess.run([python, "-m", "hearthlm", "bench", "--json", *args], check=True,
                         capture_output=True, text=True, env=env).stdout
    return json.loads(out)["engines"][0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--old", required=True, help="python of the environment with the old build")
    p.add_argument("--new", required=True, help="python of the environment with the new build")
    p.add_argument("--old-model", help="model folder of the old side")
    p.add_argument("--new-model", help="model folder of the new side")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("bench_args", nargs=argparse.REMAINDER, help="-- then hearthlm bench arguments")
    a = p.parse_args()
    args = [x for x in a.bench_args if x != "--"]
    runs = {"old": [], "new": []}
    for _ in range(a.rounds):
        for name in ("old", "new"):
            model = getattr(a, f"{name}_model")
            runs[name].append(bench(getattr(a, name), [model, *args] if model else args))
    print(f"hearthlm bench {' '.join(args)}: medians of {a.rounds} interleaved rounds")
    for key in ("prefill_tok_s", "decode_tok_s", "weight_gb_s"):
        old = statistics.median(r[key] for r in runs["old"])
        new = statistics.median(r[key] for r in runs["new"])
        print(f"{key:<15} old {old:9.2f}   new {new:9.2f}   new/old {new / old:.3f}")


if __name__ == "__main__":
    main()
