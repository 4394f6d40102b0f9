"""hearthlm.load(): a Hugging Face model folder -> a Model ready to run."""
from __future__ import annotations

import os
import time
from typing import Callable, Optional, Sequence, Union

import numpy as np

from . import _kernels, generation, gguf_load, hub
from ._per_token import check_ids
from .cpu import physical_cores
from .errors import InvalidInputError, ModelFormatError
from .models import ModelArgs, model_args, read_config
from .safetensors_io import CheckpointFiles
from .tokenizer import Tokenizer, read_json
from .quant import QUANT_DTYPES, check_dtype, check_head_dtype, read_quant_metadata
from .session import MAX_BATCH, Session, fingerprint
from .transformer import Transformer
from .weights import IN_PLACE, WeightReader


class Model:
    """A loaded model. Weights are read-only and may be shared by several sessions."""

    def __init__(self, path: str, args: ModelArgs, transformer: Transformer,
                 tokenizer: Optional[Tokenizer], generation_config: dict, dtype: str,
                 n_threads: int, load_stats: dict, fingerprint: str):
        self.path = path
        self.args = args
        self.transformer = transformer
        self.tokenizer = tokenizer
        self.generation_config = generation_config
        self.dtype = dtype
        self.n_threads = n_threads
        self.load_stats = load_stats
        self.fingerprint = fingerprint  # identity of config + tensor layout, for saved sessions

    @property
    def vocab_size(self) -> int:
        return self.args.vocab_size

    def __repr__(self) -> str:
        a = self.args
        return (f"<hearthlm.Model {a.architecture} layers={a.num_hidden_layers} "
                f"hidden={a.hidden_size} dtype={self.dtype} threads={self.n_threads}>")

    # -- running tokens ---------------------------------------------------------------

    def check_ids(self, token_ids, argument: str = "token_ids") -> np.ndarray:
        """token_ids as int32 [n], each checked to be in the vocabulary."""
        return check_ids(token_ids, self.vocab_size, argument)

    def logits(self, token_ids: Sequence[int], truncate: Optional[str] = None) -> np.ndarray:
        """Logits at every position of a fresh sequence: float32 [len(token_ids), vocab].
        More tokens than the context: ContextOverflowError, or with truncate="left" the
        logits of the last max_position_embeddings tokens (fewer rows)."""
        ids = self.check_ids(token_ids)
        if len(ids) == 0:
            raise InvalidInputError("token_ids: empty sequence")
        ids = generation.fit_context(ids, self.args.max_position_embeddings, truncate, "token_ids")[0]
        return self.session(n_ctx=len(ids), n_keep=0).feed(ids, all_logits=True)

    def session(self, n_ctx: Optional[int] = None, n_keep: Optional[int] = None,
                n_discard: Optional[int] = None, kv_dtype: str = "f32", max_batch: int = MAX_BATCH) -> Session:
        """A new conversation state with its own KV cache (see hearthlm.session)."""
        return Session(self, n_ctx=n_ctx, n_keep=n_keep, n_discard=n_discard, kv_dtype=kv_dtype,
                       max_batch=max_batch)

    def load_session(self, path: str) -> Session:
        """A session saved with Session.save(); refused if saved from another model."""
        return Session.load(self, path)

    def generate(self, prompt: Union[str, Sequence[int]], max_new_tokens: Optional[int] = 64,
                 stop: Sequence[str] = (), stream: bool = False, return_result: bool = False,
                 truncate: Optional[str] = None, **sampling):
        """Continue a prompt (text or token ids). Returns the text; with stream=True an
        iterator of text pieces (a generation.TextStream, whose .result is set at the
        end); with return_result=True a generation.Generation (text, finish_reason,
        token counts, timings). `sampling`: temperature, top_k, top_p, min_p,
        repeat_penalty, repeat_last_n, presence_penalty, frequency_penalty, seed —
        defaults from generation_config.json, then hearthlm.sampling.SamplerConfig;
        also json_schema / response_format / regex / grammar (hearthlm.constraints),
        logprobs / top_logprobs (hearthlm.logprobs) and speculative="prompt-lookup" or
        draft_model=a Model with the same tokenizer (hearthlm.speculative: the same
        output, drafted tokens checked several per forward).
        A prompt longer than the context raises ContextOverflowError; truncate="left"
        drops its oldest tokens instead (leaving room for max_new_tokens, at most half
        the context) and the Generation's truncated_tokens says how many."""
        return generation.generate(self, prompt, max_new_tokens, stop, stream, return_result, truncate,
                                   **sampling)

    def chat(self, messages: list, max_new_tokens: Optional[int] = 512, stop: Sequence[str] = (),
             stream: bool = False, return_result: bool = False, template: Optional[str] = None,
             truncate: Optional[str] = None, **sampling):
        """The assistant's reply to OpenAI-style messages ([{"role": "user", "content":
        "Hi"}]), rendered by the model's chat template or `template` (a built-in name
        such as "chatml", or a .jinja file). Options and results as generate(); also
        tools / tool_choice (hearthlm.tool_calls: the result's tool_calls);
        truncate="left" drops the oldest tokens of the rendered conversation."""
        return generation.chat(self, messages, max_new_tokens, stop, stream, return_result, template, truncate,
                    **sampling)

    def generate_ids(self, prompt: Union[str, Sequence[int]], max_new_tokens: int) -> list[int]:
        """Greedy token ids after the prompt, stopping at an end-of-sequence token."""
        return self.generate(prompt, max_new_tokens, return_result=True, temperature=0.0).token_ids

    @property
    def eos_token_ids(self) -> list[int]:
        return eos_token_ids(self.generation_config, self.tokenizer, self.path)

    def require_tokenizer(self) -> Tokenizer:
        if self.tokenizer is None:
            raise ModelFormatError(f"{self.path}: no tokenizer.json, so text cannot be encoded; pass token ids")
        return self.tokenizer


def load(path: Union[str, os.PathLike], dtype: Optional[str] = None,
         n_threads: Optional[int] = None, head_dtype: Optional[str] = None,
         progress: Optional[Callable[[int, int], None]] = None, revision: Optional[str] = None,
         local_files_only: Optional[bool] = None, mmap: Optional[bool] = None) -> Model:
    """Load a Hugging Face model folder, a GGUF file (hearthlm.gguf_load: in the formats
    it stores, or converted to dtype as a folder's weights are), or a Hub repo id
    ("org/name", "org/name@rev", "org/name:FILE.gguf": hearthlm.hub, downloading only
    the files needed into the Hugging Face cache; revision= and local_files_only= as in
    huggingface_hub).

    dtype: "f32", "bf16", "f16", or quantized "q8" / "q4" / "q4k" / "q5k" / "q6k" (the formats
    and mixes: hearthlm.quant.tensor_format), for the weights the kernels read; None
    keeps the checkpoint's own dtype. Tensors already in that dtype stay
    memory-mapped (zero copy); others are converted or quantized once, tensor by tensor
    (see model.load_stats["converted_bytes"]). A folder written by hearthlm.quantize()
    is memory-mapped as stored; dtype must then be None or its own.
    head_dtype: when quantizing on load, the format of the embedding table and LM
    head (a quantized format; default: the dtype's mix, q8 for q4).
    n_threads: OpenMP threads for the kernels; default = physical cores.
    progress: when quantizing or copying on load, called as progress(done, total) with
    the source bytes quantized or copied so far (the CLI draws a progress line with it).
    mmap: True keeps the weights used as stored in the file's memory map (shared with
    other processes through the page cache, loaded lazily); False copies them into
    huge-page memory once (hearthlm.weight_memory: decode reads it ~15 % faster);
    None (default) copies when huge pages are available and the copy takes at most half
    of the available memory. load_stats["copied_bytes"] says how much was copied.
    """
    n_threads = check_threads(n_threads)
    if mmap is not None and not isinstance(mmap, bool):
        raise InvalidInputError(f"mmap: expected True, False or None, got {mmap!r}")
    path = os.fspath(path)
    if hub.is_repo_ref(path):
        path = hub.resolve(path, revision, local_files_only)
    elif revision is not None:
        raise InvalidInputError(f"revision: {path} is a local path, not a Hugging Face repo id")
    if gguf_load.is_gguf(path):
        return Model(**gguf_load.load(path, dtype, n_threads, head_dtype, mmap))
    t0 = time.perf_counter()
    folder = model_folder(path)
    config = read_config(folder)
    args = model_args(config, os.path.join(folder, "config.json"))
    files = CheckpointFiles(folder)
    stored_quant = read_quant_metadata(files)[0]
    if stored_quant is not None:
        if dtype not in (None, stored_quant):
            raise InvalidInputError(
                f"dtype: {folder} holds {stored_quant} quantized weights; load it with "
                f"dtype=None or {stored_quant!r}, or quantize the original folder")
        dtype = stored_quant
    elif dtype is None:
        dtype = _checkpoint_dtype(files)
    check_dtype(dtype)
    check_head_dtype(head_dtype)
    head = head_dtype if dtype in QUANT_DTYPES else None
    reader = WeightReader(files, dtype, head, n_threads, progress, mmap)
    transformer = Transformer(args, reader, n_threads)
    tokenizer = Tokenizer(folder) if os.path.exists(os.path.join(folder, "tokenizer.json")) else None
    generation_config = read_json(os.path.join(folder, "generation_config.json"))
    eos_token_ids(generation_config, tokenizer, folder)  # malformed: an error now, not mid-generation
    stats = {
        "mapped_bytes": reader.mapped_bytes,
        "converted_bytes": reader.converted_bytes,
        "copied_bytes": reader.copied_bytes,
        "load_seconds": time.perf_counter() - t0,
    }
    return Model(folder, args, transformer, tokenizer, generation_config, dtype, n_threads, stats,
                 fingerprint(folder, files, vars(args)))


def check_threads(n_threads: Optional[int]) -> int:
    """n_threads, default = physical cores."""
    if n_threads is None:
        n_threads = physical_cores()
    if not isinstance(n_threads, int) or not 1 <= n_threads <= _kernels.max_threads:
        raise InvalidInputError(
            f"n_threads: expected an integer in [1, {_kernels.max_threads}], got {n_threads!r}")
    return n_threads


def model_folder(path) -> str:
    """`path` (a local path, or a Hub repo id) if it is a folder; a missing path and a
    file each get their own ModelFormatError."""
    folder = os.fspath(path)
    if hub.is_repo_ref(folder):
        folder = hub.resolve(folder)
    if os.path.isdir(folder):
        return folder
    if os.path.exists(folder):
        raise ModelFormatError(f"{folder}: is a file; give the model's folder (the one with config.json)")
    raise ModelFormatError(f"{folder}: no such folder (expected a Hugging Face model folder or repo id)")


def eos_token_ids(generation_config: dict, tokenizer: Optional[Tokenizer], folder: str) -> list[int]:
    """End-of-sequence ids: generation_config.json's eos_token_id (an id or a list of
    ids) and the tokenizer's eos_token."""
    eos = generation_config.get("eos_token_id")
    ids = [] if eos is None else list(eos) if isinstance(eos, list) else [eos]
    if not all(isinstance(e, int) and not isinstance(e, bool) for e in ids):
        raise ModelFormatError(
            f"{os.path.join(folder, 'generation_config.json')}: eos_token_id must be a token id or a "
            f"list of token ids, got {eos!r}")
    if tokenizer is not None and tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def _checkpoint_dtype(files: CheckpointFiles) -> str:
    """The dtype most of the checkpoint's bytes are stored in (f32 if not 16-bit)."""
    by_type: dict[str, int] = {}
    for name in files.where:
        info = files.info(name)
        by_type[info.dtype] = by_type.get(info.dtype, 0) + info.end - info.begin
    main = max(by_type, key=by_type.get) if by_type else "F32"
    return IN_PLACE.get(main, "f32")
