"""The benchmark runs end to end on a tiny shape (speed itself is measured by
`hearthlm bench`, never asserted in tests)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from hearthlm.bench import run_bench, run_context_sweep
from hearthlm.shapes import random_model_folder


@pytest.fixture
def tiny_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HEARTHLM_CACHE", str(tmp_path))
    return random_model_folder("tiny", "bf16")


def test_run_bench_reports_every_figure(tiny_folder):
    r = run_bench(tiny_folder, n_prompt=20, n_gen=5, reps=2, bandwidth_bytes=1 << 24)
    (e,) = r["engines"]
    assert e["engine"] == "hearthlm" and r["dtype"] == "bf16"
    for key in ("prefill_tok_s", "decode_tok_s", "ttft_ms", "token_ms_p50", "token_ms_p90", "weight_gb_s"):
        assert e[key] > 0, key
    assert r["memory_read_gb_s"] > 0 and r["weight_bytes_per_token"] > 0


def test_context_sweep_and_cli_json(tiny_folder):
    sweep = run_context_sweep(tiny_folder, [8, 32], n_gen=3)
    assert len(sweep["decode_tok_s"]["hearthlm"]) == 2
    out = subprocess.run([sys.executable, "-m", "hearthlm", "bench", tiny_folder, "--prompt", "8", "--gen", "2",
                          "--reps", "1", "--json"], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout)["engines"][0]["decode_tok_s"] > 0


def test_random_shape_folder_is_reused(tiny_folder):
    assert random_model_folder("tiny", "bf16") == tiny_folder


def test_building_a_shape_reports_progress(tmp_path, monkeypatch):
    from hearthlm.models import family, model_args
    from hearthlm.shapes import config_for

    monkeypatch.setenv("HEARTHLM_CACHE", str(tmp_path))
    calls = []
    folder = random_model_folder("tiny", "q8", progress=lambda done, total: calls.append((done, total)))
    args = model_args(config_for("tiny"), "tiny")
    specs = family(args).weights(args)
    assert len(calls) == len(specs)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert calls[-1] == (4 * sum(int(np.prod(dims)) for dims in specs.values()),) * 2
    assert random_model_folder("tiny", "q8", progress=lambda *a: calls.append(a)) == folder
    assert len(calls) == len(specs)  # reused, not rebuilt: no progress


def test_gguf_export_permutes_q_and_k_back_to_llama_cpp_order(tiny_folder):
    gguf = pytest.importorskip("gguf")
    from hearthlm.gguf_export import export_gguf, permute_for_gguf
    from hearthlm.safetensors_io import CheckpointFiles
    from hearthlm.weights import bf16_bits_to_f32

    path = export_gguf(tiny_folder, "f32")
    reader = gguf.GGUFReader(path)
    tensors = {t.name: t for t in reader.tensors}
    files = CheckpointFiles(tiny_folder)
    q = bf16_bits_to_f32(files.array("model.layers.1.self_attn.q_proj.weight"))
    np.testing.assert_array_equal(np.asarray(tensors["blk.1.attn_q.weight"].data), permute_for_gguf(q, 4))
    assert len(tensors) == len(files.where)


def test_gguf_export_of_a_quantized_folder_holds_its_weights(tmp_path, monkeypatch):
    """`--shape X --dtype q8 --vs llama.cpp`: the stored blocks are dequantized, then
    written as Q8_0 (was: the packed bytes given to GGUF's quantizer as floats)."""
    gguf = pytest.importorskip("gguf")
    from hearthlm import _kernels
    from hearthlm.gguf_export import export_gguf
    from hearthlm.quant import read_quant_metadata
    from hearthlm.safetensors_io import CheckpointFiles

    monkeypatch.setenv("HEARTHLM_CACHE", str(tmp_path))
    folder = random_model_folder("tiny", "q8")
    tensors = {t.name: t for t in gguf.GGUFReader(export_gguf(folder, "q8")).tensors}
    files = CheckpointFiles(folder)
    q = read_quant_metadata(files)[1]["model.layers.1.mlp.down_proj.weight"]
    ours = np.empty((q.rows, q.cols), np.float32)
    _kernels.dequantize(ours, files.array("model.layers.1.mlp.down_proj.weight"), q.fmt)
    t = tensors["blk.1.ffn_down.weight"]
    theirs = gguf.quants.dequantize(t.data, t.tensor_type).reshape(q.rows, q.cols)
    step = np.abs(ours).reshape(q.rows, -1, 32).max(axis=2, keepdims=True) / 127  # one Q8_0 step per block
    # GGUF rounds to its grid: half a step, plus the fp16 rounding of its scale (2^-11
    # relative) times up to 127 steps
    assert np.all(np.abs(theirs - ours).reshape(q.rows, -1, 32) <= step * (0.5 + 127 * 2.0 ** -11))


def test_gguf_export_names_a_tensor_gguf_cannot_hold_and_leaves_nothing(tiny_folder, tmp_path, monkeypatch):
    gguf = pytest.importorskip("gguf")
    from hearthlm.errors import UnsupportedModelError
    from hearthlm.gguf_export import export_gguf, export_path

    def refuse(data, qtype):
        raise gguf.quants.QuantError(f"Can't quantize tensor with shape {data.shape} to {qtype.name}")

    monkeypatch.setattr(gguf.quants, "quantize", refuse)
    named = r"model.safetensors: tensor 'model.embed_tokens.weight' of shape \[512, 64\] cannot be written as GGUF Q8_0"
    with pytest.raises(UnsupportedModelError, match=named):
        export_gguf(tiny_folder, "q8")
    out = export_path(tiny_folder, "q8")
    assert not [f for f in os.listdir(os.path.dirname(out)) if f.startswith(os.path.basename(out))]


def test_gguf_export_goes_to_the_cache_not_the_model_folder(tiny_folder, tmp_path, monkeypatch):
    pytest.importorskip("gguf")
    import shutil

    from hearthlm.gguf_export import export_gguf

    monkeypatch.setenv("HEARTHLM_CACHE", str(tmp_path / "cache"))
    folder = shutil.copytree(tiny_folder, tmp_path / "model")
    before = sorted(os.listdir(folder))
    path = export_gguf(str(folder), "f32")
    assert path.startswith(str(tmp_path / "cache")) and os.path.getsize(path) > 0
    assert sorted(os.listdir(folder)) == before
    assert export_gguf(str(folder), "f32") == path              # written once
    with open(folder / "config.json", "a") as f:                 # an edited model: a new export
        f.write("\n")
    assert export_gguf(str(folder), "f32") != path


@pytest.mark.parametrize("variant", ["llama-gqa-tied", "phi3-longrope", "gemma3-multimodal", "qwen3-moe"])
@pytest.mark.parametrize("dtype", ["f32", "q4"])
def test_weight_bytes_per_token_count_each_matrix_read_once(model_dir, variant, dtype):
    """The bytes one decoded token reads: every stored matrix once (a fused projection
    cut into views counts once), the LM head (the embedding when tied) once, of a
    mixture of experts only the chosen top_k; the embedding table of an untied model
    (one row gathered) not at all. (Phi-3 with every cut on a multiple of 8 rows: a
    quantized part not on one is repacked into blocks of 8 rows, padding included.)"""
    import hearthlm
    from hearthlm.bench import weight_bytes_per_token
    sizes = dict(intermediate_size=96) if variant.startswith("phi3") else {}
    model = hearthlm.load(model_dir(variant, **sizes), dtype=dtype)
    t, a = model.transformer, model.args
    embed = f"{a.prefix}model.embed_tokens.weight"
    expected = 0
    for name, shape in t.weights.specs.items():
        if len(shape) != 2 or (name == embed and not a.tie_word_embeddings):
            continue
        share = a.top_k / a.num_experts if ".experts." in name else 1
        expected += t.weights.tensors[name].nbytes * share
    assert weight_bytes_per_token(model) == expected
