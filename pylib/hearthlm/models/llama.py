"""Llama 2/3, TinyLlama, SmolLM, Mistral and Qwen2: one network, differing only in
config details (biases on q/k/v, sliding windows, rope scaling)."""
from __future__ import annotations

from ..errors import UnsupportedModelError
from .base import ModelArgs, common_args, optional_float, optional_int, rope_config


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


def model_args(config: dict, architecture: str, where: str) -> ModelArgs:
    common = common_args(config, where, default_context=2048)
    if rope_config(config, where)[2] != 1.0:
        raise UnsupportedModelError(f"{where}: partial rotary is not part of {architecture}")
    qwen2 = architecture == "Qwen2ForCausalLM"
    attention_bias = bool(config.get("attention_bias", False))
    return ModelArgs(
        architecture=architecture,
        norm="rms",
        norm_eps=optional_float(config, "rms_norm_eps", 1e-6, where),
        qkv_bias=qwen2 or attention_bias,
        o_bias=attention_bias and not qwen2,
        mlp_bias=bool(config.get("mlp_bias", False)),
        rotary_dim=common["head_dim"],
        sliding_windows=sliding_windows(config, architecture, common["num_hidden_layers"], where),
        **common,
    )
