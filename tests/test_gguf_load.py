"""hearthlm.load("model.gguf") on files made by llama.cpp's own tools from tiny random
models (tests/gguf_tools.py): logits against transformers on the HF folder, and
against llama.cpp on the same file when llama-cpp-python is installed; every matrix
converted exactly (hearthlm's blocks dequantize to the gguf package's dequantization
of the file's blocks); token ids against llama.cpp's on its vocabulary test files;
split files, chat, and hostile files."""
import glob
import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

import gguf_tools
import tiny_models
import tiny_tokenizers

import hearthlm
from hearthlm import _kernels
from hearthlm.errors import ModelFormatError, UnsupportedModelError
from hearthlm.gguf_export import permute_for_gguf
from hearthlm.perplexity_eval import log_softmax

gguf = pytest.importorskip("gguf")

# variant: (tokenizer: "sp" SentencePiece model | "bpe" | "spm" tokenizer.json, BPE pre name, overrides).
# Overrides give llama.cpp's fixed values where a GGUF cannot carry the HF one.
FAMILIES = {
    "llama-gqa-tied": ("sp", None, {}),
    "llama-bias": ("spm", None, {}),
    "llama3-rope": ("spm", None, {}),
    "qwen2": ("bpe", "qwen2", {}),
    "qwen3": ("bpe", "qwen2", {}),
    "qwen3-moe": ("bpe", "qwen2", {"mlp_only_layers": []}),  # the converter maps no dense layer in an MoE
    "gemma2": ("sp", None, {"query_pre_attn_scalar": 14}),   # llama.cpp: 1/sqrt(head_dim)
    "gemma3": ("bpe", "default", {"num_hidden_layers": 7, "sliding_window_pattern": 6, "query_pre_attn_scalar": 18,
                                  "rope_parameters": {"full_attention": {"rope_type": "linear", "factor": 2.0,
                                                                         "rope_theta": 1e6},
                                                      "sliding_attention": {"rope_type": "default",
                                                                            "rope_theta": 10000.0}}}),
    "phi3-window": ("sp", None, {}),
    "phi3-longrope": ("sp", None, {}),
    "olmo2": ("bpe", "dbrx", {}),
    "granite": ("bpe", "gpt-2", {}),
    "stablelm": ("bpe", "stablelm2", {}),
    "smollm3": ("bpe", "smollm", {"no_rope_layer_interval": 4, "num_hidden_layers": 4}),  # llama.cpp's fixed 4
}
# 256-wide models (K-quant super-blocks) for llama.cpp's quantizer.
WIDE = {"llama-wide": ("llama-gqa-tied", "sp", None, dict(hidden_size=256, num_attention_heads=4,
                                                          num_key_value_heads=2, intermediate_size=512)),
        "qwen2-wide": ("qwen2", "bpe", "qwen2", dict(hidden_size=256, num_attention_heads=4, num_key_value_heads=2,
                                                     intermediate_size=512))}
# KL(transformers f32 || hearthlm on the file), nats/token on random ids: about twice what
# was measured (the quantizer's error on random weights; exactness is check_exact's job).
KL_BOUND = {"F16": 1e-4, "BF16": 2e-3, "Q8_0": 6e-3, "Q6_K": 4e-2, "Q5_0": 0.15, "Q5_K_M": 0.1,
            "Q4_1": 0.35, "Q4_0": 0.45, "Q4_K_M": 0.35}


@pytest.fixture(scope="session")
def llama_cpp_src():
    src = gguf_tools.llama_cpp_source()
    if src is None:
        pytest.skip("llama.cpp's converter: the llama-cpp-python sdist could not be downloaded")
    return src


def make_folder(root, name, variant, kind, overrides) -> str:
    folder = os.path.join(root, name)
    os.makedirs(folder)
    if kind == "sp":
        n = gguf_tools.add_sentencepiece(folder)
    else:
        tiny_tokenizers.add_tokenizer(folder, kind)
        with open(os.path.join(folder, "tokenizer.json")) as f:
            tokenizer = json.load(f)
        n = len(tokenizer["model"]["vocab"]) + len(tokenizer["added_tokens"])  # as Gemma 3's converter counts
    return tiny_models.build(variant, folder, vocab_size=n, **overrides)


@pytest.fixture(scope="session")
def converted(tmp_path_factory, llama_cpp_src):
    """{(name, outtype): (HF folder, GGUF path)}: every family in f32, two also in
    f16 / bf16 / q8_0, the wide models in f32 (for the quantizer), in one converter run."""
    root = str(tmp_path_factory.mktemp("gguf"))
    folders, jobs, out = {}, [], {}
    for name, (kind, pre, overrides) in FAMILIES.items():
        folders[name] = (make_folder(root, name, name, kind, overrides), pre)
    for name, (variant, kind, pre, overrides) in WIDE.items():
        folders[name] = (make_folder(root, name, variant, kind, overrides), pre)
    for name, (folder, pre) in folders.items():
        types = ["f32", "f16", "bf16", "q8_0"] if name in ("llama-gqa-tied", "qwen2") else ["f32"]
        for t in types:
            path = os.path.join(root, f"{name}-{t}.gguf")
            jobs.append((folder, t, path, pre))
            out[(name, t.upper())] = (folder, path)
    split = os.path.join(root, "split", "qwen3.gguf")
    os.makedirs(os.path.dirname(split))
    jobs.append((folders["qwen3"][0], "f32", split, "qwen2", ["--split-max-tensors", "8"]))
    gguf_tools.convert(llama_cpp_src, jobs)
    return out


@pytest.fixture(scope="session")
def quantized(converted, tmp_path_factory):
    """{(name, llama.cpp type): (HF folder, GGUF path)} made by llama.cpp's quantizer."""
    quantize = gguf_tools.quantizer()
    if quantize is None:
        pytest.skip("no llama.cpp quantizer (tools/install_llama_cpp.sh, or llama-quantize on PATH)")
    root = str(tmp_path_factory.mktemp("gguf-q"))
    out = {}
    for name in WIDE:
        folder, src = converted[(name, "F32")]
        for ftype in ("Q4_0", "Q4_1", "Q5_0", "Q8_0", "Q4_K_M", "Q5_K_M", "Q6_K"):
            dst = os.path.join(root, f"{name}-{ftype}.gguf")
            quantize(src, dst, ftype)
            out[(name, ftype)] = (folder, dst)
    return out


def ids_for(vocab: int, n: int = 24) -> np.ndarray:
    return np.random.default_rng(0).integers(0, vocab, n)


def reference_logits(folder: str, ids) -> np.ndarray:
    import torch

    model = tiny_models.reference_model(folder)
    with torch.no_grad():
        return model(torch.tensor(np.asarray(ids)[None])).logits[0].float().numpy()


def mean_kl(ref: np.ndarray, ours: np.ndarray) -> float:
    lp, lq = log_softmax(ref), log_softmax(ours)
    return float((np.exp(lp) * (lp - lq)).sum(-1).mean())


def check_exact(model, path: str) -> dict:
    """Every matrix hearthlm holds dequantizes to exactly the gguf package's reading
    of the file's tensor (after llama.cpp's Q/K permutation). Returns {format: count}."""
    g = hearthlm.gguf_load.GGUFFile(path)
    reader = model.transformer.weights.reader
    arch = g.get("general.architecture")
    seen = {}
    for name, w in model.transformer.weights.tensors.items():
        if w.ndim == 1 and name not in reader.formats:
            continue
        fmt = reader.formats[name]
        shape = model.transformer.weights.specs[name]
        if fmt in ("f32", "f16"):
            ours = w.astype(np.float32)
        elif fmt == "bf16":
            ours = (w.astype(np.uint32) << 16).view(np.float32)
        else:
            ours = np.empty(shape, np.float32)
            _kernels.dequantize(ours, w, fmt)
        gname, index = reader.source(name)
        t = g.tensors[gname]
        theirs = gguf.quants.dequantize(t.data if index is None else t.data[index], t.ggml_type).reshape(shape)
        heads = {"q_proj": model.args.num_attention_heads, "k_proj": model.args.num_key_value_heads}.get(
            name.split(".")[-2])
        if heads and arch in hearthlm.gguf_load.PERMUTED:
            ours = permute_for_gguf(ours, heads)
        np.testing.assert_array_equal(ours, theirs.astype(np.float32), err_msg=f"{path}: {name} ({fmt})")
        seen[fmt] = seen.get(fmt, 0) + 1
    return seen


@pytest.mark.parametrize("name", FAMILIES)
def test_family_f32_matches_transformers(converted, name):
    folder, path = converted[(name, "F32")]
    model = hearthlm.load(path)
    assert model.args.architecture == hearthlm.models.model_args(hearthlm.models.read_config(folder),
                                                                   folder).architecture
    ids = ids_for(model.vocab_size)
    ref = reference_logits(folder, ids)[:, :model.vocab_size]  # Gemma 3's converter drops unused rows
    ours = model.logits(ids)
    np.testing.assert_allclose(ours, ref, atol=2e-5 * max(1.0, np.abs(ref).max()), rtol=0)
    assert check_exact(model, path) == {"f32": len(model.transformer.weights.reader.formats)}
    assert model.load_stats["mapped_bytes"] + model.load_stats["copied_bytes"] > 0  # used as stored


@pytest.mark.parametrize("outtype", ["F16", "BF16"])
def test_copied_weights_match_mapped(converted, outtype):
    """hearthlm.load(mmap=False) copies the tensors used as stored; the logits are the same."""
    path = converted[("qwen2", outtype)][1]
    mapped, copied = hearthlm.load(path, mmap=True), hearthlm.load(path, mmap=False)
    ids = ids_for(mapped.vocab_size)
    np.testing.assert_array_equal(mapped.logits(ids), copied.logits(ids))
    assert copied.load_stats["copied_bytes"] == mapped.load_stats["mapped_bytes"] > 0
    assert copied.load_stats["mapped_bytes"] == mapped.load_stats["copied_bytes"] == 0


@pytest.mark.parametrize("name", ["llama-gqa-tied", "qwen2"])
@pytest.mark.parametrize("outtype", ["F16", "BF16", "Q8_0"])
def test_converter_types(converted, name, outtype):
    folder, path = converted[(name, outtype)]
    model = hearthlm.load(path)
    formats = check_exact(model, path)
    # qwen2's 56-wide rows are no multiple of Q8_0's 32: the converter writes f16 instead
    expected = "f16" if (name, outtype) == ("qwen2", "Q8_0") else {"F16": "f16", "BF16": "bf16", "Q8_0": "q8"}[outtype]
    assert expected in formats, formats
    ids = ids_for(model.vocab_size)
    kl = mean_kl(reference_logits(folder, ids), model.logits(ids))
    assert 0 <= kl < KL_BOUND[outtype], kl
    if outtype != "Q8_0":
        assert model.load_stats["mapped_bytes"] + model.load_stats["copied_bytes"] > model.load_stats["converted_bytes"]


@pytest.mark.parametrize("ftype", ["Q4_0", "Q4_1", "Q5_0", "Q8_0", "Q4_K_M", "Q5_K_M", "Q6_K"])
@pytest.mark.parametrize("name", list(WIDE))
def test_llama_cpp_quantizer_types(quantized, name, ftype):
    folder, path = quantized[(name, ftype)]
    model = hearthlm.load(path)
    formats = check_exact(model, path)
    expected = {"Q4_0": "q4", "Q4_1": "f32", "Q5_0": "q8", "Q8_0": "q8", "Q4_K_M": "q4k", "Q5_K_M": "q5k",
                "Q6_K": "q6k"}[ftype]
    assert expected in formats, formats
    ids = ids_for(model.vocab_size)
    kl = mean_kl(reference_logits(folder, ids), model.logits(ids))
    assert 0 <= kl < KL_BOUND[ftype], kl


def llama_cpp_logits(path: str, ids) -> np.ndarray:
    """llama.cpp's logits at every position, with an f32 KV cache, in a child process
    (its extra buffer types are off, and tools/install_llama_cpp.sh builds it without AMX:
    ggml's AMX path crashes in some VMs)."""
    code = ("import sys, json, numpy as np, llama_cpp\n"
            "ids = json.loads(sys.argv[2])\n"
            "llm = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=64, n_threads=2, logits_all=True, verbose=False,"
            " use_extra_bufts=False, type_k=0, type_v=0)\n"
            "llm.eval(ids)\n"
            "np.save(sys.stdout.buffer, np.array(llm.scores[:len(ids)], np.float32))\n")
    r = subprocess.run([sys.executable, "-c", code, path, json.dumps([int(i) for i in ids])], capture_output=True,
                       timeout=300)
    if r.returncode:
        pytest.fail(f"llama.cpp failed on {path}: {r.stderr.decode()[-2000:]}")
    import io
    return np.load(io.BytesIO(r.stdout))


# llama.cpp's Gemma 3 differs by ~1e-3 of the logits' scale (hearthlm matches transformers
# to 2e-5): its CPU GELU rounds to fp16 (test_llama_cpp_gemma3_is_transformers_with_fp16_gelu).
# Its Phi-3 sliding window differs from transformers' (not compared here).
LLAMA_CPP_TOLERANCE = {"llama-gqa-tied": 2e-4, "qwen2": 2e-4, "qwen3": 2e-4, "olmo2": 2e-4, "gemma3": 2e-3}


@pytest.mark.parametrize("name", LLAMA_CPP_TOLERANCE)
def test_logits_match_llama_cpp(converted, name):
    pytest.importorskip("llama_cpp")
    folder, path = converted[(name, "F32")]
    model = hearthlm.load(path)
    ids = ids_for(model.vocab_size, 16)
    theirs = llama_cpp_logits(path, ids)
    ours = model.logits(ids)
    atol = LLAMA_CPP_TOLERANCE[name] * max(1.0, np.abs(theirs).max())
    np.testing.assert_allclose(ours, theirs, atol=atol, rtol=0)


def test_llama_cpp_gemma3_is_transformers_with_fp16_gelu(converted):
    """Why llama.cpp's Gemma 3 is 1e-3 off: ggml's CPU GELU (GGML_GELU_FP16 in
    ggml-cpu/vec.h) rounds its input to fp16 and reads the result from an fp16 table.
    transformers with that GELU lands about 3x closer to llama.cpp (measured: 1.0e-3 ->
    3.1e-4 of the logits' scale) than plain transformers, which hearthlm follows."""
    import torch

    class Fp16Gelu(torch.nn.Module):
        def __init__(self, act):
            super().__init__()
            self.act = act

        def forward(self, x):
            y = self.act(x.half().float()).half().float()
            return torch.where(x <= -10, torch.zeros_like(x), torch.where(x >= 10, x, y))

    pytest.importorskip("llama_cpp")
    folder, path = converted[("gemma3", "F32")]
    ids = ids_for(hearthlm.load(path).vocab_size, 16)
    theirs = llama_cpp_logits(path, ids)
    model = tiny_models.reference_model(folder)
    with torch.no_grad():
        plain = model(torch.tensor(ids[None])).logits[0, :, :theirs.shape[1]].float().numpy()
        for layer in model.model.layers:
            layer.mlp.act_fn = Fp16Gelu(layer.mlp.act_fn)
        fp16_gelu = model(torch.tensor(ids[None])).logits[0, :, :theirs.shape[1]].float().numpy()
    scale = np.abs(theirs).max()
    plain_gap, fp16_gap = np.abs(theirs - plain).max() / scale, np.abs(theirs - fp16_gelu).max() / scale
    assert fp16_gap < 5e-4 and fp16_gap < plain_gap / 2, (fp16_gap, plain_gap)


@pytest.mark.parametrize("ftype", ["Q4_0", "Q4_1", "Q5_0", "Q8_0", "Q4_K_M", "Q5_K_M", "Q6_K"])
@pytest.mark.parametrize("name", list(WIDE))
def test_quantized_logits_match_llama_cpp(quantized, name, ftype):
    """The same file in llama.cpp and hearthlm: both dequantize to the same weights
    (check_exact), and each rounds its activations to 8 bits its own way, so they agree
    far more closely with each other than either does with the f32 model (measured:
    KL(llama.cpp || hearthlm) is 0.17-0.23 of KL(f32 || llama.cpp), and hearthlm's own
    KL to f32 within 0.96-1.04 of llama.cpp's)."""
    pytest.importorskip("llama_cpp")
    folder, path = quantized[(name, ftype)]
    model = hearthlm.load(path)
    ids = ids_for(model.vocab_size, 16)
    theirs, ours, ref = llama_cpp_logits(path, ids), model.logits(ids), reference_logits(folder, ids)
    quant_error = mean_kl(ref, theirs)
    assert mean_kl(theirs, ours) < 0.35 * quant_error, (mean_kl(theirs, ours), quant_error)
    assert mean_kl(ref, ours) < 1.1 * quant_error, (mean_kl(ref, ours), quant_error)


@pytest.mark.parametrize("dtype", ["q4k", "q8", "bf16"])
def test_dtype_converts_like_the_folder(converted, dtype):
    """load(f32 GGUF, dtype=d) holds the weights load(its HF folder, dtype=d) does: the
    same values (llama.cpp's Q/K row order undone) quantized or converted alike."""
    folder, path = converted[("llama-gqa-tied", "F32")]
    ours, folder_model = hearthlm.load(path, dtype=dtype), hearthlm.load(folder, dtype=dtype)
    assert ours.dtype == dtype and ours.fingerprint != hearthlm.load(path).fingerprint
    formats = ours.transformer.weights.reader.formats
    for name, w in ours.transformer.weights.tensors.items():
        if name in formats:
            assert formats[name] == folder_model.transformer.weights.reader.wtype_for(name), name
            np.testing.assert_array_equal(w, folder_model.transformer.weights.tensors[name], err_msg=name)
    ids = ids_for(ours.vocab_size)
    np.testing.assert_array_equal(ours.logits(ids), folder_model.logits(ids))


def test_dtype_keeps_tensors_already_in_its_format(quantized):
    """A Q4_K_M file: as q4k every tensor is llama.cpp's block for block (its recipe is
    the q4k mix); as q5k its Q6_K tensors stay, and its Q4_K ones are quantized again
    from their values: a second rounding, so KL to f32 a little above the file's own
    (measured: 0.152 against 0.143)."""
    folder, path = quantized[("llama-wide", "Q4_K_M")]
    stored = hearthlm.load(path)
    stored_formats = stored.transformer.weights.reader.formats
    ids = ids_for(stored.vocab_size, 16)
    ref, stored_logits = reference_logits(folder, ids), stored.logits(ids)
    as_q4k = hearthlm.load(path, dtype="q4k")
    assert as_q4k.transformer.weights.reader.formats == stored_formats
    np.testing.assert_array_equal(as_q4k.logits(ids), stored_logits)
    as_q5k = hearthlm.load(path, dtype="q5k")
    formats = as_q5k.transformer.weights.reader.formats
    assert {n for n, f in formats.items() if f == "q6k"} == {n for n, f in stored_formats.items() if f == "q6k"}
    assert {formats[n] for n, f in stored_formats.items() if f == "q4k"} == {"q5k"}
    for name, fmt in formats.items():
        if fmt == "q6k":
            np.testing.assert_array_equal(as_q5k.transformer.weights.tensors[name],
                                          stored.transformer.weights.tensors[name], err_msg=name)
    kl_stored, kl_q5k = mean_kl(ref, stored_logits), mean_kl(ref, as_q5k.logits(ids))
    assert kl_stored < kl_q5k < 1.2 * kl_stored, (kl_stored, kl_q5k)


def test_impossible_dtype_requests_are_named(converted):
    path = converted[("llama-gqa-tied", "F32")][1]
    with pytest.raises(hearthlm.errors.InvalidInputError, match="dtype: expected one of .*got 'q3'"):
        hearthlm.load(path, dtype="q3")
    with pytest.raises(hearthlm.errors.InvalidInputError, match="head_dtype: .* only when dtype is a quantized"):
        hearthlm.load(path, head_dtype="q8")
    with pytest.raises(hearthlm.errors.InvalidInputError, match="head_dtype: expected one of"):
        hearthlm.load(path, dtype="q4k", head_dtype="f32")


def test_split_gguf(converted):
    folder, whole = converted[("qwen3", "F32")]
    shards = sorted(glob.glob(os.path.join(os.path.dirname(whole), "split", "qwen3-*-of-*.gguf")))
    assert len(shards) >= 3, shards
    first = shards[0]
    ids = ids_for(200)
    np.testing.assert_array_equal(hearthlm.load(first).logits(ids), hearthlm.load(whole).logits(ids))
    with pytest.raises(ModelFormatError, match="first file of a split"):
        hearthlm.load(first.replace("00001-of", "00002-of"))


# ---- tokenizer ------------------------------------------------------------------------------

VOCABS = ["llama-spm", "llama-bpe", "qwen2", "phi-3", "gpt-2", "starcoder"]
TEXT = ("Hello  world!\n\n\tTabs and   runs of spaces,  digits 1234567 3.14 and ünïcödé — 日本語 🦙🦙 "
        "<|im_start|>user\nhi<|im_end|> <s> </s>  trailing ")


@pytest.mark.parametrize("vocab", VOCABS)
def test_tokenizer_matches_llama_cpp_test_files(llama_cpp_src, vocab):
    """llama.cpp's own tokenizer tests: models/ggml-vocab-*.gguf, .inp texts, .out ids."""
    from hearthlm.gguf_tokenizer import gguf_tokenizer

    base = os.path.join(llama_cpp_src, "models", f"ggml-vocab-{vocab}.gguf")
    tok, _ = gguf_tokenizer(hearthlm.gguf_load.GGUFFile(base))
    with open(base + ".inp", encoding="utf-8") as f:
        texts = f.read().split("\n__ggml_vocab_test__\n")
    with open(base + ".out", encoding="utf-8") as f:
        wanted = f.read().split("\n")
    assert len(texts) > 30
    for text, want in zip(texts, wanted):
        assert tok.encode(text, add_special_tokens=False) == [int(i) for i in want.split()], repr(text)


@pytest.mark.parametrize("source", ["vocab:llama-spm", "vocab:llama-bpe", "vocab:qwen2", "vocab:phi-3",
                                    "model:llama-gqa-tied", "model:qwen2", "model:gemma2"])
def test_tokenizer_matches_llama_cpp_with_special_tokens(llama_cpp_src, converted, source):
    """A varied text with special tokens, BOS added, against llama-cpp-python's
    tokenizer on the same file (vocab_only: no compute)."""
    llama_cpp = pytest.importorskip("llama_cpp")
    from hearthlm.gguf_tokenizer import gguf_tokenizer

    kind, name = source.split(":")
    path = (os.path.join(llama_cpp_src, "models", f"ggml-vocab-{name}.gguf") if kind == "vocab"
            else converted[(name, "F32")][1])
    tok, _ = gguf_tokenizer(hearthlm.gguf_load.GGUFFile(path))
    llm = llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False)
    for text in (TEXT, " " + TEXT, "<|im_start|>" + TEXT, ""):
        want = llm.tokenize(text.encode(), add_bos=True, special=True)
        assert tok.encode(text) == want, repr(text)


def test_generation_config_and_chat_template(converted):
    model = hearthlm.load(converted[("qwen2", "F32")][1])
    tok = model.tokenizer
    assert tok.eos_token == "<|im_end|>" and tok.token_to_id("<|im_end|>") in model.eos_token_ids
    assert tok.config["chat_template"] == tiny_tokenizers.CHATML_WITH_BOS
    reply = model.chat([{"role": "user", "content": "hi"}], max_new_tokens=5, temperature=0, return_result=True)
    assert reply.completion_tokens == 5 or reply.finish_reason == "stop"


def test_q4_k_m_file_chats_in_the_cli(quantized):
    """Done-when of issue 14: a Q4_K_M GGUF written by llama.cpp chats in `hearthlm chat`."""
    path = quantized[("qwen2-wide", "Q4_K_M")][1]
    r = subprocess.run([sys.executable, "-m", "hearthlm", "chat", path, "--max-tokens", "8", "--temperature", "0"],
                       input="What is 12 plus 7?\n", capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    model = hearthlm.load(path)
    expected = model.chat([{"role": "user", "content": "What is 12 plus 7?"}], max_new_tokens=8, temperature=0)
    assert expected.strip() and expected.strip() in r.stdout


# ---- bad input ------------------------------------------------------------------------------

def write_gguf(path, tensors=(("token_embd.weight", np.zeros((4, 32), np.float32)),), arch="llama", qtype=None,
               **fields) -> str:
    w = gguf.GGUFWriter(path, arch)
    for key, value in fields.items():
        w.add_uint32(key, value) if isinstance(value, int) else w.add_string(key, value)
    for name, arr in tensors:
        w.add_tensor(name, arr, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_unsupported_tensor_type_names_tensor_and_type(tmp_path, converted):
    """blk.0.attn_v.weight retyped from F32 to I32 (the same bytes per element)."""
    src = converted[("llama-gqa-tied", "F32")][1]
    i = tensor_entry_offset(src, "blk.0.attn_v.weight")
    path = corrupt(src, str(tmp_path / "i32.gguf"), lambda b: struct.pack_into("<I", b, i + 20, 26))
    with pytest.raises(UnsupportedModelError, match="'blk.0.attn_v.weight' has type I32"):
        hearthlm.load(path)


def test_unknown_architecture(tmp_path):
    path = write_gguf(str(tmp_path / "x.gguf"), arch="mamba")
    with pytest.raises(UnsupportedModelError, match="general.architecture 'mamba'"):
        hearthlm.load(path)


def corrupt(src: str, dst: str, edit) -> str:
    blob = bytearray(open(src, "rb").read())
    edit(blob)
    open(dst, "wb").write(bytes(blob))
    return dst


HOSTILE = {
    "truncated": (lambda b: b.__delitem__(slice(len(b) // 2, None)), "truncated|past the end"),
    "bad magic": (lambda b: b.__setitem__(slice(0, 4), b"GGUX"), "GGUF magic"),
    "version": (lambda b: struct.pack_into("<I", b, 4, 99), "version 99"),
    "huge tensor count": (lambda b: struct.pack_into("<Q", b, 8, 2 ** 60), "cannot fit"),
    "huge string length": (lambda b: struct.pack_into("<Q", b, 24, 2 ** 62), "string length"),
    "empty": (lambda b: b.__delitem__(slice(0, None)), "ends at byte 0"),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_headers(tmp_path, case):
    edit, message = HOSTILE[case]
    src = write_gguf(str(tmp_path / "ok.gguf"))
    path = corrupt(src, str(tmp_path / "bad.gguf"), edit)
    with pytest.raises(ModelFormatError, match=message) as e:
        hearthlm.load(path)
    assert "bad.gguf" in str(e.value)


def tensor_entry_offset(path: str, name: str) -> int:
    """Byte offset of tensor `name`'s entry (its n_dims field) in the header."""
    blob = open(path, "rb").read()
    i = blob.index(name.encode()) + len(name)
    return i


@pytest.mark.parametrize("field,value,message", [
    ("dims", 2 ** 40, "too large"), ("dims", 0, "not positive"), ("n_dims", 9, "9 dimensions"),
    ("offset", 3, "not aligned"), ("offset", 2 ** 40, "past the end"), ("type", 99, "unknown ggml type 99")])
def test_hostile_tensor_entries(tmp_path, field, value, message):
    src = write_gguf(str(tmp_path / "ok.gguf"))
    i = tensor_entry_offset(src, "token_embd.weight")  # n_dims u32, 2 dims u64, type u32, offset u64
    at = {"n_dims": (i, "<I"), "dims": (i + 4, "<Q"), "type": (i + 20, "<I"), "offset": (i + 24, "<Q")}[field]
    path = corrupt(src, str(tmp_path / "bad.gguf"), lambda b: struct.pack_into(at[1], b, at[0], value))
    with pytest.raises(ModelFormatError, match=message) as e:
        hearthlm.load(path)
    assert "token_embd.weight" in str(e.value) and "bad.gguf" in str(e.value)


def test_bad_alignment_and_metadata(tmp_path):
    path = write_gguf(str(tmp_path / "a.gguf"), **{"general.alignment": 3})
    with pytest.raises(ModelFormatError, match="general.alignment"):
        hearthlm.load(path)
    path = write_gguf(str(tmp_path / "b.gguf"), **{"llama.attention.head_count": 4, "llama.embedding_length": "wide"})
    with pytest.raises(ModelFormatError, match="llama.embedding_length"):
        hearthlm.load(path)
    with pytest.raises(ModelFormatError, match="no such file|cannot open"):
        hearthlm.load(str(tmp_path / "missing.gguf"))


def test_json_schema_constraint_on_a_gguf_model(converted):
    """llguidance gets the tokenizer rebuilt from the file."""
    pytest.importorskip("llguidance")
    model = hearthlm.load(converted[("qwen2", "F32")][1])
    out = model.generate("hi", max_new_tokens=40, temperature=0, json_schema={"type": "boolean"})
    assert json.loads(out) in (True, False)
