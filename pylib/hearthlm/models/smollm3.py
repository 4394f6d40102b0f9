"""SmolLM3 (SmolLM3ForCausalLM): the Llama network (same tensors) where some layers use
no positional encoding at all (NoPE): `no_rope_layers[i]` is 1 for a layer with RoPE,
0 for one without; absent, every `no_rope_layer_interval`-th layer is NoPE. Sliding
windows, when enabled, apply to the layers `layer_types` marks (by default the NoPE ones)."""
from __future__ import annotations

from ..errors import UnsupportedModelError
from ..weights import Weights
from . import llama
from .base import common_args, gated_mlp, optional_float, optional_int
from .program import Program

Args = llama.Args
weights = llama.weights  # the same tensors as Llama


def uses_rope(config: dict, n_layers: int, where: str) -> list:
    flags = config.get("no_rope_layers")
    if flags is None:
        interval = optional_int(config, "no_rope_layer_interval", 4, where)
        return [(i + 1) % interval != 0 for i in range(n_layers)]
    if not isinstance(flags, list) or len(flags) != n_layers or any(f not in (0, 1) for f in flags):
        raise UnsupportedModelError(
            f"{where}: no_rope_layers must list 0 or 1 for each of the {n_layers} layers, got {flags!r}")
    return [f == 1 for f in flags]


def sliding_windows(config: dict, rope: list, where: str) -> tuple:
    use = bool(config.get("use_sliding_window", False))
    window = optional_int(config, "sliding_window", 0, where, minimum=0)
    layer_types = config.get("layer_types")
    if layer_types is None:
        layer_types = ["sliding_attention" if use and window and not r else "full_attention" for r in rope]
    if (not isinstance(layer_types, list) or len(layer_types) != len(rope)
            or not all(t in ("full_attention", "sliding_attention") for t in layer_types)):
        raise UnsupportedModelError(f"{where}: layer_types {layer_types!r} not understood")
    if "sliding_attention" in layer_types and not (use and window):
        raise UnsupportedModelError(
            f"{where}: layer_types has sliding_attention layers but use_sliding_window / sliding_window "
            "do not enable a window")
    return tuple(window if t == "sliding_attention" else 0 for t in layer_types)


def model_args(config: dict, architecture: str, where: str) -> Args:
    # transformers' SmolLM3 default RoPE base is 2e6, not the usual 1e4
    common = common_args({"rope_theta": 2000000.0, **config}, where, default_context=32768)
    if common["rope"][0].rotary_dim != common["head_dim"]:
        raise UnsupportedModelError(f"{where}: partial rotary is not part of {architecture}")
    rope = uses_rope(config, common["num_hidden_layers"], where)
    common["layer_rope"] = tuple(0 if r else -1 for r in rope)
    common["sliding_windows"] = sliding_windows(config, rope, where)
    attention_bias = bool(config.get("attention_bias", False))
    return Args(
        architecture=architecture,
        norm_eps=optional_float(config, "rms_norm_eps", 1e-6, where),
        qkv_bias=attention_bias,
        o_bias=attention_bias,
        mlp_bias=bool(config.get("mlp_bias", False)),
        **common,
    )


def program(a: Args, w: Weights) -> Program:
    q, kv = a.num_attention_heads * a.head_dim, a.num_key_value_heads * a.head_dim
    I, eps, hd = a.intermediate_size, a.norm_eps, a.head_dim
    p = Program(dict(x=a.hidden_size, h=a.hidden_size, q=q, k=kv, v=kv, attn=q, gate=I, up=I),
                input="x", output="h")
    for i in range(a.num_hidden_layers):
        L = f"model.layers.{i}"
        # h = x + attention(norm(x)), RoPE on q and k unless a NoPE layer
        p.norm("h", "x", w.norm(f"{L}.input_layernorm", eps))
        p.matmul("h", q=w.linear(f"{L}.self_attn.q_proj"), k=w.linear(f"{L}.self_attn.k_proj"),
                 v=w.linear(f"{L}.self_attn.v_proj"))
        if a.layer_rope[i] >= 0:
            p.rope("q", a.num_attention_heads, hd, hd, table=a.layer_rope[i])
            p.rope("k", a.num_key_value_heads, hd, hd, table=a.layer_rope[i])
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
