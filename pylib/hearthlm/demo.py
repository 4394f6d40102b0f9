"""The demo model shipped inside the package (a tiny Llama trained to chat about
arithmetic), so `hearthlm chat` works with no download."""
from __future__ import annotations

import os

from .errors import ModelFormatError

# What the demo model can do (its card: demo_model/README.md), for the chat banner.
SKILLS = ("the demo model (2.5M parameters) knows only: sums, differences, products up to 12 x 12 "
          "and comparisons of numbers up to 99 (\"What is 12 plus 7?\"), letter counts and "
          "reversed words of its 76 words (\"Reverse the word lemon.\"), repeating a text word "
          "for word (\"Repeat after me: ...\"), replacing one word of a short text (\"Replace cat "
          "with dog: ...\"), and greetings; it declines anything else")


def is_demo(path: str) -> bool:
    return os.path.realpath(path) == os.path.realpath(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                                    "demo_model"))


def demo_model_path() -> str:
    """The folder of the bundled demo model; ModelFormatError if this build lacks it."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo_model")
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise ModelFormatError(f"{path}: the demo model is not part of this hearthlm installation; "
                               f"give a MODEL folder instead")
    return path
