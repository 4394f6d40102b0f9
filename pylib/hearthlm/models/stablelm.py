"""StableLM (StableLmForCausalLM): the Llama network with LayerNorm (scale and bias),
partial rotary embeddings and optional q/k/v biases."""
from __future__ import annotations

from ..errors import UnsupportedModelError
from .base import (MAX_LAYERS, ModelArgs, check_activation, check_heads, optional_float, optional_int,
                   require, rope_config)


def model_args(config: dict, architecture: str, where: str) -> ModelArgs:
    check_activation(config, where)
    for flag in ("qk_layernorm", "use_parallel_residual"):
        if config.get(flag):
            raise UnsupportedModelError(f"{where}: StableLM with {flag}=true is not supported")
    heads, kv_heads, head_dim = check_heads(config, where)
    theta, scaling, partial = rope_config(config, where)
    rotary_dim = int(head_dim * partial)
    if rotary_dim < 2 or rotary_dim % 2:
        raise UnsupportedModelError(f"{where}: partial rotary gives {rotary_dim} dims; need an even number >= 2")
    n_layers = require(config, "num_hidden_layers", where, maximum=MAX_LAYERS)
    return ModelArgs(
        architecture=architecture,
        vocab_size=require(config, "vocab_size", where),
        hidden_size=require(config, "hidden_size", where),
        intermediate_size=require(config, "intermediate_size", where),
        num_hidden_layers=n_layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        max_position_embeddings=optional_int(config, "max_position_embeddings", 4096, where),
        norm="layer",
        norm_eps=optional_float(config, "layer_norm_eps", 1e-5, where),
        qkv_bias=bool(config.get("use_qkv_bias", False)),
        o_bias=False,
        mlp_bias=False,
        tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
        rope_theta=theta,
        rope_scaling=scaling,
        rotary_dim=rotary_dim,
        sliding_windows=tuple([0] * n_layers),
    )
