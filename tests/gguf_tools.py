"""llama.cpp's own tools for making GGUF test files: the converter
(convert_hf_to_gguf.py, pure Python, with its gguf-py) and vocabulary test files
(models/ggml-vocab-*.gguf with .inp/.out token ids) from the llama-cpp-python sdist,
downloaded once with pip into $HEARTHLM_CACHE/llama.cpp (or $HEARTHLM_LLAMA_CPP_SRC: a
llama.cpp source tree); and a quantizer: llama-cpp-python's llama_model_quantize if
installed (tools/install_llama_cpp.sh builds it, as CI does), else a llama-quantize binary
($HEARTHLM_LLAMA_QUANTIZE or on PATH)."""
from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile

SDIST = "llama-cpp-python==0.3.36"
FTYPES = {"Q4_0": 2, "Q4_1": 3, "Q5_0": 8, "Q8_0": 7, "Q4_K_M": 15, "Q5_K_M": 17, "Q6_K": 18}  # llama_ftype
KEEP = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/", "models/ggml-vocab-")


def cache_dir() -> str:
    root = os.environ.get("HEARTHLM_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "hearthlm")
    return os.path.join(root, "llama.cpp")


def llama_cpp_source() -> str:
    """A llama.cpp source tree with the converter; None if it cannot be had."""
    given = os.environ.get("HEARTHLM_LLAMA_CPP_SRC")
    if given:
        return given
    found = glob.glob(os.path.join(cache_dir(), "*", "vendor", "llama.cpp", "convert_hf_to_gguf.py"))
    if found:
        return os.path.dirname(found[0])
    with tempfile.TemporaryDirectory() as tmp:
        r = subprocess.run([sys.executable, "-m", "pip", "download", SDIST, "--no-deps", "--no-binary", "llama-cpp-python",
                            "-d", tmp, "-q"], capture_output=True, text=True)
        archives = glob.glob(os.path.join(tmp, "*.tar.gz"))
        if r.returncode or not archives:
            return None
        staging = cache_dir() + f".tmp-{os.getpid()}"
        with tarfile.open(archives[0]) as tar:
            members = [m for m in tar.getmembers()
                       if "/vendor/llama.cpp/" in m.name and
                       m.name.split("/vendor/llama.cpp/", 1)[1].startswith(KEEP)]
            tar.extractall(staging, members=members, filter="data")
        os.makedirs(os.path.dirname(cache_dir()), exist_ok=True)
        if not os.path.exists(cache_dir()):
            os.replace(staging, cache_dir())
        shutil.rmtree(staging, ignore_errors=True)
    return llama_cpp_source()


SHIM = r"""
import json, sys
src, jobs = sys.argv[1], json.loads(sys.argv[2])
sys.path[:0] = [src, src + "/gguf-py"]
import traceback
import conversion.base as base
import convert_hf_to_gguf
failed = []
for folder, outtype, out, pre, *extra in jobs:
    if pre:  # tiny trained tokenizers hash to no known pre-tokenizer: name the one meant
        base.TextModel.get_vocab_base_pre = lambda self, tokenizer, pre=pre: pre
    sys.argv = ["convert_hf_to_gguf.py", folder, "--outtype", outtype, "--outfile", out, *(extra[0] if extra else [])]
    try:
        convert_hf_to_gguf.main()
    except BaseException:
        failed.append(folder + ":\n" + traceback.format_exc()[-1500:])
sys.exit("\n".join(failed) if failed else 0)
"""


def convert(src: str, jobs: list) -> None:
    """jobs: (HF folder, outtype f32|f16|bf16|q8_0, out path, BPE pre name or None[,
    more converter arguments]),
    converted in one process (the converter's imports take seconds)."""
    r = subprocess.run([sys.executable, "-c", SHIM, src, json.dumps(jobs)], capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"convert_hf_to_gguf.py failed:\n{r.stderr[-3000:]}")


def quantizer():
    """quantize(src, dst, "Q4_K_M") with llama.cpp's own quantizer, or None."""
    try:
        import llama_cpp
    except ImportError:
        llama_cpp = None
    if llama_cpp is not None:
        def quantize(src: str, dst: str, ftype: str) -> None:
            params = llama_cpp.llama_model_quantize_default_params()
            params.ftype = FTYPES[ftype]
            params.nthread = 2
            if llama_cpp.llama_model_quantize(src.encode(), dst.encode(), params) != 0:
                raise RuntimeError(f"llama_model_quantize {ftype} failed on {src}")
        return quantize
    binary = os.environ.get("HEARTHLM_LLAMA_QUANTIZE") or shutil.which("llama-quantize")
    if binary is None:
        return None

    def quantize(src: str, dst: str, ftype: str) -> None:
        subprocess.run([binary, src, dst, ftype, "2"], check=True, capture_output=True)
    return quantize


def add_sentencepiece(folder: str, vocab_size: int = 400) -> int:
    """A SentencePiece BPE model (tokenizer.model, byte fallback, ChatML markers and
    <|endoftext|>, which llama.cpp looks up in Phi-3 vocabularies, as user-defined pieces) trained on tiny_tokenizers.CORPUS, as Llama-2 / Phi-3 / Gemma
    folders have; returns its vocabulary size."""
    import io

    import sentencepiece as spm
    from tiny_tokenizers import CHATML_WITH_BOS, CORPUS

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(CORPUS), model_writer=buf, vocab_size=vocab_size,
                                   model_type="bpe", byte_fallback=True, character_coverage=1.0,
                                   user_defined_symbols=["<|im_start|>", "<|im_end|>", "<|endoftext|>"], hard_vocab_limit=False,
                                   unk_id=0, bos_id=1, eos_id=2, pad_id=-1, minloglevel=2)
    with open(os.path.join(folder, "tokenizer.model"), "wb") as f:
        f.write(buf.getvalue())
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": "<s>", "eos_token": "<|im_end|>", "unk_token": "<unk>",
                   "tokenizer_class": "LlamaTokenizer", "chat_template": CHATML_WITH_BOS}, f)
    return spm.SentencePieceProcessor(model_proto=buf.getvalue()).vocab_size()
