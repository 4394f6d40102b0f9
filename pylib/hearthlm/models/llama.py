"""Llama 2/3, TinyLlama, SmolLM, Mistral and Qwen2: one network, differing only in
config details (biases on q/k/v, sliding windows, rope scaling)."""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import UnsupportedModelError
from ..weights import Weights
from .base import (ModelArgs, attention_spec, common_args, embedding_specs, gated_mlp, mlp_spec, norm_spec,
                   optional_float, optional_int)
from .program import Program


@dataclass(frozen=True)
class Args(ModelArgs):
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False


def sliding_windows(config: dict, architecture: str, n_layers: int, where: str) -> tuple:
    window = optional_int(config, "sliding_window", 0, where, minimum=0)
    if architecture == "MistralForCausalLM":
        return tuple([window] * n_layers)
    if architecture == "Qwen2ForCausalLM":
        layer_types = config.get("layer_types")
        if layer_types is None:
            use = config.get("use_sliding_window", False)
            first = optional_int(config, "max_window_layers", n_layers, where, minimum=0)
            layer_types = ["sliding_attention" if use and i >= first else "full_attention"
                           for i in range(n_layers)]
        if (not isinstance(layer_types, list) or len(layer_types) != n_layers
                or not all(t in ("full_attention", "sliding_attention") for t in layer_types)):
            raise UnsupportedModelError(f"{where}: layer_types {layer_types!r} not understood")
        return tuple(int(window or 0) if t == "sliding_attention" else 0 for t in layer_types)
    return tuple([0] * n_layers)


def model_args(config: dict, architecture: str, where: str) -> Args:
    common = common_args(config, where, default_context=2048)
    if common["rope"][0].rotary_dim != common["head_dim"]:
        raise UnsupportedModelError(f"{where}: partial rotary is not part of {architecture}")
    qwen2 = architecture == "Qwen2ForCausalLM"
    attention_bias = bool(config.get("attention_bias", False))
    common["sliding_windows"] = sliding_windows(config, architecture, common["num_hidden_layers"], where)
    return Args(
        architecture=architecture,
        norm_eps=optional_float(config, "rms_norm_eps", 1e-6, where),
        qkv_bias=qwen2 or attention_bias,
        o_bias=attention_bias and not qwen2,
        mlp_bias=bool(config.get("mlp_bias", False)),
        **common,
    )


def weights(a: Args) -> dict:
    H, I = a.hidden_size, a.intermediate_size
    specs = embedding_specs(a)
    for i in range(a.num_hidden_layers):
        p = f"model.layers.{i}"
        norm_spec(specs, f"{p}.input_layernorm", H)
        attention_spec(specs, f"{p}.self_attn", a, a.qkv_bias, a.o_bias)
        norm_spec(specs, f"{p}.post_attention_layernorm", H)
        mlp_spec(specs, f"{p}.mlp", H, I, a.mlp_bias)
    norm_spec(specs, "model.norm", H)
    return specs


def program(a: Args, w: Weights) -> Program:
    q, kv = a.num_attention_heads * a.head_dim, a.num_key_value_heads * a.head_dim
    I, eps = a.intermediate_size, a.norm_eps
    rope = a.rope[0]
    p = Program(dict(x=a.hidden_size, h=a.hidden_size, q=q, k=kv, v=kv, attn=q, gate=I, up=I),
                input="x", output="h")
    for i in range(a.num_hidden_layers):
        L = f"model.layers.{i}"
        # h = x + attention(norm(x))
        p.norm("h", "x", w.norm(f"{L}.input_layernorm", eps))
        p.matmul("h", q=w.linear(f"{L}.self_attn.q_proj"), k=w.linear(f"{L}.self_attn.k_proj"),
                 v=w.linear(f"{L}.self_attn.v_proj"))
        p.rope("q", a.num_attention_heads, a.head_dim, rope.rotary_dim)
        p.rope("k", a.num_key_value_heads, a.head_dim, rope.rotary_dim)
        p.kv_store("k", "v", layer=i)
        p.attention("attn", "q", layer=i, heads=a.num_attention_heads, scale=a.head_dim ** -0.5,
                    window=a.sliding_windows[i])
        p.matmul("attn", h=w.linear(f"{L}.self_attn.o_proj"))
        p.add("x", "h")
        # x = x + down(silu(gate(norm(x))) * up(norm(x)))
        p.norm("h", "x", w.norm(f"{L}.post_attention_layernorm", eps))
        gated_mlp(p, w, f"{L}.mlp", "h")
        p.add("x", "h")
    p.norm("h", "x", w.norm("model.norm", eps))
    return p
