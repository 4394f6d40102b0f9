"""Granite (GraniteForCausalLM): the Llama network (same tensors) with four constants:
embeddings times `embedding_multiplier`, attention scale `attention_multiplier` (in
place of 1/sqrt(head_dim)), each block's output times `residual_multiplier` before the
residual add, and logits divided by `logits_scaling`."""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import UnsupportedModelError
from ..weights import Weights
from . import llama
from .base import common_args, gated_mlp, is_number, optional_float
from .program import Program

weights = llama.weights  # the same tensors as Llama


@dataclass(frozen=True)
class Args(llama.Args):
    embedding_multiplier: float = 1.0
    attention_multiplier: float = 1.0
    residual_multiplier: float = 1.0


def multiplier(config: dict, key: str, where: str) -> float:
    value = config.get(key, 1.0)
    if not is_number(value) or value <= 0:
        raise UnsupportedModelError(f"{where}: '{key}' must be a positive number, got {value!r}")
    return float(value)


def model_args(config: dict, architecture: str, where: str) -> Args:
    common = common_args(config, where, default_context=2048)
    if common["rope"][0].rotary_dim != common["head_dim"]:
        raise UnsupportedModelError(f"{where}: partial rotary is not part of {architecture}")
    attention_bias = bool(config.get("attention_bias", False))
    return Args(
        architecture=architecture,
        norm_eps=optional_float(config, "rms_norm_eps", 1e-6, where),
        qkv_bias=attention_bias,
        o_bias=attention_bias,
        mlp_bias=bool(config.get("mlp_bias", False)),
        embedding_multiplier=multiplier(config, "embedding_multiplier", where),
        attention_multiplier=multiplier(config, "attention_multiplier", where),
        residual_multiplier=multiplier(config, "residual_multiplier", where),
        logits_scale=1.0 / multiplier(config, "logits_scaling", where),  # transformers: logits / logits_scaling
        **common,
    )


def program(a: Args, w: Weights) -> Program:
    q, kv = a.num_attention_heads * a.head_dim, a.num_key_value_heads * a.head_dim
    I, eps, hd, r = a.intermediate_size, a.norm_eps, a.head_dim, a.residual_multiplier
    p = Program(dict(x=a.hidden_size, h=a.hidden_size, q=q, k=kv, v=kv, attn=q, gate=I, up=I),
                input="x", output="h")
    p.scale("x", a.embedding_multiplier)
    for i in range(a.num_hidden_layers):
        L = f"model.layers.{i}"
        # x = x + r * attention(norm(x))
        p.norm("h", "x", w.norm(f"{L}.input_layernorm", eps))
        p.matmul("h", q=w.linear(f"{L}.self_attn.q_proj"), k=w.linear(f"{L}.self_attn.k_proj"),
                 v=w.linear(f"{L}.self_attn.v_proj"))
        p.rope("q", a.num_attention_heads, hd, hd)
        p.rope("k", a.num_key_value_heads, hd, hd)
        p.kv_store("k", "v", layer=i)
        p.attention("attn", "q", layer=i, heads=a.num_attention_heads, scale=a.attention_multiplier)
        p.matmul("attn", h=w.linear(f"{L}.self_attn.o_proj"))
        p.add("x", "h", r)
        # x = x + r * down(silu(gate(norm(x))) * up(norm(x)))
        p.norm("h", "x", w.norm(f"{L}.post_attention_layernorm", eps))
        gated_mlp(p, w, f"{L}.mlp", "h")
        p.add("x", "h", r)
    p.norm("h", "x", w.norm("model.norm", eps))
    return p
