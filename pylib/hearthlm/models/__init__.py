"""Supported architectures: the `architectures` field of config.json -> its parser."""
from __future__ import annotations

import json
import os

from ..errors import ModelFormatError, UnsupportedModelError
from . import llama, stablelm
from .base import ModelArgs

ARCHITECTURES = {
    "LlamaForCausalLM": llama.model_args,
    "MistralForCausalLM": llama.model_args,
    "Qwen2ForCausalLM": llama.model_args,
    "StableLmForCausalLM": stablelm.model_args,
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
    return ARCHITECTURES[arch](config, arch, where)


__all__ = ["ARCHITECTURES", "ModelArgs", "model_args", "read_config"]
