"""bf16 decode's weight reads: the same GEMV over TinyLlama-1.1B's layer matrices read
from the memory-mapped safetensors file (page cache, 4 KB pages) and from anonymous
copies (numpy asks for transparent huge pages on large arrays), alternately, beside
the read probe. If the mapped copy reads slower, bf16 decode's gap to q8 (whose weights
are quantized into anonymous memory at load) is the mapping, not the kernel.

    python bench/bf16_mapping.py [--rounds 7] [--threads 2]
"""
import argparse
import os
import statistics
import time

import numpy as np

from hearthlm import _kernels as K
from hearthlm import shapes
from hearthlm.safetensors_io import SafetensorsFile


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    f = SafetensorsFile(os.path.join(shapes.random_model_folder("tinyllama-1.1b", "bf16"), "model.safetensors"))
    names = [n for n, t in f.tensors.items() if len(t.shape) == 2 and ".layers." in n]
    mapped = [f.array(n).view(np.uint16) for n in names]
    anon = [np.array(w) for w in mapped]
    gbytes = sum(w.nbytes for w in anon) / 1e9
    xs = {k: np.ones((1, k), np.float32) for k in {w.shape[1] for w in anon}}
    ys = {n: np.empty((1, n), np.float32) for n in {w.shape[0] for w in anon}}

    def run(ws: list) -> float:
        t = time.perf_counter()
        for w in ws:
            K.matmul(ys[w.shape[0]], xs[w.shape[1]], w, None, "bf16", a.threads)
        return time.perf_counter() - t

    print(f"load average before: {os.getloadavg()[0]:.2f}; {len(names)} matrices, {gbytes:.3f} GB")
    run(mapped), run(anon)
    times = {"mapped": [], "anonymous": []}
    for _ in range(a.rounds):
        times["mapped"].append(run(mapped))
        times["anonymous"].append(run(anon))
    probe = K.memory_read_bandwidth(1 << 30, a.threads, 3)
    for name, v in times.items():
        gbs = gbytes / statistics.median(v)
        print(f"{name:<10} median {statistics.median(v) * 1e3:7.1f} ms  {gbs:5.1f} GB/s = {100 * gbs / probe:5.1f} % "
              f"of the probe's {probe:.1f}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
