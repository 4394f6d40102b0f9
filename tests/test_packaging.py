"""What a packager relies on: a license file matching pyproject.toml, compiler flags that
follow CMAKE_BUILD_TYPE. (tools/wheel_check.sh checks the built wheel's contents.)"""
import json
import os
import shutil
import subprocess
import sys

import pybind11
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_license_file_matches_pyproject():
    with open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8") as f:
        assert 'license = { text = "MIT" }' in f.read()
    with open(os.path.join(ROOT, "LICENSE"), encoding="utf-8") as f:
        text = f.read()
    assert text.startswith("MIT License\n") and "Permission is hereby granted, free of charge" in text


def compile_flags(tmp_path, *cmake_args) -> list:
    """The compile command of every source, from a configure-only CMake run."""
    build = tmp_path / "build"
    subprocess.run(["cmake", "-S", ROOT, "-B", str(build), "-DCMAKE_EXPORT_COMPILE_COMMANDS=ON",
                    f"-Dpybind11_DIR={pybind11.get_cmake_dir()}", f"-DPython_EXECUTABLE={sys.executable}",
                    *cmake_args], check=True, capture_output=True, timeout=300)
    with open(build / "compile_commands.json") as f:
        return [entry["command"].split() for entry in json.load(f)]


@pytest.mark.skipif(shutil.which("cmake") is None, reason="needs cmake")
def test_compiler_flags_follow_the_build_type(tmp_path):
    debug = compile_flags(tmp_path / "debug", "-DCMAKE_BUILD_TYPE=Debug")
    assert debug and all("-g" in c and not any(f.startswith("-O") and f != "-O0" for f in c) for c in debug)
    default = compile_flags(tmp_path / "default")  # no build type: Release, fast
    assert all("-O3" in c and "-DNDEBUG" in c for c in default)
    own = compile_flags(tmp_path / "own", "-DCMAKE_BUILD_TYPE=Release", "-DCMAKE_CXX_FLAGS_RELEASE=-O2")
    assert all("-O2" in c and "-O3" not in c for c in own)
