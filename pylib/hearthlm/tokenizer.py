"""Text <-> token ids through the `tokenizers` library (tokenizer.json), with the
special tokens named in tokenizer_config.json / generation_config.json."""
from __future__ import annotations

import json
import os
from typing import Optional

from .chat_template import apply_chat_template, token_text
from .errors import InvalidInputError, ModelFormatError


def _is_rust_error(e: BaseException) -> bool:
    """tokenizers raises plain Exception subclasses, and pyo3's PanicException (a Rust
    panic) derives from BaseException; neither says which input was at fault."""
    return isinstance(e, Exception) or type(e).__name__ == "PanicException"


def read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, RecursionError) as e:
        raise ModelFormatError(f"{path}: cannot parse: {e}") from None
    if not isinstance(data, dict):
        raise ModelFormatError(f"{path}: must hold a JSON object")
    return data


class Tokenizer:
    def __init__(self, folder: str):
        from tokenizers import Tokenizer as HFTokenizer

        path = os.path.join(folder, "tokenizer.json")
        self.path = path
        try:
            self._tok = HFTokenizer.from_file(path)
        except BaseException as e:
            if not _is_rust_error(e):
                raise
            raise ModelFormatError(f"{path}: cannot load tokenizer: {e}") from None
        self._setup(read_json(os.path.join(folder, "tokenizer_config.json")))

    @classmethod
    def from_tokenizer(cls, tok, config: dict, path: str) -> "Tokenizer":
        """A tokenizers.Tokenizer built elsewhere (from a GGUF file), with a
        tokenizer_config-style `config`; `path` names its source in errors."""
        self = cls.__new__(cls)
        self.path, self._tok = path, tok
        self._setup(config)
        return self

    def _setup(self, config: dict) -> None:
        self.config = config
        self.bos_token = token_text(self.config.get("bos_token"))
        self.eos_token = token_text(self.config.get("eos_token"))
        self.bos_token_id = self._tok.token_to_id(self.bos_token) if self.bos_token else None
        self.eos_token_id = self._tok.token_to_id(self.eos_token) if self.eos_token else None

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def vocab(self) -> dict:
        """token text -> id, added tokens included."""
        return self._tok.get_vocab(with_added_tokens=True)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        if not isinstance(text, str):
            raise InvalidInputError(f"text: expected a str, got {type(text).__name__}")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:  # lone surrogates, e.g. undecodable bytes kept by surrogateescape
            raise InvalidInputError(f"text: not valid Unicode (a lone surrogate at character {e.start})") from None
        try:
            return self._tok.encode(text, add_special_tokens=add_special_tokens).ids
        except BaseException as e:  # e.g. a WordLevel vocabulary without its unk token
            if not _is_rust_error(e):
                raise
            raise ModelFormatError(f"{self.path}: cannot encode text: {e}") from None

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        try:
            ids = [int(i) for i in ids]
            return self._tok.decode(ids, skip_special_tokens=skip_special_tokens)
        except BaseException as e:  # negative or non-integer ids
            if not _is_rust_error(e):
                raise
            raise InvalidInputError(f"ids: cannot decode {str(ids)[:80]}: {e}") from None

    def json(self) -> str:
        """The tokenizer as tokenizer.json text."""
        return self._tok.to_str()

    def token_to_id(self, token: str) -> Optional[int]:
        return self._tok.token_to_id(token)

    def apply_chat_template(self, conversation, tools=None, documents=None, chat_template=None,
                            add_generation_prompt=False, continue_final_message=False, tokenize=True,
                            padding=False, truncation=False, max_length=None, return_tensors=None,
                            return_dict=True, **kwargs):
        """transformers' apply_chat_template (same arguments, defaults and results):
        hearthlm.chat_template.apply_chat_template."""
        return apply_chat_template(self, conversation, tools, documents, chat_template, add_generation_prompt,
                                   continue_final_message, tokenize, padding, truncation, max_length,
                                   return_tensors, return_dict, **kwargs)

    def special_tokens(self) -> dict:
        """{id: text} of the special added tokens (those decode(skip_special_tokens=True) drops)."""
        return {i: t.content for i, t in self._tok.get_added_tokens_decoder().items() if t.special}
