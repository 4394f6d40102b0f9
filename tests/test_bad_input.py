"""Bad input raises a hearthlm exception naming the file, tensor or argument."""
import json
import os
import shutil
import struct

import pytest

import hearthlm


@pytest.fixture
def copy_of(model_dir, tmp_path):
    def make(variant="llama-mha"):
        dst = tmp_path / variant
        shutil.copytree(model_dir(variant), dst)
        return dst
    return make


def rewrite_header(path, edit):
    data = path.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    edit(header)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n:])


def test_truncated_file(copy_of):
    folder = copy_of()
    f = folder / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-100])
    with pytest.raises(hearthlm.ModelFormatError, match=r"model\.safetensors.*outside the data"):
        hearthlm.load(folder)


@pytest.mark.parametrize("length", [0, 5, 30])
def test_file_cut_inside_header(copy_of, length):
    folder = copy_of()
    f = folder / "model.safetensors"
    f.write_bytes(f.read_bytes()[:length])
    with pytest.raises(hearthlm.ModelFormatError, match=r"model\.safetensors"):
        hearthlm.load(folder)


def test_offsets_outside_file(copy_of):
    folder = copy_of()
    name = "model.layers.1.mlp.down_proj.weight"
    rewrite_header(folder / "model.safetensors",
                   lambda h: h[name].update(data_offsets=[h[name]["data_offsets"][0], 10 ** 12]))
    with pytest.raises(hearthlm.ModelFormatError, match=name):
        hearthlm.load(folder)


def test_garbage_header(copy_of):
    folder = copy_of()
    f = folder / "model.safetensors"
    f.write_bytes(struct.pack("<Q", 16) + b"{not json at all" + b"\0" * 64)
    with pytest.raises(hearthlm.ModelFormatError, match="not valid JSON"):
        hearthlm.load(folder)


def test_missing_tensor(copy_of):
    folder = copy_of()
    rewrite_header(folder / "model.safetensors", lambda h: h.pop("model.layers.1.self_attn.k_proj.weight"))
    with pytest.raises(hearthlm.ModelFormatError, match=r"model\.layers\.1\.self_attn\.k_proj\.weight.*missing"):
        hearthlm.load(folder)


def test_shape_contradicts_config(copy_of):
    folder = copy_of()
    cfg = json.loads((folder / "config.json").read_text())
    cfg["intermediate_size"] += 1
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(hearthlm.ModelFormatError, match=r"gate_proj\.weight.*config\.json implies"):
        hearthlm.load(folder)


def test_unknown_dtype(copy_of):
    folder = copy_of()
    rewrite_header(folder / "model.safetensors", lambda h: h["model.norm.weight"].update(dtype="F8_E9M9"))
    with pytest.raises(hearthlm.ModelFormatError, match=r"model\.norm\.weight.*unknown dtype 'F8_E9M9'"):
        hearthlm.load(folder)


def test_integer_weights_rejected(copy_of):
    folder = copy_of()
    rewrite_header(folder / "model.safetensors", lambda h: h["model.norm.weight"].update(dtype="I32"))
    with pytest.raises(hearthlm.ModelFormatError, match=r"model\.norm\.weight.*I32"):
        hearthlm.load(folder)


def test_unsupported_architecture(copy_of):
    folder = copy_of()
    cfg = json.loads((folder / "config.json").read_text())
    cfg["architectures"] = ["GPT2LMHeadModel"]
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(hearthlm.UnsupportedModelError, match="GPT2LMHeadModel"):
        hearthlm.load(folder)


@pytest.mark.parametrize("field,value", [("hidden_act", "gelu"),
                                         ("rope_parameters", {"rope_type": "yarn", "factor": 4.0}),
                                         ("num_key_value_heads", 3)])
def test_unsupported_config_values(copy_of, field, value):
    folder = copy_of()
    cfg = json.loads((folder / "config.json").read_text())
    cfg[field] = value
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(hearthlm.UnsupportedModelError, match=field.split("_")[0]):
        hearthlm.load(folder)


def test_missing_folder_and_files(tmp_path, monkeypatch):
    with pytest.raises(hearthlm.ModelFormatError, match="nope: no such folder"):
        hearthlm.load(tmp_path / "nope")
    with pytest.raises(hearthlm.ModelFormatError, match="config.json"):
        hearthlm.load(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(hearthlm.ModelFormatError, match="model.safetensors: is a file; give the model's folder"):
        hearthlm.load(tmp_path / "model.safetensors")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(hearthlm.HubError, match="Qwen/Qwen3-0.6B: not in the Hugging Face cache"):
        hearthlm.load("Qwen/Qwen3-0.6B", local_files_only=True)
    with pytest.raises(hearthlm.ModelFormatError, match="no such folder"):
        hearthlm.quantize(tmp_path / "nope", tmp_path / "q4")


@pytest.mark.parametrize("field,value,message", [
    ("model_type", "lama", r"'model_type' is 'lama', but 'architectures' says LlamaForCausalLM \(model_type 'llama'\)"),
    ("num_key_value_heads", 0, r"'num_key_value_heads' must be an integer in \[1, \d+\], got 0"),
    ("head_dim", 0, r"'head_dim' must be an integer in \[1, \d+\], got 0"),
])
def test_config_fields_are_named(copy_of, field, value, message):
    folder = copy_of()
    cfg = json.loads((folder / "config.json").read_text())
    cfg[field] = value
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(hearthlm.UnsupportedModelError, match=message):
        hearthlm.load(folder)


def test_text_that_is_not_unicode_is_named(model_dir, chat_model_dir):
    model = hearthlm.load(chat_model_dir("bpe"))
    bad = b"caf\xe9".decode("utf-8", "surrogateescape")
    with pytest.raises(hearthlm.InvalidInputError, match="text: not valid Unicode"):
        model.generate(bad)


def test_shard_index_with_bad_file_name(model_dir, tmp_path):
    folder = tmp_path / "sharded"
    shutil.copytree(model_dir("llama-mha", max_shard_size="20KB"), folder)
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    first = next(iter(index["weight_map"]))
    index["weight_map"][first] = "../../etc/passwd"
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(hearthlm.ModelFormatError, match="invalid file name"):
        hearthlm.load(folder)


def test_token_ids_out_of_range(model_dir):
    model = hearthlm.load(model_dir("llama-mha"))
    for bad in ([1, 2, 257], [-1], [3, 10 ** 12]):
        with pytest.raises(hearthlm.InvalidInputError, match=r"token_ids\[\d\] = "):
            model.logits(bad)
    with pytest.raises(hearthlm.InvalidInputError, match="token_ids"):
        model.logits(["a", "b"])
    with pytest.raises(hearthlm.InvalidInputError, match="empty"):
        model.logits([])


def test_bad_load_arguments(model_dir):
    with pytest.raises(hearthlm.InvalidInputError, match="dtype"):
        hearthlm.load(model_dir("llama-mha"), dtype="f8")
    with pytest.raises(hearthlm.InvalidInputError, match="n_threads"):
        hearthlm.load(model_dir("llama-mha"), n_threads=0)


def test_files_are_never_modified(model_dir):
    folder = model_dir("llama-mha")
    before = {f: os.path.getmtime(os.path.join(folder, f)) for f in os.listdir(folder)}
    hearthlm.load(folder, dtype="bf16").logits([1, 2, 3])
    assert before == {f: os.path.getmtime(os.path.join(folder, f)) for f in os.listdir(folder)}
