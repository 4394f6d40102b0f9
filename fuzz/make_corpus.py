"""Write the fuzzing seed corpus (fuzz/corpus/*.bundle): tiny models of each supported
architecture and storage layout, with tokenizer and generation configs. Needs torch and
transformers; the output is committed, so this only reruns when the seeds should change.

    python fuzz/make_corpus.py [OUT_DIR]
"""
import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))

import fuzz_loader  # noqa: E402

SMALL = dict(hidden_size=8, num_attention_heads=2, num_key_value_heads=1, intermediate_size=12, vocab_size=24)
SEEDS = {
    # name: (tiny_models variant for the architecture, config overrides, dtype, shards)
    "llama-f32": ("llama-mha", {}, "f32", False),
    "llama3-bf16-sharded": ("llama3-rope", {}, "bf16", True),
    "mistral-window": ("mistral-window", dict(head_dim=4, sliding_window=3), "f32", False),
    "qwen2-tied": ("qwen2", dict(tie_word_embeddings=True), "bf16", False),
    "stablelm-partial": ("stablelm", dict(use_qkv_bias=True, rope_parameters={
        "rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5}), "f32", False),
}


def tokenizer_json() -> bytes:
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {w: i for i, w in enumerate(["<unk>", "<s>", "</s>", "hello", "world", "a", "b", "c"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return tok.to_str().encode()


def build(name, variant, overrides, dtype, shards, out_dir):
    import tiny_models

    arch, kwargs = tiny_models.VARIANTS[variant]
    kwargs = {**kwargs, **SMALL, **overrides}
    if "rope_parameters" in kwargs and kwargs["rope_parameters"].get("rope_type") == "llama3":
        kwargs["rope_parameters"] = {**kwargs["rope_parameters"], "original_max_position_embeddings": 8}
    saved = tiny_models.VARIANTS[variant]
    tiny_models.VARIANTS[variant] = (arch, kwargs)
    try:
        with tempfile.TemporaryDirectory() as folder:
            tiny_models.build(variant, folder, dtype=dtype, num_hidden_layers=1,
                              max_shard_size="1KB" if shards else None)
            files = {}
            for fname in fuzz_loader.FILES:
                path = os.path.join(folder, fname)
                if os.path.exists(path):
                    files[fname] = open(path, "rb").read()
            extra = sorted(set(os.listdir(folder)) - set(files) - {"generation_config.json"})
            if any(f.endswith(".safetensors") for f in extra):
                raise SystemExit(f"{name}: shards {extra} do not fit the bundle's two shard names")
            files["tokenizer.json"] = tokenizer_json()
            files["tokenizer_config.json"] = json.dumps({"bos_token": "<s>", "eos_token": {"content": "</s>"}}).encode()
            files["generation_config.json"] = json.dumps({"eos_token_id": [2, 3], "bos_token_id": 1}).encode()
    finally:
        tiny_models.VARIANTS[variant] = saved
    with open(os.path.join(out_dir, f"{name}.bundle"), "wb") as f:
        f.write(fuzz_loader.encode(files))


def build_gguf(out_dir):
    """A GGUF file (hearthlm.gguf_export: f32, a SentencePiece-style vocabulary of 300)."""
    import tiny_models
    from hearthlm.gguf_export import export_gguf

    with tempfile.TemporaryDirectory() as folder:
        tiny_models.build("llama-mha", folder, num_hidden_layers=1, **{**SMALL, "vocab_size": 300})
        with open(export_gguf(folder, "f32"), "rb") as f:
            files = {"model.gguf": f.read()}
    with open(os.path.join(out_dir, "llama-gguf.bundle"), "wb") as f:
        f.write(fuzz_loader.encode(files))


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "corpus")
    os.makedirs(out_dir, exist_ok=True)
    for name, spec in SEEDS.items():
        build(name, *spec, out_dir)
    build_gguf(out_dir)
    for f in sorted(os.listdir(out_dir)):
        print(f"{os.path.getsize(os.path.join(out_dir, f)):8d} {f}")


if __name__ == "__main__":
    main()
