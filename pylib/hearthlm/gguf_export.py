"""Write a Llama-architecture model folder as GGUF, so `hearthlm bench --vs llama.cpp`
runs llama.cpp on exactly the same weights. Needs the optional `gguf` package.

Tensors are converted one at a time and spooled to a temporary file by the writer,
so memory stays bounded. Q and K are permuted to llama.cpp's interleaved RoPE
layout, as llama.cpp's own converter does. A quantized folder (`hearthlm quantize`,
`--shape X --dtype q4`) is dequantized first, then written in GGUF's type of its
dtype (q4 -> Q4_0: the same weights up to GGUF's own rounding). A folder without a tokenizer gets a
synthetic SentencePiece-style vocabulary of the right size (benchmarks feed ids)."""
from __future__ import annotations

import hashlib
import os
import re

import numpy as np

from . import _kernels
from .errors import UnsupportedModelError
from .models import model_args, read_config
from .quant import read_quant_metadata
from .safetensors_io import CheckpointFiles
from .shapes import cache_dir
from .weights import bf16_bits_to_f32

GGUF_TYPES = {"f32": "F32", "f16": "F16", "bf16": "BF16", "q8": "Q8_0", "q4": "Q4_0"}


def permute_for_gguf(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF rotate-half row order -> llama.cpp's interleaved pairs, per head."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_name(hf_name: str) -> str:
    """The GGUF name of a Llama tensor, by the gguf package's name map (as the loader,
    gguf_load, reads it back)."""
    import gguf

    m = re.match(r"model\.layers\.(\d+)\.", hf_name)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, int(m.group(1)) + 1 if m else 1)
    return names.get_name(hf_name, try_suffixes=(".weight", ".bias"))


def export_path(folder: str, dtype: str) -> str:
    """Where the export of `folder` goes: hearthlm's cache ($HEARTHLM_CACHE/gguf), never
    the model folder (it may be read-only, installed, or the user's own), keyed by the
    folder's path and its files' sizes and times, so an edited model is written anew."""
    real = os.path.realpath(folder)
    key = hashlib.sha256(real.encode())
    for name in sorted(os.listdir(real)):
        st = os.stat(os.path.join(real, name))
        key.update(f"{name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return os.path.join(cache_dir(), "gguf", f"{os.path.basename(real)}-{key.hexdigest()[:16]}-{dtype}.gguf")


def export_gguf(folder: str, dtype: str) -> str:
    """Write (once) and return export_path(folder, dtype)."""
    import gguf

    out = export_path(folder, dtype)
    if os.path.exists(out):
        return out
    os.makedirs(os.path.dirname(out), exist_ok=True)
    config = read_config(folder)
    args = model_args(config, folder)
    if args.architecture != "LlamaForCausalLM" or args.rope[0].scaling["rope_type"] != "default":
        raise UnsupportedModelError(f"{folder}: GGUF export supports plain Llama models only")
    qtype = getattr(gguf.GGMLQuantizationType, GGUF_TYPES[dtype])
    tmp = out + f".tmp-{os.getpid()}"
    try:
        _write(tmp, folder, args, dtype, qtype)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    os.replace(tmp, out)
    return out


def _write(tmp: str, folder: str, args, dtype: str, qtype) -> None:
    import gguf

    w = gguf.GGUFWriter(tmp, "llama", use_temp_file=True)
    w.add_name(os.path.basename(folder.rstrip("/")))
    w.add_context_length(args.max_position_embeddings)
    w.add_embedding_length(args.hidden_size)
    w.add_block_count(args.num_hidden_layers)
    w.add_feed_forward_length(args.intermediate_size)
    w.add_rope_dimension_count(args.head_dim)
    w.add_head_count(args.num_attention_heads)
    w.add_head_count_kv(args.num_key_value_heads)
    w.add_layer_norm_rms_eps(args.norm_eps)
    w.add_rope_freq_base(args.rope[0].theta)
    w.add_file_type({"f32": 0, "f16": 1, "bf16": 32, "q8": 7, "q4": 2}[dtype])
    n_bytes = 256
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(n_bytes)]
    tokens += [f"\u2581t{i}" for i in range(args.vocab_size - len(tokens))]
    types = [2, 3, 3] + [6] * n_bytes + [1] * (args.vocab_size - 3 - n_bytes)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * args.vocab_size)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    files = CheckpointFiles(folder)
    quantized = read_quant_metadata(files)[1]
    for name in sorted(files.where):
        raw = files.array(name)
        if name in quantized:
            q = quantized[name]
            f32 = np.empty((q.rows, q.cols), np.float32)
            _kernels.dequantize(f32, raw, q.fmt)
        else:
            f32 = bf16_bits_to_f32(raw) if files.info(name).dtype == "BF16" else raw.astype(np.float32)
        if name.endswith("q_proj.weight"):
            f32 = permute_for_gguf(f32, args.num_attention_heads)
        elif name.endswith("k_proj.weight"):
            f32 = permute_for_gguf(f32, args.num_key_value_heads)
        if f32.ndim == 1:
            w.add_tensor(gguf_name(name), f32)
        else:
            try:
                data = gguf.quants.quantize(f32, qtype)
            except gguf.quants.QuantError as e:
                raise UnsupportedModelError(f"{files.path_of(name)}: tensor '{name}' of shape {list(f32.shape)} "
                                            f"cannot be written as GGUF {GGUF_TYPES[dtype]}: {e}") from None
            w.add_tensor(gguf_name(name), data, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
