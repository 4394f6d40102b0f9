"""Gemma 2 / 3: the context shift re-rotates local and global layers by their own RoPE
tables (against an independent float64 reference), the multimodal checkpoint's text
model, and config values hearthlm refuses."""
import json
import logging
import math

import numpy as np
import pytest

import hearthlm
from hearthlm.errors import UnsupportedModelError
from streaming_reference import StreamingReference, assert_follows


class GemmaStreamingReference(StreamingReference):
    """StreamingReference's session semantics (feed_batch) with Gemma's layer: scaled
    embeddings, (1 + w) RMSNorm around attention and MLP, q/k norms (Gemma 3), per
    layer type RoPE base and window, soft-caps (Gemma 2), GELU-tanh GLU."""

    def __init__(self, folder, n_ctx, n_keep, n_discard):
        import torch
        from transformers import AutoModelForCausalLM

        hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        self.p = {k: v.detach().double().numpy() for k, v in hf.state_dict().items()}
        c = self.c = hf.config
        self.n_heads, self.n_kv, self.hd = c.num_attention_heads, c.num_key_value_heads, c.head_dim
        self.inv_freq = [self.frequencies(c.rope_parameters.get(t, c.rope_parameters)) for t in c.layer_types]
        self.windows = [c.sliding_window if t == "sliding_attention" else None for t in c.layer_types]
        self.n_ctx, self.n_keep, self.n_discard = n_ctx, n_keep, n_discard
        self.tokens = []
        self.keys = [[] for _ in range(c.num_hidden_layers)]    # unrotated, after k_norm
        self.values = [[] for _ in range(c.num_hidden_layers)]

    def frequencies(self, rope):
        inv = 1.0 / rope["rope_theta"] ** (np.arange(0, self.hd, 2) / self.hd)
        return inv / rope["factor"] if rope["rope_type"] == "linear" else inv

    def norm(self, x, prefix):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + self.c.rms_norm_eps) * (1 + self.p[prefix + ".weight"])

    @staticmethod
    def softcap(x, cap):
        return cap * np.tanh(x / cap) if cap else x

    def rope(self, x, pos, inv_freq):
        a = pos * inv_freq
        cos, sin, h = np.cos(a), np.sin(a), self.hd // 2
        out = x.copy()
        out[:, :h] = x[:, :h] * cos - x[:, h:] * sin
        out[:, h:] = x[:, h:] * cos + x[:, :h] * sin
        return out

    def _run(self, token):
        c, pos = self.c, len(self.tokens)
        self.tokens.append(token)
        x = self.p["model.embed_tokens.weight"][token] * math.sqrt(c.hidden_size)
        rep = self.n_heads // self.n_kv
        for i in range(c.num_hidden_layers):
            pre = f"model.layers.{i}"
            h = self.norm(x, pre + ".input_layernorm")
            q = self.linear(h, pre + ".self_attn.q_proj").reshape(self.n_heads, self.hd)
            k = self.linear(h, pre + ".self_attn.k_proj").reshape(self.n_kv, self.hd)
            v = self.linear(h, pre + ".self_attn.v_proj").reshape(self.n_kv, self.hd)
            if pre + ".self_attn.q_norm.weight" in self.p:
                q, k = self.norm(q, pre + ".self_attn.q_norm"), self.norm(k, pre + ".self_attn.k_norm")
            self.keys[i].append(k)
            self.values[i].append(v)
            q = self.rope(q, pos, self.inv_freq[i])
            K = np.stack([self.rope(kj, j, self.inv_freq[i]) for j, kj in enumerate(self.keys[i])])
            V = np.stack(self.values[i])
            visible = np.arange(len(K)) > pos - (self.windows[i] or pos + 1)
            out = np.zeros((self.n_heads, self.hd))
            for hh in range(self.n_heads):
                s = self.softcap(K[:, hh // rep] @ q[hh] * c.query_pre_attn_scalar ** -0.5, c.attn_logit_softcapping)
                w = np.where(visible, np.exp(s - s[visible].max()), 0.0)
                out[hh] = w @ V[:, hh // rep] / w.sum()
            attn = self.linear(out.reshape(-1), pre + ".self_attn.o_proj")
            x = x + self.norm(attn, pre + ".post_attention_layernorm")
            h = self.norm(x, pre + ".pre_feedforward_layernorm")
            g = self.linear(h, pre + ".mlp.gate_proj")
            gelu = 0.5 * g * (1 + np.tanh(math.sqrt(2 / math.pi) * (g + 0.044715 * g ** 3)))
            mlp = self.linear(gelu * self.linear(h, pre + ".mlp.up_proj"), pre + ".mlp.down_proj")
            x = x + self.norm(mlp, pre + ".post_feedforward_layernorm")
        x = self.norm(x, "model.norm")
        head = self.p.get("lm_head.weight", self.p["model.embed_tokens.weight"])
        return self.softcap(head @ x, c.final_logit_softcapping)


@pytest.mark.parametrize("variant", ["gemma2", "gemma3"])
def test_context_shift_matches_independent_reference(model_dir, variant):
    """As tests/test_session.py's test of the same name: n_ctx=24, n_keep=4,
    n_discard=6, 60 tokens one at a time; local layers (window shorter than the
    context) and global layers, each re-rotated by its own RoPE table on a shift."""
    folder = model_dir(variant)
    model = hearthlm.load(folder)
    assert set(model.args.sliding_windows) == {0, model.args.sliding_windows[0]} != {0}
    if variant == "gemma3":
        assert set(model.args.layer_rope) == {0, 1} and model.args.rope[0] != model.args.rope[1]
    ids = np.random.default_rng(5).integers(0, model.vocab_size, 60).tolist()
    s = model.session(n_ctx=24, n_keep=4, n_discard=6)
    ref = GemmaStreamingReference(folder, n_ctx=24, n_keep=4, n_discard=6)
    assert_follows(s, ref, ids)
    assert len(s.tokens) <= 24 and s.tokens[:4] == ids[:4]


def test_multimodal_checkpoint_loads_its_text_model_and_says_so(model_dir, caplog):
    folder = model_dir("gemma3-multimodal")
    with caplog.at_level(logging.WARNING, logger="hearthlm.models.gemma"):
        model = hearthlm.load(folder)
    assert "vision tower" in caplog.text and "ignored" in caplog.text
    assert all(not n.startswith("vision_tower") for n in model.transformer.weights.tensors)
    assert model.args.prefix == "language_model."


def edited(folder, **changes):
    """A copy of config.json with `changes` (None deletes the key)."""
    config = json.load(open(f"{folder}/config.json"))
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    return config


@pytest.mark.parametrize("variant,changes,field", [
    ("gemma2", dict(hidden_activation="gelu"), "hidden_activation"),
    ("gemma3", dict(model_type="gemma3"), "model_type"),
    ("gemma3", dict(hidden_activation="silu"), "hidden_activation"),
    ("gemma3", dict(use_bidirectional_attention=True), "use_bidirectional_attention"),
    ("gemma3", dict(attn_logit_softcapping=50.0), "attn_logit_softcapping"),
    ("gemma3", dict(rope_parameters={"rope_type": "default", "rope_theta": 1e4}), "rope_parameters"),
    ("gemma3", dict(rope_parameters={"full_attention": {"rope_type": "yarn", "factor": 2.0}}), "yarn"),
    ("gemma3", dict(layer_types=["sliding_attention"]), "layer_types"),
    ("gemma2", dict(sliding_window=0), "sliding_window"),
    ("gemma2", dict(query_pre_attn_scalar=0), "query_pre_attn_scalar"),
    ("gemma2", dict(final_logit_softcapping=0), "final_logit_softcapping"),
])
def test_unsupported_config_values_name_the_field(model_dir, variant, changes, field):
    from hearthlm.models import model_args
    config = edited(model_dir(variant), **changes)
    with pytest.raises(UnsupportedModelError, match=field):
        model_args(config, "config.json")


def test_hub_defaults_fill_missing_fields():
    """Hub checkpoints (Gemma 3 4B's text_config above all) leave out fields equal to
    transformers' defaults: head_dim 256, query_pre_attn_scalar 256, pattern 6, ..."""
    from hearthlm.models import model_args
    args = model_args({"architectures": ["Gemma3ForConditionalGeneration"],
                       "text_config": {"hidden_size": 2560, "intermediate_size": 10240, "num_hidden_layers": 34,
                                       "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
                                       "sliding_window": 1024}}, "config.json")
    assert (args.num_attention_heads, args.num_key_value_heads, args.head_dim) == (8, 4, 256)
    assert args.vocab_size == 262208 and args.tie_word_embeddings
    assert args.attention_scale == 256 ** -0.5 and args.logits_softcap == 0 and args.attention_softcap == 0
    assert args.sliding_windows[:6] == (1024,) * 5 + (0,) and args.layer_rope[:6] == (1,) * 5 + (0,)
    (g, l) = args.rope
    assert (g.theta, g.scaling["rope_type"], g.scaling["factor"]) == (1e6, "linear", 8.0)
    assert (l.theta, l.scaling["rope_type"]) == (1e4, "default")
    assert args.embed_scale == float(np.float32(math.sqrt(2560)))


def test_quantized_multimodal_folder_equals_quantizing_on_load(model_dir, tmp_path):
    """`hearthlm quantize` of the whole checkpoint (vision tower included, unused):
    the text model's embedding and LM head get the head format, as on load."""
    src = model_dir("gemma3-multimodal")
    dst = hearthlm.quantize(src, tmp_path / "q4", "q4")
    ids = np.random.default_rng(2).integers(0, 190, 17).tolist()
    stored = hearthlm.load(dst)
    assert stored.transformer.embed_tokens.wtype == stored.transformer.lm_head.wtype == "q8"
    np.testing.assert_array_equal(stored.logits(ids), hearthlm.load(src, dtype="q4").logits(ids))


def test_head_dim_256_the_kernels_maximum(model_dir):
    """Gemma's real head_dim is the attention kernels' largest (kMaxHeadDim)."""
    import tiny_models
    folder = model_dir("gemma3", head_dim=256)
    model = hearthlm.load(folder)
    ids = np.random.default_rng(1).integers(0, model.vocab_size, 23).tolist()
    ref = tiny_models.reference_logits(folder, ids)
    assert model.args.head_dim == 256
    assert np.abs(model.logits(ids) - ref).max() <= 1e-4 * np.abs(ref).max()


# -- window-sized caches of sliding-window layers ----------------------------------------

WINDOWED = ["gemma2", "gemma3", "mistral-window", "qwen3-window-bias"]


def windowed(model, n_ctx=64, max_batch=4, **kwargs):
    """A session whose sliding-window layers' caches hold n_keep + window + max_batch - 1
    slots, fewer than n_ctx."""
    s = model.session(n_ctx=n_ctx, max_batch=max_batch, **kwargs)
    local = [g for g in s.cache.pool.groups if g.window]
    assert local and all(g.capacity == s.cache.n_keep + g.window + max_batch - 1 < n_ctx for g in local)
    return s


def full_cache(model, n_ctx=64, max_batch=4, n_keep=4, kv_dtype="f32", **kwargs):
    """The same session over caches of n_ctx slots for every layer (the path before)."""
    from hearthlm.kv_cache import KVCache
    from hearthlm.session import Session
    s = Session(model, cache=KVCache.alone(model.args, n_ctx, n_keep, kv_dtype), max_batch=max_batch, **kwargs)
    assert all(g.capacity == n_ctx for g in s.cache.pool.groups)
    return s


def eager_logits(folder, ids):
    """transformers' float32 logits with its eager (sliding-window masked) attention."""
    import torch
    from transformers import AutoModelForCausalLM
    hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager").eval()
    with torch.no_grad():
        return hf(torch.tensor([list(ids)])).logits[0].numpy()


def close(got, ref, bound=1e-4):
    assert np.abs(got - ref).max() <= bound * np.abs(ref).max()


def feed_then_decode(s, ids, n_prefill):
    """Logits of every position: a prefill of n_prefill (chunks of max_batch), then one at a time."""
    rows = [s.feed(ids[:n_prefill], all_logits=True)] if n_prefill else []
    rows += [s.feed([t]).copy()[None] for t in ids[n_prefill:]]
    return np.concatenate(rows)


@pytest.mark.parametrize("variant", WINDOWED)
def test_windowed_prefill_and_decode_match_transformers(model_dir, variant):
    """A prefill of 13 tokens (longer than every window, in chunks of 4), then 30 tokens
    one at a time: the local rings wrap several times."""
    folder = model_dir(variant)
    model = hearthlm.load(folder)
    ids = np.random.default_rng(3).integers(0, model.vocab_size, 43).tolist()
    close(feed_then_decode(windowed(model), ids, 13), eager_logits(folder, ids))


@pytest.mark.parametrize("variant,kv_dtype", [("gemma3", "f32"), ("gemma2", "q8"), ("mistral-window", "f16")])
def test_windowed_equals_the_full_cache_path(model_dir, variant, kv_dtype):
    model = hearthlm.load(model_dir(variant))
    ids = np.random.default_rng(4).integers(0, model.vocab_size, 40).tolist()
    a = feed_then_decode(windowed(model, kv_dtype=kv_dtype), ids, 9)
    b = feed_then_decode(full_cache(model, kv_dtype=kv_dtype), ids, 9)
    close(a, b, 1e-5)


def test_windowed_memory_is_smaller(model_dir):
    """Session.memory_bytes counts the smaller caches: gemma3's layers are sliding,
    sliding, full, sliding (window 6), one kv head of 18."""
    model = hearthlm.load(model_dir("gemma3"))
    s, full = windowed(model, n_ctx=64, max_batch=4), full_cache(model, n_ctx=64)
    per_slot = 2 * 18 * 4  # K and V of one layer, f32
    local = 4 + 6 + 4 - 1
    assert s.cache.memory_bytes == 64 * per_slot + 3 * local * per_slot + 4 * (64 + local)
    assert full.cache.memory_bytes == 4 * 64 * per_slot + 4 * 2 * 64
    assert s.memory_bytes - s.cache.memory_bytes == model.session(n_ctx=64, max_batch=4).memory_bytes - \
        model.session(n_ctx=64, max_batch=4).cache.memory_bytes  # the rest does not depend on the cache


@pytest.mark.parametrize("kv_dtype", ["f32", "q8"])
def test_gemma3_1b_shape_kv_bytes(kv_dtype):
    """Gemma 3 1B: 26 layers, 22 local of window 512; one kv head of 256."""
    from hearthlm.kv_cache import KVPool, Q8_BLOCK
    from hearthlm.models import model_args
    from hearthlm.shapes import config_for
    args = model_args(config_for("gemma3-1b"), "gemma3-1b")
    assert args.sliding_windows.count(512) == 22 and args.sliding_windows.count(0) == 4
    row = 256 * 4 if kv_dtype == "f32" else 256 + 256 // Q8_BLOCK * 4
    for n_ctx in (8192, 32768):
        pool = KVPool(args, n_ctx, 1, kv_dtype, n_keep=4, max_feed=512)
        local = 4 + 512 + 511
        assert pool.memory_bytes == 2 * row * (4 * n_ctx + 22 * local) + 4 * (n_ctx + local)


def test_windowed_batched_group_decode(model_dir):
    """Three sequences of a SessionGroup (max_tokens 10 sizes its window caches) decode
    together past the window; each equals transformers."""
    from hearthlm.session import SessionGroup
    folder = model_dir("gemma3")
    model = hearthlm.load(folder)
    group = SessionGroup(model, 3, n_ctx=64, max_tokens=10)
    assert [g.capacity for g in group.pool.groups] == [64, 4 + 6 + 10 - 1]
    rng = np.random.default_rng(6)
    texts = [rng.integers(0, model.vocab_size, n).tolist() for n in (3, 5, 2)]
    logits = group.feed([(s, t) for s, t in zip(group.sessions, texts)]).copy()
    rows = [[row] for row in logits]
    for _ in range(20):
        nxt = [int(rng.integers(model.vocab_size)) for _ in texts]
        for t, n in zip(texts, nxt):
            t.append(n)
        for r, row in zip(rows, group.feed([(s, [n]) for s, n in zip(group.sessions, nxt)])):
            r.append(row.copy())
    for t, r in zip(texts, rows):
        close(np.stack(r[1:]), eager_logits(folder, t)[-20:])


def test_group_window_caches_sized_per_session(model_dir):
    from hearthlm.errors import InvalidInputError
    from hearthlm.session import SessionGroup
    model = hearthlm.load(model_dir("gemma3"))
    group = SessionGroup(model, 2, n_ctx=64, max_tokens=10, max_session_tokens=5)
    assert [g.capacity for g in group.pool.groups] == [64, 4 + 6 + 5 - 1]
    a, b = group.sessions
    group.feed([(a, [1, 2, 3, 4, 5]), (b, [6, 7, 8])])
    with pytest.raises(InvalidInputError, match="batch: 6 ids exceed the 5 a session's cache takes at once"):
        group.feed([(a, [1] * 6)])
    with pytest.raises(InvalidInputError, match="max_session_tokens: expected a positive integer, got -1"):
        SessionGroup(model, 2, n_ctx=64, max_session_tokens=-1)


def test_windowed_rewind_within_and_beyond_the_spare_slots(model_dir, monkeypatch):
    """Rewinds of up to max_batch tokens keep the caches as they are (nothing is
    recomputed); a longer one recomputes, and the logits stay transformers'."""
    from hearthlm.session import Session
    folder = model_dir("gemma2")
    model = hearthlm.load(folder)
    rng = np.random.default_rng(7)
    ids = rng.integers(0, model.vocab_size, 30).tolist()
    s = windowed(model, max_batch=4)
    feed_then_decode(s, ids, 8)
    recomputed = []
    original = Session._recompute
    monkeypatch.setattr(Session, "_recompute", lambda self: recomputed.append(1) or original(self))
    for back in (1, 4, 3):  # within the spare slots: no recompute
        s.rewind(back)
        del ids[-back:]
        assert s.cache.intact
        new = rng.integers(0, model.vocab_size, back).tolist()
        ids += new
        close(feed_then_decode(s, new, 0), eager_logits(folder, ids)[-back:])
    assert not recomputed
    s.rewind(9)  # beyond them: the window before the new end is gone, recomputed
    del ids[-9:]
    assert recomputed == [1] and s.cache.intact and s.tokens == ids
    close(s.last_logits[0], eager_logits(folder, ids)[-1])
    new = rng.integers(0, model.vocab_size, 5).tolist()
    close(feed_then_decode(s, new, 2), eager_logits(folder, ids + new)[-5:])


def test_windowed_sync_to_a_shorter_prefix(model_dir):
    folder = model_dir("gemma3")
    model = hearthlm.load(folder)
    rng = np.random.default_rng(8)
    ids = rng.integers(0, model.vocab_size, 35).tolist()
    s = windowed(model, max_batch=4)
    feed_then_decode(s, ids, 10)
    for keep in (33, 12):  # the second one recomputes
        other = ids[:keep] + rng.integers(0, model.vocab_size, 3).tolist()
        close(s.sync(other), eager_logits(folder, other)[-1])
        assert s.tokens == other


@pytest.mark.parametrize("variant", ["gemma2", "gemma3"])
def test_windowed_context_shift_matches_independent_reference(model_dir, variant):
    """test_context_shift_matches_independent_reference with window caches of
    4 + window + 2 slots, well under n_ctx = 24: the local rings shift too."""
    folder = model_dir(variant)
    model = hearthlm.load(folder)
    ids = np.random.default_rng(5).integers(0, model.vocab_size, 60).tolist()
    s = windowed(model, n_ctx=24, max_batch=3, n_keep=4, n_discard=6)
    assert_follows(s, GemmaStreamingReference(folder, n_ctx=24, n_keep=4, n_discard=6), ids)


@pytest.mark.parametrize("kv_dtype", ["f32", "q8"])
def test_windowed_save_and_load_round_trip(model_dir, tmp_path, kv_dtype):
    """Saved after the local rings wrapped and a context shift, loaded, the session
    continues with the very same logits."""
    model = hearthlm.load(model_dir("gemma3"))
    ids = np.random.default_rng(9).integers(0, model.vocab_size, 50).tolist()
    s = windowed(model, n_ctx=32, max_batch=3, kv_dtype=kv_dtype)
    feed_then_decode(s, ids[:40], 7)
    s.save(str(tmp_path / "s.hls"))
    t = model.load_session(str(tmp_path / "s.hls"))
    assert t.tokens == s.tokens and t.cache.memory_bytes == s.cache.memory_bytes
    np.testing.assert_array_equal(feed_then_decode(t, ids[40:], 2), feed_then_decode(s, ids[40:], 2))


def test_windowed_speculative_greedy_identical_to_plain(model_dir, monkeypatch):
    """Speculative rounds (prompt lookup and a draft model, up to 5 drafts) rewind
    their rejected drafts within the spare slots of 6-token window caches."""
    from hearthlm import speculative as sp
    from hearthlm.session import Session
    monkeypatch.setattr(sp.DraftLength, "choose", lambda self, kind, limit, seconds: 0 if kind is None
                        else max(0, min(limit, 5)))
    folder = model_dir("gemma3")
    model, draft = hearthlm.load(folder), hearthlm.load(folder, dtype="q4")
    monkeypatch.setattr(model, "session", lambda n_ctx=None, **kw: Session(model, n_ctx=n_ctx, max_batch=6, **kw))
    monkeypatch.setattr(Session, "_recompute", lambda self: pytest.fail("a speculative rewind recomputed"))
    ids = np.random.default_rng(0).integers(0, model.vocab_size, 14).tolist()
    prompt = ids + ids[:9]
    plain = model.generate(prompt, max_new_tokens=40, return_result=True, temperature=0.0)
    assert model.session(n_ctx=64).cache.pool.groups[1].capacity < 64
    for option in (dict(speculative="prompt-lookup"), dict(draft_model=draft)):
        g = model.generate(prompt, max_new_tokens=40, return_result=True, temperature=0.0, **option)
        assert g.token_ids == plain.token_ids and g.drafted_tokens > 0


def test_free_rewind_says_what_rewinds_recompute(model_dir):
    model = hearthlm.load(model_dir("gemma2"))  # window 5
    s = windowed(model, max_batch=4)
    s.feed(list(range(8)))
    assert s.free_rewind == 8  # nothing overwritten yet: 4 sinks + 8 - 4 of 4 + 5 + 3 ring slots
    s.feed(list(range(30)))
    assert s.free_rewind == 4  # the window and 4 spare slots
    s.rewind(4)
    assert s.cache.intact and s.free_rewind == 0
    assert model.session(n_ctx=64).free_rewind == 0 == len(model.session(n_ctx=64).tokens)
