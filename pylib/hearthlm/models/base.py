"""ModelArgs: everything the forward pass needs to know, read from config.json."""
from __future__ import annotations

import math
from dataclasses import dataclass

from .. import _kernels as K
from ..errors import UnsupportedModelError


@dataclass(frozen=True)
class RopeSpec:
    """One RoPE table: frequencies from theta and a scaling rule, over the leading
    rotary_dim dims of each head."""
    theta: float
    scaling: dict             # {"rope_type": "default" | "linear" | "llama3" | "longrope", ...}
    rotary_dim: int


@dataclass(frozen=True)
class ModelArgs:
    """What every family shares: the sizes, the KV cache's geometry and RoPE. A family
    file subclasses it with its own fields (all with defaults)."""
    architecture: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    max_position_embeddings: int
    tie_word_embeddings: bool
    norm_eps: float
    rope: tuple               # RopeSpec of each table
    layer_rope: tuple         # per layer: the index of its RoPE table, -1 = no RoPE
    sliding_windows: tuple    # per layer: window in tokens, 0 = full attention
    logits_scale: float = 1.0    # logits *= logits_scale (Granite: 1 / logits_scaling)
    logits_softcap: float = 0.0  # logits = cap * tanh(logits / cap) when > 0 (Gemma 2)
    prefix: str = ""             # of every tensor name: "language_model." for a multimodal checkpoint's text model

    @property
    def n_rep(self) -> int:
        return self.num_attention_heads // self.num_key_value_heads


MAX_INT = 2 ** 31 - 1  # sizes and positions must fit the kernels' int32 positions
MAX_LAYERS = 4096      # far above any real model; per-layer tuples are built before weights are read


def is_number(value) -> bool:
    """A finite JSON number (not a bool: JSON true is not a size)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def require(config: dict, key: str, where: str, kind=int, maximum: int = MAX_INT):
    if key not in config:
        raise UnsupportedModelError(f"{where}: config.json lacks '{key}'")
    value = config[key]
    if kind is int and (not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= maximum):
        raise UnsupportedModelError(f"{where}: '{key}' must be an integer in [1, {maximum}], got {value!r}")
    if kind is float and (not is_number(value) or value <= 0):
        raise UnsupportedModelError(f"{where}: '{key}' must be a positive number, got {value!r}")
    return kind(value)


def optional_int(config: dict, key: str, default: int, where: str, minimum: int = 1) -> int:
    """An integer field that may be absent (or null): default then."""
    value = config.get(key)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= MAX_INT:
        raise UnsupportedModelError(f"{where}: '{key}' must be an integer in [{minimum}, {MAX_INT}], got {value!r}")
    return value


def optional_float(config: dict, key: str, default: float, where: str) -> float:
    """A non-negative finite number that may be absent (or null): default then."""
    value = config.get(key)
    if value is None:
        return default
    if not is_number(value) or value < 0:
        raise UnsupportedModelError(f"{where}: '{key}' must be a non-negative number, got {value!r}")
    return float(value)


def rope_config(config: dict, where: str) -> tuple[float, dict, float]:
    """(theta, scaling, partial_rotary_factor) from either the transformers-5 style
    `rope_parameters` or the older `rope_theta` + `rope_scaling` + top-level factor."""
    params = config.get("rope_parameters")
    if isinstance(params, dict):
        scaling = dict(params)
        theta = scaling.pop("rope_theta", config.get("rope_theta", 10000.0))
        partial = scaling.pop("partial_rotary_factor", config.get("partial_rotary_factor", 1.0))
    else:
        scaling = config.get("rope_scaling") or {}
        if not isinstance(scaling, dict):
            raise UnsupportedModelError(f"{where}: rope_scaling must be an object, got {scaling!r}")
        scaling = dict(scaling)
        theta = config.get("rope_theta", 10000.0)
        partial = config.get("partial_rotary_factor", 1.0)
    rope_type = scaling.get("rope_type", scaling.get("type", "default"))
    scaling["rope_type"] = rope_type
    if rope_type not in ("default", "linear", "llama3", "longrope"):
        raise UnsupportedModelError(
            f"{where}: rope scaling type '{rope_type}' is not supported "
            "(supported: default, linear, llama3, longrope)")
    if rope_type == "longrope":
        longrope_config(config, scaling, where)
    if rope_type in ("linear", "llama3"):
        factor = scaling.get("factor")
        if not is_number(factor) or factor <= 0:
            raise UnsupportedModelError(f"{where}: rope scaling '{rope_type}' needs a positive 'factor'")
    if rope_type == "llama3":
        for key in ("low_freq_factor", "high_freq_factor", "original_max_position_embeddings"):
            if not is_number(scaling.get(key)) or scaling[key] <= 0:
                raise UnsupportedModelError(f"{where}: llama3 rope scaling needs a positive '{key}'")
        if scaling["low_freq_factor"] == scaling["high_freq_factor"]:
            raise UnsupportedModelError(f"{where}: llama3 rope scaling needs low_freq_factor != high_freq_factor")
    if not is_number(theta) or theta <= 0:
        raise UnsupportedModelError(f"{where}: rope_theta must be positive, got {theta!r}")
    if not is_number(partial) or not 0 < partial <= 1:
        raise UnsupportedModelError(f"{where}: partial_rotary_factor must be in (0, 1], got {partial!r}")
    return float(theta), scaling, float(partial)


def longrope_config(config: dict, scaling: dict, where: str) -> None:
    """Completes `scaling` in place as transformers' _compute_longrope_parameters reads
    it: a top-level original_max_position_embeddings wins over the rope dict's; factor
    defaults to max_position_embeddings / original; attention_factor to
    sqrt(1 + ln(factor) / ln(original)) (1 when factor <= 1)."""
    for key in ("short_factor", "long_factor"):
        factors = scaling.get(key)
        if not isinstance(factors, list) or not factors or not all(is_number(f) and f > 0 for f in factors):
            raise UnsupportedModelError(f"{where}: longrope rope scaling needs '{key}', a list of positive numbers")
    original = config.get("original_max_position_embeddings",
                          scaling.get("original_max_position_embeddings", config.get("max_position_embeddings")))
    if not isinstance(original, int) or isinstance(original, bool) or not 1 < original <= MAX_INT:
        raise UnsupportedModelError(
            f"{where}: longrope rope scaling needs an integer 'original_max_position_embeddings' >= 2")
    scaling["original_max_position_embeddings"] = original
    factor = scaling.get("factor")
    if factor is None:
        factor = require(config, "max_position_embeddings", where) / original
    if not is_number(factor) or factor <= 0:
        raise UnsupportedModelError(f"{where}: longrope rope scaling 'factor' must be positive, got {factor!r}")
    attention = scaling.get("attention_factor")
    if attention is None:
        attention = 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(original))
    if not is_number(attention) or attention <= 0:
        raise UnsupportedModelError(
            f"{where}: longrope rope scaling 'attention_factor' must be positive, got {attention!r}")
    scaling["factor"], scaling["attention_factor"] = float(factor), float(attention)


def check_activation(config: dict, where: str) -> None:
    act = config.get("hidden_act", "silu")
    if act not in ("silu", "swish"):
        raise UnsupportedModelError(f"{where}: hidden_act '{act}' is not supported (only silu / SwiGLU)")


def check_model_type(config: dict, where: str) -> None:
    """transformers names an architecture after its model_type: LlamaForCausalLM <-> "llama"."""
    model_type, arch = config.get("model_type"), config["architectures"][0]
    if model_type is not None and (not isinstance(model_type, str) or
                                   model_type.replace("_", "") != arch[:-len("ForCausalLM")].lower()):
        raise UnsupportedModelError(
            f"{where}: 'model_type' is {model_type!r}, but 'architectures' says {arch} "
            f"(model_type {arch[:-len('ForCausalLM')].lower()!r}); correct whichever is wrong")


def check_heads(config: dict, where: str) -> tuple[int, int, int]:
    hidden = require(config, "hidden_size", where)
    heads = require(config, "num_attention_heads", where)
    kv_heads = optional_int(config, "num_key_value_heads", heads, where)
    if heads % kv_heads:
        raise UnsupportedModelError(
            f"{where}: num_attention_heads ({heads}) must be a multiple of num_key_value_heads ({kv_heads})")
    head_dim = optional_int(config, "head_dim", hidden // heads, where)
    if not isinstance(head_dim, int) or isinstance(head_dim, bool) or head_dim <= 0 or head_dim % 2:
        raise UnsupportedModelError(f"{where}: head_dim must be a positive even integer, got {head_dim!r}")
    if head_dim > K.limits["max_head_dim"]:
        raise UnsupportedModelError(f"{where}: head_dim {head_dim} exceeds the supported {K.limits['max_head_dim']}")
    return heads, kv_heads, head_dim


def rope_spec(config: dict, where: str, head_dim: int) -> RopeSpec:
    """The model's one RoPE table (partial rotary: the leading dims of each head)."""
    theta, scaling, partial = rope_config(config, where)
    rotary_dim = int(head_dim * partial)
    if rotary_dim < 2 or rotary_dim % 2:
        raise UnsupportedModelError(f"{where}: partial rotary gives {rotary_dim} dims; need an even number >= 2")
    return RopeSpec(theta, scaling, rotary_dim)


def common_args(config: dict, where: str, default_context: int) -> dict:
    """The ModelArgs fields every architecture reads the same way, validated: sizes,
    and one RoPE table used by every layer."""
    check_model_type(config, where)
    check_activation(config, where)
    heads, kv_heads, head_dim = check_heads(config, where)
    n_layers = require(config, "num_hidden_layers", where, maximum=MAX_LAYERS)
    return dict(
        vocab_size=require(config, "vocab_size", where),
        hidden_size=require(config, "hidden_size", where),
        intermediate_size=require(config, "intermediate_size", where),
        num_hidden_layers=n_layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        max_position_embeddings=optional_int(config, "max_position_embeddings", default_context, where),
        tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
        rope=(rope_spec(config, where, head_dim),),
        layer_rope=(0,) * n_layers,
        sliding_windows=(0,) * n_layers,
    )


# -- weight declarations: Hugging Face tensor name -> shape -------------------------------

def linear_spec(specs: dict, prefix: str, out_features: int, in_features: int, bias: bool = False) -> None:
    specs[f"{prefix}.weight"] = (out_features, in_features)
    if bias:
        specs[f"{prefix}.bias"] = (out_features,)


def norm_spec(specs: dict, prefix: str, dim: int, bias: bool = False) -> None:
    specs[f"{prefix}.weight"] = (dim,)
    if bias:
        specs[f"{prefix}.bias"] = (dim,)


def attention_spec(specs: dict, prefix: str, a: ModelArgs, qkv_bias: bool = False, o_bias: bool = False) -> None:
    """q_proj [heads * head_dim, hidden], k_proj and v_proj [kv_heads * head_dim, hidden],
    o_proj [hidden, heads * head_dim]."""
    q, kv, H = a.num_attention_heads * a.head_dim, a.num_key_value_heads * a.head_dim, a.hidden_size
    linear_spec(specs, f"{prefix}.q_proj", q, H, qkv_bias)
    linear_spec(specs, f"{prefix}.k_proj", kv, H, qkv_bias)
    linear_spec(specs, f"{prefix}.v_proj", kv, H, qkv_bias)
    linear_spec(specs, f"{prefix}.o_proj", H, q, o_bias)


def mlp_spec(specs: dict, prefix: str, hidden: int, intermediate: int, bias: bool = False) -> None:
    """A gated feed-forward: gate_proj and up_proj [intermediate, hidden], down_proj [hidden, intermediate]."""
    linear_spec(specs, f"{prefix}.gate_proj", intermediate, hidden, bias)
    linear_spec(specs, f"{prefix}.up_proj", intermediate, hidden, bias)
    linear_spec(specs, f"{prefix}.down_proj", hidden, intermediate, bias)


def gated_mlp(p, w, prefix: str, x: str, out: str = "h", activation: str = "silu") -> None:
    """out = down_proj(activation(gate_proj(x)) * up_proj(x)) through the program's
    gate and up buffers."""
    p.matmul(x, gate=w.linear(f"{prefix}.gate_proj"), up=w.linear(f"{prefix}.up_proj"))
    p.glu("gate", "gate", "up", activation)
    p.matmul("gate", **{out: w.linear(f"{prefix}.down_proj")})


def embedding_specs(args: ModelArgs) -> dict:
    """The token embeddings, and the LM head unless tied to them."""
    specs = {"model.embed_tokens.weight": (args.vocab_size, args.hidden_size)}
    if not args.tie_word_embeddings:
        specs["lm_head.weight"] = (args.vocab_size, args.hidden_size)
    return specs
