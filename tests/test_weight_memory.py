"""hearthlm.load(mmap=...): weights used from the file's memory map or copied into
huge-page memory give the same logits; the copy is counted, reported as progress,
allocated once; bad values name the parameter or flag."""
import os
import tracemalloc

import numpy as np
import pytest

import hearthlm
from hearthlm import cli, weight_memory
from hearthlm.safetensors_io import SafetensorsFile

IDS = [3, 1, 4, 1, 5, 9, 2, 6]


def mapping_of(array: np.ndarray) -> list:
    """The /proc/self/smaps entry (header line first) of the mapping holding `array`."""
    with open("/proc/self/smaps") as f:
        lines = f.read().splitlines()
    starts = [i for i, line in enumerate(lines) if "-" in line.split()[0] and not line.split()[0].endswith(":")]
    for i, j in zip(starts, [*starts[1:], len(lines)]):
        lo, hi = (int(x, 16) for x in lines[i].split()[0].split("-"))
        if lo <= array.ctypes.data < hi:
            return lines[i:j]
    raise AssertionError("no mapping holds the array")


def logits_both_ways(folder, **kw):
    out = {}
    for mm in (True, False):
        model = hearthlm.load(folder, mmap=mm, **kw)
        out[mm] = (model, model.logits(IDS))
    return out


@pytest.mark.parametrize("variant", ["llama-mha", "llama-gqa-tied", "phi3-window"])
@pytest.mark.parametrize("dtype", ["f32", "bf16", "f16"])
def test_copied_weights_give_the_same_logits(model_dir, variant, dtype):
    runs = logits_both_ways(model_dir(variant, dtype=dtype))
    (mapped, a), (copied, b) = runs[True], runs[False]
    assert np.array_equal(a, b)
    assert mapped.load_stats["copied_bytes"] == copied.load_stats["mapped_bytes"] == 0
    assert copied.load_stats["copied_bytes"] == mapped.load_stats["mapped_bytes"] > 0
    assert copied.load_stats["converted_bytes"] == mapped.load_stats["converted_bytes"] == 0
    t = copied.transformer
    head, embed = t.lm_head.weight, t.embed_tokens.weight
    assert (head is embed) == (variant == "llama-gqa-tied")  # a tied head is the one copy
    for w in (head, embed, t.weights.tensors["model.layers.0.mlp.down_proj.weight"]):
        assert not w.flags.writeable
        if os.path.exists("/proc/self/smaps"):
            assert not mapping_of(w)[0].endswith("model.safetensors")  # anonymous memory
    assert mapping_of(mapped.transformer.embed_tokens.weight)[0].endswith("model.safetensors")


def test_converted_dtype_copies_nothing(model_dir):
    """bf16 weights loaded as f16 are converted into numpy memory: nothing to copy."""
    model = hearthlm.load(model_dir("llama-mha", dtype="bf16"), dtype="f16", mmap=False)
    assert model.load_stats["copied_bytes"] == model.load_stats["mapped_bytes"] == 0
    assert model.load_stats["converted_bytes"] > 0


def test_quantized_folder_copied(model_dir, tmp_path):
    dst = hearthlm.quantize(model_dir("llama-gqa-tied"), str(tmp_path / "q4"), dtype="q4")
    runs = logits_both_ways(dst)
    assert np.array_equal(runs[True][1], runs[False][1])
    assert runs[False][0].load_stats["copied_bytes"] == runs[True][0].load_stats["mapped_bytes"] > 0


def test_quantized_blocks_of_any_rank_copied(tmp_path, monkeypatch):
    """Packed blocks stored as 3-D byte tensors (as `--shape tinyllama-1.1b --dtype q4`
    writes them) are copied too, not only 2-D ones."""
    import shutil

    from safetensors import safe_open
    from safetensors.numpy import save_file

    from hearthlm.shapes import random_model_folder
    monkeypatch.setenv("HEARTHLM_CACHE", str(tmp_path / "cache"))
    folder = shutil.copytree(random_model_folder("tiny", "q4"), tmp_path / "q4-3d")
    path = str(folder / "model.safetensors")
    with safe_open(path, "np") as f:
        metadata = f.metadata()
        tensors = {n: f.get_tensor(n) for n in f.keys()}
    tensors = {n: t.reshape(t.shape[0], -1, 16) if t.dtype == np.uint8 and t.shape[1] % 16 == 0 else t
               for n, t in tensors.items()}  # [row groups, blocks, bytes]
    assert any(t.ndim == 3 for t in tensors.values())
    save_file(tensors, path, metadata=metadata)
    runs = logits_both_ways(str(folder))
    assert np.array_equal(runs[True][1], runs[False][1])
    assert runs[False][0].load_stats["copied_bytes"] == runs[True][0].load_stats["mapped_bytes"] > 0
    assert runs[False][0].load_stats["mapped_bytes"] == 0


def test_copy_reports_progress(model_dir):
    calls = []
    model = hearthlm.load(model_dir("llama-mha", dtype="bf16"), mmap=False, progress=lambda d, t: calls.append((d, t)))
    copied = model.load_stats["copied_bytes"]
    assert calls[0] == (0, copied) and calls[-1] == (copied, copied)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_nothing_allocated_per_token(model_dir):
    model = hearthlm.load(model_dir("llama-gqa-tied", dtype="bf16"), mmap=False)
    arena_used = model.transformer.weights.reader.arena.used
    s = model.session(n_ctx=128, n_keep=0)
    s.feed([1, 2, 3])
    s.feed([4])
    tracemalloc.start()
    for i in range(50):
        s.feed([5 + i])
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 4096  # bytes: Python bookkeeping, no array per token
    assert model.transformer.weights.reader.arena.used == arena_used


@pytest.mark.skipif(not weight_memory.huge_pages(), reason="no transparent huge pages here")
def test_arena_is_huge_page_backed():
    arena = weight_memory.Arena([4 << 20, 6, 8])
    first = arena.take((1 << 20,), np.float32)
    second = arena.take((3,), np.uint16)
    assert first.ctypes.data % weight_memory.HUGE_PAGE == 0
    assert second.ctypes.data == first.ctypes.data + first.nbytes  # already 64-byte aligned
    third = arena.take((2,), np.float32)
    assert third.ctypes.data % weight_memory.ALIGN == 0
    flags = next(line.split()[1:] for line in mapping_of(first) if line.startswith("VmFlags:"))
    assert "hg" in flags  # advised MADV_HUGEPAGE
    with pytest.raises(MemoryError, match="arena"):
        arena.take((64,), np.uint8)


def test_copy_by_default_leaves_a_model_that_barely_fits_mapped(monkeypatch):
    monkeypatch.setattr(weight_memory, "available_bytes", lambda: 10 << 30)
    monkeypatch.setattr(weight_memory, "huge_pages", lambda: True)
    assert weight_memory.copy_by_default(5 << 30) and not weight_memory.copy_by_default(6 << 30)
    monkeypatch.setattr(weight_memory, "huge_pages", lambda: False)
    assert not weight_memory.copy_by_default(1 << 20)


def test_read_into_a_file_cut_after_opening(model_dir, tmp_path):
    src = os.path.join(model_dir("llama-mha"), "model.safetensors")
    path = tmp_path / "model.safetensors"
    path.write_bytes(open(src, "rb").read())
    f = SafetensorsFile(str(path))
    name = max(f.tensors, key=lambda n: f.tensors[n].end)
    os.truncate(path, f.tensors[name].begin + 8)
    out = np.empty(f.tensors[name].shape, np.float32)
    with pytest.raises(hearthlm.ModelFormatError, match=f"{name}.*ends early"):
        f.read_into(name, out)


@pytest.mark.parametrize("bad", ["no", 0, 1, "False"])
def test_bad_mmap_value_names_the_parameter(model_dir, bad):
    with pytest.raises(hearthlm.InvalidInputError, match=r"^mmap: expected True, False or None"):
        hearthlm.load(model_dir("llama-mha"), mmap=bad)


def test_cli_mmap_flags(capsys):
    p = cli.parser()
    for argv, expected in ((["--mmap"], True), (["--no-mmap"], False), ([], None)):
        for command in (["bench", "--shape", "tiny"], ["generate", "-p", "x"], ["chat"], ["serve"]):
            assert p.parse_args([*command, *argv]).mmap is expected
    with pytest.raises(SystemExit) as e:
        p.parse_args(["generate", "-p", "x", "--mmap=yes"])
    assert e.value.code == 2 and "--mmap" in capsys.readouterr().err
