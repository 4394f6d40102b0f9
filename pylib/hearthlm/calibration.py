"""Importance weights for the K-quant quantizer (llama.cpp's "imatrix"): the model runs
on calibration text, and every matrix gets the mean squared activation of each of its
input columns, so the quantizer spends its precision where the activations are large.

The model runs in transformers (float32) with a hook on every nn.Linear: the module
names are the checkpoint's tensor names, so this works for every family transformers
knows, with no copy of the network here. Needs the `calibration` extra (torch,
transformers)."""
from __future__ import annotations

import os

import numpy as np

from .errors import InvalidInputError, ModelFormatError

CONTEXT = 512        # tokens per forward pass
MAX_TOKENS = 16384   # calibration tokens used at most


def read_text(path) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidInputError(f"calibration: cannot read {os.fspath(path)}: {e}") from None
    if not text.strip():
        raise InvalidInputError(f"calibration: {os.fspath(path)} holds no text")
    return text


def importance_from_text(folder: str, path) -> dict:
    """{tensor name: float32 [in_features]} mean squared input activations over the
    text's tokens (at most MAX_TOKENS, in windows of CONTEXT)."""
    text = read_text(path)
    try:
        import torch
        from transformers import AutoModelForCausalLM
    except ImportError:
        raise InvalidInputError("calibration: needs torch and transformers "
                                "(pip install 'hearthlm[calibration]')") from None
    from .tokenizer import Tokenizer

    if not os.path.exists(os.path.join(folder, "tokenizer.json")):
        raise ModelFormatError(f"{folder}: no tokenizer.json, so the calibration text cannot be encoded")
    ids = Tokenizer(folder).encode(text)[:MAX_TOKENS]
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    model.eval()
    sums: dict = {}

    def hook(name):
        def record(module, inputs, output):
            x = inputs[0].detach().reshape(-1, inputs[0].shape[-1]).double()
            total, count = sums.get(name, (0.0, 0))
            sums[name] = (total + (x * x).sum(0), count + x.shape[0])
        return record

    handles = [m.register_forward_hook(hook(f"{name}.weight"))
               for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    try:
        with torch.no_grad():
            for start in range(0, len(ids), CONTEXT):
                model(torch.tensor([ids[start:start + CONTEXT]]))
    finally:
        for h in handles:
            h.remove()
    out = {name: (total / count).float().numpy() for name, (total, count) in sums.items()}
    if getattr(model.config, "tie_word_embeddings", False) and "lm_head.weight" in out:
        out["model.embed_tokens.weight"] = out.pop("lm_head.weight")  # the one stored matrix
    return {name: np.ascontiguousarray(v, np.float32) for name, v in out.items()}
