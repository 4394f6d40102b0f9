"""Text <-> token ids through the `tokenizers` library (tokenizer.json), with the
special tokens named in tokenizer_config.json / generation_config.json."""
from __future__ import annotations

import json
import os
from typing import Optional

from .errors import ModelFormatError


def read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFormatError(f"{path}: cannot parse: {e}") from None
    if not isinstance(data, dict):
        raise ModelFormatError(f"{path}: must hold a JSON object")
    return data


def token_text(value) -> Optional[str]:
    """tokenizer_config stores special tokens as strings or {"content": ...} objects."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


class Tokenizer:
    def __init__(self, folder: str):
        from tokenizers import Tokenizer as HFTokenizer

        path = os.path.join(folder, "tokenizer.json")
        try:
            self._tok = HFTokenizer.from_file(path)
        except Exception as e:  # the Rust library raises plain Exception subclasses
            raise ModelFormatError(f"{path}: cannot load tokenizer: {e}") from None
        self.config = read_json(os.path.join(folder, "tokenizer_config.json"))
        self.bos_token = token_text(self.config.get("bos_token"))
        self.eos_token = token_text(self.config.get("eos_token"))
        self.bos_token_id = self._tok.token_to_id(self.bos_token) if self.bos_token else None
        self.eos_token_id = self._tok.token_to_id(self.eos_token) if self.eos_token else None

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self._tok.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> Optional[int]:
        return self._tok.token_to_id(token)
