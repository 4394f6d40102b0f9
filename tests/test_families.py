"""What the conformance tests over VARIANTS do not reach for the families added with the
layer program (Qwen3, SmolLM3, Granite, OLMo 2): config forms transformers derives
itself, refused config values, and a context shift over SmolLM3's NoPE layers."""
import numpy as np
import pytest

import hearthlm
import tiny_models
from hearthlm.models import model_args
from streaming_reference import StreamingReference, assert_follows


def config_of(variant: str, **changes) -> dict:
    """The variant's config.json as transformers writes it, with `changes` applied."""
    import transformers
    arch, kwargs = tiny_models.VARIANTS[variant]
    cfg_cls = getattr(transformers, arch.replace("ForCausalLM", "Config"))
    config = cfg_cls(num_hidden_layers=2, bos_token_id=None, eos_token_id=None, pad_token_id=None, **kwargs).to_dict()
    config["architectures"] = [arch]
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    return config


def test_smollm3_nope_layers_follow_the_interval_when_not_listed():
    from transformers import SmolLM3Config
    ref = SmolLM3Config(num_hidden_layers=7, no_rope_layer_interval=3).no_rope_layers
    args = model_args(config_of("smollm3", num_hidden_layers=7, no_rope_layer_interval=3, no_rope_layers=None,
                                layer_types=None), "test")
    assert [int(t >= 0) for t in args.layer_rope] == ref == [1, 1, 0, 1, 1, 0, 1]


def test_smollm3_default_sliding_layers_are_the_nope_ones():
    args = model_args(config_of("smollm3-nope-window", layer_types=None), "test")
    assert args.layer_rope == (-1, 0) and args.sliding_windows == (5, 0)


def test_smollm3_default_rope_base_is_transformers_one():
    config = config_of("smollm3", rope_parameters={"rope_type": "default"})
    assert model_args(config, "test").rope[0].theta == 2000000.0


@pytest.mark.parametrize("variant,changes,field", [
    ("smollm3", dict(no_rope_layers=[1, 2]), "no_rope_layers"),
    ("smollm3", dict(no_rope_layers=[1]), "no_rope_layers"),
    ("smollm3", dict(no_rope_layers=None, no_rope_layer_interval=0), "no_rope_layer_interval"),
    ("smollm3", dict(layer_types=["sliding_attention", "full_attention"]), "use_sliding_window"),  # no window
    ("smollm3", dict(hidden_act="gelu"), "hidden_act"),
    ("qwen3", dict(layer_types=["full_attention", "chunked_attention"]), "layer_types"),
    ("qwen3", dict(rope_parameters={"rope_type": "default", "rope_theta": 1e4, "partial_rotary_factor": 0.5}),
     "partial rotary"),
    ("granite", dict(logits_scaling=0), "logits_scaling"),
    ("granite", dict(residual_multiplier="0.2"), "residual_multiplier"),
    ("granite", dict(attention_multiplier=-1.0), "attention_multiplier"),
    ("granite", dict(embedding_multiplier=None, hidden_act="relu"), "hidden_act"),
    ("olmo2", dict(clip_qkv=8.0), "clip_qkv"),
    ("olmo2", dict(rope_parameters={"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e4}), "yarn"),
])
def test_unsupported_values_name_the_field(variant, changes, field):
    with pytest.raises(hearthlm.UnsupportedModelError, match=field):
        model_args(config_of(variant, **changes), "test")


class NoPEReference(StreamingReference):
    """StreamingReference with SmolLM3's NoPE layers: keys and queries of a layer whose
    no_rope_layers entry is 0 are never rotated."""

    def linear(self, x, prefix):
        if prefix.endswith(".self_attn.q_proj"):
            self.layer = int(prefix.split(".")[2])
        return super().linear(x, prefix)

    def rotate(self, x, pos):
        return super().rotate(x, pos) if self.c.no_rope_layers[self.layer] else x


def test_smollm3_context_shift_skips_nope_layers(model_dir):
    """As test_session's context-shift test: a shift re-rotates the cached keys of the
    RoPE layers only; the NoPE layer's keys carry no position and stay as they are."""
    folder = model_dir("smollm3")
    model = hearthlm.load(folder)
    assert -1 in model.args.layer_rope and 0 in model.args.layer_rope
    ids = np.random.default_rng(5).integers(0, model.vocab_size, 60).tolist()
    s = model.session(n_ctx=24, n_keep=4, n_discard=6)
    ref = NoPEReference(folder, n_ctx=24, n_keep=4, n_discard=6)
    assert_follows(s, ref, ids)
    assert len(s.tokens) <= 24 and s.tokens[:4] == ids[:4]


@pytest.mark.parametrize("variant", ["qwen3", "smollm3-nope-window", "granite-bias", "olmo2-gqa-bias"])
def test_quantized_folder_loads_like_quantizing_on_load(model_dir, tmp_path, variant):
    """`hearthlm quantize` writes every tensor the family declares; the folder loads in
    place and gives the logits of quantizing while loading."""
    src = model_dir(variant)
    dst = hearthlm.quantize(src, tmp_path / "q4", "q4")
    ids = list(range(1, 30))
    stored = hearthlm.load(dst)
    assert stored.dtype == "q4" and stored.load_stats["converted_bytes"] == 0
    np.testing.assert_array_equal(stored.logits(ids), hearthlm.load(src, dtype="q4").logits(ids))
