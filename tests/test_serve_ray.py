"""deploy/ray_serve.py on a local Ray instance: two replicas of the app answer the openai client."""
import concurrent.futures
import importlib.util
import os
import time

import httpx
import openai
import pytest

ray = pytest.importorskip("ray", reason="Ray Serve is optional here: pip install \"ray[serve]\" to run this test")
serve = pytest.importorskip("ray.serve", reason="Ray is installed without Serve: pip install \"ray[serve]\"")

import hearthlm  # noqa: E402
from hearthlm.demo import demo_model_path  # noqa: E402
from serve_util import free_port  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUESTIONS = ["What is 12 plus 7?", "What is 3 times 4?", "Reverse the word lemon.", "What is 20 minus 5?"]


def load_example():
    spec = importlib.util.spec_from_file_location("ray_serve_example", os.path.join(ROOT, "deploy", "ray_serve.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ray_serve_two_replicas(monkeypatch):
    example = load_example()
    port = free_port()
    # Ray Serve gives its HTTP proxy 5 s to report ready (three tries, then it is killed and
    # serve.start fails): on a loaded 2-core machine a new proxy took longer. Ray's processes
    # inherit these from the driver at ray.init.
    for name in ("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S"):
        monkeypatch.setenv(name, "60")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(example.build(num_replicas=2, n_threads=1, mmap=True, parallel=2, model_name="hearthlm-demo"),
                  route_prefix="/")
        status = serve.status().applications["default"].deployments["hearthlm"]
        assert status.replica_states == {"RUNNING": 2}
        url = f"http://127.0.0.1:{port}"
        assert httpx.get(url + "/health").json()["status"] == "ok"
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=60)
        model = hearthlm.load(demo_model_path())
        expected = [model.chat([{"role": "user", "content": q}], max_new_tokens=16, temperature=0) for q in QUESTIONS]

        def ask(q):
            return client.chat.completions.create(model="hearthlm-demo", messages=[{"role": "user", "content": q}],
                                                  max_tokens=16, temperature=0).choices[0].message.content

        t0 = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            assert list(pool.map(ask, QUESTIONS * 2)) == expected * 2
        assert time.perf_counter() - t0 < 60
        chunks = list(client.chat.completions.create(model="hearthlm-demo", stream=True, max_tokens=16,
                                                     messages=[{"role": "user", "content": QUESTIONS[0]}]))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected[0]
    finally:
        serve.shutdown()
        ray.shutdown()
