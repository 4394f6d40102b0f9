"""Phi-3, Phi-3.5 and Phi-4-mini (Phi3ForCausalLM): the Llama network with q/k/v fused
into one `qkv_proj` and gate/up into one `gate_up_proj` (cut by rows at load), partial
rotary embeddings, LongRoPE (rope.py: short/long factors per frequency and the
attention factor) and an optional sliding window on every layer."""
from __future__ import annotations

from ..errors import UnsupportedModelError
from ..weights import Weights
from .base import ModelArgs, common_args, embedding_specs, linear_spec, norm_spec, optional_float, optional_int
from .program import Program

DEFAULT_CONTEXT = 4096  # Phi3Config's max_position_embeddings and original_max_position_embeddings


def with_defaults(config: dict) -> dict:
    """config with what Phi3Config fills in: both context lengths (a top-level
    original_max_position_embeddings always wins over the rope dict's), and the
    legacy rope types "su" and "yarn" read as "longrope"."""
    config = {"max_position_embeddings": DEFAULT_CONTEXT, "original_max_position_embeddings": DEFAULT_CONTEXT,
              **config}
    for key in ("rope_parameters", "rope_scaling"):
        rope = config.get(key)
        if isinstance(rope, dict) and rope.get("rope_type", rope.get("type")) is not None:
            kind = rope.get("rope_type", rope.get("type"))
            config[key] = {**{k: v for k, v in rope.items() if k != "type"},
                           "rope_type": "longrope" if kind in ("su", "yarn") else kind}
    return config


def model_args(config: dict, architecture: str, where: str) -> ModelArgs:
    config = with_defaults(config)
    common = common_args(config, where, default_context=DEFAULT_CONTEXT)
    rope = common["rope"][0]
    if rope.scaling["rope_type"] not in ("default", "longrope"):
        raise UnsupportedModelError(
            f"{where}: rope scaling type '{rope.scaling['rope_type']}' is not part of {architecture} "
            "(default or longrope)")
    if rope.scaling["rope_type"] == "longrope":
        for key in ("short_factor", "long_factor"):
            if len(rope.scaling[key]) != rope.rotary_dim // 2:
                raise UnsupportedModelError(
                    f"{where}: longrope '{key}' has {len(rope.scaling[key])} entries; the {rope.rotary_dim} "
                    f"rotary dims need {rope.rotary_dim // 2}")
    window = optional_int(config, "sliding_window", 0, where, minimum=0)
    common["sliding_windows"] = (window,) * common["num_hidden_layers"]
    return ModelArgs(architecture=architecture, norm_eps=optional_float(config, "rms_norm_eps", 1e-5, where), **common)


def weights(a: ModelArgs) -> dict:
    H, I = a.hidden_size, a.intermediate_size
    q, kv = a.num_attention_heads * a.head_dim, a.num_key_value_heads * a.head_dim
    specs = embedding_specs(a)
    for i in range(a.num_hidden_layers):
        p = f"model.layers.{i}"
        norm_spec(specs, f"{p}.input_layernorm", H)
        linear_spec(specs, f"{p}.self_attn.qkv_proj", q + 2 * kv, H)
        linear_spec(specs, f"{p}.self_attn.o_proj", H, q)
        norm_spec(specs, f"{p}.post_attention_layernorm", H)
        linear_spec(specs, f"{p}.mlp.gate_up_proj", 2 * I, H)
        linear_spec(specs, f"{p}.mlp.down_proj", H, I)
    norm_spec(specs, "model.norm", H)
    return specs


def program(a: ModelArgs, w: Weights) -> Program:
    q, kv = a.num_attention_heads * a.head_dim, a.num_key_value_heads * a.head_dim
    I, eps, rope = a.intermediate_size, a.norm_eps, a.rope[0]
    p = Program(dict(x=a.hidden_size, h=a.hidden_size, q=q, k=kv, v=kv, attn=q, gate=I, up=I),
                input="x", output="h")
    for i in range(a.num_hidden_layers):
        L = f"model.layers.{i}"
        p.norm("h", "x", w.norm(f"{L}.input_layernorm", eps))
        wq, wk, wv = w.linear_rows(f"{L}.self_attn.qkv_proj", (q, kv, kv))
        p.matmul("h", q=wq, k=wk, v=wv)
        p.rope("q", a.num_attention_heads, a.head_dim, rope.rotary_dim)
        p.rope("k", a.num_key_value_heads, a.head_dim, rope.rotary_dim)
        p.kv_store("k", "v", layer=i)
        p.attention("attn", "q", layer=i, heads=a.num_attention_heads, scale=a.head_dim ** -0.5, window=a.sliding_windows[i])
        p.matmul("attn", h=w.linear(f"{L}.self_attn.o_proj"))
        p.add("x", "h")
        p.norm("h", "x", w.norm(f"{L}.post_attention_layernorm", eps))
        gate, up = w.linear_rows(f"{L}.mlp.gate_up_proj", (I, I))
        p.matmul("h", gate=gate, up=up)
        p.glu("gate", "gate", "up", "silu")
        p.matmul("gate", h=w.linear(f"{L}.mlp.down_proj"))
        p.add("x", "h")
    p.norm("h", "x", w.norm("model.norm", eps))
    return p
