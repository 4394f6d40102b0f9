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
