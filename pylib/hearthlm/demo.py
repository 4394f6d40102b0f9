"""The demo model shipped inside the package (a tiny Llama trained to chat about
arithmetic), so `hearthlm chat` works with no download."""
from __future__ import annotations

import os

from .errors import ModelFormatError


def demo_model_path() -> str:
    """The folder of the bundled demo model; ModelFormatError if this build lacks it."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo_model")
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise ModelFormatError(f"{path}: the demo model is not part of this hearthlm installation; "
                               f"give a MODEL folder instead")
    return path
