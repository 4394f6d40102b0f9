"""OpenMP barrier waiting, interleaved: `hearthlm bench` prefill / decode under libgomp's
own spin count (300 000), the 10 000 that `import hearthlm` sets, and
OMP_WAIT_POLICY=passive, optionally beside N busy processes (a machine whose cores
other programs hold).

    python bench/omp_wait.py [--shapes tinyllama-1.1b:q4,smollm2-135m:q8] [--rounds 3] [--busy 4]
"""
import argparse
import os
import statistics
import subprocess
import sys

from ab_compare import bench  # bench/ is the script's directory

MODES = {"libgomp 300000": {"GOMP_SPINCOUNT": "300000"}, "hearthlm 10000": {"GOMP_SPINCOUNT": "10000"},
         "passive": {"OMP_WAIT_POLICY": "passive"}}


def run(shape: str, dtype: str, settings: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(settings)
    return bench(sys.executable, ["--shape", shape, "--dtype", dtype, "--prompt", "128", "--gen", "32", "--reps", "1",
                                  "--threads", "2"], env)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default="tinyllama-1.1b:q4,smollm2-135m:q8")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--busy", type=int, default=0, help="busy-loop processes running beside the benchmark")
    a = p.parse_args()
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(a.busy)]
    try:
        for spec in a.shapes.split(","):
            shape, dtype = spec.split(":")
            runs = {m: [] for m in MODES}
            for _ in range(a.rounds):
                for mode, env in MODES.items():
                    runs[mode].append(run(shape, dtype, env))
            print(f"{spec}, {a.rounds} interleaved rounds, {a.busy} busy processes, load {os.getloadavg()[0]:.2f}")
            base = {k: statistics.median(r[k] for r in runs["libgomp 300000"]) for k in ("prefill_tok_s", "decode_tok_s")}
            for mode in MODES:
                pre = statistics.median(r["prefill_tok_s"] for r in runs[mode])
                dec = statistics.median(r["decode_tok_s"] for r in runs[mode])
                print(f"  {mode:15s} prefill {pre:8.1f} ({pre / base['prefill_tok_s']:.3f})  "
                      f"decode {dec:7.2f} ({dec / base['decode_tok_s']:.3f})")
    finally:
        for b in busy:
            b.kill()


if __name__ == "__main__":
    main()
