"""Other engines run side by side with hearthlm by `hearthlm bench --vs ...`, on the
same weights, same threads, greedy decoding with a KV cache. They are optional
extras (`pip install hearthlm[bench]`), imported only when asked for."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .errors import HearthlmError
from .gguf_export import export_gguf


@dataclass
class EngineRuns:
    """Timings of one engine (hearthlm or a peer), filled by its runner's run()."""
    prefill_s: list = field(default_factory=list)
    decode_token_s: list = field(default_factory=list)  # every decode step of every rep
    decode_s: list = field(default_factory=list)        # whole decode phase per rep


class PeerUnavailableError(HearthlmError, RuntimeError):
    """A --vs engine is not installed or cannot run this model."""


class TorchRunner:
    """transformers on the same folder, same dtype, same threads, greedy with a KV cache."""
    name = "torch"
    requires = ("torch", "transformers")  # modules, checked by the CLI before a run

    def __init__(self, folder: str, dtype: str, n_threads: int, n_ctx: int):
        try:
            import torch
            from transformers import AutoModelForCausalLM
        except ImportError as e:
            raise PeerUnavailableError(f"vs: engine 'torch' needs torch and transformers: {e}") from None

        torch.set_num_threads(n_threads)
        self.torch = torch
        # Quantized runs are compared with torch in bf16 (it has no q8/q4 CPU path here).
        torch_dtype = {"f32": torch.float32, "f16": torch.float16}.get(dtype, torch.bfloat16)
        self.model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch_dtype).eval()

    def run(self, prompt: np.ndarray, n_gen: int, runs: EngineRuns) -> None:
        torch = self.torch
        with torch.inference_mode():
            ids = torch.tensor(prompt[None, :].astype(np.int64))
            t0 = time.perf_counter()
            out = self.model(ids, use_cache=True)
            runs.prefill_s.append(time.perf_counter() - t0)
            past, logits = out.past_key_values, out.logits[:, -1]
            start = time.perf_counter()
            for _ in range(n_gen):
                s = time.perf_counter()
                token = logits.argmax(-1, keepdim=True)
                out = self.model(token, past_key_values=past, use_cache=True)
                past, logits = out.past_key_values, out.logits[:, -1]
                runs.decode_token_s.append(time.perf_counter() - s)
            runs.decode_s.append(time.perf_counter() - start)




class LlamaCppRunner:
    """llama.cpp through llama-cpp-python, on the same GGUF file, or on one written from
    the same folder (q8 -> Q8_0, q4 -> Q4_0, 16-bit as is). Its extra buffer types (the AMX/repack
    path) are turned off: on some CPUs they crash at the tile-config instruction."""
    name = "llama.cpp"
    requires = ("llama_cpp", "gguf")

    def __init__(self, folder: str, dtype: str, n_threads: int, n_ctx: int):
        try:
            from llama_cpp import Llama
        except ImportError as e:
            raise PeerUnavailableError(f"vs: engine 'llama.cpp' needs llama-cpp-python and gguf: {e}") from None
        kwargs = dict(model_path=folder if folder.endswith(".gguf") else export_gguf(folder, dtype), n_ctx=n_ctx, n_batch=512, n_ubatch=512,
                      n_threads=n_threads, n_threads_batch=n_threads, verbose=False)
        try:
            self.llm = Llama(**kwargs, use_extra_bufts=False)
        except TypeError:  # older llama-cpp-python without the option
            self.llm = Llama(**kwargs)

    def last_logits(self) -> np.ndarray:
        """The last evaluated position's logits (llm.scores is only kept with logits_all)."""
        from llama_cpp import llama_get_logits_ith
        return np.ctypeslib.as_array(llama_get_logits_ith(self.llm.ctx, -1), shape=(self.llm.n_vocab(),))

    def run(self, prompt: np.ndarray, n_gen: int, runs: EngineRuns) -> None:
        llm = self.llm
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(prompt.tolist())
        runs.prefill_s.append(time.perf_counter() - t0)
        start = time.perf_counter()
        for _ in range(n_gen):
            s = time.perf_counter()
            token = int(np.argmax(self.last_logits()))
            llm.eval([token])
            runs.decode_token_s.append(time.perf_counter() - s)
        runs.decode_s.append(time.perf_counter() - start)


PEERS = {"torch": TorchRunner, "llama.cpp": LlamaCppRunner}
