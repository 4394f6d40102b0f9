"""The tokenizer of a GGUF file, rebuilt from `tokenizer.ggml.*` as a
`tokenizers.Tokenizer` that gives llama.cpp's token ids:

* "llama" (SentencePiece-style): llama.cpp repeatedly joins the adjacent pair whose
  join is the vocabulary's highest-scoring token; that is BPE with every such pair as a
  merge, ranked by the joined token's score. Spaces become "▁", one is put before the
  text and after every special token (add_space_prefix), and bytes outside the
  vocabulary fall back to <0xXX> tokens.
* "gpt2" (byte-level BPE): the file's merges, split first by the regexes of the
  `tokenizer.ggml.pre` variant (those of llama.cpp, listed below), then byte-encoded.

Control, user-defined and unknown tokens are added tokens (matched before anything
else). BOS / EOS and the end-of-generation ids come from the ids in the file."""
from __future__ import annotations

from .errors import ModelFormatError, UnsupportedModelError
from .tokenizer import Tokenizer

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
CONTRACTIONS = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
LLAMA3 = CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
QWEN2 = CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
QWEN35 = (CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+"
          r"|\s+(?!\S)|\s+")
# tokenizer.ggml.pre -> (regexes applied in turn, whole words in the vocabulary skip the merges)
PRE = {
    **{name: ([LLAMA3], True) for name in ("llama3", "llama-v3", "llama-bpe", "falcon3", "pixtral")},
    "dbrx": ([LLAMA3], False), "smaug-bpe": ([LLAMA3], True),
    **{name: ([QWEN2], False) for name in ("qwen2", "deepseek-r1-qwen", "stablelm2")},
    "qwen35": ([QWEN35], False),
    **{name: ([r"\p{N}", GPT2], False) for name in ("smollm", "starcoder", "refact", "command-r", "codeshell")},
    **{name: ([GPT2], False) for name in ("gpt-2", "phi-2", "olmo", "mpt")},
    "default": ([r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", "[0-9][0-9][0-9]"], False),
}
# Texts llama.cpp ends a generation at and treats as control tokens, whatever type the
# file gives them.
END_TEXTS = ("<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
             "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
             "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
             "<｜end▁of▁sentence｜>")
SPM_DEFAULT_IDS = {"unknown": 0, "bos": 1, "eos": 2}  # llama.cpp's, for files that name none
# Phi-3 files (by general.name): llama.cpp strips the spaces after these special tokens.
PHI3_NO_RSTRIP = ("<unk>", "<s>", "<|endoftext|>")


def gguf_tokenizer(g) -> tuple:
    """(hearthlm Tokenizer or None if the file has no vocabulary, generation_config dict)."""
    model = g.get("tokenizer.ggml.model")
    if model is None:
        return None, {}
    tokens = g.strings("tokenizer.ggml.tokens")
    if not tokens:
        raise ModelFormatError(f"{g.path}: metadata 'tokenizer.ggml.tokens' is missing or empty")
    types = list(g.numbers("tokenizer.ggml.token_type") or [NORMAL] * len(tokens))
    if len(types) != len(tokens):
        raise ModelFormatError(f"{g.path}: tokenizer.ggml.token_type has {len(types)} entries for "
                               f"{len(tokens)} tokens")
    for i, t in enumerate(tokens):
        if t in END_TEXTS:
            types[i] = CONTROL
    ids = {}
    defaults = SPM_DEFAULT_IDS if model == "llama" else {}
    for name in ("bos", "eos", "eot", "eom", "unknown"):
        value = g.number(f"tokenizer.ggml.{name}_token_id", defaults.get(name))
        if value is not None and not 0 <= int(value) < len(tokens):
            raise ModelFormatError(f"{g.path}: tokenizer.ggml.{name}_token_id {value} is outside the "
                                   f"vocabulary of {len(tokens)}")
        ids[name] = None if value is None else int(value)
    if model == "llama":
        tok, add_bos = sentencepiece(g, tokens, types, ids), True
    elif model == "gpt2":
        pre = g.get("tokenizer.ggml.pre", "default")
        if pre not in PRE:
            raise UnsupportedModelError(f"{g.path}: tokenizer.ggml.pre '{pre}' is not supported "
                                        f"(supported: {', '.join(sorted(PRE))})")
        tok, add_bos = byte_level(g, tokens, types, *PRE[pre]), PRE[pre][1]
    else:
        raise UnsupportedModelError(f"{g.path}: tokenizer.ggml.model '{model}' is not supported "
                                    "(supported: llama, gpt2)")
    name = str(g.get("general.name", "")).lower()
    add_special(tok, tokens, types, rstrip="phi-3" in name or "phi3" in name)
    add_bos = bool(g.get("tokenizer.ggml.add_bos_token", add_bos)) and ids["bos"] is not None
    add_eos = bool(g.get("tokenizer.ggml.add_eos_token", False)) and ids["eos"] is not None
    post_process(tok, tokens, ids, add_bos, add_eos)
    config = {"bos_token": tokens[ids["bos"]] if ids["bos"] is not None else None,
              "eos_token": tokens[ids["eos"]] if ids["eos"] is not None else None}
    template = g.get("tokenizer.chat_template")
    if isinstance(template, str):
        config["chat_template"] = template
    ends = [ids[n] for n in ("eos", "eot", "eom") if ids[n] is not None]
    ends += [i for i, t in enumerate(tokens) if t in END_TEXTS]
    return Tokenizer.from_tokenizer(tok, config, g.path), {"eos_token_id": list(dict.fromkeys(ends))}


def vocabulary(tokens: list) -> dict:
    vocab: dict = {}
    for i, t in enumerate(tokens):
        vocab.setdefault(t, i)
    return vocab


def sentencepiece(g, tokens: list, types: list, ids: dict):
    from tokenizers import Tokenizer as HFTokenizer, decoders, models, normalizers

    scores = g.numbers("tokenizer.ggml.scores") or [0.0] * len(tokens)
    if len(scores) != len(tokens):
        raise ModelFormatError(f"{g.path}: tokenizer.ggml.scores has {len(scores)} entries for {len(tokens)} tokens")
    vocab = vocabulary(tokens)
    merges = []
    for i, t in enumerate(tokens):
        if types[i] != NORMAL or len(t) < 2:
            continue
        for cut in range(1, len(t)):
            left, right = t[:cut], t[cut:]
            if left in vocab and right in vocab:
                merges.append((-scores[i], i, cut, (left, right)))
    merges.sort()
    unk = ids["unknown"] if ids["unknown"] is not None else next(
        (i for i, k in enumerate(types) if k == UNKNOWN), None)
    tok = HFTokenizer(models.BPE(vocab=vocab, merges=[m[3] for m in merges], byte_fallback=True, fuse_unk=True,
                                 unk_token=None if unk is None else tokens[unk]))
    space_prefix = bool(g.get("tokenizer.ggml.add_space_prefix", True))
    steps = [normalizers.Prepend("▁")] if space_prefix else []
    tok.normalizer = normalizers.Sequence(steps + [normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()] +
                                    ([decoders.Strip(" ", 1, 0)] if space_prefix else []))
    return tok


def byte_level(g, tokens: list, types: list, regexes: list, ignore_merges: bool):
    from tokenizers import Regex, Tokenizer as HFTokenizer, decoders, models, pre_tokenizers

    pairs = []
    for i, m in enumerate(g.strings("tokenizer.ggml.merges")):
        parts = m.split(" ")
        if len(parts) != 2:
            raise ModelFormatError(f"{g.path}: tokenizer.ggml.merges[{i}] is not two tokens: {m!r}")
        pairs.append(tuple(parts))
    tok = HFTokenizer(models.BPE(vocab=vocabulary(tokens), merges=pairs, ignore_merges=ignore_merges))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(r), behavior="isolated") for r in regexes] +
        [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    return tok


def add_special(tok, tokens: list, types: list, rstrip: bool) -> None:
    from tokenizers import AddedToken

    def added(t, special):
        return AddedToken(t, special=special, normalized=False, rstrip=rstrip and t not in PHI3_NO_RSTRIP)

    tok.add_special_tokens([added(t, True) for i, t in enumerate(tokens) if types[i] in (UNKNOWN, CONTROL) and t])
    tok.add_tokens([added(t, False) for i, t in enumerate(tokens) if types[i] == USER_DEFINED and t])


def post_process(tok, tokens: list, ids: dict, add_bos: bool, add_eos: bool) -> None:
    from tokenizers import processors

    if add_bos or add_eos:
        ends = [n for n, add in (("bos", add_bos), ("eos", add_eos)) if add]
        single = ([tokens[ids["bos"]]] if add_bos else []) + ["$A"] + ([tokens[ids["eos"]]] if add_eos else [])
        tok.post_processor = processors.TemplateProcessing(
            single=single, special_tokens=[(tokens[ids[n]], ids[n]) for n in ends])
