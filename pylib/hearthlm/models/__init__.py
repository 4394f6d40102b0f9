"""Supported architectures: the `architectures` field of config.json -> its family
module. A family module has model_args(config, architecture, where) -> its ModelArgs,
weights(args) -> {Hugging Face tensor name: shape}, and program(args, Weights) -> the
layer Program (models/program.py)."""
from __future__ import annotations

import json
import os

from ..errors import ModelFormatError, UnsupportedModelError
from . import llama, qwen3_moe, stablelm
from .base import ModelArgs

ARCHITECTURES = {
    "LlamaForCausalLM": llama,
    "MistralForCausalLM": llama,
    "Qwen2ForCausalLM": llama,
    "Qwen3MoeForCausalLM": qwen3_moe,
    "StableLmForCausalLM": stablelm,
}


def read_config(folder: str) -> dict:
    path = os.path.join(folder, "config.json")
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except FileNotFoundError:
        raise ModelFormatError(f"{folder}: no config.json (is this a Hugging Face model folder?)") from None
    except (OSError, ValueError, RecursionError) as e:
        raise ModelFormatError(f"{path}: cannot parse: {e}") from None
    if not isinstance(config, dict):
        raise ModelFormatError(f"{path}: must hold a JSON object")
    return config


def model_args(config: dict, where: str) -> ModelArgs:
    archs = config.get("architectures")
    if not isinstance(archs, list) or not archs:
        raise UnsupportedModelError(f"{where}: config.json has no 'architectures' list")
    arch = archs[0]
    if not isinstance(arch, str) or arch not in ARCHITECTURES:
        raise UnsupportedModelError(
            f"{where}: architecture '{arch}' is not supported "
            f"(supported: {', '.join(sorted(ARCHITECTURES))})")
    return ARCHITECTURES[arch].model_args(config, arch, where)


def family(args: ModelArgs):
    """The family module of parsed args."""
    return ARCHITECTURES[args.architecture]


__all__ = ["ARCHITECTURES", "ModelArgs", "family", "model_args", "read_config"]
