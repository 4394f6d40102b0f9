"""KV cache bytes of a bench shape with sliding-window layers: every layer holding n_ctx
tokens (the cache before issue 12) against window-sized caches for the local layers
(n_keep + window + max_batch - 1 slots). Only the caches are allocated, no weights.

    python bench/window_kv.py --shape gemma3-1b --ctx 8192 32768 --kv f32 q8
"""
import argparse

from hearthlm.kv_cache import KVPool
from hearthlm.models import model_args
from hearthlm.session import MAX_BATCH
from hearthlm.shapes import config_for


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", default="gemma3-1b")
    p.add_argument("--ctx", type=int, nargs="+", default=[8192, 32768])
    p.add_argument("--kv", nargs="+", default=["f32", "q8"])
    p.add_argument("--n-keep", type=int, default=0, help="sinks (hearthlm bench's session: 0)")
    p.add_argument("--max-batch", type=int, default=MAX_BATCH)
    a = p.parse_args()
    args = model_args(config_for(a.shape), a.shape)
    local = sum(1 for w in args.sliding_windows if w)
    print(f"{a.shape}: {local} of {args.num_hidden_layers} layers sliding-window "
          f"({sorted(set(w for w in args.sliding_windows if w))}), max_batch {a.max_batch}")
    print("| KV dtype | n_ctx | every layer n_ctx (MiB) | window caches (MiB) | saved |")
    print("|---|---|---|---|---|")
    for kv in a.kv:
        for n_ctx in a.ctx:
            full = KVPool(args, n_ctx, 1, kv, a.n_keep).memory_bytes
            windowed = KVPool(args, n_ctx, 1, kv, a.n_keep, a.max_batch).memory_bytes
            print(f"| {kv} | {n_ctx} | {full / 2**20:.1f} | {windowed / 2**20:.1f} | {100 * (1 - windowed / full):.1f} % |")


if __name__ == "__main__":
    main()
