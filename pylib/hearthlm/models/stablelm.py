"""StableLM (StableLmForCausalLM): the Llama network with LayerNorm (scale and bias),
partial rotary embeddings, optional q/k/v biases, optional per-head LayerNorm of q and
k (`qk_layernorm`) and optional parallel residual (attention and MLP both read the
input norm and are added to x together)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..weights import Norm, Weights
from .base import ModelArgs, attention_spec, common_args, embedding_specs, mlp_spec, norm_spec, optional_float
from .program import Program


@dataclass(frozen=True)
class Args(ModelArgs):
    qkv_bias: bool = False
    qk_layernorm: bool = False
    parallel_residual: bool = False


def model_args(config: dict, architecture: str, where: str) -> Args:
    return Args(
        architecture=architecture,
        norm_eps=optional_float(config, "layer_norm_eps", 1e-5, where),
        qkv_bias=bool(config.get("use_qkv_bias", False)),
        qk_layernorm=bool(config.get("qk_layernorm", False)),
        parallel_residual=bool(config.get("use_parallel_residual", False)),
        **common_args(config, where, default_context=4096),
    )


def weights(a: Args) -> dict:
    H, I = a.hidden_size, a.intermediate_size
    specs = embedding_specs(a)
    for i in range(a.num_hidden_layers):
        p = f"model.layers.{i}"
        norm_spec(specs, f"{p}.input_layernorm", H, bias=True)
        attention_spec(specs, f"{p}.self_attn", a, a.qkv_bias)
        if a.qk_layernorm:  # one bias-free LayerNorm per head
            for name, heads in (("q_layernorm", a.num_attention_heads), ("k_layernorm", a.num_key_value_heads)):
                for h in range(heads):
                    norm_spec(specs, f"{p}.self_attn.{name}.norms.{h}", a.head_dim)
        if not a.parallel_residual:
            norm_spec(specs, f"{p}.post_attention_layernorm", H, bias=True)
        mlp_spec(specs, f"{p}.mlp", H, I)
    norm_spec(specs, "model.norm", H, bias=True)
    return specs


def per_head_layernorm(w: Weights, prefix: str, heads: int, eps: float) -> Norm:
    weight = np.stack([w.tensors[f"{prefix}.norms.{h}.weight"] for h in range(heads)])
    return Norm(weight, np.zeros_like(weight), eps)  # LayerNorm without bias: bias 0


def program(a: Args, w: Weights) -> Program:
    q, kv = a.num_attention_heads * a.head_dim, a.num_key_value_heads * a.head_dim
    H, I, eps, rot = a.hidden_size, a.intermediate_size, a.norm_eps, a.rope[0].rotary_dim
    p = Program(dict(x=H, h=H, q=q, k=kv, v=kv, attn=q, gate=I, up=I), input="x", output="h")
    for i in range(a.num_hidden_layers):
        L = f"model.layers.{i}"
        p.norm("h", "x", w.norm(f"{L}.input_layernorm", eps))
        p.matmul("h", q=w.linear(f"{L}.self_attn.q_proj"), k=w.linear(f"{L}.self_attn.k_proj"),
                 v=w.linear(f"{L}.self_attn.v_proj"))
        if a.qk_layernorm:
            p.norm("q", "q", per_head_layernorm(w, f"{L}.self_attn.q_layernorm", a.num_attention_heads, eps),
                   group=a.head_dim)
            p.norm("k", "k", per_head_layernorm(w, f"{L}.self_attn.k_layernorm", a.num_key_value_heads, eps),
                   group=a.head_dim)
        p.rope("q", a.num_attention_heads, a.head_dim, rot)
        p.rope("k", a.num_key_value_heads, a.head_dim, rot)
        p.kv_store("k", "v", layer=i)
        p.attention("attn", "q", layer=i, heads=a.num_attention_heads, scale=a.head_dim ** -0.5)
        if a.parallel_residual:  # x = x + attn(norm(x)) + mlp(norm(x))
            p.matmul("h", gate=w.linear(f"{L}.mlp.gate_proj"), up=w.linear(f"{L}.mlp.up_proj"))
            p.matmul("attn", h=w.linear(f"{L}.self_attn.o_proj"))
            p.add("x", "h")
        else:                    # x = x + attn(norm(x)); x = x + mlp(norm2(x))
            p.matmul("attn", h=w.linear(f"{L}.self_attn.o_proj"))
            p.add("x", "h")
            p.norm("h", "x", w.norm(f"{L}.post_attention_layernorm", eps))
            p.matmul("h", gate=w.linear(f"{L}.mlp.gate_proj"), up=w.linear(f"{L}.mlp.up_proj"))
        p.glu("gate", "gate", "up", "silu")
        p.matmul("gate", h=w.linear(f"{L}.mlp.down_proj"))
        p.add("x", "h")
    p.norm("h", "x", w.norm("model.norm", eps))
    return p
