"""Named model shapes with random weights, for benchmarks that need no download.

`random_model_folder("tinyllama-1.1b", "bf16")` writes (once, then reuses) a Hugging
Face folder with config.json and model.safetensors of that shape under the cache
directory ($HEARTHLM_CACHE or ~/.cache/hearthlm)."""
from __future__ import annotations

import json
import os
from typing import Callable, Optional

import numpy as np

from .cpu import physical_cores
from .errors import InvalidInputError
from .models import family, model_args
from .quant import QUANT_DTYPES, layer_count, packed_shape, quantize_tensor, tensor_format
from .quant_writer import file_metadata
from .safetensors_io import write_safetensors
from .weights import f32_to_bf16_bits

SHAPES = {
    "tiny": dict(architecture="LlamaForCausalLM", hidden_size=64, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, intermediate_size=160,
                 vocab_size=512, tie_word_embeddings=True),
    "smollm2-135m": dict(architecture="LlamaForCausalLM", hidden_size=576, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, intermediate_size=1536,
                         vocab_size=49152, tie_word_embeddings=True, rope_theta=100000.0),
    "tinyllama-1.1b": dict(architecture="LlamaForCausalLM", hidden_size=2048, num_hidden_layers=22,
                           num_attention_heads=32, num_key_value_heads=4, intermediate_size=5632,
                           vocab_size=32000, tie_word_embeddings=False),
    "llama3.2-1b": dict(architecture="LlamaForCausalLM", hidden_size=2048, num_hidden_layers=16,
                        num_attention_heads=32, num_key_value_heads=8, intermediate_size=8192,
                        vocab_size=128256, tie_word_embeddings=True, rope_theta=500000.0,
                        rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                                      "high_freq_factor": 4.0,
                                      "original_max_position_embeddings": 8192}),
    # Qwen3-30B-A3B's layers (128 experts, 8 per token), 4 of its 48: write it as q8/q4
    "qwen3-30b-a3b": dict(architecture="Qwen3MoeForCausalLM", hidden_size=2048, num_hidden_layers=4,
                          num_attention_heads=32, num_key_value_heads=4, head_dim=128, intermediate_size=6144,
                          moe_intermediate_size=768, num_experts=128, num_experts_per_tok=8,
                          norm_topk_prob=True, vocab_size=151936, tie_word_embeddings=False,
                          rope_theta=1000000.0),
    "qwen2.5-0.5b": dict(architecture="Qwen2ForCausalLM", hidden_size=896, num_hidden_layers=24,
                         num_attention_heads=14, num_key_value_heads=2, intermediate_size=4864,
                         vocab_size=151936, tie_word_embeddings=True, rope_theta=1000000.0),
    "phi4-mini": dict(architecture="Phi3ForCausalLM", hidden_size=3072, num_hidden_layers=32,
                      num_attention_heads=24, num_key_value_heads=8, intermediate_size=8192,
                      vocab_size=200064, tie_word_embeddings=True, partial_rotary_factor=0.75,
                      rope_theta=10000.0, original_max_position_embeddings=4096,
                      max_position_embeddings=131072,
                      rope_scaling={"type": "longrope", "short_factor": [1.0 + i / 94 for i in range(48)],
                                    "long_factor": [1.0 + 31.0 * (i / 47) ** 2 for i in range(48)]}),
    "gemma3-1b": dict(architecture="Gemma3ForCausalLM", model_type="gemma3_text", hidden_size=1152,
                      num_hidden_layers=26, num_attention_heads=4, num_key_value_heads=1, head_dim=256, intermediate_size=6912,
                      vocab_size=262144, tie_word_embeddings=True, query_pre_attn_scalar=256,
                      sliding_window=512, sliding_window_pattern=6, rope_theta=1000000.0,
                      rope_local_base_freq=10000.0),
    "qwen3-0.6b": dict(architecture="Qwen3ForCausalLM", hidden_size=1024, num_hidden_layers=28,
                       num_attention_heads=16, num_key_value_heads=8, head_dim=128, intermediate_size=3072,
                       vocab_size=151936, tie_word_embeddings=True, rope_theta=1000000.0),
}

STORAGE = {"f32": ("F32", np.float32), "bf16": ("BF16", np.uint16), "f16": ("F16", np.float16)}
# q8/q4: every matrix quantized as it is generated (never a float copy of the model on disk).


def cache_dir() -> str:
    return os.environ.get("HEARTHLM_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "hearthlm")


def config_for(shape: str) -> dict:
    if shape not in SHAPES:
        raise InvalidInputError(f"shape: unknown '{shape}' (known: {', '.join(SHAPES)})")
    s = dict(SHAPES[shape])
    arch = s.pop("architecture")
    return {"architectures": [arch], "model_type": arch[:-len("ForCausalLM")].lower(),
            "hidden_act": "silu", "max_position_embeddings": 8192, "rms_norm_eps": 1e-5,
            "torch_dtype": "float32", **s}


def random_model_folder(shape: str, dtype: str = "bf16", seed: int = 0,
                        progress: Optional[Callable[[int, int], None]] = None) -> str:
    """A folder holding a random-weight model of `shape`, stored in `dtype` (f32, bf16,
    f16, or a quantized dtype as `hearthlm quantize` writes it). progress(done, total):
    called after each tensor with the float32 bytes generated so far (when it is built)."""
    if dtype not in STORAGE and dtype not in QUANT_DTYPES:
        raise InvalidInputError(
            f"dtype: random models are stored as {', '.join([*STORAGE, *QUANT_DTYPES])}, not {dtype!r}")
    config = config_for(shape)
    args = model_args(config, f"shape {shape}")
    folder = os.path.join(cache_dir(), "shapes", f"{shape}-{dtype}-seed{seed}")
    weights = os.path.join(folder, "model.safetensors")
    if os.path.exists(weights):
        return folder
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    specs = family(args).weights(args)
    total = 4 * sum(int(np.prod(dims)) for dims in specs.values())
    done = 0
    n_layers, tied = layer_count(specs), "lm_head.weight" not in specs
    formats = {name: tensor_format(name, dtype, None, n_layers, tied)
               for name, dims in specs.items() if len(dims) == 2 and dtype in QUANT_DTYPES}

    def producer(name, dims):
        def generate():
            if len(dims) == 1:  # norms ~1, biases small; always stored as F32
                return (1.0 if "norm" in name else 0.0) + 0.02 * rng.standard_normal(dims, dtype=np.float32)
            w = rng.standard_normal(dims, dtype=np.float32) * np.float32(0.02)
            if name in formats:
                return quantize_tensor(w, "F32", formats[name], physical_cores(), weights, name)
            if dtype == "bf16":
                return f32_to_bf16_bits(w)
            return w.astype(STORAGE[dtype][1])

        def make():
            nonlocal done
            data = generate()
            done += 4 * int(np.prod(dims))
            if progress is not None:
                progress(done, total)
            return data
        return make

    def entry(name, dims):
        if name in formats:
            return (name, "U8", packed_shape(formats[name], *dims), producer(name, dims))
        return (name, STORAGE[dtype][0] if len(dims) == 2 else "F32", dims, producer(name, dims))

    # quantized blocks first: their sizes keep 16-byte alignment
    tensors = sorted((entry(name, dims) for name, dims in specs.items()), key=lambda t: t[1] != "U8")
    metadata = file_metadata(dtype, {name: [fmt, *specs[name]] for name, fmt in formats.items()}) \
        if formats else {"format": "pt"}
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    write_safetensors(weights, tensors, metadata)  # renamed into place last
    return folder
