"""Qwen3-MoE (Qwen3MoeForCausalLM): Qwen3's attention (per-head RMSNorm of q and k over
head_dim before RoPE) and, in the layers `decoder_sparse_step` and `mlp_only_layers`
choose, a mixture-of-experts feed-forward: softmax router, top `num_experts_per_tok`
experts per token (renormalized when `norm_topk_prob`); the other layers have a dense
SwiGLU MLP of `intermediate_size`. Experts are read per expert
(`mlp.experts.{e}.gate_proj.weight`, ...), as the Hub checkpoints and transformers 5's
save_pretrained store them."""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import UnsupportedModelError
from ..weights import Weights
from .base import (ModelArgs, attention_spec, common_args, embedding_specs, gated_mlp, linear_spec,
                   mlp_spec, norm_spec, optional_float, optional_int, require)
from .program import Program


@dataclass(frozen=True)
class Args(ModelArgs):
    attention_bias: bool = False
    num_experts: int = 0
    top_k: int = 0
    moe_intermediate_size: int = 0
    norm_topk_prob: bool = False
    moe_layers: tuple = ()  # per layer: True for a mixture of experts, False for a dense MLP


def moe_layers(config: dict, n_layers: int, n_experts: int, where: str) -> tuple:
    step = optional_int(config, "decoder_sparse_step", 1, where)
    dense = config.get("mlp_only_layers") or []
    if not isinstance(dense, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in dense):
        raise UnsupportedModelError(f"{where}: mlp_only_layers must be a list of layer indices, got {dense!r}")
    return tuple(i not in dense and n_experts > 0 and (i + 1) % step == 0 for i in range(n_layers))


def model_args(config: dict, architecture: str, where: str) -> Args:
    common = common_args(config, where, default_context=32768)
    if common["rope"][0].rotary_dim != common["head_dim"]:
        raise UnsupportedModelError(f"{where}: partial rotary is not part of {architecture}")
    n_layers = common["num_hidden_layers"]
    if config.get("use_sliding_window") and config.get("sliding_window") is not None:
        window = optional_int(config, "sliding_window", 0, where)
        common["sliding_windows"] = (window,) * n_layers
    key = "num_experts" if "num_experts" in config else "num_local_experts"  # Hub form / transformers 5
    n_experts = optional_int(config, key, 0, where, minimum=0)
    layers = moe_layers(config, n_layers, n_experts, where)
    moe = any(layers)
    return Args(
        architecture=architecture,
        norm_eps=optional_float(config, "rms_norm_eps", 1e-6, where),
        attention_bias=bool(config.get("attention_bias", False)),
        num_experts=n_experts,
        top_k=require(config, "num_experts_per_tok", where, maximum=n_experts) if moe else 0,
        moe_intermediate_size=require(config, "moe_intermediate_size", where) if moe else 0,
        norm_topk_prob=bool(config.get("norm_topk_prob", False)),
        moe_layers=layers,
        **common,
    )


def weights(a: Args) -> dict:
    H, I, M = a.hidden_size, a.intermediate_size, a.moe_intermediate_size
    specs = embedding_specs(a)
    for i in range(a.num_hidden_layers):
        p = f"model.layers.{i}"
        norm_spec(specs, f"{p}.input_layernorm", H)
        attention_spec(specs, f"{p}.self_attn", a, a.attention_bias, a.attention_bias)
        norm_spec(specs, f"{p}.self_attn.q_norm", a.head_dim)
        norm_spec(specs, f"{p}.self_attn.k_norm", a.head_dim)
        norm_spec(specs, f"{p}.post_attention_layernorm", H)
        if a.moe_layers[i]:
            linear_spec(specs, f"{p}.mlp.gate", a.num_experts, H)
            for e in range(a.num_experts):
                mlp_spec(specs, f"{p}.mlp.experts.{e}", H, M)
        else:
            mlp_spec(specs, f"{p}.mlp", H, I)
    norm_spec(specs, "model.norm", H)
    return specs


def program(a: Args, w: Weights) -> Program:
    H, q, kv = a.hidden_size, a.num_attention_heads * a.head_dim, a.num_key_value_heads * a.head_dim
    eps, rot = a.norm_eps, a.rope[0].rotary_dim
    buffers = dict(x=H, h=H, q=q, k=kv, v=kv, attn=q, y=H)
    if not all(a.moe_layers):
        buffers.update(gate=a.intermediate_size, up=a.intermediate_size)
    p = Program(buffers, input="x", output="h")
    for i in range(a.num_hidden_layers):
        L = f"model.layers.{i}"
        # h = x + attention(norm(x)), q and k normed per head before RoPE
        p.norm("h", "x", w.norm(f"{L}.input_layernorm", eps))
        p.matmul("h", q=w.linear(f"{L}.self_attn.q_proj"), k=w.linear(f"{L}.self_attn.k_proj"),
                 v=w.linear(f"{L}.self_attn.v_proj"))
        p.norm("q", "q", w.norm(f"{L}.self_attn.q_norm", eps), group=a.head_dim)
        p.norm("k", "k", w.norm(f"{L}.self_attn.k_norm", eps), group=a.head_dim)
        p.rope("q", a.num_attention_heads, a.head_dim, rot)
        p.rope("k", a.num_key_value_heads, a.head_dim, rot)
        p.kv_store("k", "v", layer=i)
        p.attention("attn", "q", layer=i, heads=a.num_attention_heads, scale=a.head_dim ** -0.5,
                    window=a.sliding_windows[i])
        p.matmul("attn", h=w.linear(f"{L}.self_attn.o_proj"))
        p.add("x", "h")
        # x = x + ffn(norm(x)): the experts' mixture, or a dense SwiGLU MLP
        p.norm("h", "x", w.norm(f"{L}.post_attention_layernorm", eps))
        if a.moe_layers[i]:
            experts = [tuple(w.linear(f"{L}.mlp.experts.{e}.{m}") for m in ("gate_proj", "up_proj", "down_proj"))
                       for e in range(a.num_experts)]
            p.moe("y", "h", w.linear(f"{L}.mlp.gate"), experts, a.moe_intermediate_size, a.top_k,
                  a.norm_topk_prob)
        else:
            gated_mlp(p, w, f"{L}.mlp", "h", out="y")
        p.add("x", "y")
    p.norm("h", "x", w.norm("model.norm", eps))
    return p
