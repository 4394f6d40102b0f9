"""Qwen3 (Qwen3ForCausalLM): the Llama network with an RMSNorm of each head of q and k
(one [head_dim] weight shared by the heads) before RoPE, an explicit head_dim, optional
biases on the attention projections and Qwen2's per-layer sliding windows."""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import UnsupportedModelError
from ..weights import Weights
from .base import (ModelArgs, attention_spec, common_args, embedding_specs, gated_mlp, mlp_spec, norm_spec,
                   optional_float)
from .llama import sliding_windows
from .program import Program


@dataclass(frozen=True)
class Args(ModelArgs):
    attention_bias: bool = False


def model_args(config: dict, architecture: str, where: str) -> Args:
    common = common_args(config, where, default_context=32768)
    if common["rope"][0].rotary_dim != common["head_dim"]:
        raise UnsupportedModelError(f"{where}: partial rotary is not part of {architecture}")
    # Qwen3's config reads sliding_window / use_sliding_window / max_window_layers /
    # layer_types exactly as Qwen2's does.
    common["sliding_windows"] = sliding_windows(config, "Qwen2ForCausalLM", common["num_hidden_layers"], where)
    return Args(
        architecture=architecture,
        norm_eps=optional_float(config, "rms_norm_eps", 1e-6, where),
        attention_bias=bool(config.get("attention_bias", False)),
        **common,
    )


def weights(a: Args) -> dict:
    H, I, bias = a.hidden_size, a.intermediate_size, a.attention_bias
    specs = embedding_specs(a)
    for i in range(a.num_hidden_layers):
        p = f"model.layers.{i}"
        norm_spec(specs, f"{p}.input_layernorm", H)
        attention_spec(specs, f"{p}.self_attn", a, bias, bias)
        norm_spec(specs, f"{p}.self_attn.q_norm", a.head_dim)
        norm_spec(specs, f"{p}.self_attn.k_norm", a.head_dim)
        norm_spec(specs, f"{p}.post_attention_layernorm", H)
        mlp_spec(specs, f"{p}.mlp", H, I)
    norm_spec(specs, "model.norm", H)
    return specs


def program(a: Args, w: Weights) -> Program:
    q, kv = a.num_attention_heads * a.head_dim, a.num_key_value_heads * a.head_dim
    I, eps, hd = a.intermediate_size, a.norm_eps, a.head_dim
    p = Program(dict(x=a.hidden_size, h=a.hidden_size, q=q, k=kv, v=kv, attn=q, gate=I, up=I),
                input="x", output="h")
    for i in range(a.num_hidden_layers):
        L = f"model.layers.{i}"
        # h = x + attention(rope(qnorm(q)), rope(knorm(k)), v) of norm(x)
        p.norm("h", "x", w.norm(f"{L}.input_layernorm", eps))
        p.matmul("h", q=w.linear(f"{L}.self_attn.q_proj"), k=w.linear(f"{L}.self_attn.k_proj"),
                 v=w.linear(f"{L}.self_attn.v_proj"))
        p.norm("q", "q", w.norm(f"{L}.self_attn.q_norm", eps), group=hd)
        p.norm("k", "k", w.norm(f"{L}.self_attn.k_norm", eps), group=hd)
        p.rope("q", a.num_attention_heads, hd, hd)
        p.rope("k", a.num_key_value_heads, hd, hd)
        p.kv_store("k", "v", layer=i)
        p.attention("attn", "q", layer=i, heads=a.num_attention_heads, scale=hd ** -0.5,
                    window=a.sliding_windows[i])
        p.matmul("attn", h=w.linear(f"{L}.self_attn.o_proj"))
        p.add("x", "h")
        # x = x + down(silu(gate(norm(x))) * up(norm(x)))
        p.norm("h", "x", w.norm(f"{L}.post_attention_layernorm", eps))
        gated_mlp(p, w, f"{L}.mlp", "h")
        p.add("x", "h")
    p.norm("h", "x", w.norm("model.norm", eps))
    return p
