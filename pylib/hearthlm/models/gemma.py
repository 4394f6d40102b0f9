"""Gemma 2 and Gemma 3 (Gemma2ForCausalLM, Gemma3ForCausalLM, and the text model of
Gemma3ForConditionalGeneration): embeddings scaled by sqrt(hidden), (1 + w) RMSNorm,
four norms per layer (around attention and around the GELU-tanh GLU), attention scaled
by query_pre_attn_scalar, local (sliding window) and global layers. Gemma 2 soft-caps
the attention scores and the logits; Gemma 3 norms q and k per head and gives local
layers their own RoPE base."""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from ..errors import UnsupportedModelError
from ..weights import Weights
from .base import (ModelArgs, attention_spec, common_args, gated_mlp, mlp_spec, norm_spec, optional_float,
                   optional_int, require, rope_spec)
from .program import Program

log = logging.getLogger(__name__)

# transformers' config defaults: Hub checkpoints (Gemma 3 4B+ text_config above all)
# leave out fields that equal them.
COMMON_DEFAULTS = dict(hidden_size=2304, intermediate_size=9216, num_hidden_layers=26, num_attention_heads=8,
                       num_key_value_heads=4, head_dim=256, hidden_activation="gelu_pytorch_tanh",
                       rms_norm_eps=1e-6, tie_word_embeddings=True, query_pre_attn_scalar=256,
                       sliding_window=4096, attention_bias=False, use_bidirectional_attention=False)
DEFAULTS = {
    "gemma2": dict(COMMON_DEFAULTS, vocab_size=256000, max_position_embeddings=8192,
                   final_logit_softcapping=30.0, attn_logit_softcapping=50.0),
    "gemma3": dict(COMMON_DEFAULTS, vocab_size=262208, max_position_embeddings=131072,
                   final_logit_softcapping=None, attn_logit_softcapping=None, sliding_window_pattern=6,
                   rope_theta=1e6, rope_local_base_freq=1e4),
}
GLOBAL, LOCAL = 0, 1  # RoPE table of full-attention and sliding-window layers
TEXT_PREFIX = {"Gemma3ForConditionalGeneration": "language_model."}  # as transformers 5 saves it
# transformers' model_type of each architecture (not the architecture's stem, as elsewhere)
MODEL_TYPES = {"Gemma2ForCausalLM": "gemma2", "Gemma3ForCausalLM": "gemma3_text",
               "Gemma3ForConditionalGeneration": "gemma3"}


@dataclass(frozen=True)
class Args(ModelArgs):
    qk_norm: bool = False        # Gemma 3: (1 + w) RMSNorm of each q and k head
    attention_bias: bool = False
    attention_scale: float = 1.0
    attention_softcap: float = 0.0
    embed_scale: float = 1.0


def text_config(config: dict, architecture: str, where: str) -> tuple[dict, str]:
    """The language model's config with transformers' defaults filled in, and its family."""
    model_type = config.get("model_type")
    if model_type is not None and model_type != MODEL_TYPES[architecture]:
        raise UnsupportedModelError(
            f"{where}: 'model_type' is {model_type!r}, but 'architectures' says {architecture} "
            f"(model_type {MODEL_TYPES[architecture]!r}); correct whichever is wrong")
    if architecture == "Gemma2ForCausalLM":
        return {**DEFAULTS["gemma2"], **config}, "gemma2"
    if architecture == "Gemma3ForConditionalGeneration":
        text = config.get("text_config") or {}
        if not isinstance(text, dict):
            raise UnsupportedModelError(f"{where}: 'text_config' must be an object")
        log.warning("%s: Gemma 3 multimodal checkpoint: loading the text model only; the vision tower "
                    "and image inputs are ignored", where)
        tied = config.get("tie_word_embeddings", text.get("tie_word_embeddings", True))
        return {**DEFAULTS["gemma3"], **text, "architectures": config["architectures"],
                "tie_word_embeddings": tied}, "gemma3"
    return {**DEFAULTS["gemma3"], **config}, "gemma3"


def layer_types(config: dict, kind: str, n_layers: int, where: str) -> list:
    types = config.get("layer_types")
    if types is None:  # the older form: every pattern-th layer is global
        pattern = 2 if kind == "gemma2" else require(config, "sliding_window_pattern", where)
        types = ["sliding_attention" if (i + 1) % pattern else "full_attention" for i in range(n_layers)]
    if (not isinstance(types, list) or len(types) != n_layers
            or not all(t in ("full_attention", "sliding_attention") for t in types)):
        raise UnsupportedModelError(f"{where}: layer_types {types!r} not understood")
    return types


def gemma3_rope(config: dict, where: str, head_dim: int) -> tuple:
    """(global, local) RoPE tables: per-layer-type `rope_parameters` (transformers 5),
    or rope_theta + rope_scaling (global) and rope_local_base_freq (local)."""
    params = config.get("rope_parameters")
    if params is None:
        full = {"rope_theta": config["rope_theta"], "rope_scaling": config.get("rope_scaling")}
        local = {"rope_theta": config["rope_local_base_freq"]}
    else:
        if not isinstance(params, dict) or not set(params) <= {"full_attention", "sliding_attention"}:
            raise UnsupportedModelError(
                f"{where}: rope_parameters must map full_attention / sliding_attention to parameters, "
                f"got {params!r}")
        sub = {t: params.get(t) or {} for t in ("full_attention", "sliding_attention")}
        if not all(isinstance(s, dict) for s in sub.values()):
            raise UnsupportedModelError(f"{where}: rope_parameters per layer type must be objects")
        full = {"rope_theta": DEFAULTS["gemma3"]["rope_theta"], "rope_parameters": sub["full_attention"]}
        local = {"rope_theta": DEFAULTS["gemma3"]["rope_local_base_freq"],
                 "rope_parameters": sub["sliding_attention"]}
    return rope_spec(full, where, head_dim), rope_spec(local, where, head_dim)


def positive_or_none(config: dict, key: str, where: str) -> float:
    """A soft-cap: a positive number, or null (0 here) for none."""
    value = optional_float(config, key, 0.0, where)
    if config.get(key) is not None and value == 0:
        raise UnsupportedModelError(f"{where}: '{key}' must be positive or null, got 0")
    return value


def model_args(config: dict, architecture: str, where: str) -> Args:
    config, kind = text_config(config, architecture, where)
    act = config["hidden_activation"]  # what transformers reads; Gemma 2 also carries hidden_act
    if act != "gelu_pytorch_tanh":
        raise UnsupportedModelError(
            f"{where}: hidden_activation '{act}' is not supported (only gelu_pytorch_tanh)")
    if config["use_bidirectional_attention"]:
        raise UnsupportedModelError(f"{where}: use_bidirectional_attention is not supported (causal only)")
    # The shared fields without the ones read here instead: model_type (text_config), the
    # activation, and Gemma 3's two RoPE tables (gemma3_rope replaces the one common_args makes).
    plain = {k: v for k, v in config.items()
             if k not in ("model_type", "hidden_act") and (kind == "gemma2" or "rope" not in k)}
    common = common_args(plain, where, default_context=config["max_position_embeddings"])
    n = common["num_hidden_layers"]
    types = layer_types(config, kind, n, where)
    window = optional_int(config, "sliding_window", 0, where, minimum=0)
    if window == 0 and "sliding_attention" in types:
        raise UnsupportedModelError(f"{where}: sliding_window must be a positive integer for sliding layers")
    common["sliding_windows"] = tuple(window if t == "sliding_attention" else 0 for t in types)
    attention_softcap = positive_or_none(config, "attn_logit_softcapping", where)
    if kind == "gemma3":
        if attention_softcap:
            raise UnsupportedModelError(
                f"{where}: attn_logit_softcapping is not applied by Gemma 3 (transformers ignores it); "
                "set it to null")
        common["rope"] = gemma3_rope(config, where, common["head_dim"])
        common["layer_rope"] = tuple(LOCAL if t == "sliding_attention" else GLOBAL for t in types)
    if any(r.rotary_dim != common["head_dim"] for r in common["rope"]):
        raise UnsupportedModelError(f"{where}: partial rotary is not part of {architecture}")
    return Args(
        architecture=architecture,
        norm_eps=optional_float(config, "rms_norm_eps", 1e-6, where),
        logits_softcap=positive_or_none(config, "final_logit_softcapping", where),
        prefix=TEXT_PREFIX.get(architecture, ""),
        qk_norm=kind == "gemma3",
        attention_bias=bool(config["attention_bias"]),
        attention_scale=require(config, "query_pre_attn_scalar", where, kind=float) ** -0.5,
        attention_softcap=attention_softcap,
        # transformers multiplies by sqrt(hidden) cast to the weights' dtype: float32 here
        embed_scale=float(np.float32(math.sqrt(common["hidden_size"]))),
        **common,
    )


def weights(a: Args) -> dict:
    H, I, bias = a.hidden_size, a.intermediate_size, a.attention_bias
    specs = {f"{a.prefix}model.embed_tokens.weight": (a.vocab_size, H)}
    if not a.tie_word_embeddings:
        specs[f"{a.prefix}lm_head.weight"] = (a.vocab_size, H)
    for i in range(a.num_hidden_layers):
        p = f"{a.prefix}model.layers.{i}"
        norm_spec(specs, f"{p}.input_layernorm", H)
        attention_spec(specs, f"{p}.self_attn", a, bias, bias)
        if a.qk_norm:
            norm_spec(specs, f"{p}.self_attn.q_norm", a.head_dim)
            norm_spec(specs, f"{p}.self_attn.k_norm", a.head_dim)
        norm_spec(specs, f"{p}.post_attention_layernorm", H)
        norm_spec(specs, f"{p}.pre_feedforward_layernorm", H)
        mlp_spec(specs, f"{p}.mlp", H, I)
        norm_spec(specs, f"{p}.post_feedforward_layernorm", H)
    norm_spec(specs, f"{a.prefix}model.norm", H)
    return specs


def program(a: Args, w: Weights) -> Program:
    q, kv = a.num_attention_heads * a.head_dim, a.num_key_value_heads * a.head_dim
    I, eps, hd = a.intermediate_size, a.norm_eps, a.head_dim

    def norm(name: str):
        return w.norm(name, eps, offset=1.0)

    p = Program(dict(x=a.hidden_size, h=a.hidden_size, q=q, k=kv, v=kv, attn=q, gate=I, up=I),
                input="x", output="h")
    p.scale("x", a.embed_scale)
    for i in range(a.num_hidden_layers):
        L = f"{a.prefix}model.layers.{i}"
        # x = x + norm(attention(norm(x)))
        p.norm("h", "x", norm(f"{L}.input_layernorm"))
        p.matmul("h", q=w.linear(f"{L}.self_attn.q_proj"), k=w.linear(f"{L}.self_attn.k_proj"),
                 v=w.linear(f"{L}.self_attn.v_proj"))
        if a.qk_norm:
            p.norm("q", "q", norm(f"{L}.self_attn.q_norm"), group=hd)
            p.norm("k", "k", norm(f"{L}.self_attn.k_norm"), group=hd)
        table = a.layer_rope[i]
        p.rope("q", a.num_attention_heads, hd, a.rope[table].rotary_dim, table)
        p.rope("k", a.num_key_value_heads, hd, a.rope[table].rotary_dim, table)
        p.kv_store("k", "v", layer=i)
        p.attention("attn", "q", layer=i, heads=a.num_attention_heads, scale=a.attention_scale,
                    window=a.sliding_windows[i], softcap=a.attention_softcap)
        p.matmul("attn", h=w.linear(f"{L}.self_attn.o_proj"))
        p.norm("h", "h", norm(f"{L}.post_attention_layernorm"))
        p.add("x", "h")
        # x = x + norm(down(gelu_tanh(gate(norm(x))) * up(norm(x))))
        p.norm("h", "x", norm(f"{L}.pre_feedforward_layernorm"))
        gated_mlp(p, w, f"{L}.mlp", "h", activation="gelu_tanh")
        p.norm("h", "h", norm(f"{L}.post_feedforward_layernorm"))
        p.add("x", "h")
    p.norm("h", "x", norm(f"{a.prefix}model.norm"))
    return p
