"""Streaming detokenization: pieces concatenate to exactly the full decode, never
carry a broken UTF-8 character, and keep SentencePiece leading spaces."""
import numpy as np
import pytest

import tiny_tokenizers
from hearthlm.detokenizer import StreamDecoder
from hearthlm.tokenizer import Tokenizer

TEXTS = [
    "Hello world, how are you?",
    "  two leading spaces and trailing ones  ",
    "Café naïve résumé — déjà vu",
    "日本語のテキストと中文混合",
    "emoji 😀👍🏽 and a family 👨‍👩‍👧 in the middle",
    "mixed: 2+2=4, ½ ≠ 0.5?\nnew line\tand tab",
]


@pytest.fixture(scope="module", params=["bpe", "spm"])
def tokenizer(request, tmp_path_factory):
    folder = tiny_tokenizers.add_tokenizer(str(tmp_path_factory.mktemp(request.param)), request.param)
    return Tokenizer(folder)


def stream(tok, ids, context=()):
    d = StreamDecoder(tok, context)
    pieces = [d.add(t) for t in ids]
    return [p for p in pieces if p] + [d.flush()]


@pytest.mark.parametrize("text", TEXTS)
def test_pieces_concatenate_to_the_full_decode(tokenizer, text):
    ids = tokenizer.encode(text, add_special_tokens=False)
    pieces = stream(tokenizer, ids)
    assert "".join(pieces) == tokenizer.decode(ids)
    assert not any("\ufffd" in p for p in pieces), pieces  # never half a character
    assert pieces[-1] == "" or tokenizer.decode(ids).endswith(pieces[-1])


def test_multibyte_characters_are_held_back(tokenizer):
    """In these vocabularies CJK and emoji are several byte tokens each: nothing is
    emitted until the last byte of the character arrives."""
    ids = tokenizer.encode("😀", add_special_tokens=False)
    assert len(ids) > 1
    d = StreamDecoder(tokenizer)
    assert [d.add(t) for t in ids] == [""] * (len(ids) - 1) + ["😀"]


def test_context_keeps_the_leading_space(tokenizer):
    """Split a text before a token that starts a word ("▁four" / "Ġfour"): after the
    context it keeps its space, which a SentencePiece decode on its own would drop."""
    ids = tokenizer.encode("The answer is four, 四.", add_special_tokens=False)
    k = next(i for i, t in enumerate(ids) if i > 2 and tokenizer._tok.id_to_token(t)[0] in "▁Ġ")
    text = "".join(stream(tokenizer, ids[k:], context=ids[:k]))
    assert text.startswith(" ") and text.endswith("四.")
    assert text == tokenizer.decode(ids)[len(tokenizer.decode(ids[:k])):]
    if tokenizer._tok.id_to_token(ids[k]).startswith("▁"):
        assert "".join(stream(tokenizer, ids[k:])) == text[1:]


def test_random_ids(tokenizer):
    """Arbitrary tokens still concatenate exactly: for byte-level BPE even when they
    make invalid UTF-8; for byte fallback, runs of byte tokens must be valid UTF-8
    (an invalid run decodes to U+FFFD per byte, judged over the whole run)."""
    rng = np.random.default_rng(0)
    byte_tokens = {tokenizer.token_to_id(f"<0x{b:02X}>") for b in range(256)} - {None}
    allowed = [i for i in range(tokenizer.vocab_size) if i not in byte_tokens]
    for n in (1, 5, 40):
        for _ in range(10):
            ids = rng.choice(allowed, n).tolist()
            assert "".join(stream(tokenizer, ids)) == tokenizer.decode(ids)
