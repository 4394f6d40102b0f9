import os
import sys

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"  # tests never download (before huggingface_hub reads it)

sys.path.insert(0, os.path.dirname(__file__))

import tiny_models  # noqa: E402


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """model_dir(variant, dtype="f32", **build_kwargs) -> folder, built once per session."""
    built = {}

    def get(name, dtype="f32", **kwargs):
        key = (name, dtype, tuple(sorted(kwargs.items())))
        if key not in built:
            folder = tmp_path_factory.mktemp(f"{name}-{dtype}")
            built[key] = tiny_models.build(name, str(folder), dtype=dtype, **kwargs)
        return built[key]

    return get


@pytest.fixture(scope="session")
def chat_model_dir(tmp_path_factory):
    """chat_model_dir(kind="bpe"|"spm") -> a tiny random Llama folder with a tokenizer
    (tiny_tokenizers) and a ChatML template that writes BOS, eos "<|im_end|>". Its
    lm_head row for eos is zero, so greedy decoding never ends a reply by itself."""
    import tiny_tokenizers
    from safetensors.numpy import load_file, save_file

    built = {}

    def get(kind="bpe"):
        if kind not in built:
            folder = str(tmp_path_factory.mktemp(f"chat-{kind}"))
            tiny_models.build("llama-mha", folder, vocab_size=384)
            tiny_tokenizers.add_tokenizer(folder, kind)
            path = os.path.join(folder, "model.safetensors")
            tensors = load_file(path)
            tensors["lm_head.weight"][tiny_tokenizers.SPECIALS.index("<|im_end|>")] = 0
            save_file(tensors, path, metadata={"format": "pt"})
            built[kind] = folder
        return built[kind]

    return get
