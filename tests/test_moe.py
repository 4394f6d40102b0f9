"""The mixture-of-experts op (Program.moe): router softmax, top-k, tokens grouped by
expert, against a reference that routes in numpy and applies each token's experts one
by one with K.matmul on the same weights (so every weight type is compared exactly,
its matmul being tested elsewhere); its checks; and the Qwen3-MoE family around it."""
import numpy as np
import pytest

import hearthlm
from hearthlm import _kernels as K
from hearthlm.errors import UnsupportedModelError
from hearthlm.models import model_args
from hearthlm.models.program import Program
from hearthlm.quant import quantize_tensor
from hearthlm.shapes import config_for
from hearthlm.weights import Linear, f32_to_bf16_bits

f32 = np.float32
H, I = 37, 29  # awkward: neither a multiple of 8 nor of 32


def linear(w: np.ndarray, wtype: str) -> Linear:
    if wtype in ("q8", "q4"):
        return Linear(quantize_tensor(w, "F32", wtype, 1, "test", "w"), wtype)
    if wtype == "bf16":
        return Linear(f32_to_bf16_bits(w), wtype)
    return Linear(w.astype({"f32": f32, "f16": np.float16}[wtype]), wtype)


def matmul(x, lin: Linear, n: int):
    y = np.zeros((x.shape[0], n), f32)
    K.matmul(y, np.ascontiguousarray(x, f32), lin.weight, None, lin.wtype, 1)
    return y


def reference(x, router, experts, top_k, norm_topk):
    logits = matmul(x, router, len(experts)).astype(np.float64)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    out = np.zeros_like(x)
    for t in range(len(x)):
        chosen = np.argsort(-p[t], kind="stable")[:top_k]
        weights = p[t, chosen] / (p[t, chosen].sum() if norm_topk else 1.0)
        for e, w in zip(chosen, weights):
            gate, up, down = experts[e]
            g, u = matmul(x[t:t + 1], gate, I), matmul(x[t:t + 1], up, I)
            out[t] += w * matmul(g / (1 + np.exp(-g)) * u, down, H)[0]
    return out


def run_moe(x, router, experts, top_k, norm_topk, n_threads):
    T = len(x)
    p = Program(dict(x=H, y=H), input="x", output="y")
    p.moe("y", "x", router, experts, I, top_k, norm_topk)
    native = p.native([0], 1, 2)
    y = np.full((T, H), np.nan, f32)
    cache = np.zeros((1, 1, 64, 2), f32)
    caches = [(cache, None, cache.copy(), None, np.full(64, -1, np.int32), np.arange(T, dtype=np.int64),
               np.array([[0, 64]] * T, np.int64))]
    native.forward([x, y], T, np.zeros(native.scratch_bytes(T), np.uint8), caches, "f32",
                   np.arange(T, dtype=np.int32), (), n_threads)
    return y


@pytest.mark.parametrize("wtype", ["f32", "bf16", "f16", "q8", "q4"])
@pytest.mark.parametrize("T,E,top_k,norm_topk", [(1, 9, 2, True), (7, 5, 3, False), (40, 9, 4, True), (13, 3, 3, False)])
@pytest.mark.parametrize("n_threads", [1, 3])
def test_moe_matches_per_token_reference(wtype, T, E, top_k, norm_topk, n_threads):
    """T=1: most experts get no token; T=40: every expert gets several (prefill)."""
    rng = np.random.default_rng(T * E + top_k)
    x = rng.standard_normal((T, H)).astype(f32)
    router = linear(rng.standard_normal((E, H)).astype(f32), wtype)
    experts = [tuple(linear(rng.standard_normal(s).astype(f32) * f32(0.3), wtype) for s in ((I, H), (I, H), (H, I)))
               for _ in range(E)]
    ours = run_moe(x, router, experts, top_k, norm_topk, n_threads)
    ref = reference(x, router, experts, top_k, norm_topk)
    assert np.abs(ours - ref).max() <= 1e-5 * np.abs(ref).max()


def test_moe_op_checked_when_built():
    lin = lambda n, k, wtype="f32": Linear(np.zeros((n, k), f32), wtype)
    expert = (lin(I, H), lin(I, H), lin(H, I))

    def build(router=None, experts=None, top_k=2, out="y"):
        p = Program(dict(x=H, y=H, z=H + 1), input="x", output="y")
        p.moe(out, "x", router or lin(3, H), experts or [expert] * 3, I, top_k, True)
        return p.native([0], 1, 2)

    with pytest.raises(ValueError, match=r"ops\[0\] \(moe\): top_k 4 must be in \[1, the 3 experts\]"):
        build(top_k=4)
    with pytest.raises(ValueError, match=r"ops\[0\] \(moe\)\.router\.weight: expected \(3, 37\)"):
        build(router=lin(4, H))
    with pytest.raises(ValueError, match=r"ops\[0\] \(moe\)\.experts\[1\]\.down\.weight: expected \(37, 29\)"):
        build(experts=[expert, (lin(I, H), lin(I, H), lin(H, I + 1)), expert])
    with pytest.raises(ValueError, match=r"ops\[0\] \(moe\): buffer 'z' has width 38, expected 37"):
        build(out="z")
    mixed = (lin(I, H), Linear(np.zeros((I, H), np.uint16), "bf16"), lin(H, I))
    with pytest.raises(ValueError, match=r"experts\[0\]: every expert's gate, up and down must share one weight"):
        build(experts=[mixed] * 3)
    with pytest.raises(ValueError, match=r"experts\[2\]: every expert's gate, up and down must share one weight"):
        build(experts=[expert, expert, tuple(Linear(np.zeros(l.weight.shape, np.uint16), "bf16") for l in expert)])


def test_program_and_bytes_per_token(model_dir):
    """The program prints the op; a decoded token reads the router and only top_k
    experts of each MoE layer."""
    model = hearthlm.load(model_dir("qwen3-moe"))
    t, a = model.transformer, model.transformer.args
    assert "y = moe(h, top 2 of 8 experts, renormalized) (f32)" in str(t.program).splitlines()
    H_, E, M = a.hidden_size, a.num_experts, a.moe_intermediate_size
    q, kv = a.num_attention_heads * a.head_dim, a.num_key_value_heads * a.head_dim
    attention = 2 * (H_ * q + H_ * kv) * 4
    moe = (E * H_ + a.top_k * 3 * M * H_) * 4
    dense = 3 * a.intermediate_size * H_ * 4
    assert a.moe_layers == (True, False)
    assert t.matrix_bytes() == 2 * attention + moe + dense + a.vocab_size * H_ * 4


def test_greedy_generation_matches_transformers(model_dir):
    import tiny_models
    folder = model_dir("qwen3-moe-top3")
    model = hearthlm.load(folder)
    ids = [5, 17, 3, 99, 120, 7, 64, 1, 33]
    assert model.generate_ids(ids, 24) == tiny_models.reference_greedy(folder, ids, 24)


def qwen3_moe_config(**changes):
    config = config_for("qwen3-30b-a3b")
    config.update(changes)
    return config


@pytest.mark.parametrize("changes,message", [
    (dict(num_experts_per_tok=200), r"'num_experts_per_tok' must be an integer in \[1, 128\]"),
    (dict(mlp_only_layers="0"), "mlp_only_layers must be a list of layer indices"),
    (dict(decoder_sparse_step=0), "'decoder_sparse_step' must be an integer in"),
    (dict(hidden_act="gelu"), "hidden_act 'gelu' is not supported"),
    (dict(rope_parameters={"rope_type": "default", "rope_theta": 1e6, "partial_rotary_factor": 0.5}),
     "partial rotary is not part of Qwen3MoeForCausalLM"),
])
def test_bad_config_is_named(changes, message):
    with pytest.raises(UnsupportedModelError, match=message):
        model_args(qwen3_moe_config(**changes), "config.json")


def test_layer_choice_and_bench_shape():
    a = model_args(qwen3_moe_config(decoder_sparse_step=2, mlp_only_layers=[3]), "config.json")
    assert a.moe_layers == (False, True, False, False)
    a = model_args(qwen3_moe_config(), "config.json")
    assert (a.num_experts, a.top_k, a.moe_intermediate_size, a.head_dim, a.norm_topk_prob) == (128, 8, 768, 128, True)
    assert all(a.moe_layers) and a.sliding_windows == (0,) * 4
    dense = model_args(qwen3_moe_config(num_experts=0), "config.json")
    assert dense.moe_layers == (False,) * 4


def test_quantized_folder_loads_in_place_with_identical_logits(model_dir, tmp_path):
    """`hearthlm quantize` writes every expert (and the router) quantized; the folder
    loads zero-copy and gives the logits of quantizing on load."""
    src = model_dir("qwen3-moe")
    dst = hearthlm.quantize(src, tmp_path / "q4", "q4")
    stored, on_load = hearthlm.load(dst), hearthlm.load(src, dtype="q4")
    assert stored.load_stats["converted_bytes"] == 0
    assert stored.transformer.weights.linear("model.layers.0.mlp.experts.7.down_proj").wtype == "q4"
    ids = list(range(1, 40))
    np.testing.assert_array_equal(stored.logits(ids), on_load.logits(ids))


def test_random_shape_written_quantized(tmp_path, monkeypatch):
    """q8/q4 shape folders are quantized as generated and load in place."""
    from hearthlm import shapes
    monkeypatch.setenv("HEARTHLM_CACHE", str(tmp_path))
    model = hearthlm.load(shapes.random_model_folder("tiny", "q4"))
    assert model.dtype == "q4" and model.load_stats["converted_bytes"] == 0
    assert model.transformer.lm_head.wtype == "q8"
    assert np.isfinite(model.logits([1, 2, 3])).all()
