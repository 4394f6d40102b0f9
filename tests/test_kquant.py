"""The format registry and the K-quant formats q4k / q5k / q6k: GGUF blocks converted
exactly (checked against the gguf package's dequantizer), tail blocks when K is not a
multiple of 256, the integer kernels against a float64 model of the same math and bit
for bit across ISAs and threads, the searched quantizer against the fixed-rule q4,
importance weights, the q4k / q5k mixes, and whole models."""
import numpy as np
import pytest

import hearthlm
from hearthlm import _kernels as K
from hearthlm.formats import FORMATS, QUANTIZED
from hearthlm.quant import more_bits, tensor_format

ISAS = hearthlm.cpu_info()["supported_isas"]
K_QUANTS = ["q4k", "q5k", "q6k"]
rng = np.random.default_rng(7)


def packed(fmt, N, K_):
    return np.zeros(FORMATS[fmt].packed_shape(N, K_), np.uint8)


def quantize(w, fmt, threads=1, importance=None):
    out = packed(fmt, *w.shape)
    assert K.quantize(out, np.ascontiguousarray(w, np.float32), "f32", fmt, threads, importance) == (-1, -1)
    return out


def dequantize(blocks, fmt, N, K_):
    out = np.empty((N, K_), np.float32)
    K.dequantize(out, blocks, fmt)
    return out


# ---- the registry -------------------------------------------------------------------------

def test_registry_lists_every_format_once_with_its_geometry():
    table = {f["name"]: f for f in K.formats()}
    assert list(table) == ["f32", "bf16", "f16", "q8", "q4", "q4k", "q5k", "q6k"]
    assert {n: table[n]["bits_per_weight"] for n in QUANTIZED} == {
        "q8": 8.5, "q4": 4.5, "q4k": 4.5, "q5k": 5.5, "q6k": 6.5625}
    assert (table["q4k"]["block_rows"], table["q4k"]["block_k"], table["q4k"]["block_bytes"]) == (8, 256, 1152)
    assert table["q6k"]["block_bytes"] == 8 * 210 and table["q8"]["block_bytes"] == 272
    assert table["q5k"]["block_bytes"] == 8 * 176
    assert [table[n]["gguf_type"] for n in QUANTIZED] == [8, 2, 12, 13, 14]  # Q8_0, Q4_0, Q4_K, Q5_K, Q6_K
    assert FORMATS["q4k"].packed_shape(17, 512) == (3, 2 * 1152)
    assert FORMATS["q8"].packed_shape(17, 300) == (3, 10 * 272)


@pytest.mark.parametrize("fmt,head,sub", [("q4k", 8 * 16, 8 * 16), ("q5k", 8 * 16, 8 * 20), ("q6k", 8 * 18, 8 * 24)])
def test_k_tail_block_holds_only_the_sub_blocks_k_needs(fmt, head, sub):
    """K = 576 (SmolLM2's hidden size): two super-blocks, then a tail block of its header
    and two sub-blocks of 32; K = 300: one super-block, then a 2-sub-block tail."""
    full = FORMATS[fmt].block_bytes
    assert FORMATS[fmt].packed_shape(9, 576) == (2, 2 * full + head + 2 * sub)
    assert FORMATS[fmt].packed_shape(9, 300) == (2, full + head + 2 * sub)
    assert FORMATS[fmt].packed_shape(9, 224) == (2, head + 7 * sub)
    bpw = 8 * FORMATS[fmt].packed_shape(8, 576)[1] / (8 * 576)
    assert bpw < 1.05 * FORMATS[fmt].bits_per_weight


def test_blocks_of_files_written_before_tail_blocks_are_read_as_3d():
    """[row groups, k blocks, block bytes] holds the same bytes when K is a multiple of 256."""
    w, x = rng.standard_normal((16, 512)).astype(np.float32), rng.standard_normal((2, 512)).astype(np.float32)
    blocks = quantize(w, "q4k")
    y, y3 = np.empty((2, 16), np.float32), np.empty((2, 16), np.float32)
    K.matmul(y, x, blocks, None, "q4k")
    K.matmul(y3, x, blocks.reshape(2, 2, 1152), None, "q4k")
    np.testing.assert_array_equal(y3, y)
    with pytest.raises(ValueError, match=r"expected quantized shape \(2, 2304\)"):
        K.matmul(y, x, blocks.reshape(2, 2, 1152)[:, :1].copy(), None, "q4k")


def test_unknown_format_names_the_known_ones():
    with pytest.raises(ValueError, match="wtype: expected one of 'f32', .*'q4k', 'q5k', 'q6k', got 'q5'"):
        K.matmul(np.zeros((1, 4), np.float32), np.zeros((1, 4), np.float32), np.zeros((4, 4), np.float32),
                 None, "q5")
    with pytest.raises(ValueError, match="format: expected one of 'q8', 'q4', 'q4k', 'q5k', 'q6k', got 'f16'"):
        K.quantize(packed("q4", 8, 32), np.zeros((8, 32), np.float32), "f32", "f16")


# ---- GGUF blocks convert exactly ----------------------------------------------------------------

def random_gguf_blocks(fmt, N, K_):
    """Random bytes for every field, with finite fp16 scales (GGUF layout, ggml-common.h)."""
    gguf_bytes = {"q8": 34, "q4": 18, "q4k": 144, "q5k": 176, "q6k": 210}[fmt]
    per = FORMATS[fmt].block_k
    nb = -(-K_ // per)
    raw = rng.integers(0, 256, (N * nb, gguf_bytes), dtype=np.uint8)
    half = lambda n: rng.uniform(-2, 2, (N * nb, n)).astype(np.float16).view(np.uint8)  # noqa: E731
    if fmt == "q6k":
        raw[:, 208:210] = half(1)
    elif fmt in ("q4k", "q5k"):
        raw[:, 0:4] = half(2)
    else:
        raw[:, 0:2] = half(1)
    return raw.reshape(-1)


@pytest.mark.parametrize("fmt", QUANTIZED)
@pytest.mark.parametrize("N,K_", [(1, 256), (9, 512), (16, 768), (3, 96)])
def test_gguf_blocks_convert_exactly(fmt, N, K_):
    gguf = pytest.importorskip("gguf")
    if FORMATS[fmt].block_k > K_ % FORMATS[fmt].block_k > 0:
        K_ += FORMATS[fmt].block_k - K_ % FORMATS[fmt].block_k  # GGUF rows are whole blocks
    raw = random_gguf_blocks(fmt, N, K_)
    qtype = gguf.GGMLQuantizationType(FORMATS[fmt].gguf_type)
    ref = gguf.quants.dequantize(raw.reshape(N, -1), qtype).reshape(N, K_)
    out = packed(fmt, N, K_)
    K.from_gguf(out, raw, fmt, N, K_)
    np.testing.assert_array_equal(dequantize(out, fmt, N, K_), ref)


def test_gguf_conversion_checks_sizes():
    with pytest.raises(ValueError, match="blocks: expected 1440 bytes"):
        K.from_gguf(packed("q4k", 10, 256), np.zeros(100, np.uint8), "q4k", 10, 256)
    with pytest.raises(ValueError, match="K: GGUF rows hold whole blocks of 256 weights, got K = 576"):
        K.from_gguf(packed("q5k", 10, 576), np.zeros(10 * 3 * 176, np.uint8), "q5k", 10, 576)
    with pytest.raises(ValueError, match=r"out: expected quantized shape \(2, 1408\)"):
        K.from_gguf(packed("q4k", 10, 256), np.zeros(10 * 176, np.uint8), "q5k", 10, 256)


# ---- kernels ----------------------------------------------------------------------------

def activations(x):
    """The kernels' int8 activation blocks as float64 values d·q, zero-padded to 32."""
    M, K_ = x.shape
    nb = -(-K_ // 32)
    act_type = np.dtype([("d", "<f4"), ("dsum", "<f4"), ("sum", "<i2", 2), ("qs", "i1", 32)])
    blocks = np.empty((M, nb, act_type.itemsize), np.uint8)
    K.quantize_activations(blocks, x)
    act = blocks.view(act_type)[..., 0]
    return (act["d"][..., None].astype(np.float64) * act["qs"]).reshape(M, nb * 32)[:, :K_]


@pytest.mark.parametrize("fmt", K_QUANTS)
@pytest.mark.parametrize("M,N,K_", [(1, 67, 33), (3, 17, 300), (7, 33, 513), (5, 8, 256), (2, 300, 2100),
                                    (9, 19, 576), (8, 24, 256), (17, 41, 544), (16, 9, 800)])
def test_k_matmul_is_the_dequantized_product(fmt, M, N, K_):
    """y = Σ_k w[n,k]·(d·q)[m,k] over the stored weights and the activation blocks: the
    kernels sum exact int32 block products with one rounding per fp32 term, so float64
    agrees to ~1e-6 of the sum of |terms|."""
    w, x, bias = (rng.standard_normal(s).astype(np.float32) for s in ((N, K_), (M, K_), (N,)))
    blocks = quantize(w, fmt)
    wd = dequantize(blocks, fmt, N, K_).astype(np.float64)
    xa = activations(x)
    ref = xa @ wd.T + bias
    scale = np.abs(xa) @ np.abs(wd).T + np.abs(bias)
    y = np.full((M, N), np.nan, np.float32)
    K.matmul(y, x, blocks, bias, fmt, 1, "scalar")
    assert np.all(np.abs(y - ref) <= 2e-6 * scale + 1e-30)
    for isa in ISAS:
        for threads in (1, 3):
            y_isa = np.full((M, N), np.nan, np.float32)
            K.matmul(y_isa, x, blocks, bias, fmt, threads, isa)
            np.testing.assert_array_equal(y_isa, y)


@pytest.mark.parametrize("fmt", K_QUANTS)
@pytest.mark.parametrize("isa", ISAS)
def test_k_embed_is_the_dequantized_row(fmt, isa):
    w = rng.standard_normal((13, 300)).astype(np.float32)
    blocks = quantize(w, fmt)
    full = dequantize(blocks, fmt, 13, 300)
    out = np.empty((3, 300), np.float32)
    K.embed(out, blocks, np.array([12, 0, 5], np.int32), fmt, isa)
    np.testing.assert_array_equal(out, full[[12, 0, 5]])


# ---- the quantizer ------------------------------------------------------------------------

def rel_rmse(w, fmt, importance=None):
    back = dequantize(quantize(w, fmt, importance=importance), fmt, *w.shape)
    return float(np.sqrt(((back - w) ** 2).mean() / (w ** 2).mean()))


def test_searched_scales_beat_the_fixed_rule_at_the_same_size():
    """Gaussian weights with a few outliers: q4k (4.5 bpw) loses less than q4 (4.5 bpw);
    each further bit (q5k, q6k) about halves the error."""
    w = rng.standard_normal((64, 1024)).astype(np.float32)
    w[rng.random(w.shape) < 0.002] *= 8
    errors = {fmt: rel_rmse(w, fmt) for fmt in ("q4", "q4k", "q5k", "q6k", "q8")}
    assert errors["q4k"] < 0.9 * errors["q4"]
    assert errors["q5k"] < 0.6 * errors["q4k"]
    assert errors["q6k"] < 0.6 * errors["q5k"]
    assert errors["q8"] < errors["q6k"]


# The affine quantizer's own weighted error (weights rms + |x| per super-block) on fixed
# Gaussian weights, as reached before its 6-bit scales were picked by their rounded error
# and d / dmin refitted (a4826a0): now lower by at least these factors.
PREVIOUS_ERROR = {"q4k": (3.4215e-3, 0.985), "q5k": (8.4799e-4, 0.97)}


@pytest.mark.parametrize("fmt", PREVIOUS_ERROR)
def test_k_quantizer_error_is_below_the_previous_quantizers(fmt):
    w = np.random.default_rng(14).standard_normal((64, 2048)).astype(np.float32)
    err = (dequantize(quantize(w, fmt), fmt, *w.shape) - w).reshape(-1, 256) ** 2
    x = w.reshape(-1, 256)
    wt = np.sqrt((x * x).mean(-1, keepdims=True)) + np.abs(x)
    previous, factor = PREVIOUS_ERROR[fmt]
    assert (wt * err).sum() / (wt * x * x).sum() < factor * previous


@pytest.mark.parametrize("fmt", K_QUANTS)
def test_importance_lowers_the_weighted_error(fmt):
    """Columns with large mean squared activations get their weights kept closer."""
    w = rng.standard_normal((32, 512)).astype(np.float32)
    imp = np.exp(rng.standard_normal(512) * 2).astype(np.float32)

    def weighted(blocks):
        return float((((dequantize(blocks, fmt, 32, 512) - w) ** 2) * imp).sum())
    plain, informed = weighted(quantize(w, fmt)), weighted(quantize(w, fmt, importance=imp))
    assert informed < 0.95 * plain


@pytest.mark.parametrize("fmt", K_QUANTS)
def test_k_quantizer_is_deterministic_across_threads_and_pads_with_zeros(fmt):
    w = rng.standard_normal((19, 300)).astype(np.float32)
    a, b = quantize(w, fmt, 1), quantize(w, fmt, 3)
    np.testing.assert_array_equal(a, b)
    padded = np.zeros((24, 512), np.float32)
    padded[:19, :300] = w
    back = dequantize(quantize(padded, fmt), fmt, 24, 512)
    np.testing.assert_array_equal(dequantize(a, fmt, 19, 300), back[:19, :300])
    assert np.all(back[19:] == 0)


@pytest.mark.parametrize("fmt", K_QUANTS)
def test_k_edge_blocks(fmt):
    """All-zero rows stay zero; a constant row and huge values stay finite and close."""
    w = np.zeros((8, 256), np.float32)
    w[1] = 3.0
    w[2] = np.linspace(-4e5, 4e5, 256)
    w[3, 7] = 1e-30
    back = dequantize(quantize(w, fmt), fmt, 8, 256)
    assert np.all(back[0] == 0) and np.all(np.isfinite(back))
    assert np.abs(back[1] - 3).max() < 0.05 * 3
    assert np.abs(back[2] - w[2]).max() < 0.1 * 4e5


def test_bad_importance_is_refused():
    w = np.ones((8, 64), np.float32)
    with pytest.raises(ValueError, match="importance: expected 64 values"):
        K.quantize(packed("q4k", 8, 64), w, "f32", "q4k", 1, np.ones(63, np.float32))
    with pytest.raises(ValueError, match="importance: values must be finite and >= 0"):
        K.quantize(packed("q4k", 8, 64), w, "f32", "q4k", 1, -np.ones(64, np.float32))


@pytest.mark.parametrize("fmt", K_QUANTS)
def test_k_non_finite_weights_are_reported(fmt):
    w = rng.standard_normal((11, 300)).astype(np.float32)
    w[9, 270] = np.inf
    assert K.quantize(packed(fmt, 11, 300), w, "f32", fmt, 2) == (9 * 300 + 270, -1)


# ---- the q4k mix and whole models ---------------------------------------------------------

def test_q4k_mix_follows_q4_k_m():
    layers = [i for i in range(32) if more_bits(i, 32)]
    assert layers == [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]  # llama.cpp, 32 layers
    fmt = lambda n, tied=False: tensor_format(n, "q4k", None, 32, tied)  # noqa: E731
    assert fmt("lm_head.weight") == "q6k" and fmt("model.embed_tokens.weight") == "q4k"
    assert fmt("model.embed_tokens.weight", tied=True) == "q6k"
    assert fmt("model.layers.3.self_attn.v_proj.weight") == "q6k"
    assert fmt("model.layers.4.self_attn.v_proj.weight") == "q4k"
    assert fmt("model.layers.6.mlp.down_proj.weight") == "q6k"
    assert fmt("model.layers.6.self_attn.q_proj.weight") == "q4k"
    assert tensor_format("lm_head.weight", "q4k", "q8", 32, False) == "q8"
    q5 = lambda n, tied=False: tensor_format(n, "q5k", None, 32, tied)  # noqa: E731  llama.cpp's Q5_K_M
    assert q5("lm_head.weight") == "q6k" and q5("model.embed_tokens.weight") == "q5k"
    assert q5("model.embed_tokens.weight", tied=True) == "q6k"
    assert q5("model.layers.31.mlp.down_proj.weight") == "q6k" and q5("model.layers.4.mlp.down_proj.weight") == "q5k"
    assert q5("model.layers.0.self_attn.v_proj.weight") == "q6k" and q5("model.layers.0.mlp.up_proj.weight") == "q5k"
    assert tensor_format("model.layers.3.self_attn.v_proj.weight", "q6k", None, 32, False) == "q6k"


def mean_kl(ref, ours):
    def log_softmax(z):
        z = z.astype(np.float64) - z.max(-1, keepdims=True)
        return z - np.log(np.exp(z).sum(-1, keepdims=True))
    lp, lq = log_softmax(ref), log_softmax(ours)
    return float((np.exp(lp) * (lp - lq)).sum(-1).mean())


@pytest.mark.parametrize("variant", ["llama-gqa-tied", "llama-mha", "qwen2"])
def test_k_quant_models_track_f32(model_dir, variant):
    """KL(f32 || q6k) under KL(f32 || q5k mix), well under KL(f32 || q4k mix), which
    stays under q4's with its q8 head (numbers printed with pytest -s)."""
    folder = model_dir(variant)
    f32 = hearthlm.load(folder, dtype="f32")
    ids = np.random.default_rng(2).integers(0, f32.vocab_size, 64).tolist()
    ref = f32.logits(ids)
    kl = {d: mean_kl(ref, hearthlm.load(folder, dtype=d).logits(ids)) for d in ("q4", "q4k", "q5k", "q6k")}
    print(variant, {d: f"{v:.2e}" for d, v in kl.items()})
    assert kl["q6k"] < kl["q5k"] < 0.6 * kl["q4k"] and kl["q4k"] < kl["q4"] < 0.1


def test_q4k_folder_is_memory_mapped_with_identical_logits(model_dir, tmp_path):
    src = model_dir("llama-mha")
    dst = hearthlm.quantize(src, tmp_path / "q4k", "q4k")
    stored, on_load = hearthlm.load(dst), hearthlm.load(src, dtype="q4k")
    assert stored.dtype == "q4k" and stored.load_stats["converted_bytes"] == 0
    t = stored.transformer
    v = [t.weights.linear(f"model.layers.{i}.self_attn.v_proj").wtype for i in (0, 1)]
    assert t.lm_head.wtype == "q6k" and v == ["q4k", "q6k"]
    ids = list(range(1, 40))
    np.testing.assert_array_equal(stored.logits(ids), on_load.logits(ids))


def test_calibration_measures_every_matrix_and_changes_the_weights(tmp_path):
    from hearthlm.calibration import importance_from_text
    demo = hearthlm.demo_model_path() if hasattr(hearthlm, "demo_model_path") else None
    demo = demo or str(__import__("pathlib").Path(hearthlm.__file__).parent / "demo_model")
    text = tmp_path / "calib.txt"
    text.write_text("What is 12 plus 7? 19. What is 3 times 4? 12. Spell cat backwards. tac.\n" * 20)
    imp = importance_from_text(demo, text)
    model = hearthlm.load(demo)
    n_layers = model.args.num_hidden_layers
    assert len([n for n in imp if n.startswith("model.layers.")]) == 7 * n_layers
    assert all(v.dtype == np.float32 and np.all(v >= 0) and v.max() > 0 for v in imp.values())
    plain = hearthlm.quantize(demo, tmp_path / "plain", "q4k")
    informed = hearthlm.quantize(demo, tmp_path / "informed", "q4k", calibration=text)
    ids = model.tokenizer.encode("What is 12 plus 7?")
    a, b = hearthlm.load(plain).logits(ids), hearthlm.load(informed).logits(ids)
    assert not np.array_equal(a, b)
    assert mean_kl(model.logits(ids), b) < 0.05


def test_calibration_errors_name_the_problem(tmp_path, model_dir):
    src = model_dir("llama-mha")
    with pytest.raises(hearthlm.InvalidInputError, match="calibration: only the K-quant dtypes"):
        hearthlm.quantize(src, tmp_path / "a", "q4", calibration="x.txt")
    with pytest.raises(hearthlm.InvalidInputError, match="calibration: cannot read .*missing.txt"):
        hearthlm.quantize(src, tmp_path / "b", "q4k", calibration=tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(hearthlm.InvalidInputError, match="holds no text"):
        hearthlm.quantize(src, tmp_path / "c", "q4k", calibration=tmp_path / "empty.txt")


def test_cli_quantize_names_bad_calibration(model_dir, tmp_path, capsys):
    from hearthlm.cli import main
    assert main(["quantize", model_dir("llama-mha"), str(tmp_path / "out"), "--dtype", "q4",
                 "--calibration", str(tmp_path / "c.txt")]) == 1
    assert "calibration: only the K-quant dtypes" in capsys.readouterr().err
    assert main(["quantize", model_dir("llama-mha"), str(tmp_path / "out"), "--dtype", "q6k"]) == 0
    assert hearthlm.load(tmp_path / "out").dtype == "q6k"
