"""hearthlm.perplexity / `hearthlm perplexity` against transformers: the same chunks
(llama.cpp's method: n_ctx tokens, BOS first, the second half scored) through the
reference model, its own loss (labels with -100 on the unscored half) and its logits
for KL divergence."""
import json
import math

import numpy as np
import pytest

import hearthlm
import tiny_tokenizers
from hearthlm import cli

N_CTX = 32
TEXT = " ".join(tiny_tokenizers.CORPUS[:12])


def reference(folder, model, n_ctx, judged_logits=None):
    """On llama.cpp's chunks: (perplexity from transformers' loss; with judged_logits,
    mean KL(transformers || judged) over the scored positions and the share of the same
    top token)."""
    import torch
    from transformers import AutoModelForCausalLM

    ref = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    ids = model.tokenizer.encode(TEXT)
    first, losses, kls, same = n_ctx // 2, [], [], []
    for c in range(len(ids) // n_ctx):
        chunk = torch.tensor([[model.tokenizer.bos_token_id] + ids[c * n_ctx + 1:(c + 1) * n_ctx]])
        labels = chunk.clone()
        labels[0, :first + 1] = -100  # scored: the predictions made at positions first .. n_ctx-2
        with torch.no_grad():
            out = ref(chunk, labels=labels)
        losses.append(out.loss.item())
        if judged_logits is not None:
            p = torch.log_softmax(out.logits[0, first:-1].double(), -1)
            q = torch.log_softmax(torch.tensor(judged_logits(chunk[0].tolist())[first:-1], dtype=torch.float64), -1)
            kls.append(float((p.exp() * (p - q)).sum(-1).mean()))
            same.append(float((p.argmax(-1) == q.argmax(-1)).double().mean()))
    return math.exp(np.mean(losses)), (np.mean(kls) if kls else None), (np.mean(same) if same else None)


@pytest.fixture(scope="module")
def folder(chat_model_dir):
    return chat_model_dir("bpe")


def test_perplexity_matches_transformers(folder):
    model = hearthlm.load(folder)
    calls = []
    r = hearthlm.perplexity(model, TEXT, n_ctx=N_CTX, progress=lambda d, t: calls.append((d, t)))
    n_tokens = len(model.tokenizer.encode(TEXT))
    assert r.chunks == n_tokens // N_CTX >= 2 and r.tokens == r.chunks * (N_CTX - 1 - N_CTX // 2)
    assert calls == [(i + 1, r.chunks) for i in range(r.chunks)]
    expected, _, _ = reference(folder, model, N_CTX)
    assert r.perplexity == pytest.approx(expected, rel=1e-5)  # measured 5e-8 (avx512)
    assert r.chunk_perplexities[-1] == r.perplexity and 0 < r.uncertainty < r.perplexity
    assert hearthlm.perplexity(model, TEXT, n_ctx=N_CTX, max_chunks=1).chunks == 1


def test_kl_divergence_against_a_base_model(folder):
    base = hearthlm.load(folder)  # f32
    quantized = hearthlm.load(folder, dtype="q4")
    r = hearthlm.perplexity(quantized, TEXT, n_ctx=N_CTX, base=base)
    # KL(transformers f32 || hearthlm q4), computed by torch over the same positions
    _, kl, same = reference(folder, base, N_CTX, judged_logits=quantized.logits)
    assert r.kl_divergence == pytest.approx(kl, rel=1e-4) and r.kl_divergence > 0  # measured 4e-8
    assert r.same_top_token == pytest.approx(same)
    assert r.base_perplexity == pytest.approx(hearthlm.perplexity(base, TEXT, n_ctx=N_CTX).perplexity)
    itself = hearthlm.perplexity(base, TEXT, n_ctx=N_CTX, base=base)
    assert itself.kl_divergence == 0 and itself.same_top_token == 1


def test_perplexity_input_errors(folder, model_dir):
    model = hearthlm.load(folder)
    with pytest.raises(hearthlm.InvalidInputError, match=r"text: \d+ tokens; perplexity with n_ctx=256 needs"):
        hearthlm.perplexity(model, TEXT, n_ctx=256)
    with pytest.raises(hearthlm.InvalidInputError, match="n_ctx: expected an integer in"):
        hearthlm.perplexity(model, TEXT, n_ctx=1000)
    with pytest.raises(hearthlm.InvalidInputError, match="base: its vocabulary has 257 tokens"):
        hearthlm.perplexity(model, TEXT, n_ctx=N_CTX, base=hearthlm.load(model_dir("llama-mha")))


def test_cli_json(folder, tmp_path, capsys):
    text = tmp_path / "text.txt"
    text.write_text(TEXT, encoding="utf-8")
    assert cli.main(["perplexity", folder, str(text), "--ctx", str(N_CTX), "--kl-base", folder, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["perplexity"] == pytest.approx(hearthlm.perplexity(hearthlm.load(folder), TEXT, n_ctx=N_CTX).perplexity)
    assert out["tokens"] > 0 and out["kl_divergence"] == 0 and out["same_top_token"] == 1
    text.write_bytes(b"caf\xe9")
    assert cli.main(["perplexity", folder, str(text)]) == 1
    assert "text.txt: cannot read the text" in capsys.readouterr().err
    text.write_text("short", encoding="utf-8")
    assert cli.main(["perplexity", folder, str(text), "--ctx", "8"]) == 1
    assert "needs at least 16 (two chunks)" in capsys.readouterr().err


def test_row_blocks_do_not_change_the_result(folder, monkeypatch):
    from hearthlm import perplexity_eval as ppl
    model = hearthlm.load(folder)
    whole = ppl.perplexity(model, TEXT, n_ctx=N_CTX, base=model)
    monkeypatch.setattr(ppl, "ROWS", 4)  # 15 scored positions per chunk: blocks of 4, 4, 4, 3
    blocks = ppl.perplexity(model, TEXT, n_ctx=N_CTX, base=model)
    assert blocks.perplexity == pytest.approx(whole.perplexity, rel=1e-12) and blocks.tokens == whole.tokens
