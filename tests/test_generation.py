"""Generation: finish reasons, stop strings held back, eos lists, streaming equals
non-streaming, conversations that reuse the cache and survive context shifts."""
import os

import numpy as np
import pytest

import hearthlm
from hearthlm.chat_template import ChatTemplate
from hearthlm.conversation import Conversation
from hearthlm.generation import StopStrings, make_sampler

GREEDY = dict(temperature=0.0)


@pytest.fixture(scope="module")
def model(chat_model_dir):
    return hearthlm.load(chat_model_dir("bpe"))


def test_stop_strings_hold_back_possible_starts():
    s = StopStrings(["</s>", "STOP"])
    assert s.push("Hello <") == ("Hello ", False)    # "<" could begin "</s>"
    assert s.push("/") == ("", False)
    assert s.push("b>") == ("</b>", False)           # it did not
    assert s.push(" ST") == (" ", False)
    assert s.push("OPPED") == ("", True)             # never printed a piece of it
    s = StopStrings(["ab"])
    assert s.push("xa") == ("x", False) and s.flush() == "a"


def test_finish_reasons_and_result(model):
    g = model.generate("hello", max_new_tokens=7, return_result=True, **GREEDY)
    assert g.finish_reason == "length" and g.completion_tokens == 7 and g.decode_steps == 7
    assert g.prompt_tokens == g.prefilled_tokens == len(model.tokenizer.encode("hello"))
    assert g.time_to_first_token > 0 and g.prefill_tokens_per_second > 0 and g.decode_tokens_per_second > 0
    assert g.text == model.tokenizer.decode(g.token_ids) or "\ufffd" in g.text
    assert model.generate("hello", max_new_tokens=7, **GREEDY) == g.text
    d = g.as_dict()
    assert d["finish_reason"] == "length" and d["completion_tokens"] == 7


def test_stream_equals_text_and_seed_reproduces(model):
    kwargs = dict(max_new_tokens=30, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=42)
    stream = model.generate("The quick", stream=True, **kwargs)
    pieces = list(stream)
    assert "".join(pieces) == stream.result.text == model.generate("The quick", **kwargs)
    assert stream.result.seed == 42
    assert model.generate("The quick", **{**kwargs, "seed": 43}) != stream.result.text


def test_stop_string_is_never_printed(model):
    full = model.generate("hello", max_new_tokens=60, return_result=True, **GREEDY).text
    assert len(full) > 20
    stop = full[12:16]
    stream = model.generate("hello", max_new_tokens=60, stop=["never-seen", stop], stream=True, **GREEDY)
    pieces = list(stream)
    assert "".join(pieces) == full[:full.find(stop)]
    assert stream.result.finish_reason == "stop"
    # a stop string whose beginning appears but which never completes: all text arrives
    g = model.generate("hello", max_new_tokens=60, stop=[full[12:15] + "\x00"], return_result=True, **GREEDY)
    assert g.text == full and g.finish_reason == "length"


def test_every_eos_id_ends_generation(model):
    tokens = model.generate("hello", max_new_tokens=30, return_result=True, **GREEDY).token_ids
    i = next(i for i in range(3, 30) if tokens[i] not in tokens[:i])
    model.generation_config["eos_token_id"] = [383, tokens[i]]  # a list, as Llama 3 has
    try:
        assert tokens[i] in model.eos_token_ids and model.tokenizer.eos_token_id in model.eos_token_ids
        g = model.generate("hello", max_new_tokens=30, return_result=True, **GREEDY)
    finally:
        del model.generation_config["eos_token_id"]
    assert g.finish_reason == "eos" and g.token_ids == tokens[:i]


def test_generation_config_defaults(model):
    model.generation_config.update(do_sample=False, temperature=0.9)
    try:
        assert model.generate("hello", max_new_tokens=10) == model.generate("hello", max_new_tokens=10, **GREEDY)
    finally:
        model.generation_config.clear()
    with pytest.raises(hearthlm.InvalidInputError, match="unknown sampling option"):
        model.generate("hello", temprature=0.5)


def test_chat_and_generate_ids(model):
    messages = [{"role": "user", "content": "What is 2+2?"}]
    g = model.chat(messages, max_new_tokens=12, return_result=True, **GREEDY)
    ids = ChatTemplate.for_model(model).encode(model.tokenizer, messages)
    assert g.prompt_tokens == len(ids) and ids[0] == model.tokenizer.bos_token_id != ids[1]
    assert g.token_ids == model.generate_ids(ids, 12)
    assert "".join(model.chat(messages, max_new_tokens=12, stream=True, **GREEDY)) == g.text


def test_conversation_reuses_the_cache(model):
    conv = Conversation(model, ChatTemplate.for_model(model), make_sampler(model, GREEDY),
                        system="Be brief.", max_new_tokens=10)
    first = conv.ask("What is 2+2?").finish()
    assert conv.session.tokens == conv.fed and first.prefilled_tokens == first.prompt_tokens
    second = conv.ask("And 3+3?").finish()
    assert second.prefilled_tokens < second.prompt_tokens - len(first.token_ids)
    assert [m["role"] for m in conv.messages] == ["system", "user", "assistant", "user", "assistant"]
    # the cached turn gives the same reply as a fresh run over the whole conversation
    fresh = model.chat(conv.messages[:-1], max_new_tokens=10, return_result=True, **GREEDY)
    assert fresh.token_ids == second.token_ids


def test_conversation_runs_past_the_context(model):
    conv = Conversation(model, ChatTemplate.for_model(model), make_sampler(model, GREEDY),
                        n_ctx=64, system="Be brief.", max_new_tokens=12)
    shifted = False
    for turn in range(8):
        before = conv.fed
        g = conv.ask(f"Question number {turn}?").finish()
        s = conv.session
        assert len(s.tokens) <= 64 and g.completion_tokens == 12
        if shifted:  # only what follows the common prefix was fed, on top of what the cache kept
            common = len(os.path.commonprefix([before, conv.fed[:g.prompt_tokens]]))
            assert g.prefilled_tokens == g.prompt_tokens - common < 64 < g.prompt_tokens
            assert s.tokens[-12:] == conv.fed[-12:] and s.tokens[:4] == conv.fed[:4]
        shifted = shifted or s.tokens != conv.fed
    assert shifted and len(conv.messages) == 17


def test_cancel_and_close_keep_the_session_consistent(model):
    conv = Conversation(model, ChatTemplate.for_model(model), make_sampler(model, GREEDY))
    stream = conv.ask("Tell me a long story")
    for n, _ in enumerate(stream):
        if n == 3:
            stream.cancel()
    assert stream.result.finish_reason == "cancelled" and conv.session.tokens == conv.fed
    assert conv.messages[-1] == {"role": "assistant", "content": stream.result.text}
    stream = conv.ask("Another one")
    next(iter(stream))
    stream.close()
    assert stream.result.finish_reason == "cancelled" and conv.session.tokens == conv.fed
    conv.reset()
    assert conv.session.tokens == [] and conv.messages == []


def test_prompt_longer_than_the_context_raises_unless_truncated(model):
    n = model.args.max_position_embeddings
    long_ids = [5 + i % 50 for i in range(n + 40)]
    for call in (lambda **kw: model.generate(long_ids, max_new_tokens=8, **kw),
                 lambda **kw: model.chat([{"role": "user", "content": "hi " * (n + 40)}], max_new_tokens=8, **kw),
                 lambda **kw: model.logits(long_ids, **kw)):
        with pytest.raises(hearthlm.ContextOverflowError, match=rf"tokens do not fit the context of {n} tokens"):
            call()
        with pytest.raises(hearthlm.InvalidInputError, match="truncate: expected None or 'left'"):
            call(truncate="right")
    g = model.generate(long_ids, max_new_tokens=8, truncate="left", return_result=True, **GREEDY)
    assert g.truncated_tokens == len(long_ids) - (n - 8) and g.prompt_tokens == n - 8
    assert g.token_ids == model.generate(long_ids[-(n - 8):], max_new_tokens=8, return_result=True, **GREEDY).token_ids
    assert model.generate(long_ids[:20], max_new_tokens=8, return_result=True).truncated_tokens == 0
    assert g.as_dict()["truncated_tokens"] == g.truncated_tokens
    tail = model.logits(long_ids, truncate="left")
    assert tail.shape == (n, model.vocab_size)
    np.testing.assert_array_equal(tail, model.logits(long_ids[-n:]))


def test_conversation_turn_longer_than_the_context_is_refused(model):
    conv = Conversation(model, ChatTemplate.for_model(model), make_sampler(model, GREEDY), n_ctx=32,
                        max_new_tokens=4)
    with pytest.raises(hearthlm.ContextOverflowError, match=r"n_ctx: this message needs \d+ tokens"):
        conv.ask("a much longer question than thirty-two tokens can hold, surely, it is " * 3)
    assert conv.messages == []  # nothing half-answered joined the conversation
    conv.ask("hi").finish()
    with pytest.raises(hearthlm.ContextOverflowError, match="this message needs"):
        conv.ask("a much longer question than thirty-two tokens can hold, surely, it is " * 3)
    assert len(conv.messages) == 2
    for _ in range(4):  # short turns run past the context as before (context shift)
        conv.ask("hi").finish()
    assert len(conv.messages) == 10 and conv.session.tokens != conv.fed
