"""The loader's contract, as fuzz/fuzz_loader.py checks it: any model folder either loads
(and runs a token) or raises a hearthlm.HearthlmError subclass. Here: the seed corpus,
the findings of earlier fuzzing runs (hand-written so they read as cases), and a short
structure-aware fuzzing run in a subprocess."""
import json
import os
import struct
import subprocess
import sys

import pytest

import hearthlm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FUZZ = os.path.join(ROOT, "fuzz")
pytestmark = pytest.mark.skipif(not os.path.exists(os.path.join(FUZZ, "fuzz_loader.py")),
                                reason="needs the source tree's fuzz/")
if os.path.exists(FUZZ):
    sys.path.insert(0, FUZZ)
    import fuzz_loader


def seed(name):
    with open(os.path.join(FUZZ, "corpus", f"{name}.bundle"), "rb") as f:
        return fuzz_loader.decode(f.read())


def loads(files) -> bool:
    """True if the folder loads and runs; False if it raised a HearthlmError; anything
    else propagates and fails the test."""
    folder = fuzz_loader.write_folder(files)
    try:
        hearthlm.load(os.path.join(folder, "model.gguf") if "model.gguf" in files else folder, n_threads=1).logits([0])
        fuzz_loader.check_input(fuzz_loader.encode(files))
        return True
    except hearthlm.HearthlmError:
        fuzz_loader.check_input(fuzz_loader.encode(files))
        return False


def test_seed_corpus_loads():
    names = sorted(f[:-len(".bundle")] for f in os.listdir(os.path.join(FUZZ, "corpus")))
    assert len(names) >= 5
    for name in names:
        assert loads(seed(name)), name


def edit_json(files, name, edit):
    tree = json.loads(files[name])
    edit(tree)
    files[name] = json.dumps(tree, allow_nan=True).encode()
    return files


def edit_header(files, name, edit):
    blob = files[name]
    n = struct.unpack_from("<Q", blob)[0]
    header = json.loads(blob[8:8 + n])
    edit(header)
    raw = json.dumps(header).encode()
    files[name] = struct.pack("<Q", len(raw)) + raw + blob[8 + n:]
    return files


def set_key(key, value):
    return lambda d: d.__setitem__(key, value)


EMBED = "model.embed_tokens.weight"
# (seed, file, how) -> must raise a HearthlmError. Each was a raw exception before.
FINDINGS = {
    "eps-string": ("llama-f32", "config.json", set_key("rms_norm_eps", "x")),                # ValueError
    "eps-list": ("llama-f32", "config.json", set_key("rms_norm_eps", [1])),                  # TypeError
    "max-pos-string": ("llama-f32", "config.json", set_key("max_position_embeddings", "linear")),
    "max-pos-inf": ("llama-f32", "config.json", set_key("max_position_embeddings", float("inf"))),  # Overflow
    "layers-huge": ("mistral-window", "config.json", set_key("num_hidden_layers", 2 ** 40)),  # MemoryError
    "arch-list": ("llama-f32", "config.json", set_key("architectures", [["LlamaForCausalLM"]])),
    "window-string": ("mistral-window", "config.json", set_key("sliding_window", "x")),
    "layer-types-int": ("qwen2-tied", "config.json", set_key("layer_types", 5)),
    "layer-types-nested": ("qwen2-tied", "config.json", set_key("layer_types", [["full_attention"]])),
    "rope-scaling-list": ("llama-f32", "config.json",
                          lambda c: c.update(rope_parameters=None, rope_scaling=[1])),  # dict([1])
    "rope-theta-nan": ("llama-f32", "config.json", lambda c: c["rope_parameters"].update(rope_theta=float("nan"))),
    "llama3-low-eq-high": ("llama3-bf16-sharded", "config.json",
                           lambda c: c["rope_parameters"].update(low_freq_factor=2.0, high_freq_factor=2.0)),
    "llama3-zero-low": ("llama3-bf16-sharded", "config.json",
                        lambda c: c["rope_parameters"].update(low_freq_factor=0)),
    "head-dim-true": ("llama-f32", "config.json", set_key("head_dim", True)),
    "eos-string": ("llama-f32", "generation_config.json", set_key("eos_token_id", "abc")),
    "eos-nested": ("llama-f32", "generation_config.json", set_key("eos_token_id", [[2]])),
    "eos-inf": ("llama-f32", "generation_config.json", set_key("eos_token_id", float("inf"))),
    "index-null-byte": ("llama3-bf16-sharded", "model.safetensors.index.json",
                        lambda d: d["weight_map"].__setitem__(EMBED, "model-00001\0.safetensors")),
    "index-dotdot": ("llama3-bf16-sharded", "model.safetensors.index.json",
                     lambda d: d["weight_map"].__setitem__(EMBED, "..")),
}


@pytest.mark.parametrize("case", sorted(FINDINGS))
def test_known_findings_raise_hearthlm_errors(case):
    name, fname, how = FINDINGS[case]
    assert not loads(edit_json(seed(name), fname, how))


@pytest.mark.parametrize("case", ["dtype-list", "shape-huge", "offsets-huge", "header-len-max"])
def test_hostile_safetensors_headers(case):
    files = seed("llama-f32")
    if case == "dtype-list":
        edit_header(files, "model.safetensors", lambda h: h[EMBED].__setitem__("dtype", ["F32"]))
    elif case == "shape-huge":  # product overflows 64 bits; data_offsets unchanged
        edit_header(files, "model.safetensors", lambda h: h[EMBED].__setitem__("shape", [2 ** 62, 2 ** 62]))
    elif case == "offsets-huge":
        edit_header(files, "model.safetensors", lambda h: h[EMBED].__setitem__("data_offsets", [0, 2 ** 70]))
    else:
        files["model.safetensors"] = struct.pack("<Q", 2 ** 64 - 1) + files["model.safetensors"][8:]
    assert not loads(files)


@pytest.mark.parametrize("fname", ["config.json", "model.safetensors.index.json", "generation_config.json",
                                   "tokenizer_config.json"])
@pytest.mark.parametrize("text", ["[" * 100000, "1" * 5000, "{\"a\": \"\\ud800\"}", "\xff"],
                         ids=["deep-nesting", "5000-digit-int", "lone-surrogate", "bad-utf8"])
def test_hostile_json_files(fname, text):
    """Nesting past the recursion limit, ints past Python's 4300-digit limit, lone
    surrogates and bad UTF-8."""
    files = seed("llama3-bf16-sharded")
    files[fname] = text.encode("utf-8", "surrogateescape") if text != "\xff" else b"\xff"
    # A JSON object with one unknown key is a valid (empty) generation or tokenizer config;
    # every other case must be refused with a HearthlmError.
    valid = text.startswith("{") and fname in ("generation_config.json", "tokenizer_config.json")
    assert loads(files) == valid


def test_tokenizer_that_cannot_encode():
    """A WordLevel vocabulary without its unk token: tokenizers raises a bare Exception
    on encode; it must come out as a ModelFormatError naming tokenizer.json."""
    files = edit_json(seed("llama-f32"), "tokenizer.json",
                      lambda t: [t["model"]["vocab"].pop(k) for k in ("<unk>", "hello")])
    folder = fuzz_loader.write_folder(files)
    model = hearthlm.load(folder, n_threads=1)
    with pytest.raises(hearthlm.ModelFormatError, match="tokenizer.json"):
        model.tokenizer.encode("hello")
    with pytest.raises(hearthlm.InvalidInputError):
        model.tokenizer.decode([-1])
    assert not loads(edit_json(seed("llama-f32"), "tokenizer.json", set_key("model", {"type": "Nope"})))


def test_too_many_threads_is_an_input_error(tmp_path):
    folder = fuzz_loader.write_folder(seed("llama-f32"))
    with pytest.raises(hearthlm.InvalidInputError, match="n_threads"):
        hearthlm.load(folder, n_threads=10 ** 6)


def test_short_fuzzing_run(tmp_path):
    """~15 s of structure-aware mutation of the seeds (HEARTHLM_FUZZ_SECONDS to change),
    in a subprocess so that a crash is reported rather than taking pytest down."""
    seconds = os.environ.get("HEARTHLM_FUZZ_SECONDS", "15")
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(hearthlm.__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([package_parent, os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, os.path.join(FUZZ, "fuzz_loader.py"), "--plain",
                          os.path.join(FUZZ, "corpus"), "--seconds", seconds, "--seed", "20240601"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=float(seconds) + 120)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "0 distinct findings" in run.stdout
