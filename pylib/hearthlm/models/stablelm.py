"""StableLM (StableLmForCausalLM): the Llama network with LayerNorm (scale and bias),
partial rotary embeddings and optional q/k/v biases."""
from __future__ import annotations

from ..errors import UnsupportedModelError
from .base import ModelArgs, common_args, optional_float, rope_config


def model_args(config: dict, architecture: str, where: str) -> ModelArgs:
    for flag in ("qk_layernorm", "use_parallel_residual"):
        if config.get(flag):
            raise UnsupportedModelError(f"{where}: StableLM with {flag}=true is not supported")
    common = common_args(config, where, default_context=4096)
    rotary_dim = int(common["head_dim"] * rope_config(config, where)[2])
    if rotary_dim < 2 or rotary_dim % 2:
        raise UnsupportedModelError(f"{where}: partial rotary gives {rotary_dim} dims; need an even number >= 2")
    return ModelArgs(
        architecture=architecture,
        norm="layer",
        norm_eps=optional_float(config, "layer_norm_eps", 1e-5, where),
        qkv_bias=bool(config.get("use_qkv_bias", False)),
        o_bias=False,
        mlp_bias=False,
        rotary_dim=rotary_dim,
        sliding_windows=tuple([0] * common["num_hidden_layers"]),
        **common,
    )
