"""hearthlm.load("model.gguf"): a GGUF file (or the first of a split set,
`-00001-of-0000N.gguf`) read by hearthlm.gguf_file.

* Hyperparameters: `general.architecture` and the `{arch}.*` keys become the config
  dict the family's own parser (models/) reads, with llama.cpp's fixed values where the
  file has none (Gemma's attention scale and layer pattern, SmolLM3's NoPE interval).
* Tensors: every name the family declares (weights(args)) is found under its GGUF name
  through gguf's TensorNameMap (stacked experts and per-head norms sliced). F32 / F16 /
  BF16 are used as stored, from the memory map or copied (hearthlm.load's mmap); Q8_0,
  Q4_0, Q4_K, Q5_K, Q6_K are converted exactly into the formats registry's blocks (from_gguf); Q5_0 exactly into
  q8; Q4_1 and Q5_1 are dequantized to f32 (lossless; load_stats["converted_bytes"]
  counts them). llama.cpp's converter permutes the Q/K rows of Llama-style models into its
  interleaved RoPE order: undone here. Gemma's norms are stored as 1 + w: undone.
* The tokenizer: gguf_tokenizer."""
from __future__ import annotations

import hashlib
import os
import re
import time
from typing import Optional

import numpy as np

from . import _kernels
from .errors import InvalidInputError, ModelFormatError, UnsupportedModelError
from .formats import FORMATS, QUANTIZED
from .gguf_file import GGUFFile, gguf_package
from .models import family, model_args
from .models.base import RopeSpec
from .quant import QUANT_DTYPES, check_dtype, check_head_dtype, quantize_tensor, tensor_format
from .rope import inverse_frequencies
from .weight_memory import arena_for
from .weights import float_weights

# general.architecture -> transformers architecture of the family that runs it
ARCHITECTURES = {
    "llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM",
    "qwen3moe": "Qwen3MoeForCausalLM", "gemma2": "Gemma2ForCausalLM", "gemma3": "Gemma3ForCausalLM",
    "phi3": "Phi3ForCausalLM", "stablelm": "StableLmForCausalLM", "olmo2": "Olmo2ForCausalLM",
    "granite": "GraniteForCausalLM", "smollm3": "SmolLM3ForCausalLM",
}
PERMUTED = ("llama", "granite", "smollm3")  # archs whose Q/K rows llama.cpp's converter permutes
NORM_PLUS_ONE = ("gemma2", "gemma3")        # archs whose norm weights it stores as 1 + w
EXPERT = re.compile(r"^model\.layers\.(\d+)\.mlp\.experts\.(\d+)\.(gate|up|down)_proj\.weight$")
HEAD_NORM = re.compile(r"^model\.layers\.(\d+)\.self_attn\.(q|k)_layernorm\.norms\.(\d+)\.weight$")


def is_gguf(path) -> bool:
    path = os.fspath(path)
    return path.endswith(".gguf") and not os.path.isdir(path)


# ---- hyperparameters ----------------------------------------------------------------------

def hf_config(g: GGUFFile) -> dict:
    """The GGUF metadata as the config.json its family's parser reads."""
    arch = g.get("general.architecture")
    if arch not in ARCHITECTURES:
        raise UnsupportedModelError(
            f"{g.path}: general.architecture {arch!r} is not supported "
            f"(supported: {', '.join(sorted(ARCHITECTURES))})")
    if "token_embd.weight" not in g.tensors:
        raise ModelFormatError(f"{g.path}: no token_embd.weight tensor")

    def key(name, default=None):
        value = g.number(f"{arch}.{name}", default)
        if value is None:
            raise ModelFormatError(f"{g.path}: metadata field '{arch}.{name}' is missing")
        return value

    heads = key("attention.head_count")
    hidden = key("embedding_length")
    head_dim = key("attention.key_length", hidden // heads if heads else 0)
    c = {
        "architectures": [ARCHITECTURES[arch]],
        "vocab_size": g.tensors["token_embd.weight"].shape[0],
        "hidden_size": hidden,
        "intermediate_size": key("feed_forward_length", 0) or None,
        "num_hidden_layers": key("block_count"),
        "num_attention_heads": heads,
        "num_key_value_heads": key("attention.head_count_kv", heads),
        "head_dim": head_dim,
        "max_position_embeddings": key("context_length", 2048),
        "rms_norm_eps": key("attention.layer_norm_rms_epsilon", 1e-6),
        "rope_theta": key("rope.freq_base", 10000.0),
        "tie_word_embeddings": "output.weight" not in g.tensors,
        "attention_bias": "blk.0.attn_q.bias" in g.tensors,
        "mlp_bias": "blk.0.ffn_up.bias" in g.tensors,
    }
    rotary = key("rope.dimension_count", head_dim)
    if head_dim and rotary != head_dim:
        c["partial_rotary_factor"] = rotary / head_dim
    scaling = g.get(f"{arch}.rope.scaling.type")
    if scaling == "linear":
        c["rope_scaling"] = {"rope_type": "linear", "factor": key("rope.scaling.factor")}
    elif scaling not in (None, "none"):
        raise UnsupportedModelError(f"{g.path}: {arch}.rope.scaling.type '{scaling}' is not supported")
    if "rope_freqs.weight" in g.tensors:
        c["rope_scaling"] = llama3_scaling(g, c, rotary)
    window = key("attention.sliding_window", 0)
    c.update(ARCH_CONFIG.get(arch, lambda g, c, key, window: {})(g, c, key, window))
    return c


def llama3_scaling(g: GGUFFile, c: dict, rotary: int) -> dict:
    """Llama 3.1+ files keep their RoPE scaling as per-frequency factors (rope_freqs):
    llama3 parameters that give exactly those factors, with low_freq_factor 1 as every
    Llama 3 release has it. Between wavelengths original/high and original the factor
    moves smoothly: 1/f = (1 - s)/factor + s with s = (original/wavelength - 1)/(high - 1)."""
    factors = tensor_f32(g, "rope_freqs.weight").reshape(-1).astype(np.float64)
    wavelen = 2 * np.pi * c["rope_theta"] ** (np.arange(0, rotary, 2) / rotary)
    if factors.shape != wavelen.shape:
        raise ModelFormatError(f"{g.path}: rope_freqs.weight has {factors.size} factors, RoPE needs {wavelen.size}")
    factor = float(factors.max())
    smooth = (factors > 1 + 1e-6) & (factors < factor - 1e-6)
    s = (1 / factors[smooth] - 1 / factor) / (1 - 1 / factor) if factor > 1 else factors[smooth]
    high, orig = 4.0, None
    if smooth.sum() >= 2:
        a, b = np.polyfit(1 / wavelen[smooth], s, 1)
        high, orig = 1 - 1 / b, a * (-1 / b)
    elif smooth.sum() == 1:
        orig = float(wavelen[smooth][0] * (1 + s[0] * (high - 1)))
    elif factor > 1:  # no smooth band sampled: any original between the two bands
        orig = float(np.sqrt(wavelen[factors <= 1 + 1e-6].max(initial=1.0) * high *
                             wavelen[factors >= factor - 1e-6].min()))
    if orig is None or not np.isfinite([high, orig]).all() or orig <= 0 or high <= 1:
        raise UnsupportedModelError(f"{g.path}: rope_freqs.weight matches no llama3 RoPE scaling")
    params = {"rope_type": "llama3", "factor": factor, "low_freq_factor": 1.0, "high_freq_factor": float(high),
              "original_max_position_embeddings": round(orig) if abs(orig - round(orig)) < 1e-3 else orig}
    plain = inverse_frequencies(RopeSpec(c["rope_theta"], {"rope_type": "default"}, rotary))
    if not np.allclose(inverse_frequencies(RopeSpec(c["rope_theta"], params, rotary)), plain / factors, rtol=1e-4):
        raise UnsupportedModelError(f"{g.path}: rope_freqs.weight matches no llama3 RoPE scaling")
    return params


def _qwen3moe(g, c, key, window):
    n = c["num_hidden_layers"]
    dense = [i for i in range(n) if f"blk.{i}.ffn_gate_exps.weight" not in g.tensors]
    return {"num_experts": key("expert_count"), "num_experts_per_tok": key("expert_used_count"),
            "moe_intermediate_size": key("expert_feed_forward_length"), "mlp_only_layers": dense,
            "norm_topk_prob": bool(g.get("qwen3moe.expert_weights_norm", True)),
            "intermediate_size": c["intermediate_size"] or 1}


def _gemma_scale(c: dict) -> float:
    """llama.cpp's attention scale: 1/sqrt(head_dim), but hidden/heads for the 27B models."""
    big = c["num_hidden_layers"] in (46, 62)
    return c["hidden_size"] / c["num_attention_heads"] if big else c["head_dim"]


def _gemma2(g, c, key, window):
    return {"query_pre_attn_scalar": _gemma_scale(c), "sliding_window": window,
            "attn_logit_softcapping": key("attn_logit_softcapping", 0) or None,
            "final_logit_softcapping": key("final_logit_softcapping", 0) or None}


def _gemma3(g, c, key, window):
    return {"query_pre_attn_scalar": _gemma_scale(c), "sliding_window": window or 1,
            "sliding_window_pattern": key("attention.sliding_window_pattern", 6) if window else 1,
            "rope_local_base_freq": key("rope.freq_base_swa", 10000.0),
            "final_logit_softcapping": key("final_logit_softcapping", 0) or None}


def _phi3(g, c, key, window):
    out = {"sliding_window": window or None, "rms_norm_eps": key("attention.layer_norm_rms_epsilon", 1e-5)}
    if "rope_factors_long.weight" in g.tensors:
        out["original_max_position_embeddings"] = key("rope.scaling.original_context_length")
        out["rope_scaling"] = {"type": "longrope",
                               "long_factor": tensor_f32(g, "rope_factors_long.weight").tolist(),
                               "short_factor": tensor_f32(g, "rope_factors_short.weight").tolist()}
        attn = g.number("phi3.rope.scaling.attn_factor")
        if attn is not None:
            out["rope_scaling"]["attention_factor"] = attn
    return out


def _stablelm(g, c, key, window):
    return {"layer_norm_eps": key("attention.layer_norm_epsilon", 1e-5), "use_qkv_bias": c["attention_bias"],
            "qk_layernorm": "blk.0.attn_q_norm.weight" in g.tensors,
            "use_parallel_residual": "blk.0.ffn_norm.weight" not in g.tensors}


def _granite(g, c, key, window):
    return {"embedding_multiplier": key("embedding_scale", 1.0), "residual_multiplier": key("residual_scale", 1.0),
            "attention_multiplier": key("attention.scale", c["head_dim"] ** -0.5),
            "logits_scaling": key("logit_scale", 1.0)}


def _smollm3(g, c, key, window):
    return {"no_rope_layer_interval": 4}  # llama.cpp's fixed interval; the file does not say


ARCH_CONFIG = {"qwen3moe": _qwen3moe, "gemma2": _gemma2, "gemma3": _gemma3, "phi3": _phi3,
               "stablelm": _stablelm, "granite": _granite, "smollm3": _smollm3}


# ---- tensors ------------------------------------------------------------------------------

def dequantize(t, data: np.ndarray) -> np.ndarray:
    """Blocks of tensor t (uint8 rows) -> float32, by the gguf package."""
    gguf = gguf_package()
    try:
        return np.asarray(gguf.quants.dequantize(data, gguf.GGMLQuantizationType(t.ggml_type)), np.float32)
    except NotImplementedError:
        raise UnsupportedModelError(f"{t.path}: tensor '{t.name}' has type "
                                    f"{gguf.GGMLQuantizationType(t.ggml_type).name}, which cannot be read") from None


def tensor_f32(g: GGUFFile, name: str) -> np.ndarray:
    t = g.tensors[name]
    return dequantize(t, t.data).reshape(-1)


def q5_0_as_q8_0(blocks: np.ndarray) -> np.ndarray:
    """Q5_0 blocks (d, 32 high bits, 16 bytes of low nibbles; w = d * (q - 16)) as the
    Q8_0 blocks (d, 32 int8) of the same values: exact."""
    b = blocks.reshape(-1, 22)
    high = (b[:, 2:6].view("<u4") >> np.arange(32, dtype=np.uint32)) & 1
    low = np.concatenate([b[:, 6:] & 0x0F, b[:, 6:] >> 4], axis=1)
    q = (low | (high.astype(np.uint8) << 4)).astype(np.int16) - 16
    return np.concatenate([b[:, :2], q.astype(np.int8).view(np.uint8)], axis=1)


class GGUFWeights:
    """The family's declared tensors (HF names) served from a GGUFFile, as
    weights.WeightReader serves them from safetensors."""

    def __init__(self, g: GGUFFile, args, arch: str, n_threads: int, mmap: Optional[bool],
                 dtype: Optional[str] = None, head_dtype: Optional[str] = None):
        gguf = gguf_package()
        self.g, self.args, self.arch, self.n_threads = g, args, arch, n_threads
        self.dtype, self.head_dtype = dtype, head_dtype
        arch_id = next(a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == arch)
        self.names = gguf.get_tensor_name_map(arch_id, args.num_hidden_layers)
        self.by_gguf = {f.gguf_type: name for name, f in FORMATS.items() if f.quantized}
        self.formats: dict = {}
        self.mapped_bytes = self.converted_bytes = self.copied_bytes = 0
        T = gguf.GGMLQuantizationType
        plain = [t.data.nbytes for t in g.tensors.values() if t.ggml_type in (T.F32, T.F16, T.BF16)]
        self.arena = arena_for(plain, mmap)  # an upper bound: untouched pages cost nothing

    def source(self, name: str) -> tuple:
        """(GGUF tensor name, index into its outer dimension or None) of HF tensor `name`."""
        m = EXPERT.match(name)
        if m:
            return f"blk.{m.group(1)}.ffn_{m.group(3)}_exps.weight", int(m.group(2))
        m = HEAD_NORM.match(name)
        if m:
            return f"blk.{m.group(1)}.attn_{m.group(2)}_norm.weight", int(m.group(3))
        gname = self.names.get_name(name, try_suffixes=(".weight", ".bias"))
        if gname is None:
            raise UnsupportedModelError(f"{self.g.path}: no GGUF name for tensor '{name}'")
        return gname, None

    def _rows(self, name: str, shape: tuple):
        """(GGUF tensor, its uint8 rows [N, bytes per row] for HF tensor `name`)."""
        gname, index = self.source(name)
        if gname not in self.g.tensors:
            raise ModelFormatError(f"{self.g.path}: tensor '{gname}' (for {name}) is missing")
        t = self.g.tensors[gname]
        dims, data = list(t.shape), t.data
        if index is not None:
            if index >= dims[0]:
                raise ModelFormatError(f"{t.path}: tensor '{gname}' has {dims[0]} slices, {name} needs {index + 1}")
            dims, data = dims[1:], data[index]
        if len(shape) == 1 and len(dims) == 2 and dims[0] == 1:
            dims = dims[1:]
        if tuple(dims) != tuple(shape):
            raise ModelFormatError(f"{t.path}: tensor '{gname}' has shape {dims} (outer first), "
                                   f"but the metadata implies {list(shape)} for {name}")
        return t, data.reshape(shape[0] if len(shape) == 2 else 1, -1)

    def _unpermute(self, name: str, rows: np.ndarray) -> np.ndarray:
        """llama.cpp's interleaved RoPE row order back to HF's rotate-half, per head
        (rows of any bytes: each row's blocks are its own)."""
        heads = {"q_proj": self.args.num_attention_heads, "k_proj": self.args.num_key_value_heads}.get(
            name.split(".")[-2])
        if self.arch not in PERMUTED or heads is None:
            return rows
        N = rows.shape[0]
        return np.ascontiguousarray(rows.reshape(heads, N // heads // 2, 2, *rows.shape[1:]).swapaxes(1, 2)
                                    .reshape(rows.shape))

    def target(self, name: str) -> Optional[str]:
        """The format asked for matrix `name` (dtype and its mix, as for a folder), or None."""
        if self.dtype not in QUANT_DTYPES:
            return self.dtype
        return tensor_format(name, self.dtype, self.head_dtype, self.args.num_hidden_layers,
                             self.args.tie_word_embeddings)

    def tensor(self, name: str, shape: tuple) -> np.ndarray:
        """Matrix `name` in the format its GGUF type converts to exactly (memory-mapped
        where the layout allows), or, when dtype asks for another format, quantized or
        converted from its dequantized values."""
        t, rows = self._rows(name, shape)
        exact, target = self.exact_format(t), self.target(name)
        fmt, mapped = exact if target is None else target, False
        if fmt != exact:
            f32 = np.ascontiguousarray(self._unpermute(name, dequantize(t, rows).reshape(shape)), np.float32)
            out = (quantize_tensor(f32, "F32", fmt, self.n_threads, t.path, t.name) if fmt in QUANT_DTYPES
                   else float_weights(f32, fmt, t.path, t.name))
        else:
            out, mapped = self._exact(t, rows, name, fmt, shape)
        self.formats[name] = fmt
        if not mapped:
            self.converted_bytes += out.nbytes
            return out
        if self.arena is None:
            self.mapped_bytes += out.nbytes
            return out
        copied = self.arena.take(out.shape, out.dtype)
        np.copyto(copied, out)
        copied.flags.writeable = False
        self.copied_bytes += out.nbytes
        return copied

    def exact_format(self, t) -> str:
        """The hearthlm format holding GGUF tensor t's values exactly."""
        T = gguf_package().GGMLQuantizationType
        qtype = t.ggml_type
        plain = {T.F32: "f32", T.F16: "f16", T.BF16: "bf16"}.get(qtype)
        if plain is not None:
            return plain
        if qtype == T.Q5_0:  # the same values as Q8_0 blocks
            return "q8"
        if qtype in self.by_gguf:
            return self.by_gguf[qtype]
        if qtype in (T.Q4_1, T.Q5_1):  # no hearthlm format holds these exactly: f32
            return "f32"
        raise UnsupportedModelError(
            f"{t.path}: tensor '{t.name}' has type {T(qtype).name}; supported: "
            "F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K")

    def _exact(self, t, rows: np.ndarray, name: str, fmt: str, shape: tuple) -> tuple:
        """(tensor t in exact format fmt, whether it is the memory map itself)."""
        T = gguf_package().GGMLQuantizationType
        N, K = shape
        if t.ggml_type in (T.F32, T.F16, T.BF16):
            view = rows.view(FORMATS[fmt].numpy)
            out = self._unpermute(name, view)
            return out, out is view
        if t.ggml_type in (T.Q4_1, T.Q5_1):
            return self._unpermute(name, dequantize(t, rows).reshape(N, K)), False
        blocks = q5_0_as_q8_0(rows).reshape(N, -1) if t.ggml_type == T.Q5_0 else rows
        out = np.empty(FORMATS[fmt].packed_shape(N, K), np.uint8)
        _kernels.from_gguf(out, np.ascontiguousarray(self._unpermute(name, blocks)).reshape(-1), fmt, N, K)
        return out, False

    def vector(self, name: str, shape: tuple) -> np.ndarray:
        t, rows = self._rows(name, shape)
        out = dequantize(t, rows).reshape(shape)
        out = self._unpermute(name.replace(".bias", ".weight"), out).astype(np.float32, copy=True)
        if self.arch in NORM_PLUS_ONE and name.endswith("norm.weight"):
            out -= np.float32(1.0)
        return out

    def wtype_for(self, name: str) -> str:
        return self.formats[name]


# ---- the model ----------------------------------------------------------------------------

def load(path, dtype: Optional[str], n_threads: int, head_dtype: Optional[str], mmap: Optional[bool]) -> dict:
    """The parts of a Model (model.Model's arguments) from a GGUF file, its weights as
    stored (dtype None), or in dtype's formats (quant.tensor_format's mix, head_dtype
    as for a folder): a tensor already stored in its format is taken exactly, others
    are quantized or converted from their dequantized values; mmap as hearthlm.load's."""
    from .gguf_tokenizer import gguf_tokenizer
    from .transformer import Transformer

    t0 = time.perf_counter()
    path = os.fspath(path)
    check_dtype(dtype)
    check_head_dtype(head_dtype)
    if head_dtype is not None and dtype not in QUANT_DTYPES:
        raise InvalidInputError(f"head_dtype: {path} is converted only when dtype is a quantized format "
                                f"(got dtype={dtype!r}); give one, or no head_dtype")
    g = GGUFFile(path)
    config = hf_config(g)
    args = model_args(config, path)
    family(args)  # the architecture is known
    reader = GGUFWeights(g, args, g.get("general.architecture"), n_threads, mmap, dtype, head_dtype)
    transformer = Transformer(args, reader, n_threads)
    tokenizer, generation_config = gguf_tokenizer(g)
    stats = {"mapped_bytes": reader.mapped_bytes, "converted_bytes": reader.converted_bytes,
             "copied_bytes": reader.copied_bytes, "load_seconds": time.perf_counter() - t0}
    counts: dict = {}
    for name, fmt in reader.formats.items():
        counts[fmt] = counts.get(fmt, 0) + 1
    h = hashlib.sha256(repr(sorted(vars(args).items())).encode())
    if dtype is not None:
        h.update(f"dtype={dtype}|{head_dtype}\n".encode())
    for name, t in sorted(g.tensors.items()):
        h.update(f"{name}|{t.ggml_type}|{list(t.dims)}|{t.data.nbytes}\n".encode())
    return dict(path=path, args=args, transformer=transformer, tokenizer=tokenizer,
                generation_config=generation_config, dtype=dtype or max(counts, key=counts.get), n_threads=n_threads,
                load_stats=stats, fingerprint=h.hexdigest()[:32])
