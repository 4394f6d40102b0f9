"""The quantizer's time, old build against new, interleaved: each round quantizes the
same matrices of a model folder (those whose names match --match) with each Python
environment's hearthlm, in a child process, and the medians of the seconds are printed.

    python bench/quantize_speed.py FOLDER --old /work/venv-s4base/bin/python \\
        --new .venv/bin/python --dtype q4k --match 'layers\\.[01]\\.' --rounds 3
"""
import argparse
import statistics
import subprocess
import sys

CHILD = """
import re, sys, time
from hearthlm.quant import quantize_tensor
from hearthlm.safetensors_io import CheckpointFiles
files = CheckpointFiles(sys.argv[1])
names = [n for n in files.where if re.search(sys.argv[3], n) and len(files.info(n).shape) == 2]
arrays = [(n, files.array(n).copy()) for n in names]
t0 = time.perf_counter()
for n, raw in arrays:
    quantize_tensor(raw, files.info(n).dtype, sys.argv[2], int(sys.argv[4]), files.path_of(n), n)
print(time.perf_counter() - t0, sum(a.size for _, a in arrays))
"""


def run(python: str, a) -> tuple:
    out = subprocess.run([python, "-c", CHILD, a.folder, a.dtype, a.match, str(a.threads)],
                         check=True, capture_output=True, text=True).stdout.split()
    return float(out[0]), int(out[1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder")
    p.add_argument("--old", required=True, help="python of the environment with the old build")
    p.add_argument("--new", default=sys.executable, help="python of the environment with the new build")
    p.add_argument("--dtype", default="q4k", help="one format for every matched matrix")
    p.add_argument("--match", default=r"layers\.0\.", help="regular expression on tensor names")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    times = {"old": [], "new": []}
    for _ in range(a.rounds):
        for side in times:
            seconds, n = run(getattr(a, side), a)
            times[side].append(seconds)
    old, new = statistics.median(times["old"]), statistics.median(times["new"])
    print(f"{a.dtype}, {n / 1e6:.1f} M weights matching {a.match!r}, {a.threads} threads, medians of "
          f"{a.rounds} interleaved rounds: old {old:.3f} s, new {new:.3f} s, new / old {new / old:.3f}")


if __name__ == "__main__":
    main()
