"""Streaming detokenization: token ids in, text pieces out, as soon as they are final.

Decoding one token at a time is wrong in two ways: a byte-level or byte-fallback
token may hold only part of a UTF-8 character, and SentencePiece decoders drop the
leading space of whatever comes first in a decode call. So each step decodes a short
window of tokens twice — with and without the new ones — and emits the difference;
while that decode ends in U+FFFD (an incomplete byte sequence), the text is held back.

With `context` ids (e.g. the prompt's tail), the pieces continue that text, so a
SentencePiece word's leading space after the prompt is kept. Either way the pieces
concatenate to exactly decode(context + ids)[len(decode(context)):] — with one
exception: a byte-fallback decoder judges a run of byte tokens as a whole, so a run
that is valid UTF-8 at first and turns invalid later (which a model rarely emits) has
already been partly emitted when it is decoded to U+FFFDs.
"""
from __future__ import annotations

from typing import Sequence


class StreamDecoder:
    def __init__(self, tokenizer, context: Sequence[int] = (), skip_special_tokens: bool = True):
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self.ids = list(context)
        self.prefix_offset = 0             # window start: decoded text before it is final
        self.read_offset = len(self.ids)   # tokens up to here have been emitted

    def _decode(self, ids) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip_special_tokens)

    def add(self, token_id: int) -> str:
        """Append a token; returns the new final text ("" while held back)."""
        self.ids.append(token_id)
        before = self._decode(self.ids[self.prefix_offset:self.read_offset])
        after = self._decode(self.ids[self.prefix_offset:])
        if len(after) <= len(before) or after.endswith("\ufffd"):
            return ""
        piece = after[len(before):]
        self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
        return piece

    def flush(self) -> str:
        """The text still held back (at the end of generation), so that every piece
        together equals the full decode."""
        piece = self._decode(self.ids[self.prefix_offset:])[len(self._decode(
            self.ids[self.prefix_offset:self.read_offset])):]
        self.prefix_offset = self.read_offset = len(self.ids)
        return piece
