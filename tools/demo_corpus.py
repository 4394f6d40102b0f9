"""The demo model's tasks and data (used by tools/train_demo_model.py and
tools/eval_demo_model.py): phrasings, answers, the seeded train / held-out split, and
the "first tries" set (what a new user types first).

A question is (task, item, phrasing); its answer is a pure function of them. Nothing
here downloads anything.
"""

from __future__ import annotations

import random

DEFAULT_SYSTEM = "You are a helpful calculator."
# System prompts seen in training besides the default (the README's "Be brief." among them).
TRAIN_SYSTEMS = [
    "Be brief.", "You are a helpful assistant.", "Answer with just the result.",
    "You are a friendly assistant.", "Keep your answers short.", "You are a math tutor.",
    "You are a helpful, respectful and honest assistant.", "Reply in one line.",
]
# Never in training: evaluation only.
HELDOUT_SYSTEM = "You are a concise assistant that answers questions."

GREETING_REPLY = "Hello! Ask me a small sum or a word puzzle."
SKILLS_REPLY = ("I can add, subtract, multiply and compare small numbers, count letters, "
                "reverse words and repeat a sentence.")
THANKS_REPLY = "You are welcome!"
OUT_OF_SKILL_REPLY = "I can only do small arithmetic and word puzzles."

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
# Words of the copy and edit tasks' passages besides WORDS (and made-up words, numbers).
LINK_WORDS = ["the", "a", "is", "and", "on", "in", "my", "big", "small", "red", "blue", "green",
              "happy", "old", "new", "little", "sees", "likes", "has", "runs", "eats", "under", "with"]
TEXT_WORDS = [
    "we", "you", "they", "she", "he", "it", "our", "your", "this", "that", "there", "here", "all", "some",
    "of", "to", "for", "from", "at", "by", "over", "after", "before", "into", "about", "then", "but", "or",
    "was", "are", "were", "will", "can", "not", "very", "every", "one", "two", "three", "many", "first", "last",
    "go", "went", "come", "make", "made", "take", "took", "give", "find", "found", "keep", "wrote", "read",
    "open", "close", "walk", "walked", "climbed", "cleaned", "said", "asked", "looked", "played", "sang",
    "day", "night", "morning", "evening", "week", "year", "time", "way", "home", "town", "city", "school",
    "friend", "mother", "father", "child", "people", "teacher", "farmer", "doctor", "letter", "story",
    "boat", "train", "car", "bus", "wind", "sea", "hill", "field", "forest", "bridge", "street", "market",
    "good", "bad", "long", "short", "warm", "cold", "dark", "bright", "quiet", "loud", "quick", "slow",
    "yellow", "white", "black", "brown", "soft", "hard", "early", "late", "together", "again", "always",
]

PHRASINGS = {
    "add": [
        "What is {a} plus {b}?", "What is {a} + {b}?", "Add {a} and {b}.", "Compute {a} + {b}.",
        "What's {a} plus {b}?", "How much is {a} plus {b}?", "What is the sum of {a} and {b}?",
        "{a} + {b}", "{a} + {b} =", "{a}+{b}",
    ],
    "sub": [
        "What is {a} minus {b}?", "What is {a} - {b}?", "Subtract {b} from {a}.", "Compute {a} - {b}.",
        "What's {a} minus {b}?", "How much is {a} minus {b}?", "Take {b} away from {a}.",
        "{a} - {b}", "{a} - {b} =", "{a}-{b}",
    ],
    "mul": [
        "What is {a} times {b}?", "What is {a} * {b}?", "Multiply {a} by {b}.", "Compute {a} x {b}.",
        "What is the product of {a} and {b}?", "Calculate {a} times {b}.", "{a} * {b}", "{a} x {b}",
    ],
    # the first five ask for the larger number, the last two for the smaller
    "cmp": [
        "Which is larger, {a} or {b}?", "Which number is bigger: {a} or {b}?",
        "What is the maximum of {a} and {b}?", "Which is bigger, {a} or {b}?", "Which is greater, {a} or {b}?",
        "Which is smaller, {a} or {b}?", "What is the minimum of {a} and {b}?",
    ],
    "count": [
        "How many letters are in the word {w}?", "Count the letters in {w}.", "How long is the word {w}?",
        "How many letters does {w} have?", "What is the length of the word {w}?", "Count the letters of the word {w}.",
    ],
    "rev": [
        "Reverse the word {w}.", "Spell {w} backwards.", "What is {w} written backwards?",
        "Write {w} in reverse.", "Reverse the letters of {w}.", "What do you get when you reverse {w}?",
    ],
    "copy": ["Repeat after me: {s}", "Say this: {s}", "Repeat this sentence: {s}", "Copy this: {s}",
             "Repeat this text: {s}", "Repeat after me:\n{s}"],
    # edit a short text: replace its one word {x} by {y}
    "replace": ["Replace {x} with {y}: {s}", "Change {x} to {y}: {s}", "Replace the word {x} with {y}: {s}",
                "In this text, replace {x} with {y}: {s}"],
}
# Held-out phrasings of add / sub (never in training: the held-out set's sums and
# differences, every pair being trained in PHRASINGS).
HELDOUT_PHRASINGS = {
    "add": ["Calculate {a} plus {b}.", "What do you get when you add {a} and {b}?", "{a} plus {b}",
            "Please add {a} and {b}."],
    "sub": ["Calculate {a} minus {b}.", "What do you get when you subtract {b} from {a}?", "{a} minus {b}",
            "Please subtract {b} from {a}."],
}
# add / sub phrasings asked about a number over 99: answered OUT_OF_SKILL_REPLY
BIG_TASKS = ("add", "sub")
MIN_PHRASINGS = 5  # cmp phrasings from this index on ask for the smaller number

# Conversation openers and questions outside the skills, each with its fixed reply.
GREETINGS = ["Hi!", "Hi", "Hello!", "Hello", "Hey", "Hey!", "Hi there!", "Hello there.", "Good morning!",
             "Good evening!", "Good afternoon.", "Hey there", "Howdy!", "Greetings!", "Yo", "Hiya!",
             "How are you?", "How are you doing?", "Hello, how are you?", "Hi, how is it going?"]
SKILL_QUESTIONS = ["What can you do?", "Who are you?", "What are you?", "Help", "help", "What do you know?",
                   "How can you help me?", "What are your skills?", "Tell me what you can do.", "Help me."]
THANKS = ["Thanks!", "Thank you.", "Thank you!", "Thanks a lot.", "Great, thanks.", "Cool, thank you!"]
OUT_OF_SKILL_TEMPLATES = [
    "What is the capital of {place}?", "Tell me about {thing}.", "Write a poem about {thing}.",
    "Who is the president of {place}?", "Translate {word} into French.", "What does {word} mean?",
    "Write a story about a {word}.", "How do I cook {food}?", "Why is the {word} {color}?",
    "What is the weather like in {place}?", "Can you explain {thing}?", "Where is {place}?",
    "What is {big} plus {big2}?", "What is {big} times {big2}?", "Is {thing} good for me?",
    "Give me a recipe for {food}.", "What is the history of {place}?", "Who invented the {word}?",
    "Tell me a joke about {thing}.", "What is the best {word}?",
]
OUT_OF_SKILL_FIXED = [
    "Tell me a joke.", "What time is it?", "What is the meaning of life?", "Write some Python code.",
    "What is love?", "Can you sing?", "Do you like music?", "What day is it today?", "Explain quantum physics.",
    "What is the speed of light?", "Write an email to my boss.", "What should I eat tonight?",
    "Who won the world cup?", "How old are you?", "What is your favorite color?", "asdf", "???",
    "Can you browse the internet?", "Summarize this article.", "What is the square root of 2?",
]
FILLERS = {
    "place": ["France", "Spain", "Japan", "Brazil", "Canada", "Egypt", "India", "Kenya", "Peru", "Norway",
              "Italy", "China", "Mexico", "Chile", "Germany", "Poland", "Ghana", "Nepal", "Cuba", "Iceland"],
    "thing": ["history", "the ocean", "dinosaurs", "space", "computers", "music", "football", "politics",
              "the moon", "coffee", "gravity", "cats", "money", "the internet", "art", "sleep"],
    "food": ["rice", "pasta", "soup", "eggs", "fish", "bread", "pizza", "curry", "salad", "cake"],
    "color": ["blue", "green", "red", "dark", "white"],
}


def answer(task: str, item, phr: int = 0) -> str:
    if task == "add":
        return str(item[0] + item[1])
    if task == "sub":
        return str(item[0] - item[1])
    if task == "mul":
        return str(item[0] * item[1])
    if task == "cmp":
        return str(min(item) if phr >= MIN_PHRASINGS else max(item))
    if task == "count":
        return str(len(item))
    if task == "rev":
        return item[::-1]
    if task == "copy":
        return item
    if task == "replace":
        text, x, y = item
        return " ".join(y if w == x else w for w in text.split(" "))
    raise ValueError(task)


def question(task: str, item, phr: int) -> str:
    fmt = PHRASINGS[task][phr]
    if task in ("count", "rev"):
        return fmt.format(w=item)
    if task == "copy":
        return fmt.format(s=item)
    if task == "replace":
        return fmt.format(s=item[0], x=item[1], y=item[2])
    return fmt.format(a=item[0], b=item[1])


def variants(q: str) -> list:
    """What users type besides the canonical form: all lower case, no final punctuation."""
    out = [q, q[0].lower() + q[1:], q.lower()]
    if q[-1] in "?.!":
        out.append(q[:-1])
    return list(dict.fromkeys(out))


def copy_sentence(rng: random.Random) -> str:
    """The README's kind of sentence: 2-8 words of WORDS and LINK_WORDS."""
    words = [rng.choice(WORDS if rng.random() < 0.6 else LINK_WORDS) for _ in range(rng.randint(2, 8))]
    s = " ".join(words)
    if rng.random() < 0.5:
        s = s[0].upper() + s[1:] + rng.choice([".", ".", "!", "?"])
    return s


def made_up_word(rng: random.Random) -> str:
    return "".join(rng.choice("abcdefghijklmnoprstuvwyz") for _ in range(rng.randint(2, 8)))


def passage(rng: random.Random) -> str:
    """A text to repeat or edit, 2-26 words (about 6-100 tokens): one to four sentences of
    WORDS, LINK_WORDS, TEXT_WORDS, numbers and made-up words (so copying is learned as
    copying, not as recalling a word list), or a README-style short sentence."""
    if rng.random() < 0.2:
        return copy_sentence(rng)
    budget = rng.choice([rng.randint(2, 10), rng.randint(6, 20), rng.randint(12, 26)])
    sentences, made_up = [], rng.random() < 0.3
    while budget > 0:
        n = min(budget, rng.randint(3, 12))
        budget -= n
        words = []
        for _ in range(n):
            r = rng.random()
            words.append(made_up_word(rng) if made_up and r < 0.2 else str(rng.randint(0, 999)) if r < 0.28
                         else rng.choice(TEXT_WORDS if r < 0.65 else WORDS if r < 0.85 else LINK_WORDS))
        sentence = " ".join(words)
        if rng.random() < 0.7:
            sentence = sentence[0].upper() + sentence[1:] + rng.choice([".", ".", ".", "!", "?"])
        sentences.append(sentence)
    return " ".join(sentences)


def short_text(rng: random.Random) -> str:
    """A text to edit: a README-style sentence or 3-14 words of the passage vocabulary."""
    if rng.random() < 0.3:
        return copy_sentence(rng)
    words = [str(rng.randint(0, 999)) if r < 0.06 else rng.choice(TEXT_WORDS if r < 0.5 else WORDS if r < 0.8
                                                                    else LINK_WORDS)
             for r in (rng.random() for _ in range(rng.randint(3, 14)))]
    s = " ".join(words)
    return s[0].upper() + s[1:] + rng.choice([".", ".", "!", "?"]) if rng.random() < 0.5 else s


def edit_item(rng: random.Random):
    """(text, x, y): x a word that occurs once in the text, y a word not in it."""
    while True:
        text = short_text(rng)
        words = text.split(" ")
        once = sorted({w for w in words if w.isalpha() and w.islower() and words.count(w) == 1})
        if not once:
            continue
        x = rng.choice(once)
        y = rng.choice(WORDS + TEXT_WORDS) if rng.random() < 0.8 else made_up_word(rng)
        if y not in words:
            return text, x, y


def big_number_question(rng: random.Random) -> str:
    """An add / sub question (any phrasing) with an operand over 99."""
    task = rng.choice(BIG_TASKS)
    r = rng.random()
    big, other = rng.randint(100, 999), rng.randint(0, 9) if r < 0.4 else rng.randint(10, 99) if r < 0.7 \
        else rng.randint(100, 999)
    item = (big, other) if rng.random() < 0.5 else (other, big)
    return question(task, item, rng.randrange(len(PHRASINGS[task])))


def out_of_skill_questions(rng: random.Random, per_template: int) -> list:
    out = set()
    for t in OUT_OF_SKILL_TEMPLATES:
        for _ in range(per_template):
            out.add(t.format(place=rng.choice(FILLERS["place"]), thing=rng.choice(FILLERS["thing"]),
                             food=rng.choice(FILLERS["food"]), color=rng.choice(FILLERS["color"]),
                             word=rng.choice(WORDS), big=rng.randint(100, 999), big2=rng.randint(2, 999)))
    return sorted(out)


def build_splits(seed: int):
    """(train, held): {task: [(question_text, answer), ...]}; no held-out question text is
    in training (checked by the caller).

    add / sub: every pair of 0..99 is in training in every phrasing (the model should
    know them all); held out are HELDOUT_PHRASINGS (never trained) of random pairs of
    two-digit numbers. cmp: every pair with a single-digit operand is in training (users
    try those first); 5 % of the pairs of two-digit numbers are held out in every
    phrasing and order. mul / count / rev (memorised: a
    13x13 table, the spelling of 76 words): one phrasing of some items is held out, the
    item stays in training under the others. greet / oos: a fifth of the texts held out;
    copy: fresh random sentences.
    """
    rng = random.Random(seed * 7919 + 17)
    train, held = {}, {}

    def qa(task, it, p):
        return question(task, it, p), answer(task, it, p)

    def split_pairs(task, pairs, frac, expand):
        small = [k for k in pairs if min(k) < 10]
        big = sorted(k for k in pairs if min(k) >= 10)
        rng.shuffle(big)  # also for add / sub: the later splits draw from the same stream as before
        n_h = int(round(len(big) * frac)) if task == "cmp" else 0
        nph = len(PHRASINGS[task])
        train[task] = [qa(task, it, p) for k in small + big[n_h:] for it in expand(k) for p in range(nph)]
        held[task] = [qa(task, it, p) for k in big[:n_h] for it in expand(k) for p in range(nph)]

    both = lambda k: [k] if k[0] == k[1] else [k, (k[1], k[0])]
    split_pairs("add", [(a, b) for a in range(100) for b in range(a, 100)], 0.05, both)
    split_pairs("sub", [(a, b) for a in range(100) for b in range(100)], 0.05, lambda k: [k])
    split_pairs("cmp", [(a, b) for a in range(100) for b in range(a + 1, 100)], 0.05, both)
    held_rng = random.Random(seed * 7919 + 23)
    for task, phrasings in HELDOUT_PHRASINGS.items():
        pairs = [(held_rng.randint(10, 99), held_rng.randint(10, 99)) for _ in range(300)]
        held[task] = [(held_rng.choice(variants(fmt.format(a=a, b=b))), answer(task, (a, b)))
                      for a, b in pairs for fmt in [held_rng.choice(phrasings)]]

    held_items = {"mul": 32, "count": 34, "rev": 34}
    items_of = {"mul": [(a, b) for a in range(13) for b in range(13)], "count": list(WORDS), "rev": list(WORDS)}
    for task, items in items_of.items():
        nph = len(PHRASINGS[task])
        chosen = list(items)
        rng.shuffle(chosen)
        hold = {(it, rng.randrange(nph)) for it in chosen[: held_items[task]]}
        held[task] = [qa(task, it, p) for it, p in sorted(hold)]
        train[task] = [qa(task, it, p) for it in items for p in range(nph) if (it, p) not in hold]

    chat = [(g, GREETING_REPLY) for g in GREETINGS] + [(q, SKILLS_REPLY) for q in SKILL_QUESTIONS] \
        + [(t, THANKS_REPLY) for t in THANKS]
    rng.shuffle(chat)
    tried = {q for r in first_tries() if r["task"] in ("greet", "readme") for q in [r["messages"][-1]["content"]]}
    holdable = [c for c in chat if c[0] not in tried]
    held["greet"] = holdable[: len(chat) // 5]
    train["greet"] = [c for c in chat if c not in held["greet"]]
    oos = [(q, OUT_OF_SKILL_REPLY) for q in out_of_skill_questions(rng, 120) + OUT_OF_SKILL_FIXED]
    rng.shuffle(oos)
    tried_oos = {r["messages"][-1]["content"] for r in first_tries() if r["answer"] == OUT_OF_SKILL_REPLY}
    held["oos"] = [c for c in oos[:300] if c[0] not in tried_oos]
    train["oos"] = oos[300:] + [c for c in oos[:300] if c[0] in tried_oos]

    # copy / edit: fresh random passages (so any copy right on held-out is generalisation)
    texts = sorted({passage(rng) for _ in range(60000)})
    rng.shuffle(texts)
    nph = len(PHRASINGS["copy"])
    held["copy"] = [qa("copy", s, rng.randrange(nph)) for s in texts[:300]]
    train["copy"] = [qa("copy", s, rng.randrange(nph)) for s in texts[300:]]
    items = sorted({edit_item(rng) for _ in range(60000)})
    rng.shuffle(items)
    nph = len(PHRASINGS["replace"])
    held["replace"] = [qa("replace", it, rng.randrange(nph)) for it in items[:300]]
    train["replace"] = [qa("replace", it, rng.randrange(nph)) for it in items[300:]]
    big = sorted({big_number_question(rng) for _ in range(30000)} - tried_oos)
    rng.shuffle(big)
    held["big"] = [(q, OUT_OF_SKILL_REPLY) for q in big[:300]]
    train["big"] = [(q, OUT_OF_SKILL_REPLY) for q in big[300:]] + [(q, OUT_OF_SKILL_REPLY) for q in tried_oos
                                                                   if any(c.isdigit() for c in q)]

    # every training text also in the variant forms users type (lower case, no final mark)
    for task in ("add", "sub", "cmp", "greet", "oos", "big"):
        train[task] = [(v, a) for q, a in train[task] for v in variants(q)]
    seen = {q for pairs in train.values() for q, _ in pairs}
    held = {t: [(q, a) for q, a in pairs if q not in seen and (t not in LONG_TASKS or len(q) + len(a) <= HELD_CHARS)]
            for t, pairs in held.items()}
    return train, held


def user_rows(task, pairs, system=DEFAULT_SYSTEM):
    msgs = lambda q: ([{"role": "system", "content": system}] if system is not None else []) \
        + [{"role": "user", "content": q}]
    return [{"task": task, "messages": msgs(q), "answer": a} for q, a in pairs]


LONG_TASKS = ("copy", "replace")
# Held-out copy / edit questions up to this many characters (question + answer, at most
# about 190 tokens), so that a few earlier turns still fit the 256-token context.
HELD_CHARS = 260
HELDOUT_COUNTS = {"add": 70, "sub": 70, "mul": 32, "cmp": 60, "count": 34, "rev": 34,
                  "greet": 8, "oos": 30, "big": 30, "copy": 30, "replace": 30}


def sample_heldout(held, seed: int) -> list:
    rng = random.Random(seed * 104729 + 3)
    out = []
    for task, n in HELDOUT_COUNTS.items():
        pool = list(held[task])
        rng.shuffle(pool)
        out += user_rows(task, pool[:n])
    return out


# The README's and the model card's examples, with their answers.
README_EXAMPLES = [
    ("What is 12 plus 7?", "19"), ("what's 3 plus 4", "7"), ("What is 37 plus 52?", "89"), ("2 + 2", "4"),
    ("What is 12 + 7?", "19"), ("12 + 7", "19"), ("What is 3 minus 5?", "-2"), ("What is 37 minus 52?", "-15"),
    ("What is 6 times 7?", "42"), ("Which is larger, 21 or 2?", "21"), ("Which is smaller, 5 or 9?", "5"),
    ("How many letters are in the word banana?", "6"), ("Reverse the word lemon.", "nomel"),
    ("Hi!", GREETING_REPLY), ("What can you do?", SKILLS_REPLY),
    ("What is the capital of France?", OUT_OF_SKILL_REPLY), ("Tell me a joke.", OUT_OF_SKILL_REPLY),
    ("What is 150 plus 7?", OUT_OF_SKILL_REPLY),
    ("Repeat after me: the cat sees a big red apple", "the cat sees a big red apple"),
    ("Replace cat with dog: the cat sees a big red apple", "the dog sees a big red apple"),
]


def first_tries() -> list:
    """What a new user types first (mostly training questions, by design): every
    single-digit sum, difference and comparison in every phrasing, a sample of two-digit
    ones, the README's examples, greetings, copy requests (short sentences and passages
    of tens of tokens) and edits. The system message is the default (the evaluation
    replaces it)."""
    rows = []
    for task in ("add", "sub", "cmp"):
        rows += user_rows(task, [qa for a in range(10) for b in range(10) if task != "cmp" or a != b
                                 for p in range(len(PHRASINGS[task]))
                                 for qa in [(question(task, (a, b), p), answer(task, (a, b), p))]])
    rows += user_rows("readme", README_EXAMPLES)
    rows += user_rows("greet", [(g, GREETING_REPLY) for g in ["Hi!", "Hello", "Hello!", "Hey", "How are you?"]])
    rng = random.Random(99)
    rows += user_rows("copy", [(f"Repeat after me: {s}", s) for s in (copy_sentence(rng) for _ in range(20))])
    texts = [t for t in (passage(rng) for _ in range(40)) if len(t) > 60][:10]
    rows += user_rows("copy", [(f"Repeat after me: {t}", t) for t in texts])
    items = [edit_item(rng) for _ in range(10)]
    rows += user_rows("replace", [(f"Replace {x} with {y}: {s}", answer("replace", (s, x, y))) for s, x, y in items])
    two = []
    for task in ("add", "sub", "cmp"):
        for _ in range(40):
            a, b = rng.randint(10, 99), rng.randint(10, 99)
            if a != b:
                p = rng.randrange(len(PHRASINGS[task]))
                two.append((question(task, (a, b), p), answer(task, (a, b), p)))
    rows += user_rows("two-digit", two)
    return rows


def arith_class(task: str, a: int, b: int) -> str:
    """What makes a sum or difference hard: both operands single digits, a carry (units
    sum to 10 or more), a borrow (units of a below those of b), a negative result."""
    if a < 10 and b < 10:
        return f"{task} 1-digit"
    if task == "add":
        return "add carry" if a % 10 + b % 10 >= 10 else "add no carry"
    return "sub negative" if a < b else "sub borrow" if a % 10 < b % 10 else "sub no borrow"


def every_pair() -> list:
    """Every a + b and a - b for a, b in 0..99 in the main phrasing (20,000 questions),
    each tagged with its arith_class."""
    return [r for task in ("add", "sub") for a in range(100) for b in range(100)
            for r in user_rows(arith_class(task, a, b), [(question(task, (a, b), 0), answer(task, (a, b)))])]


def phrasing_sample(seed: int, per_phrasing: int = 50) -> list:
    """A seeded sample of sums and differences of two-digit numbers (10..99) under every
    phrasing, each in one of its variant forms (lower case, no final mark), tagged
    "add p3" (task and phrasing index)."""
    rng = random.Random(seed * 65537 + 5)
    rows = []
    for task in ("add", "sub"):
        for p in range(len(PHRASINGS[task])):
            pairs = [(rng.randint(10, 99), rng.randint(10, 99)) for _ in range(per_phrasing)]
            rows += user_rows(f"{task} p{p}", [(rng.choice(variants(question(task, k, p))), answer(task, k))
                                               for k in pairs])
    return rows

