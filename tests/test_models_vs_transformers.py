"""Logits of every supported architecture against transformers on the same weights."""
import numpy as np
import pytest

import hearthlm
import tiny_models

PROMPT_LEN = 23  # longer than the sliding window and not a multiple of anything


def prompt(vocab: int, n: int = PROMPT_LEN, seed: int = 1):
    return np.random.default_rng(seed).integers(0, vocab, n).tolist()


def max_rel_diff(ours, ref):
    return float(np.max(np.abs(ours - ref)) / np.max(np.abs(ref)))


@pytest.mark.parametrize("form", ["transformers", "hub"])
@pytest.mark.parametrize("variant", sorted(tiny_models.VARIANTS))
def test_f32_logits_match_transformers(model_dir, variant, form):
    """config.json as transformers 5 writes it, and in the older Hub form."""
    folder = model_dir(variant, config_form=form)
    model = hearthlm.load(folder)
    assert model.dtype == "f32"
    ids = prompt(model.vocab_size)
    ref = tiny_models.reference_logits(folder, ids)
    ours = model.logits(ids)
    assert ours.shape == ref.shape
    # f32 everywhere: only summation order differs from PyTorch.
    assert max_rel_diff(ours, ref) <= 1e-4


@pytest.mark.parametrize("variant", sorted(tiny_models.VARIANTS))
def test_bf16_checkpoint_matches_transformers_on_same_weights(model_dir, variant):
    """bf16 weights used in place: the reference is transformers in f32 on exactly the
    same (bf16-rounded) weights, so the bound is the f32 one: activations stay f32."""
    folder = model_dir(variant, "bf16")
    model = hearthlm.load(folder)
    assert model.dtype == "bf16" and model.load_stats["converted_bytes"] == 0
    ids = prompt(model.vocab_size)
    assert max_rel_diff(model.logits(ids), tiny_models.reference_logits(folder, ids)) <= 1e-4


@pytest.mark.parametrize("dtype,bound", [("bf16", 2e-2), ("f16", 2e-3)])
def test_f32_checkpoint_converted_to_16_bit(model_dir, dtype, bound):
    """Converting f32 weights to bf16 (8-bit mantissa, relative rounding 2^-9) or
    f16 (2^-12) moves the logits by about that relative amount per weight; errors
    partly cancel across the sums, so the bounds are a few times the unit rounding."""
    folder = model_dir("llama-gqa-tied")
    model = hearthlm.load(folder, dtype=dtype)
    assert model.load_stats["converted_bytes"] > 0
    ids = prompt(model.vocab_size)
    assert max_rel_diff(model.logits(ids), tiny_models.reference_logits(folder, ids)) <= bound


@pytest.mark.parametrize("variant", ["llama-gqa-tied", "mistral-window", "stablelm", "qwen2"])
def test_greedy_generation_matches_transformers(model_dir, variant):
    folder = model_dir(variant)
    model = hearthlm.load(folder)
    ids = prompt(model.vocab_size, 9, seed=3)
    assert model.generate_ids(ids, 32) == tiny_models.reference_greedy(folder, ids, 32)


@pytest.mark.parametrize("variant", sorted(tiny_models.VARIANTS))
def test_session_prefill_then_decode_matches_transformers(model_dir, variant):
    """A session prefills part of the prompt in one batch, then decodes the rest token
    by token: every position's logits equal transformers' on the whole sequence."""
    folder = model_dir(variant)
    model = hearthlm.load(folder)
    ids = prompt(model.vocab_size)
    ref = tiny_models.reference_logits(folder, ids)
    session = model.session(n_ctx=64)
    got = [session.feed(ids[:9], all_logits=True)]
    got += [session.feed([token]).copy()[None] for token in ids[9:]]
    assert max_rel_diff(np.concatenate(got), ref) <= 1e-4


def test_prefill_and_token_by_token_decode_agree(model_dir):
    folder = model_dir("llama-gqa-tied")
    model = hearthlm.load(folder)
    ids = prompt(model.vocab_size, 17)
    full = model.logits(ids)
    from hearthlm.kv_cache import KVCache

    cache, buf = KVCache.alone(model.args, len(ids)), model.transformer.buffers(1)
    out = np.empty((1, model.vocab_size), np.float32)
    for t, token in enumerate(ids):
        model.transformer.forward(np.array([token], np.int32), cache, buf, out)
        np.testing.assert_allclose(out[0], full[t], rtol=0, atol=1e-5 * np.abs(full).max())


def test_sharded_checkpoint_loads_like_single_file(model_dir):
    single = model_dir("llama-mha")
    sharded = model_dir("llama-mha", max_shard_size="20KB")
    import os
    assert os.path.exists(os.path.join(sharded, "model.safetensors.index.json"))
    ids = prompt(257)
    np.testing.assert_array_equal(hearthlm.load(single).logits(ids), hearthlm.load(sharded).logits(ids))


@pytest.mark.parametrize("isa", hearthlm.cpu_info()["supported_isas"])
def test_every_isa_runs_the_model(model_dir, isa):
    folder = model_dir("stablelm")
    ids = prompt(190)
    ref = tiny_models.reference_logits(folder, ids)
    hearthlm.select_isa(isa)
    try:
        ours = hearthlm.load(folder).logits(ids)
    finally:
        hearthlm.select_isa(hearthlm.cpu_info()["supported_isas"][-1])
    assert max_rel_diff(ours, ref) <= 1e-4
