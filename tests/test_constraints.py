"""Constrained generation (llguidance): under every sampler setting the output of a
random model parses and validates against the schema (jsonschema), matches the regex
or the grammar; the mask is applied natively before everything else; bad constraints
fail before generation; the matcher rewinds with the session."""
import json
import re

import jsonschema
import numpy as np
import pytest

import hearthlm
from hearthlm import InvalidInputError
from hearthlm.constraints import Constraint
from hearthlm.demo import demo_model_path
from hearthlm.generation import TextStream, make_sampler
from hearthlm.sampling import Sampler, SamplerConfig

SETTINGS = [
    dict(temperature=0.0),
    dict(temperature=0.7),
    dict(temperature=1.5, top_k=0, top_p=1.0, min_p=0.0),
    dict(temperature=1.0, top_k=3),
    dict(temperature=1.0, top_k=0, top_p=0.5, min_p=0.0),
    dict(temperature=1.2, top_k=0, top_p=1.0, min_p=0.3),
    dict(temperature=0.9, repeat_penalty=1.8, repeat_last_n=16),
    dict(temperature=1.0, presence_penalty=1.5, frequency_penalty=0.7),
    dict(temperature=0.0, repeat_penalty=3.0, frequency_penalty=2.0),
]
SCHEMAS = [
    {"type": "object", "properties": {"name": {"type": "string", "maxLength": 8},
                                      "age": {"type": "integer", "minimum": 0, "maximum": 120}},
     "required": ["name", "age"], "additionalProperties": False},
    {"type": "array", "items": {"enum": ["red", "green", "blue"]}, "minItems": 1, "maxItems": 4},
    {"type": "object", "properties": {
        "ok": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string", "pattern": "^[a-z]{1,4}$"}, "maxItems": 3},
        "where": {"type": "object", "properties": {"x": {"type": "number", "multipleOf": 0.5, "minimum": -5, "maximum": 5},
                                                   "label": {"type": ["string", "null"], "maxLength": 5}},
                  "required": ["x"], "additionalProperties": False}},
     "required": ["ok", "where"], "additionalProperties": False},
    {"anyOf": [{"type": "integer", "minimum": 10, "maximum": 99}, {"const": "none"}]},
    {"type": "string", "format": "date"},
]


@pytest.fixture(scope="module")
def model(chat_model_dir):
    return hearthlm.load(chat_model_dir("bpe"))


@pytest.fixture(scope="module")
def spm_model(chat_model_dir):
    return hearthlm.load(chat_model_dir("spm"))


@pytest.mark.parametrize("schema", SCHEMAS, ids=range(len(SCHEMAS)))
def test_json_schema_output_validates_under_every_sampler_setting(model, schema):
    for i, settings in enumerate(SETTINGS):
        g = model.generate("hello", json_schema=schema, max_new_tokens=200, seed=i, return_result=True,
                           **settings)
        assert g.finish_reason == "eos", (settings, g.text)
        jsonschema.validate(json.loads(g.text), schema)


def test_sentencepiece_tokenizer_and_chat(spm_model):
    schema = SCHEMAS[0]
    for i, settings in enumerate(SETTINGS[:4]):
        text = spm_model.chat([{"role": "user", "content": "Who?"}], json_schema=schema, max_new_tokens=200,
                              seed=i, **settings)
        jsonschema.validate(json.loads(text), schema)


def test_response_format_forms(model):
    schema = SCHEMAS[1]
    fmt = {"type": "json_schema", "json_schema": {"name": "colours", "schema": schema, "strict": True}}
    for i, settings in enumerate(SETTINGS[:3]):
        jsonschema.validate(json.loads(model.generate("hi", response_format=fmt, max_new_tokens=100, seed=i,
                                                      **settings)), schema)
    assert model.generate("hi", response_format={"type": "text"}, max_new_tokens=5, temperature=0.0) == \
        model.generate("hi", max_new_tokens=5, temperature=0.0)
    demo = hearthlm.load(demo_model_path())
    finished = 0
    for seed in range(12):  # any object: a key may run on to max_new_tokens (the retrained demo: 1 in 6 ends)
        g = demo.chat([{"role": "user", "content": "What is 2 plus 3?"}], response_format={"type": "json_object"},
                      max_new_tokens=100, temperature=1.0, seed=seed, return_result=True)
        assert g.text.startswith("{")
        if g.finish_reason == "eos":
            assert isinstance(json.loads(g.text), dict)
            finished += 1
    assert finished >= 2


def test_max_tokens_reached_says_length(model):
    schema = {"type": "object", "properties": {"text": {"type": "string", "minLength": 50}},
              "required": ["text"], "additionalProperties": False}
    g = model.generate("hello", json_schema=schema, max_new_tokens=6, temperature=1.0, seed=0, return_result=True)
    assert g.finish_reason == "length" and g.completion_tokens == 6
    assert g.text.startswith('{"')
    with pytest.raises(ValueError):
        json.loads(g.text)


def test_regex_and_grammars(model):
    regex = r"[0-9]{3}-[a-z]{2,4}( ok)?"
    lark = 'start: item ("," item)? ("," item)?\nitem: "yes" | "no" | NUMBER\nNUMBER: /[0-9]{1,3}/'
    gbnf = 'root ::= "(" pair ")"\npair ::= word " " word\nword ::= [a-c]{1,3}'
    checks = [(dict(regex=regex), regex), (dict(grammar=lark), r"(yes|no|[0-9]{1,3})(,(yes|no|[0-9]{1,3})){0,2}"),
              (dict(grammar=gbnf), r"\([a-c]{1,3} [a-c]{1,3}\)")]
    for option, pattern in checks:
        for i, settings in enumerate(SETTINGS):
            g = model.generate("hello", max_new_tokens=60, seed=i, return_result=True, **option, **settings)
            assert g.finish_reason == "eos" and re.fullmatch(pattern, g.text), (option, settings, g.text)


def test_streamed_pieces_join_to_the_constrained_text(model):
    stream = model.generate("hello", json_schema=SCHEMAS[0], max_new_tokens=200, temperature=1.0, seed=5,
                            stream=True)
    text = "".join(stream)
    assert text == stream.result.text
    jsonschema.validate(json.loads(text), SCHEMAS[0])


@pytest.mark.parametrize("options, message", [
    (dict(json_schema={"type": "integer", "minimum": 5, "maximum": 1}), "json_schema: Unsatisfiable"),
    (dict(json_schema={"type": "object", "properties": {"a": {"type": "string", "minLength": 3, "maxLength": 2}},
                       "required": ["a"]}), "json_schema: .*unsatisfiable"),
    (dict(json_schema={"type": "wibble"}), "json_schema: Invalid type"),
    (dict(json_schema="{not json"), "json_schema: not valid JSON"),
    (dict(json_schema=[1, 2]), "json_schema: expected a JSON schema object"),
    (dict(json_schema=True), "json_schema: expected a JSON schema object"),
    (dict(response_format={"type": "json_schema"}), "response_format: .*schema"),
    (dict(response_format={"type": "xml"}), "response_format: type must be"),
    (dict(response_format="json"), "response_format: expected"),
    (dict(regex="[a-"), "(?s)regex: .*unclosed character class"),
    (dict(regex=5), "regex: expected a string"),
    (dict(grammar="start: undefined_rule"), "grammar: .*unknown name"),
    (dict(grammar="root ::= (\"a\""), "grammar: "),
    (dict(regex="a", grammar='start: "a"'), "regex, grammar: give at most one"),
])
def test_bad_constraints_fail_before_generation(model, options, message):
    with pytest.raises(InvalidInputError, match=message):
        model.generate("hello", max_new_tokens=5, **options)


def test_a_model_without_a_tokenizer_is_refused(model_dir):
    bare = hearthlm.load(model_dir("llama-mha"))
    with pytest.raises(InvalidInputError, match="constraints need the model's tokenizer.json"):
        bare.generate([1, 2, 3], regex="[a-z]+", max_new_tokens=3)


def test_mask_is_applied_before_every_other_step():
    """The native sampler never picks a masked-out token, and its distribution is the
    numpy pipeline on logits whose masked entries are -inf."""
    rng = np.random.default_rng(0)
    vocab = 1000
    for settings in SETTINGS:
        s = Sampler(SamplerConfig(**{"seed": 1, **settings}), vocab)
        s.start(rng.integers(0, vocab, 30).tolist())
        for density in (0.002, 0.05, 0.5, 1.0):
            allowed = rng.random(vocab) < density
            allowed[rng.integers(vocab)] = True
            mask = np.packbits(allowed, bitorder="little").view(np.uint8)
            mask = np.pad(mask, (0, (-len(mask)) % 4)).view(np.uint32)
            logits = rng.standard_normal(vocab).astype(np.float32) * 3
            for _ in range(5):
                assert allowed[s.sample(logits, mask)]
            ids, probs = s.distribution(logits, mask)
            assert allowed[ids].all() and len(ids) >= 1
            np.testing.assert_allclose(probs.sum(), 1.0, rtol=1e-5)
            if settings.get("temperature") == 0.0:
                continue
            masked = np.where(allowed, logits, -np.inf).astype(np.float32)
            ref_ids, ref_probs = s.distribution(masked)  # same pipeline, mask written into the logits
            possible = ref_probs > 0
            assert dict(zip(ids.tolist(), probs.tolist())) == pytest.approx(
                dict(zip(ref_ids[possible].tolist(), ref_probs[possible].tolist())), rel=1e-5)


def test_mask_argument_is_checked():
    s = Sampler(SamplerConfig(seed=0), 100)
    logits = np.zeros(100, np.float32)
    with pytest.raises(ValueError, match="mask: expected 4 uint32 words"):
        s.sample(logits, np.zeros(3, np.uint32))
    with pytest.raises(TypeError, match="mask"):
        s.sample(logits, np.zeros(4, np.int64))
    with pytest.raises(TypeError, match="mask"):
        s.sample(logits, [0, 0, 0, 0])
    with pytest.raises(ValueError, match="mask: allows no token"):
        s.sample(logits, np.zeros(4, np.uint32))
    only = np.zeros(4, np.uint32)
    only[99 // 32] = 1 << (99 % 32)
    assert s.sample(logits, only) == 99


def test_matcher_rewinds_with_the_session(model):
    """Generate, rewind session and constraint by k, generate the rest again with
    another seed: the new output still validates, and the constraint is in the state
    a fresh one reaches from the kept tokens."""
    schema = SCHEMAS[2]
    prompt = model.tokenizer.encode("hello")
    session = model.session(n_ctx=256)
    constraint = Constraint.from_options(model, json_schema=schema)
    first = TextStream(model, session, lambda: (session.feed(prompt), len(prompt)), prompt,
                       make_sampler(model, dict(temperature=1.0, seed=3)), 200, constraint=constraint).finish()
    assert first.finish_reason == "eos" and constraint.n_accepted == first.completion_tokens
    k = first.completion_tokens // 2
    session.rewind(k + 1)  # the last token was fed too
    constraint.rewind(k)
    kept = first.token_ids[:-k]
    fresh = Constraint.from_options(model, json_schema=schema)
    for t in kept:
        fresh.next_mask()
        fresh.accept(t)
    np.testing.assert_array_equal(constraint.next_mask(), fresh.next_mask())
    context = prompt + kept
    second = TextStream(model, session, lambda: (session.sync(context[:-1] + context[-1:]), 1), context,
                        make_sampler(model, dict(temperature=1.0, seed=4)), 200, constraint=constraint).finish()
    text = model.tokenizer.decode(kept + second.token_ids)
    jsonschema.validate(json.loads(text), schema)
    with pytest.raises(InvalidInputError, match="rewind"):
        constraint.rewind(10_000)


def test_closing_a_stream_early_keeps_the_constraint_in_step(model):
    prompt = model.tokenizer.encode("hello")
    session = model.session(n_ctx=256)
    constraint = Constraint.from_options(model, regex="[a-z]{20}")
    stream = TextStream(model, session, lambda: (session.feed(prompt), len(prompt)), prompt,
                        make_sampler(model, dict(temperature=1.0, seed=0)), 50, constraint=constraint)
    next(stream)
    stream.close()
    assert constraint.n_accepted == stream.result.completion_tokens == len(session.tokens) - len(prompt)


def test_cli_flags(tmp_path, capsys):
    from hearthlm.cli import main

    schema = {"type": "object", "properties": {"answer": {"type": "integer", "minimum": 0, "maximum": 99}},
              "required": ["answer"], "additionalProperties": False}
    (tmp_path / "schema.json").write_text(json.dumps(schema))
    (tmp_path / "yes_no.gbnf").write_text('root ::= "yes" | "no"')
    (tmp_path / "bad.json").write_text('{"type": "integer", "minimum": 3, "maximum": 1}')
    demo = demo_model_path()
    for seed in (1, 2):
        assert main(["generate", demo, "-p", "What is 2 plus 3?", "--json-schema", str(tmp_path / "schema.json"),
                     "--temperature", "0.9", "--seed", str(seed)]) == 0
        jsonschema.validate(json.loads(capsys.readouterr().out), schema)
    assert main(["generate", demo, "-p", "Is 2 plus 2 four?", "--grammar", str(tmp_path / "yes_no.gbnf"),
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["text"] in ("yes", "no")
    for flag, path, message in (("--json-schema", tmp_path / "bad.json", "Unsatisfiable"),
                                ("--grammar", tmp_path / "missing.lark", "cannot read")):
        assert main(["generate", demo, "-p", "hi", flag, str(path)]) == 1
        err = capsys.readouterr().err
        assert f"hearthlm: error: {flag} {path}: " in err and message in err
