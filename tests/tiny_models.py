"""Tiny random-weight models of every supported architecture, built with transformers
and saved as safetensors folders (f32 and bf16). Sizes are deliberately awkward."""
from __future__ import annotations

import json
import os

VARIANTS = {
    # name: (architecture class name, config kwargs)
    "llama-mha": ("LlamaForCausalLM", dict(hidden_size=48, num_attention_heads=4, num_key_value_heads=4,
                                           intermediate_size=100, vocab_size=257)),
    "llama-gqa-tied": ("LlamaForCausalLM", dict(hidden_size=64, num_attention_heads=8, num_key_value_heads=2,
                                                intermediate_size=132, vocab_size=301, tie_word_embeddings=True)),
    "llama-bias": ("LlamaForCausalLM", dict(hidden_size=40, num_attention_heads=4, num_key_value_heads=2,
                                            intermediate_size=70, vocab_size=199, attention_bias=True,
                                            mlp_bias=True)),
    "llama3-rope": ("LlamaForCausalLM", dict(hidden_size=64, num_attention_heads=4, num_key_value_heads=1,
                                             intermediate_size=96, vocab_size=211,
                                             rope_parameters={"rope_type": "llama3", "factor": 8.0,
                                                              "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                                              "original_max_position_embeddings": 16,
                                                              "rope_theta": 500000.0})),
    "llama-linear-rope": ("LlamaForCausalLM", dict(hidden_size=36, num_attention_heads=3, num_key_value_heads=3,
                                                   intermediate_size=50, vocab_size=123,
                                                   rope_parameters={"rope_type": "linear", "factor": 2.5,
                                                                    "rope_theta": 10000.0})),
    "llama-head-dim": ("LlamaForCausalLM", dict(hidden_size=40, num_attention_heads=4, num_key_value_heads=2,
                                                head_dim=22, intermediate_size=72, vocab_size=150)),
    "mistral-window": ("MistralForCausalLM", dict(hidden_size=48, num_attention_heads=6, num_key_value_heads=2,
                                                  head_dim=8, intermediate_size=88, vocab_size=160,
                                                  sliding_window=5)),
    "qwen2": ("Qwen2ForCausalLM", dict(hidden_size=56, num_attention_heads=7, num_key_value_heads=1,
                                       intermediate_size=90, vocab_size=230, tie_word_embeddings=True)),
    "stablelm": ("StableLmForCausalLM", dict(hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                                             intermediate_size=100, vocab_size=190, use_qkv_bias=True,
                                             rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                              "partial_rotary_factor": 0.25})),
    "stablelm-qk-parallel": ("StableLmForCausalLM", dict(hidden_size=48, num_attention_heads=4, num_key_value_heads=2,
                                                         intermediate_size=72, vocab_size=170, qk_layernorm=True,
                                                         use_parallel_residual=True,
                                                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                                          "partial_rotary_factor": 0.5})),
    # [moe, dense] layers; then [dense, moe] by decoder_sparse_step
    "qwen3-moe": ("Qwen3MoeForCausalLM", dict(hidden_size=48, num_attention_heads=4, num_key_value_heads=2,
                                              head_dim=14, intermediate_size=70, moe_intermediate_size=22,
                                              num_experts=8, num_experts_per_tok=2, norm_topk_prob=True,
                                              mlp_only_layers=[1], vocab_size=190)),
    "qwen3-moe-top3": ("Qwen3MoeForCausalLM", dict(hidden_size=40, num_attention_heads=5, num_key_value_heads=1,
                                                   head_dim=12, intermediate_size=52, moe_intermediate_size=18,
                                                   num_experts=5, num_experts_per_tok=3, norm_topk_prob=False,
                                                   decoder_sparse_step=2, attention_bias=True,
                                                   tie_word_embeddings=True, vocab_size=170)),
}


def hub_form(config: dict) -> dict:
    """config.json as checkpoints on the Hub written before transformers 5 have it:
    `rope_theta` + `rope_scaling` (+ `partial_rotary_factor`) instead of
    `rope_parameters`; per layer type, the full-attention parameters and
    `rope_local_base_freq` for the sliding layers; Qwen3-MoE's `num_experts`."""
    config = dict(config)
    params = config.pop("rope_parameters", None)
    if isinstance(params, dict):
        if "full_attention" in params:
            config["rope_local_base_freq"] = params["sliding_attention"]["rope_theta"]
            params = params["full_attention"]
        params = dict(params)
        config["rope_theta"] = params.pop("rope_theta")
        if "partial_rotary_factor" in params:
            config["partial_rotary_factor"] = params.pop("partial_rotary_factor")
        config["rope_scaling"] = None if params.get("rope_type", "default") == "default" else params
    if "num_local_experts" in config and config.get("model_type") == "qwen3_moe":
        config["num_experts"] = config.pop("num_local_experts")
    return config


def build(name: str, folder: str, dtype: str = "f32", seed: int = 0, num_hidden_layers: int = 2,
          max_shard_size=None, config_form: str = "transformers", **overrides) -> str:
    """Write variant `name` to `folder` (weights stored in `dtype`); returns folder.
    `overrides` replace config values of the variant (e.g. vocab_size). config_form:
    "transformers" (as transformers 5 saves it) or "hub" (hub_form)."""
    import torch
    import transformers

    arch, kwargs = VARIANTS[name]
    kwargs = {"max_position_embeddings": 256, **kwargs, **overrides}
    cfg_cls = getattr(transformers, arch.replace("ForCausalLM", "Config"))
    config = cfg_cls(num_hidden_layers=num_hidden_layers, initializer_range=0.1, bos_token_id=None,
                     eos_token_id=None, pad_token_id=None, **kwargs)
    config.architectures = [arch]
    torch.manual_seed(seed)
    model = getattr(transformers, arch)(config).eval()
    with torch.no_grad():  # make norms and biases non-trivial so they are tested
        for pname, p in model.named_parameters():
            if "norm" in pname or pname.endswith(".bias"):
                p.add_(torch.randn_like(p) * 0.1)
    if dtype == "bf16":
        model = model.to(torch.bfloat16)
    os.makedirs(folder, exist_ok=True)
    save_kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(folder, safe_serialization=True, **save_kwargs)
    if config_form == "hub":
        path = os.path.join(folder, "config.json")
        with open(path) as f:
            config = json.load(f)
        with open(path, "w") as f:
            json.dump(hub_form(config), f, indent=2)
    return folder


def reference_model(folder: str):
    """transformers' model with weights upcast to f32; a mixture of experts through its
    eager per-expert loop (the grouped-matmul path needs 16-byte aligned sizes)."""
    import torch
    from transformers import AutoModelForCausalLM

    with open(os.path.join(folder, "config.json")) as f:
        moe = "moe" in json.load(f).get("model_type", "")
    extra = {"experts_implementation": "eager"} if moe else {}
    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, **extra).eval()


def reference_logits(folder: str, ids):
    """transformers' float32 logits at every position (weights upcast to f32)."""
    import torch

    model = reference_model(folder)
    with torch.no_grad():
        return model(torch.tensor([list(ids)])).logits[0].float().numpy()


def reference_greedy(folder: str, ids, n: int) -> list:
    import torch

    model = reference_model(folder)
    with torch.no_grad():
        out = model.generate(torch.tensor([list(ids)]), max_new_tokens=n, min_new_tokens=n,
                             do_sample=False, eos_token_id=None, pad_token_id=0)
    return out[0, len(ids):].tolist()
