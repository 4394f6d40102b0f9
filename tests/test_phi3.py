"""Phi-3 specifics: LongRoPE in both regimes against transformers, fused projections cut
by rows (float views, q8/q4 superblocks), quantized folders, context shift, config
errors. The shared conformance tests run the phi3 VARIANTS too."""
import json
import os
import shutil

import numpy as np
import pytest

import hearthlm
import tiny_models
from hearthlm.models import model_args, read_config
from hearthlm.quant import quantize_tensor
from hearthlm.rope import attention_factor, inverse_frequencies, rope_tables
from hearthlm.weights import split_rows
from streaming_reference import StreamingReference, assert_follows

ORIGINAL = 64  # phi3-longrope's original_max_position_embeddings


def max_rel_diff(ours, ref):
    return float(np.max(np.abs(ours - ref)) / np.max(np.abs(ref)))


def ids_for(vocab, n, seed=0):
    return np.random.default_rng(seed).integers(0, vocab, n).tolist()


@pytest.mark.parametrize("form", ["transformers", "hub"])
def test_longrope_tables_match_transformers_in_both_regimes(model_dir, form):
    """transformers rotates a call whose positions stay below the original length by
    the short factors and one reaching past it by the long ones, cos and sin times the
    attention factor; hearthlm's table rows are those by position."""
    import torch
    from transformers import AutoConfig
    from transformers.models.phi3.modeling_phi3 import Phi3RotaryEmbedding

    folder = model_dir("phi3-longrope", config_form=form)
    spec = model_args(read_config(folder), folder).rope[0]
    rotary = Phi3RotaryEmbedding(AutoConfig.from_pretrained(folder))
    af = attention_factor(spec)
    assert af == pytest.approx(np.sqrt(1 + np.log(256 / ORIGINAL) / np.log(ORIGINAL)))
    cos, sin = rope_tables(spec, 3 * ORIGINAL)
    half = spec.rotary_dim // 2
    for positions in (np.arange(ORIGINAL), np.arange(ORIGINAL, 3 * ORIGINAL)):
        x = torch.zeros(1, len(positions), 8)
        ref_cos, ref_sin = rotary(x, torch.tensor(positions)[None])
        np.testing.assert_allclose(cos[positions], ref_cos[0, :, :half].numpy(), rtol=0, atol=2e-5)
        np.testing.assert_allclose(sin[positions], ref_sin[0, :, :half].numpy(), rtol=0, atol=2e-5)
    short_cos = af * np.cos(np.outer(np.arange(3 * ORIGINAL), inverse_frequencies(spec)))
    np.testing.assert_allclose(cos[:ORIGINAL], short_cos[:ORIGINAL], rtol=0, atol=1e-6)
    assert np.abs(cos[ORIGINAL:] - short_cos[ORIGINAL:]).max() > 0.5  # the regimes differ


def transformers_incremental(folder, ids, prefill):
    """transformers as generate() runs it: one call for the prompt, then one per token
    with its KV cache, each call choosing short or long factors by its last position."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        out = model(torch.tensor([ids[:prefill]]), use_cache=True)
        logits, cache = [out.logits[0].numpy()], out.cache
        for t in ids[prefill:]:
            out = model(torch.tensor([[t]]), cache=cache, use_cache=True)
            logits.append(out.logits[0].numpy())
            cache = out.cache
    return np.concatenate(logits)


@pytest.mark.parametrize("form", ["transformers", "hub"])
def test_session_growing_past_original_length_matches_transformers(model_dir, form):
    """Prefill within the original length, then decode to 2.5 times it: the tokens past
    it use the long factors, the cached keys keep the short rotation they were stored
    with, as in transformers."""
    folder = model_dir("phi3-longrope", config_form=form)
    model = hearthlm.load(folder)
    ids = ids_for(model.vocab_size, 160, seed=4)
    ref = transformers_incremental(folder, ids, 40)
    session = model.session(n_ctx=192)
    got = [session.feed(ids[:40], all_logits=True)] + [session.feed([t]).copy()[None] for t in ids[40:]]
    assert max_rel_diff(np.concatenate(got), ref) <= 1e-4
    # the long regime changes the maths: a call past the original length all at once differs
    assert max_rel_diff(ref[-1:], tiny_models.reference_logits(folder, ids)[-1:]) > 1e-3


@pytest.mark.parametrize("fmt", ["q8", "q4"])
@pytest.mark.parametrize("sizes", [(13, 7, 20), (16, 8, 9), (8, 40), (3,)])
def test_split_quantized_rows_equals_quantizing_each_piece(fmt, sizes):
    """Quantization is per row, so cutting the superblocks of the whole matrix gives
    exactly the bytes of quantizing each block of rows alone; blocks aligned to 8 rows
    are views."""
    w = np.random.default_rng(0).standard_normal((sum(sizes), 67)).astype(np.float32)
    whole = quantize_tensor(w, "F32", fmt, 1, "test", "w")
    pieces = split_rows(whole, fmt, list(sizes))
    start = 0
    for n, piece in zip(sizes, pieces):
        alone = quantize_tensor(np.ascontiguousarray(w[start:start + n]), "F32", fmt, 1, "test", "w")
        np.testing.assert_array_equal(piece, alone)
        aligned = start % 8 == 0 and ((start + n) % 8 == 0 or start + n == sum(sizes))
        assert np.shares_memory(piece, whole) == aligned
        start += n


def test_fused_float_rows_are_views(model_dir):
    model = hearthlm.load(model_dir("phi3-longrope"))
    fused = model.transformer.weights.tensors["model.layers.0.self_attn.qkv_proj.weight"]
    matmul = next(op for op in model.transformer.program.ops if op["op"] == "matmul")
    assert matmul["outs"] == ["q", "k", "v"]
    assert all(np.shares_memory(lin[0], fused) for lin in matmul["linears"])


@pytest.mark.parametrize("variant", ["phi3-window", "phi3-longrope"])
@pytest.mark.parametrize("fmt", ["q8", "q4"])
def test_quantized_folder_loads_like_quantizing_on_load(model_dir, tmp_path, variant, fmt):
    """`hearthlm quantize` stores qkv_proj / gate_up_proj whole under their checkpoint
    names; loading cuts them exactly as quantizing a float folder on load does."""
    src = model_dir(variant)
    dst = hearthlm.quantize(src, tmp_path / fmt, fmt)
    ids = ids_for(hearthlm.load(src).vocab_size, 30)
    np.testing.assert_array_equal(hearthlm.load(dst).logits(ids), hearthlm.load(src, dtype=fmt).logits(ids))


def llama_twin(phi3_folder, dst):
    """The same weights as a LlamaForCausalLM folder (q/k/v and gate/up as separate
    tensors), for the independent float64 session reference."""
    import torch
    import transformers
    from safetensors.torch import load_file

    c = read_config(phi3_folder)
    config = transformers.LlamaConfig(
        hidden_size=c["hidden_size"], intermediate_size=c["intermediate_size"], vocab_size=c["vocab_size"],
        num_hidden_layers=c["num_hidden_layers"], num_attention_heads=c["num_attention_heads"],
        num_key_value_heads=c["num_key_value_heads"], rms_norm_eps=c["rms_norm_eps"],
        max_position_embeddings=c["max_position_embeddings"], bos_token_id=None, eos_token_id=None,
        pad_token_id=None)
    config.architectures = ["LlamaForCausalLM"]
    state = load_file(os.path.join(phi3_folder, "model.safetensors"))
    q = c["num_attention_heads"] * c["hidden_size"] // c["num_attention_heads"]
    kv = c["num_key_value_heads"] * c["hidden_size"] // c["num_attention_heads"]
    out = {}
    for name, t in state.items():
        if "qkv_proj" in name:
            for part, rows in zip("qkv", torch.split(t, [q, kv, kv])):
                out[name.replace("qkv_proj", f"{part}_proj")] = rows
        elif "gate_up_proj" in name:
            gate, up = t.chunk(2)
            out[name.replace("gate_up_proj", "gate_proj")], out[name.replace("gate_up_proj", "up_proj")] = gate, up
        else:
            out[name] = t
    model = transformers.LlamaForCausalLM(config)
    model.load_state_dict(out)
    model.save_pretrained(dst, safe_serialization=True)
    return str(dst)


@pytest.mark.parametrize("variant", ["phi3-window", "phi3-longrope"])
def test_context_shift_matches_independent_reference(model_dir, tmp_path, variant):
    """As test_session's: n_ctx=24 (below the original length), 60 tokens one at a time
    through several shifts. The float64 reference runs the Llama twin; for longrope it
    rotates by the short factors, the rotated dims times the attention factor."""
    folder = model_dir(variant, sliding_window=None)
    model = hearthlm.load(folder)
    ref = StreamingReference(llama_twin(folder, tmp_path / "llama"), n_ctx=24, n_keep=4, n_discard=6)
    spec = model.args.rope[0]
    if spec.scaling["rope_type"] == "longrope":
        ref.rot = spec.rotary_dim
        ref.inv_freq = 1.0 / (np.array(spec.scaling["short_factor"])
                              * spec.theta ** (np.arange(0, ref.rot, 2) / ref.rot))
        rotate, af = ref.rotate, attention_factor(spec)

        def scaled(x, pos):  # the pass-through dims keep their scale
            out = rotate(x, pos)
            out[:, :ref.rot] *= af
            return out
        ref.rotate = scaled
    s = model.session(n_ctx=24, n_keep=4, n_discard=6)
    assert_follows(s, ref, ids_for(model.vocab_size, 60, seed=5))


@pytest.mark.parametrize("edit,field", [
    (lambda c: c["rope_parameters"].update(rope_type="dynamic"), "dynamic"),
    (lambda c: c["rope_parameters"].update(rope_type="linear", factor=2.0), "linear"),
    (lambda c: c["rope_parameters"].update(short_factor=[1.0] * 5), "short_factor"),
    (lambda c: c["rope_parameters"].update(long_factor="big"), "long_factor"),
    (lambda c: c["rope_parameters"].update(attention_factor=-1.0), "attention_factor"),
    (lambda c: c.update(original_max_position_embeddings=1), "original_max_position_embeddings"),
    (lambda c: c.update(sliding_window=-3), "sliding_window"),
])
def test_bad_phi3_configs_are_refused_by_name(model_dir, tmp_path, edit, field):
    folder = str(tmp_path / "m")
    shutil.copytree(model_dir("phi3-longrope"), folder)
    path = os.path.join(folder, "config.json")
    with open(path) as f:
        config = json.load(f)
    edit(config)
    with open(path, "w") as f:
        json.dump(config, f)
    with pytest.raises(hearthlm.UnsupportedModelError, match=field):
        hearthlm.load(folder)


@pytest.mark.parametrize("legacy", ["su", "yarn"])
def test_legacy_rope_types_read_as_longrope(model_dir, legacy):
    """Phi3Config renames "su" and "yarn" to "longrope"; the older form keeps them."""
    config = tiny_models.hub_form(read_config(model_dir("phi3-longrope")))
    expected = model_args(config, "config").rope
    config["rope_scaling"] = {**config["rope_scaling"], "type": legacy}
    assert model_args(config, "config").rope == expected
