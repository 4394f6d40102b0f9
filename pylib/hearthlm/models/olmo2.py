"""OLMo 2 (Olmo2ForCausalLM): the Llama network with its norms moved: no norm before
attention or the MLP; instead each block's output is RMS-normalized
(post_attention_layernorm, post_feedforward_layernorm) before the residual add, and q
and k are RMS-normalized over their whole projection width (all heads together)."""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import UnsupportedModelError
from ..weights import Weights
from .base import (ModelArgs, attention_spec, common_args, embedding_specs, gated_mlp, mlp_spec, norm_spec,
                   optional_float)
from .program import Program


@dataclass(frozen=True)
class Args(ModelArgs):
    attention_bias: bool = False


def model_args(config: dict, architecture: str, where: str) -> Args:
    common = common_args(config, where, default_context=2048)
    if common["rope"][0].rotary_dim != common["head_dim"]:
        raise UnsupportedModelError(f"{where}: partial rotary is not part of {architecture}")
    if config.get("clip_qkv") is not None:  # OLMo 1's q/k/v clamp; OLMo 2 has none
        raise UnsupportedModelError(f"{where}: clip_qkv is not supported for {architecture}")
    return Args(
        architecture=architecture,
        norm_eps=optional_float(config, "rms_norm_eps", 1e-5, where),
        attention_bias=bool(config.get("attention_bias", False)),
        **common,
    )


def weights(a: Args) -> dict:
    H, I, bias = a.hidden_size, a.intermediate_size, a.attention_bias
    q, kv = a.num_attention_heads * a.head_dim, a.num_key_value_heads * a.head_dim
    specs = embedding_specs(a)
    for i in range(a.num_hidden_layers):
        p = f"model.layers.{i}"
        attention_spec(specs, f"{p}.self_attn", a, bias, bias)
        norm_spec(specs, f"{p}.self_attn.q_norm", q)
        norm_spec(specs, f"{p}.self_attn.k_norm", kv)
        norm_spec(specs, f"{p}.post_attention_layernorm", H)
        mlp_spec(specs, f"{p}.mlp", H, I)
        norm_spec(specs, f"{p}.post_feedforward_layernorm", H)
    norm_spec(specs, "model.norm", H)
    return specs


def program(a: Args, w: Weights) -> Program:
    q, kv = a.num_attention_heads * a.head_dim, a.num_key_value_heads * a.head_dim
    I, eps, hd = a.intermediate_size, a.norm_eps, a.head_dim
    p = Program(dict(x=a.hidden_size, h=a.hidden_size, q=q, k=kv, v=kv, attn=q, gate=I, up=I),
                input="x", output="h")
    for i in range(a.num_hidden_layers):
        L = f"model.layers.{i}"
        # x = x + norm(attention(rope(qnorm(q)), rope(knorm(k)), v) of x)
        p.matmul("x", q=w.linear(f"{L}.self_attn.q_proj"), k=w.linear(f"{L}.self_attn.k_proj"),
                 v=w.linear(f"{L}.self_attn.v_proj"))
        p.norm("q", "q", w.norm(f"{L}.self_attn.q_norm", eps))
        p.norm("k", "k", w.norm(f"{L}.self_attn.k_norm", eps))
        p.rope("q", a.num_attention_heads, hd, hd)
        p.rope("k", a.num_key_value_heads, hd, hd)
        p.kv_store("k", "v", layer=i)
        p.attention("attn", "q", layer=i, heads=a.num_attention_heads, scale=hd ** -0.5)
        p.matmul("attn", h=w.linear(f"{L}.self_attn.o_proj"))
        p.norm("h", "h", w.norm(f"{L}.post_attention_layernorm", eps))
        p.add("x", "h")
        # x = x + norm(down(silu(gate(x)) * up(x)))
        gated_mlp(p, w, f"{L}.mlp", "x")
        p.norm("h", "h", w.norm(f"{L}.post_feedforward_layernorm", eps))
        p.add("x", "h")
    p.norm("h", "x", w.norm("model.norm", eps))
    return p
