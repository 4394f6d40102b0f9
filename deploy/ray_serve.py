"""hearthlm's OpenAI-compatible app as a Ray Serve deployment with `num_replicas` replicas.

    pip install "hearthlm[serve]" "ray[serve]"
    python deploy/ray_serve.py [MODEL] --replicas 2 --threads 1 --parallel 4   # 127.0.0.1:8000
    # or, on a running Ray cluster:  serve run deploy.ray_serve:app

Each replica is its own process with its own KV cache slots (hearthlm.serve's
scheduler) and, by hearthlm.load's default, its own copy of the weights in huge pages
(mmap=True / --mmap: the replicas on one host share the file's page cache instead); Ray's proxy spreads requests over the replicas by
load. A replica loads its model in its constructor, so Ray counts it as started only
once it can answer. Prefix reuse is per replica: see README.md ("Deploying") for
pinning a conversation to one replica.
"""
from __future__ import annotations

import argparse
import os
import time

from ray import serve

import hearthlm
from hearthlm.cli_args import add_mmap_option
from hearthlm.demo import demo_model_path
from hearthlm.serve import create_app


@serve.ingress()
class HearthlmReplica:
    def __init__(self, model_path: str | None = None, n_threads: int = 1, mmap: bool | None = None,
                 **app_options):
        """model_path: a model folder (default: the demo model); n_threads: kernel
        threads per replica (match ray_actor_options' num_cpus); mmap: hearthlm.load's;
        app_options: the keyword options of hearthlm.serve.create_app (parallel, n_ctx,
        api_key...)."""
        self.model = hearthlm.load(model_path or demo_model_path(), n_threads=n_threads, mmap=mmap)
        self.app_options = app_options

    def __serve_build_asgi_app__(self):
        return create_app(self.model, **self.app_options)


def build(model_path: str | None = None, num_replicas: int = 2, n_threads: int = 1, mmap: bool | None = None,
          **app_options):
    """The Ray Serve application: `num_replicas` replicas, each reserving n_threads CPUs."""
    deployment = serve.deployment(HearthlmReplica, name="hearthlm", num_replicas=num_replicas,
                                  ray_actor_options={"num_cpus": n_threads})
    return deployment.bind(model_path, n_threads, mmap, **app_options)


# `serve run deploy.ray_serve:app`; configured by environment variables
app = build(os.environ.get("HEARTHLM_MODEL"), int(os.environ.get("HEARTHLM_REPLICAS", "2")),
            int(os.environ.get("HEARTHLM_THREADS", "1")), model_name=os.environ.get("HEARTHLM_MODEL_NAME"),
            api_key=os.environ.get("HEARTHLM_API_KEY"))


def main() -> None:
    p = argparse.ArgumentParser(description="hearthlm behind Ray Serve")
    p.add_argument("model", nargs="?", help="model folder (default: the demo model)")
    p.add_argument("--replicas", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="kernel threads (and Ray CPUs) per replica")
    p.add_argument("--parallel", type=int, help="slots per replica")
    add_mmap_option(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    args = p.parse_args()
    serve.start(http_options={"host": args.host, "port": args.port})
    serve.run(build(args.model, args.replicas, args.threads, args.mmap, parallel=args.parallel,
                    model_name="hearthlm-demo" if args.model is None else None), route_prefix="/")
    print(f"hearthlm on Ray Serve: {args.replicas} replicas at http://{args.host}:{args.port}/v1 (Ctrl-C stops)")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        serve.shutdown()


if __name__ == "__main__":
    main()
