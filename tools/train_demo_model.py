#!/usr/bin/env python3
"""Train hearthlm's embedded demo model: a tiny Llama-family chat model that
answers checkable arithmetic / word questions.

Everything is generated and trained by this one seeded script (CPU, 1 thread):

  1. generate a chat corpus for six tasks, with a held-out test set that never
     appears in training. Each training sequence is a conversation of 1 to 4
     user/assistant turns (system prompt, then user question / assistant answer
     pairs drawn independently from the training questions; ~30% single-turn);
  2. train a byte-level BPE tokenizer (digits split into single tokens) with
     the `tokenizers` library;
  3. train a small `LlamaForCausalLM` (GQA, tied embeddings) from scratch,
     loss on every assistant answer (+ its <|im_end|>) of the conversation;
  4. write a Hugging Face model folder (config, safetensors, tokenizer,
     generation config, heldout.jsonl);
  5. evaluate greedy exact-match accuracy on the held-out set under
     transformers (same code as tools/eval_demo_model.py).

Usage:
  python3 tools/train_demo_model.py --out /tmp/demo_mt --steps 1350 --seed 1234
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import torch

SYSTEM_PROMPT = "You are a helpful calculator."
BOS, IM_START, IM_END, PAD = "<s>", "<|im_start|>", "<|im_end|>", "<pad>"
# id order of the special tokens in the trained vocab: <pad>=0, <s>=1, <|im_start|>=2, <|im_end|>=3
SPECIAL_TOKENS = [PAD, BOS, IM_START, IM_END]

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% if messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\n" + SYSTEM_PROMPT + "<|im_end|>\n' }}"
    "{% endif %}"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Small fixed word list (lower-case, 3-8 letters).
WORDS = [
    "cat", "dog", "sun", "cup", "hat", "pen", "box", "egg", "fox", "owl",
    "bird", "fish", "tree", "moon", "star", "rain", "snow", "ship", "book", "lamp",
    "frog", "milk", "cake", "door", "rock", "wolf", "bear", "lion", "road", "leaf",
    "apple", "grape", "lemon", "mango", "water", "house", "table", "chair", "horse", "mouse",
    "plant", "cloud", "river", "stone", "bread", "light", "sheep", "tiger", "zebra", "music",
    "garden", "window", "orange", "banana", "rabbit", "turtle", "planet", "butter", "pencil", "winter",
    "kitchen", "dolphin", "blanket", "monster", "rainbow", "chicken", "penguin", "country",
    "elephant", "computer", "mountain", "sandwich", "umbrella", "keyboard", "dinosaur", "triangle",
]

PHRASINGS = {
    "add": [
        "What is {a} plus {b}?",
        "What is {a} + {b}?",
        "Add {a} and {b}.",
        "Compute {a} + {b}.",
    ],
    "sub": [
        "What is {a} minus {b}?",
        "What is {a} - {b}?",
        "Subtract {b} from {a}.",
        "Compute {a} - {b}.",
    ],
    "mul": [
        "What is {a} times {b}?",
        "What is {a} * {b}?",
        "Multiply {a} by {b}.",
        "Compute {a} x {b}.",
        "What is the product of {a} and {b}?",
        "Calculate {a} times {b}.",
    ],
    "cmp": [
        "Which is larger, {a} or {b}?",
        "Which number is bigger: {a} or {b}?",
        "What is the maximum of {a} and {b}?",
    ],
    "count": [
        "How many letters are in the word {w}?",
        "Count the letters in {w}.",
        "How long is the word {w}?",
        "How many letters does {w} have?",
        "What is the length of the word {w}?",
        "Count the letters of the word {w}.",
    ],
    "rev": [
        "Reverse the word {w}.",
        "Spell {w} backwards.",
        "What is {w} written backwards?",
        "Write {w} in reverse.",
        "Reverse the letters of {w}.",
        "What do you get when you reverse {w}?",
    ],
}

# Sampling weights of the tasks in a training batch.
TASK_WEIGHTS = {"add": 0.265, "sub": 0.265, "mul": 0.12, "cmp": 0.13, "count": 0.10, "rev": 0.12}
# Number of user/assistant turns per training conversation (each turn's question is an
# independent random training question; the loss covers every assistant answer).
TURN_WEIGHTS = {1: 0.30, 2: 0.30, 3: 0.20, 4: 0.20}
# Number of held-out examples written to heldout.jsonl per task.
HELDOUT_COUNTS = {"add": 70, "sub": 70, "mul": 32, "cmp": 60, "count": 34, "rev": 34}


def answer(task: str, item) -> str:
    if task == "add":
        return str(item[0] + item[1])
    if task == "sub":
        return str(item[0] - item[1])
    if task == "mul":
        return str(item[0] * item[1])
    if task == "cmp":
        return str(max(item))
    if task == "count":
        return str(len(item))
    if task == "rev":
        return item[::-1]
    raise ValueError(task)


def question(task: str, item, phr: int) -> str:
    fmt = PHRASINGS[task][phr]
    if task in ("count", "rev"):
        return fmt.format(w=item)
    return fmt.format(a=item[0], b=item[1])


def messages_for(q: str) -> list:
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": q}]


def render_prompt(msgs: list) -> str:
    """Python twin of CHAT_TEMPLATE with add_generation_prompt=True (checked against
    the real template after the tokenizer is built)."""
    s = BOS
    if not msgs or msgs[0]["role"] != "system":
        s += IM_START + "system\n" + SYSTEM_PROMPT + IM_END + "\n"
    for m in msgs:
        s += IM_START + m["role"] + "\n" + m["content"] + IM_END + "\n"
    return s + IM_START + "assistant\n"


def build_splits(seed: int):
    """Return (train, heldout_pool) where each is {task: [(item, phrasing_idx), ...]}.

    Held-out rules (nothing held out ever appears in training, in any phrasing
    unless stated):
      add: 5% of the unordered pairs {a,b}, a,b in 0..99 (both orders, all phrasings)
      sub: 5% of the pairs (a,b), 0<=b<=a<=99 (all phrasings)
      cmp: 5% of the unordered pairs {a,b}, a!=b in 0..99 (both orders, all phrasings)
      mul/count/rev (memorised facts: the 13x13 table, the 76 words): one of the
           6 phrasings of each of 32 (mul) / 34 (count, rev) distinct items is held
           out; the same item stays in training under its other 5 phrasings
    """
    rng = random.Random(seed * 7919 + 17)
    train, held = {}, {}

    def split_pairs(task, keys, frac, expand):
        keys = sorted(keys)
        rng.shuffle(keys)
        n_h = int(round(len(keys) * frac))
        hk, tk = keys[:n_h], keys[n_h:]
        nph = len(PHRASINGS[task])
        train[task] = [(it, p) for k in tk for it in expand(k) for p in range(nph)]
        held[task] = [(it, p) for k in hk for it in expand(k) for p in range(nph)]

    both = lambda k: [k] if k[0] == k[1] else [k, (k[1], k[0])]
    split_pairs("add", [(a, b) for a in range(100) for b in range(a, 100)], 0.05, both)
    split_pairs("sub", [(a, b) for a in range(100) for b in range(a + 1)], 0.05, lambda k: [k])
    split_pairs("cmp", [(a, b) for a in range(100) for b in range(a + 1, 100)], 0.05, both)

    # mul / count / rev are memorised facts (a 13x13 table, the spelling of 76
    # words): hold out one phrasing of HELDOUT_COUNTS[task] distinct items each.
    items_of = {
        "mul": [(a, b) for a in range(13) for b in range(13)],
        "count": list(WORDS),
        "rev": list(WORDS),
    }
    for task, items in items_of.items():
        nph = len(PHRASINGS[task])
        chosen = list(items)
        rng.shuffle(chosen)
        hold = {(it, rng.randrange(nph)) for it in chosen[: HELDOUT_COUNTS[task]]}
        held[task] = sorted(hold)
        train[task] = [(it, p) for it in items for p in range(nph) if (it, p) not in hold]
    return train, held


def sample_heldout(held, seed: int):
    rng = random.Random(seed * 104729 + 3)
    out = []
    for task in ("add", "sub", "mul", "cmp", "count", "rev"):
        pool = list(held[task])
        if task in ("add", "sub", "cmp"):
            # one random phrasing per distinct pair
            by_item = {}
            for it, p in pool:
                by_item.setdefault(it, []).append(p)
            items = sorted(by_item)
            rng.shuffle(items)
            chosen = [(it, rng.choice(by_item[it])) for it in items[: HELDOUT_COUNTS[task]]]
        else:
            rng.shuffle(pool)
            chosen = pool[: HELDOUT_COUNTS[task]]
        for it, p in chosen:
            out.append({"task": task, "messages": messages_for(question(task, it, p)),
                        "answer": answer(task, it)})
    return out


def train_tokenizer(texts, vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = None
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    for i, t in enumerate(SPECIAL_TOKENS):
        assert tok.token_to_id(t) == i, (t, tok.token_to_id(t))
    return tok


def write_tokenizer_files(tok, out: Path):
    from transformers import PreTrainedTokenizerFast

    tok.save(str(out / "tokenizer.json"))
    cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": IM_END,
        "pad_token": PAD,
        "unk_token": None,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 256,
        "padding_side": "left",
        "chat_template": CHAT_TEMPLATE,
        "extra_special_tokens": {},
    }
    with open(out / "tokenizer_config.json", "w") as f:
        json.dump(cfg, f, indent=2, ensure_ascii=False)
        f.write("\n")
    return PreTrainedTokenizerFast  # noqa (import check)


def make_model(vocab_size: int, args):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        head_dim=args.hidden // args.heads,
        hidden_act="silu",
        max_position_embeddings=256,
        rms_norm_eps=1e-5,
        rope_theta=args.rope_theta,
        tie_word_embeddings=True,
        attention_bias=False,
        mlp_bias=False,
        initializer_range=0.02,
        bos_token_id=SPECIAL_TOKENS.index(BOS),
        eos_token_id=SPECIAL_TOKENS.index(IM_END),
        pad_token_id=SPECIAL_TOKENS.index(PAD),
        torch_dtype="float32",
    )
    torch.manual_seed(args.seed)
    model = LlamaForCausalLM(cfg)
    return model


def encode_examples(tok, examples):
    """examples: list of (prompt_text, answer_text). Returns list of (ids, n_prompt)."""
    full = [p + a + IM_END for p, a in examples]
    prompts = [p for p, _ in examples]
    enc_full = tok.encode_batch(full)
    enc_prompt = tok.encode_batch(prompts)
    out = []
    for ef, ep in zip(enc_full, enc_prompt):
        ids, pids = ef.ids, ep.ids
        assert ids[: len(pids)] == pids, "prompt tokenization is not a prefix"
        out.append((ids, len(pids)))
    return out


def make_batch(encoded, pad_id: int):
    """encoded: list of (ids, n_prompt) -- only the tokens after the first n_prompt
    are supervised -- or (ids, sup) with sup a list of 0/1 per token (1 = supervised
    target; used for multi-turn conversations, where every answer is supervised)."""
    L = max(len(ids) for ids, _ in encoded)
    x = torch.full((len(encoded), L), pad_id, dtype=torch.long)
    y = torch.full((len(encoded), L), -100, dtype=torch.long)
    for i, (ids, m) in enumerate(encoded):
        t = torch.tensor(ids, dtype=torch.long)
        x[i, : len(ids)] = t
        # position j predicts token j+1
        if isinstance(m, int):  # supervise answer tokens + <|im_end|>
            y[i, m - 1 : len(ids) - 1] = t[m:]
        else:
            sup = torch.tensor(m[1:], dtype=torch.bool)
            y[i, : len(ids) - 1] = torch.where(sup, t[1:], torch.full_like(t[1:], -100))
    return x, y


class TurnCodec:
    """Token-level composition of multi-turn conversations from pre-tokenized pieces.

    conversation tokens = HEAD + sum_k (QSEG_k + ASEG_k [+ NL if not last])
      HEAD = BOS + "<|im_start|>system\n{SYSTEM}<|im_end|>\n"
      QSEG = "<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n"
      ASEG = "{answer}<|im_end|>"  (supervised)
      NL   = "\n"
    Equal to tokenizing the rendered chat template text (checked in main())."""

    def __init__(self, tok):
        self.tok = tok
        self.head = tok.encode(BOS + IM_START + "system\n" + SYSTEM_PROMPT + IM_END + "\n").ids
        self.nl = tok.encode("\n").ids

    def pieces(self, qa_list):
        qs = self.tok.encode_batch([IM_START + "user\n" + q + IM_END + "\n" + IM_START + "assistant\n"
                                    for q, _ in qa_list])
        ans = self.tok.encode_batch([a + IM_END for _, a in qa_list])
        return [(q.ids, a.ids) for q, a in zip(qs, ans)]

    def compose(self, turns, supervise_all=True):
        """turns: list of (qseg_ids, aseg_ids). Returns (ids, sup)."""
        ids, sup = list(self.head), [0] * len(self.head)
        for k, (q, a) in enumerate(turns):
            last = k == len(turns) - 1
            ids += q
            sup += [0] * len(q)
            ids += a
            sup += [1 if (supervise_all or last) else 0] * len(a)
            if not last:
                ids += self.nl
                sup += [0] * len(self.nl)
        return ids, sup


def forward_shared_prefix(model, prefix, x):
    """Logits for x (B, L) as continuation of the common prefix (1, P)."""
    out = model.model(input_ids=prefix, use_cache=True)
    cache = out.past_key_values
    for layer in cache.layers:
        layer.keys = layer.keys.expand(x.size(0), -1, -1, -1)
        layer.values = layer.values.expand(x.size(0), -1, -1, -1)
    try:
        return model(input_ids=x, cache=cache, use_cache=True).logits
    except TypeError:  # older transformers
        return model(input_ids=x, past_key_values=cache, use_cache=True).logits


@torch.no_grad()
def teacher_forced_exact(model, encoded, pad_id: int, bs: int = 128):
    """Fraction whose answer tokens (incl. <|im_end|>) are all the argmax: equals
    greedy exact match of the token sequence."""
    model.eval()
    ok = 0
    for i in range(0, len(encoded), bs):
        chunk = encoded[i : i + bs]
        x, y = make_batch(chunk, pad_id)
        logits = model(input_ids=x).logits
        pred = logits.argmax(-1)
        m = y != -100
        ok += int(((pred == y) | ~m).all(dim=1).sum())
    model.train()
    return ok / max(1, len(encoded))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="pylib/hearthlm/demo_model")
    ap.add_argument("--steps", type=int, default=1350)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--min-lr-frac", type=float, default=0.05)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--weight-decay", type=float, default=0.05)
    ap.add_argument("--vocab", type=int, default=512)
    ap.add_argument("--hidden", type=int, default=192)
    ap.add_argument("--intermediate", type=int, default=512)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--heads", type=int, default=6)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--rope-theta", type=float, default=10000.0)
    ap.add_argument("--log-every", type=int, default=100)
    ap.add_argument("--eval-every", type=int, default=500,
                    help="teacher-forced held-out exact match every N steps (monitoring only)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--time-limit", type=float, default=0,
                    help="if >0, stop early after this many seconds of training (not used by default)")
    ap.add_argument("--no-final-eval", action="store_true")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()

    # 1. corpus
    train, held = build_splits(args.seed)
    heldout = sample_heldout(held, args.seed)
    train_q = {t: {question(t, it, p) for it, p in train[t]} for t in train}
    for ex in heldout:  # hygiene: no held-out question text is in training
        q = ex["messages"][1]["content"]
        assert all(q not in s for s in train_q.values()), q
    corpus = {t: [(render_prompt(messages_for(question(t, it, p))), answer(t, it)) for it, p in train[t]]
              for t in train}
    n_train = sum(len(v) for v in corpus.values())
    print(f"corpus: {n_train} training examples "
          + ", ".join(f"{t}={len(v)}" for t, v in corpus.items())
          + "; held-out pool " + ", ".join(f"{t}={len(v)}" for t, v in held.items())
          + f"; heldout.jsonl={len(heldout)}", flush=True)

    # 2. tokenizer (trained on training texts only)
    texts = [p + a + IM_END + "\n" for v in corpus.values() for p, a in v]
    tok = train_tokenizer(texts, args.vocab)
    vocab_size = tok.get_vocab_size()
    write_tokenizer_files(tok, out)
    from transformers import AutoTokenizer

    hf_tok = AutoTokenizer.from_pretrained(str(out))
    for ex in heldout[:5] + [heldout[-1]]:
        r = hf_tok.apply_chat_template(ex["messages"], add_generation_prompt=True, tokenize=False)
        assert r == render_prompt(ex["messages"]), (r, render_prompt(ex["messages"]))
        ids = hf_tok(r, add_special_tokens=False)["input_ids"]
        assert ids.count(hf_tok.bos_token_id) == 1 and ids[0] == hf_tok.bos_token_id
        assert hf_tok.decode(ids) == r
    print(f"tokenizer: vocab={vocab_size}, example={hf_tok.convert_ids_to_tokens(hf_tok(render_prompt(heldout[0]['messages']) + heldout[0]['answer'], add_special_tokens=False)['input_ids'])[-14:]}", flush=True)

    # Multi-turn conversations are composed from pre-tokenized turn pieces.
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from eval_demo_model import heldout_multiturn

    codec = TurnCodec(tok)
    enc = {t: codec.pieces([(question(t, it, p), answer(t, it)) for it, p in train[t]]) for t in train}
    enc_held = encode_examples(tok, [(render_prompt(e["messages"]), e["answer"]) for e in heldout])
    held_tasks = [e["task"] for e in heldout]
    held_mt = heldout_multiturn(heldout, args.seed)
    held_pieces = codec.pieces([(e["messages"][-1]["content"], e["answer"]) for e in heldout])
    qidx = {e["messages"][-1]["content"]: i for i, e in enumerate(heldout)}
    enc_held_mt = []
    for e in held_mt:
        turns = [held_pieces[qidx[m["content"]]] for m in e["messages"] if m["role"] == "user"]
        ids, sup = codec.compose(turns, supervise_all=False)
        enc_held_mt.append((ids, sup))
    # Check the token composition against the real chat template, with an explicit
    # system message and without one (the template then inserts the default system
    # prompt: both render to the same text and tokens, so training covers both).
    chk_rng = random.Random(args.seed + 5)
    for n_chk in range(200):
        k = chk_rng.randint(1, 4)
        qa = []
        for _ in range(k):
            t = chk_rng.choice(list(train))
            it, p = chk_rng.choice(train[t])
            qa.append((question(t, it, p), answer(t, it)))
        msgs = [{"role": "system", "content": SYSTEM_PROMPT}]
        for q, a in qa:
            msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        ids, sup = codec.compose(codec.pieces(qa))
        for mm in (msgs, msgs[1:]):
            r = hf_tok.apply_chat_template(mm, tokenize=False)
            assert r == render_prompt(mm[:-1])[: -len(IM_START + "assistant\n")] + IM_START + "assistant\n" \
                + qa[-1][1] + IM_END + "\n", r
            assert hf_tok(r, add_special_tokens=False)["input_ids"] == ids + codec.nl, (r, ids)
    for e, (ids, sup) in zip(held_mt[:20], enc_held_mt[:20]):
        for mm in (e["messages"], e["messages"][1:]):
            r = hf_tok.apply_chat_template(mm, add_generation_prompt=True, tokenize=False)
            assert hf_tok(r + e["answer"] + IM_END, add_special_tokens=False)["input_ids"] == ids
    turn_ks = list(TURN_WEIGHTS)
    turn_w = [TURN_WEIGHTS[k] for k in turn_ks]
    print(f"multi-turn: turns per conversation {TURN_WEIGHTS}; longest possible conversation "
          f"{len(codec.head) + 4 * max(len(q) + len(a) + 1 for v in enc.values() for q, a in v)} tokens; "
          f"held-out multi-turn conversations {len(held_mt)}", flush=True)

    # 3. model
    model = make_model(vocab_size, args)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params} parameters ({n_params * 4 / 1e6:.2f} MB as f32)", flush=True)

    decay, no_decay = [], []
    for n, p in model.named_parameters():
        (decay if p.dim() >= 2 and "embed" not in n else no_decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.98), eps=1e-8)

    def lr_at(step):
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        prog = (step - args.warmup) / max(1, args.steps - args.warmup)
        return args.lr * (args.min_lr_frac + (1 - args.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * prog)))

    # Every training conversation starts with the same chat prefix (BOS + system turn +
    # "<|im_start|>user\n"); it is computed once per step and its KV cache shared
    # across the batch (exact same math, fewer tokens). Gradients flow through it.
    all_q = [q for v in enc.values() for q, _ in v]
    Q = min(len(q) for q in all_q) - 1
    for q in all_q:
        while q[:Q] != all_q[0][:Q]:
            Q -= 1
    P = len(codec.head) + Q
    prefix_t = torch.tensor(codec.head + all_q[0][:Q], dtype=torch.long)[None]
    print(f"shared prefix: {P} tokens", flush=True)

    tasks = list(TASK_WEIGHTS)
    weights = [TASK_WEIGHTS[t] for t in tasks]
    data_rng = random.Random(args.seed + 1)
    model.train()
    t0 = time.time()
    run_loss, run_n = 0.0, 0
    task_loss = {t: [0.0, 0] for t in tasks}
    steps_done = 0
    n_answers = 0
    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        # One turn count per step (all conversations of a batch have the same number
        # of turns: less padding); every turn is an independent random training question.
        k = data_rng.choices(turn_ks, weights=turn_w)[0]
        batch, tmasks = [], []
        for _ in range(args.batch):
            btasks = data_rng.choices(tasks, weights=weights, k=k)
            turns = [data_rng.choice(enc[t]) for t in btasks]
            ids, sup = codec.compose(turns)
            batch.append((ids[P:], sup[P:]))
            tm = []
            for t, (q, a) in zip(btasks, turns):
                tm += [-1] * len(q) + [tasks.index(t)] * len(a) + [-1] * len(codec.nl)
            tmasks.append(tm[Q:])
        n_answers += args.batch * k
        x, y = make_batch(batch, SPECIAL_TOKENS.index(PAD))
        tmask = torch.full(y.shape, -1, dtype=torch.long)
        for i, tm in enumerate(tmasks):
            tmask[i, : len(tm) - 1] = torch.tensor(tm[1:], dtype=torch.long)
        logits = forward_shared_prefix(model, prefix_t, x)
        tok_loss = torch.nn.functional.cross_entropy(
            logits.view(-1, logits.size(-1)), y.view(-1), ignore_index=-100, reduction="none").view(y.shape)
        n_tok = (y != -100).sum()
        loss = tok_loss.sum() / n_tok
        with torch.no_grad():
            for ti, t in enumerate(tasks):
                mt = tmask == ti
                if mt.any():
                    task_loss[t][0] += float(tok_loss[mt].mean())
                    task_loss[t][1] += 1
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        run_loss += loss.item()
        run_n += 1
        steps_done = step + 1
        if steps_done % args.log_every == 0 or steps_done == args.steps:
            el = time.time() - t0
            print(f"step {steps_done:5d}/{args.steps} loss {run_loss / run_n:.4f} lr {lr_at(step):.2e} "
                  f"elapsed {el:7.1f}s ({el / steps_done:.3f}s/step) | "
                  + " ".join(f"{t}={v[0] / max(1, v[1]):.3f}" for t, v in task_loss.items()), flush=True)
            run_loss, run_n = 0.0, 0
            task_loss = {t: [0.0, 0] for t in tasks}
        if args.eval_every and steps_done % args.eval_every == 0:
            per = {}
            for t in tasks:
                sub = [e for e, tt in zip(enc_held, held_tasks) if tt == t]
                per[t] = teacher_forced_exact(model, sub, SPECIAL_TOKENS.index(PAD))
            allacc = teacher_forced_exact(model, enc_held, SPECIAL_TOKENS.index(PAD))
            mtacc = teacher_forced_exact(model, enc_held_mt, SPECIAL_TOKENS.index(PAD))
            print(f"  [monitor] held-out teacher-forced exact {allacc:.3f} "
                  + " ".join(f"{t}={a:.2f}" for t, a in per.items())
                  + f" | multi-turn (last answer) {mtacc:.3f}", flush=True)
        if args.time_limit and time.time() - t0 > args.time_limit:
            print(f"time limit reached after {steps_done} steps", flush=True)
            break
    train_time = time.time() - t0
    print(f"training done: {steps_done} steps in {train_time:.1f}s ({train_time / 60:.1f} min), "
          f"{n_answers} supervised answers", flush=True)

    # 4. write model folder
    model.eval()
    model.config.use_cache = True
    model.generation_config.bos_token_id = SPECIAL_TOKENS.index(BOS)
    model.generation_config.eos_token_id = [SPECIAL_TOKENS.index(IM_END)]
    model.generation_config.pad_token_id = SPECIAL_TOKENS.index(PAD)
    model.generation_config.do_sample = False
    model.generation_config.max_new_tokens = 16
    model.save_pretrained(str(out), safe_serialization=True)
    # Also record rope_theta at top level (the legacy key older readers expect).
    cfg_path = out / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.setdefault("rope_theta", float(args.rope_theta))
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    with open(out / "heldout.jsonl", "w") as f:
        for e in heldout:
            f.write(json.dumps({"messages": e["messages"], "answer": e["answer"], "task": e["task"]},
                               ensure_ascii=False) + "\n")
    print("stats: " + json.dumps({"steps": steps_done, "train_seconds": round(train_time, 1),
                                  "supervised_answers": n_answers,
                                  "total_seconds": round(time.time() - t_start, 1), "params": n_params,
                                  "train_examples": n_train}), flush=True)
    for fn in out.iterdir():
        if fn.is_file():
            fn.chmod(0o644)
    print(f"wrote {out}", flush=True)

    # 5. evaluate under transformers (fresh load from disk)
    if not args.no_final_eval:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from eval_demo_model import evaluate

        evaluate(str(out), str(out / "heldout.jsonl"))
        evaluate(str(out), str(out / "heldout.jsonl"), multi_turn=True, seed=args.seed)
        evaluate(str(out), str(out / "heldout.jsonl"), multi_turn=True, no_system=True, seed=args.seed)


if __name__ == "__main__":
    main()
