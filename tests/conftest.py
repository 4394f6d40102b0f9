import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

import tiny_models  # noqa: E402


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """model_dir(variant, dtype="f32", **build_kwargs) -> folder, built once per session."""
    built = {}

    def get(name, dtype="f32", **kwargs):
        key = (name, dtype, tuple(sorted(kwargs.items())))
        if key not in built:
            folder = tmp_path_factory.mktemp(f"{name}-{dtype}")
            built[key] = tiny_models.build(name, str(folder), dtype=dtype, **kwargs)
        return built[key]

    return get
