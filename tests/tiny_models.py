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
    "olmo2": ("Olmo2ForCausalLM", dict(hidden_size=40, num_attention_heads=5, num_key_value_heads=5,
                                       intermediate_size=84, vocab_size=181)),
    "olmo2-gqa-bias": ("Olmo2ForCausalLM", dict(hidden_size=48, num_attention_heads=6, num_key_value_heads=2,
                                                intermediate_size=62, vocab_size=149, attention_bias=True,
                                                tie_word_embeddings=True)),
    "qwen2": ("Qwen2ForCausalLM", dict(hidden_size=56, num_attention_heads=7, num_key_value_heads=1,
                                       intermediate_size=90, vocab_size=230, tie_word_embeddings=True)),
    "qwen3": ("Qwen3ForCausalLM", dict(hidden_size=40, num_attention_heads=6, num_key_value_heads=2,
                                       head_dim=14, intermediate_size=86, vocab_size=213)),
    "qwen3-window-bias": ("Qwen3ForCausalLM", dict(hidden_size=48, num_attention_heads=4, num_key_value_heads=4,
                                                   head_dim=18, intermediate_size=70, vocab_size=177,
                                                   attention_bias=True, tie_word_embeddings=True,
                                                   use_sliding_window=True, sliding_window=6,
                                                   max_window_layers=1)),
    "smollm3": ("SmolLM3ForCausalLM", dict(hidden_size=60, num_attention_heads=6, num_key_value_heads=2,
                                           intermediate_size=98, vocab_size=187, no_rope_layer_interval=2)),
    "smollm3-nope-window": ("SmolLM3ForCausalLM", dict(hidden_size=48, num_attention_heads=4, num_key_value_heads=1,
                                                       intermediate_size=66, vocab_size=171, no_rope_layers=[0, 1],
                                                       use_sliding_window=True, sliding_window=5,
                                                       attention_bias=True, tie_word_embeddings=False)),
    "granite": ("GraniteForCausalLM", dict(hidden_size=48, num_attention_heads=6, num_key_value_heads=2,
                                           intermediate_size=76, vocab_size=205, tie_word_embeddings=True,
                                           embedding_multiplier=3.5, attention_multiplier=0.2,
                                           residual_multiplier=0.37, logits_scaling=2.7)),
    "granite-bias": ("GraniteForCausalLM", dict(hidden_size=40, num_attention_heads=4, num_key_value_heads=4,
                                                intermediate_size=58, vocab_size=163, attention_bias=True,
                                                mlp_bias=True, embedding_multiplier=12.0,
                                                attention_multiplier=0.0625, residual_multiplier=0.22,
                                                logits_scaling=8.0)),
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
    "phi3-window": ("Phi3ForCausalLM", dict(hidden_size=60, num_attention_heads=5, num_key_value_heads=1,
                                            intermediate_size=84, vocab_size=233, sliding_window=7)),
    # original_max_position_embeddings 64: the shared tests (<= 64 tokens in one call)
    # stay in the short regime, as transformers picks one per call; test_phi3.py
    # decodes past it
    "phi3-longrope": ("Phi3ForCausalLM", dict(hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                                              intermediate_size=100, vocab_size=241,
                                              original_max_position_embeddings=64,
                                              rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0,
                                                               "partial_rotary_factor": 0.75,
                                                               "short_factor": [1.0, 1.1, 1.3, 1.2, 1.6, 2.0],
                                                               "long_factor": [1.0, 1.5, 2.5, 4.0, 7.0, 11.0]})),
    # 2 layers: sliding, full. Small caps so that both tanh soft-caps bend the values.
    "gemma2": ("Gemma2ForCausalLM", dict(hidden_size=48, num_attention_heads=4, num_key_value_heads=2, head_dim=14,
                                         intermediate_size=88, vocab_size=211, sliding_window=5, attention_bias=True,
                                         query_pre_attn_scalar=18, attn_logit_softcapping=2.5,
                                         final_logit_softcapping=4.0)),
    # 4 layers: sliding, sliding, full, sliding; linear rope scaling on the global layers.
    "gemma3": ("Gemma3ForCausalLM", dict(hidden_size=40, num_attention_heads=4, num_key_value_heads=1, head_dim=18,
                                         intermediate_size=76, vocab_size=233, sliding_window=6,
                                         sliding_window_pattern=3, num_hidden_layers=4, query_pre_attn_scalar=20,
                                         rope_parameters={
                                             "full_attention": {"rope_type": "linear", "factor": 2.0,
                                                                "rope_theta": 1e6},
                                             "sliding_attention": {"rope_type": "default", "rope_theta": 1000.0}})),
    # The text model of a multimodal checkpoint (a tiny SigLIP vision tower, ignored);
    # 3 layers, untied LM head.
    "gemma3-multimodal": ("Gemma3ForConditionalGeneration",
                          dict(hidden_size=32, num_attention_heads=2, num_key_value_heads=2, head_dim=16,
                               intermediate_size=60, vocab_size=190, sliding_window=4, sliding_window_pattern=2,
                               num_hidden_layers=3, query_pre_attn_scalar=16, tie_word_embeddings=False)),
}
# Config classes not named after the architecture.
CONFIG_CLASSES = {"Gemma3ForCausalLM": "Gemma3TextConfig"}
TINY_VISION = dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=40, num_hidden_layers=1,
                   num_attention_heads=2, image_size=16, patch_size=8)


def hub_form(config: dict) -> dict:
    """config.json as checkpoints on the Hub written before transformers 5 have it:
    `rope_theta` + `rope_scaling` (+ `partial_rotary_factor`) instead of
    `rope_parameters`; per layer type, the full-attention parameters and
    `rope_local_base_freq` for the sliding layers; Qwen3-MoE's `num_experts`; longrope as
    {"type": "longrope", factors} beside a top-level original_max_position_embeddings;
    Gemma's `layer_types` as the older `sliding_window_pattern` (Gemma 2: its fixed default)."""
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
        default = params.get("rope_type", "default") == "default"
        if params.get("rope_type") == "longrope":  # as Phi-3 / Phi-4-mini checkpoints have it
            params = {("type" if k == "rope_type" else k): v for k, v in params.items()
                      if k != "original_max_position_embeddings" or k not in config}
        config["rope_scaling"] = None if default else params
    if "num_local_experts" in config and config.get("model_type") == "qwen3_moe":
        config["num_experts"] = config.pop("num_local_experts")
    if config.get("model_type") in ("gemma2", "gemma3_text"):  # layer_types -> the default / a pattern
        types = config.pop("layer_types")
        pattern = next(p for p in range(1, len(types) + 2)
                       if types == ["sliding_attention" if (i + 1) % p else "full_attention"
                                    for i in range(len(types))])
        config.pop("_sliding_window_pattern", None)
        if config["model_type"] == "gemma3_text":
            config["sliding_window_pattern"] = pattern
        assert config["model_type"] == "gemma3_text" or pattern == 2
    if isinstance(config.get("text_config"), dict):
        config["text_config"] = hub_form(config["text_config"])
    return config


def build(name: str, folder: str, dtype: str = "f32", seed: int = 0, max_shard_size=None,
          config_form: str = "transformers", **overrides) -> str:
    """Write variant `name` to `folder` (weights stored in `dtype`); returns folder.
    `overrides` replace config values of the variant (e.g. vocab_size). config_form:
    "transformers" (as transformers 5 saves it) or "hub" (hub_form)."""
    import torch
    import transformers

    arch, kwargs = VARIANTS[name]
    kwargs = {"max_position_embeddings": 256, "num_hidden_layers": 2, **kwargs, **overrides}
    if arch == "Gemma3ForConditionalGeneration":
        text = transformers.Gemma3TextConfig(initializer_range=0.1, bos_token_id=None, eos_token_id=None,
                                             pad_token_id=None, **kwargs)
        v = text.vocab_size
        config = transformers.Gemma3Config(text_config=text, vision_config=TINY_VISION, mm_tokens_per_image=4,
                                           boi_token_index=v - 3, eoi_token_index=v - 2, image_token_index=v - 1,
                                           initializer_range=0.1, tie_word_embeddings=text.tie_word_embeddings)
    else:
        cfg_cls = getattr(transformers, CONFIG_CLASSES.get(arch, arch.replace("ForCausalLM", "Config")))
        config = cfg_cls(initializer_range=0.1, bos_token_id=None, eos_token_id=None, pad_token_id=None, **kwargs)
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
