"""hearthlm next to other runtimes and threads in one process.

* torch brings its own OpenMP runtime: importing it before or after hearthlm, then
  running both, must work and must not change hearthlm's results (subprocesses, so
  each import order starts clean; a timeout catches a deadlock between runtimes).
* Two Python threads running model.logits on one loaded model at once (the kernels
  release the GIL; each call has its own KV cache and buffers) must each get exactly
  what the same call gives alone.
"""
import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import hearthlm

SCRIPT = textwrap.dedent("""
    import sys, numpy as np
    folder, order, out = sys.argv[1], sys.argv[2], sys.argv[3]
    if order == "torch-first":
        import torch
        import hearthlm
    elif order == "hearthlm-first":
        import hearthlm
        import torch
    else:
        import hearthlm
    model = hearthlm.load(folder, n_threads=2)
    ids = list(range(1, 24))
    first = model.logits(ids)
    if order != "alone":
        torch.set_num_threads(2)
        a = torch.randn(256, 256)
        assert torch.allclose(a @ torch.eye(256), a)  # torch's OpenMP team runs
        torch.nn.functional.linear(torch.randn(64, 256), a).sum().item()
    second = model.logits(ids)  # hearthlm's team again, after torch's
    assert np.array_equal(first, second)
    np.save(out, first)
    print("ok", hearthlm.cpu_info()["active_isa"], hearthlm.cpu_info()["openmp"])
""")


def run_order(folder, order, tmp_path):
    out = tmp_path / f"{order}.npy"
    env = dict(os.environ)
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(hearthlm.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([package_parent, env.get("PYTHONPATH", "")])
    run = subprocess.run([sys.executable, "-c", SCRIPT, folder, order, str(out)], capture_output=True,
                         text=True, timeout=300, env=env)
    assert run.returncode == 0 and run.stdout.startswith("ok"), f"{order}: {run.stdout}{run.stderr}"
    return np.load(out)


def test_torch_import_order_either_way(model_dir, tmp_path):
    pytest.importorskip("torch")
    folder = model_dir("llama-gqa-tied")
    alone = run_order(folder, "alone", tmp_path)
    for order in ("torch-first", "hearthlm-first"):
        np.testing.assert_array_equal(run_order(folder, order, tmp_path), alone, err_msg=order)


def test_two_threads_share_one_model(model_dir):
    model = hearthlm.load(model_dir("mistral-window"), n_threads=2)
    rng = np.random.default_rng(5)
    # Different lengths, so the threads also race to grow the shared RoPE tables.
    prompts = [rng.integers(0, model.vocab_size, n).tolist() for n in (37, 61)]
    lengths = (5, 9, 37, 61)
    alone = {(i, n): model.logits(p[:n]) for i, p in enumerate(prompts) for n in lengths if n <= len(p)}
    fresh = hearthlm.load(model_dir("mistral-window"), n_threads=2)  # RoPE tables start empty
    results, errors = {}, []
    barrier = threading.Barrier(2)

    def work(i):
        try:
            barrier.wait()
            results[i] = {n: fresh.logits(prompts[i][:n]) for n in lengths if n <= len(prompts[i])}
        except BaseException as e:  # noqa: B902 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: races show up
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
    finally:
        sys.setswitchinterval(interval)
    assert not errors, errors
    for i in range(2):
        for n, got in results[i].items():
            np.testing.assert_array_equal(got, alone[i, n], err_msg=f"thread {i}, {n} tokens")



@pytest.mark.parametrize("given, expected", [({}, "10000"), ({"GOMP_SPINCOUNT": "5"}, "5"),
                                             ({"OMP_WAIT_POLICY": "passive"}, None)])
def test_openmp_spin_count_default_and_the_users_own(given, expected):
    """hearthlm shortens libgomp's barrier spin before _kernels loads libgomp, unless the
    user chose a wait policy or spin count."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(given)
    code = "import os, hearthlm; print(os.environ.get('GOMP_SPINCOUNT'))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(expected)
