"""The draft-length policy alone, without the machine's noise: the demo model decodes
with prompt lookup while a fake clock charges each forward of m tokens a fixed cost
(default: 1 + 0.18 for m = 2 and +0.07 per further token, about what the demo model's
forwards cost on one core), so every decision and the speed-up over plain decoding
(one forward per token) depend only on the policy. --old FILE runs another build's
hearthlm/speculative.py beside it (e.g. `git show REV:pylib/hearthlm/speculative.py`).

    python bench/speculative_policy.py [--old OLD_SPECULATIVE_PY] [--step 0.07]
"""
import argparse
import importlib.util
import sys

import hearthlm
import hearthlm.generation as generation
import hearthlm.session as session
import hearthlm.speculative as speculative
from hearthlm.chat_template import ChatTemplate

PASSAGE = ("the little cat sees a big red apple on the old table and the happy dog eats a small green "
           "lemon under the tree in my garden")
TASKS = {"free": "Write a short story about a fox who learns to sail.", "copy": "Repeat after me: " + PASSAGE,
         "edit": "Replace cat with dog: " + PASSAGE, "greeting": "Hi!", "sum": "What is 12 plus 7?",
         "reverse": "Reverse the word lemon.", "joke": "Tell me a joke.",
         "capital": "What is the capital of France?"}


def module(name: str, path: str):
    spec = importlib.util.spec_from_file_location(f"hearthlm.{name}", path)
    m = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = m
    spec.loader.exec_module(m)
    return m


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--old", help="another build's speculative.py, run beside this one")
    p.add_argument("--first", type=float, default=0.18, help="extra cost of a second token (default: %(default)s)")
    p.add_argument("--step", type=float, default=0.07, help="extra cost of each further token (default: %(default)s)")
    a = p.parse_args()
    policies = {"new": speculative} | ({"old": module("speculative_old", a.old)} if a.old else {})
    clock = [0.0]

    def cost(m: int) -> float:
        return 1.0 if m == 1 else 1.0 + a.first + a.step * (m - 2)

    feed = session.Session.feed

    def charged_feed(self, ids, *args, **kwargs):
        if clock[1:]:  # decoding (the prompt's prefill is not charged)
            clock[0] += cost(len(ids))
        clock[1:] = [True]
        return feed(self, ids, *args, **kwargs)

    session.Session.feed = charged_feed

    class FakeTime:
        @staticmethod
        def perf_counter() -> float:
            return clock[0]

    model = hearthlm.load(hearthlm.demo_model_path(), n_threads=1)
    template = ChatTemplate.for_model(model)
    print(f"cost(m) = 1, 1 + {a.first} + {a.step} (m - 2); speed-up = forwards of plain decoding (one per "
          "token, the end of turn included) / the policy's charged cost")
    print("| task | tokens | " + " | ".join(f"{k} speed-up (drafted)" for k in policies) + " |")
    print("|---|---|" + "---|" * len(policies))
    for task, text in TASKS.items():
        ids = template.encode(model.tokenizer, [{"role": "user", "content": text}])
        cells = []
        for name, policy in policies.items():
            saved, policy.time = policy.time, FakeTime
            generation.Speculation = policy.Speculation
            clock[:] = [0.0]
            r = model.generate(ids, max_new_tokens=128, return_result=True, speculative="prompt-lookup")
            policy.time = saved
            cells.append(f"{r.completion_tokens / clock[0]:.3f} ({r.drafted_tokens})")
        print(f"| {task} | {r.completion_tokens} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
