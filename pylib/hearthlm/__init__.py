"""hearthlm: fast CPU inference for Llama-family LLMs, straight from Hugging Face folders.

    import hearthlm
    model = hearthlm.load("path/to/model", dtype="bf16")   # or "q8" / "q4"
    print(model.generate("The capital of France is", max_new_tokens=16))
    for piece in model.chat([{"role": "user", "content": "Hi!"}], stream=True):
        print(piece, end="", flush=True)
"""
from . import _openmp  # noqa: F401  first: libgomp reads its settings when _kernels loads it
from .conversation import Conversation
from .cpu import apply_isa_from_environment, cpu_info, select_isa
from .demo import demo_model_path
from .errors import (ContextOverflowError, FileWriteError, HearthlmError, HubError, InvalidInputError,
                     ModelFormatError, SessionBusyError, UnsupportedISAError, UnsupportedModelError)
from .model import Model, load
from .perplexity_eval import perplexity
from .quant_writer import quantize
from .session import Session

__version__ = "0.1.0"

apply_isa_from_environment()

__all__ = [
    "ContextOverflowError", "Conversation", "FileWriteError", "HearthlmError", "HubError", "InvalidInputError", "Model", "ModelFormatError",
    "Session", "SessionBusyError", "UnsupportedISAError", "UnsupportedModelError", "cpu_info",
    "demo_model_path", "load", "perplexity", "quantize", "select_isa",
]
