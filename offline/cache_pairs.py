"""Training pairs for the cache verifier: QQP split by question, and rule-made hard negatives and paraphrases.

Rule pairs start from QQP questions and from chat requests (the English files of chatterbot-corpus:
tech support, coding, computers, ...; one request in five goes to dev), so the verifier also sees
imperative chat prompts ("Write ...", "Explain ...", "My laptop is overheating"), not only Quora questions.

Split: questions joined by any QQP pair form one component (union-find on the normalised text); a whole
component goes to train, dev or test by a hash of its first question, so no question (and no paraphrase
chain through it) is on two sides. Rules: a hard negative changes what the answer depends on (a number,
a unit, negation, two entities swapped, "from A to B" reversed, an antonym, the audience, one content
word replaced); a paraphrase rewrites the frame ("How do I" -> "How can I", "What is" -> "Can you
explain", contractions, case, punctuation, politeness) and keeps every content word.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import re
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml

from offline.cache_sets import RETIRED
from offline.chat_data import DATA
from offline.train_data import package_wheel
from router.cache.guard import ANTONYMS
from router.cache.keys import normalise
from router.cache.verifier import FUNCTION_WORDS

Pair = dict[str, Any]  # {"a": stored prompt, "b": query, "label": 0|1, "kind": str}
SPLITS = {"train": 70, "dev": 10, "test": 20}  # percent of question components
# Pairs written by hand (people's rewordings and same-topic hard negatives; offline/README.md): train and dev were
# written on different topics, so dev measures rewordings of subjects the verifier never saw.
WRITTEN = {"train": DATA / "train" / "cache_written.jsonl", "dev": DATA / "cache_written_dev.jsonl"}


def load_jsonl(path: Path) -> list[Pair]:
    opener: Callable[..., Any] = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def written_pairs() -> dict[str, list[Pair]]:
    """The hand-written pairs of each split (WRITTEN)."""
    return {name: load_jsonl(path) for name, path in WRITTEN.items()}


def retired_pairs(avoid: set[str]) -> list[Pair]:
    """The RETIRED sets' pairs, less any sharing a text (words only, lower case) with `avoid`: the dev, tuning and
    current held-out texts, which must stay unseen."""
    rows = [r for path in RETIRED for r in load_jsonl(path)]
    return [r for r in rows if not {text_key(r["a"]), text_key(r["b"])} & avoid]


def text_key(text: str) -> str:
    """Words only, lower case: 'How do I exit vim?' and 'how do i exit vim' are one text."""
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def split_by_question(rows: list[Pair]) -> dict[str, list[Pair]]:
    """Train/dev/test by connected component of questions (see the module docstring)."""
    parent: dict[str, str] = {}

    def root(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for r in rows:
        ra, rb = root(normalise(r["a"]).lower()), root(normalise(r["b"]).lower())
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    out: dict[str, list[Pair]] = {name: [] for name in SPLITS}
    for r in rows:
        bucket = int(hashlib.sha256(root(normalise(r["a"]).lower()).encode()).hexdigest(), 16) % 100
        edge = 0
        for name, share in SPLITS.items():
            edge += share
            if bucket < edge:
                out[name].append(r)
                break
    return out


# --- hard negatives -----------------------------------------------------------------------------------

_UNITS = [g.split() for g in [
    "seconds minutes hours days weeks months years", "second minute hour day week month year",
    "grams kilograms pounds ounces tons", "miles kilometers meters feet inches centimeters yards",
    "celsius fahrenheit kelvin", "kb mb gb tb", "dollars euros rupees yen pesos", "cups liters gallons milliliters",
    "mbps kbps gbps", "watts volts amps", "hourly daily weekly monthly yearly"]]
_UNIT_OF = {u: g for g in _UNITS for u in g}
_AUX = re.compile(r"\b(is|are|was|were|can|could|should|would|will|do|does|did)\b", re.IGNORECASE)
_NEG = re.compile(r"\b(not|never)\s+|n't\b", re.IGNORECASE)
_FROM_TO = re.compile(r"\bfrom ((?:\w+ ){0,2}\w+) to ((?:\w+ ){0,2}\w+)", re.IGNORECASE)
_X_TO_Y = re.compile(r"\b(convert|translate|migrate|switch|move|transfer|port|change) (\w+) (to|into) (\w+)", re.IGNORECASE)
_AUDIENCES = ["a child", "a beginner", "an expert", "a doctor", "a teenager", "a software engineer", "my grandmother",
              "a student", "a lawyer", "a five year old"]
_EXTRA_ANTONYMS = [("ascending", "descending"), ("high", "low"), ("long", "short"), ("light", "dark"),
                   ("heavy", "light"), ("easy", "hard"), ("safe", "dangerous"), ("read", "write"), ("day", "night"),
                   ("summer", "winter"), ("cheap", "expensive"), ("young", "old"), ("full", "empty")]
_ANTONYM_OF = {w: b if w == a else a for a, b in list(ANTONYMS) + _EXTRA_ANTONYMS for w in (a, b)}
_WORD = re.compile(r"[A-Za-z][A-Za-z']+")


def _replace_token(text: str, start: int, end: int, new: str) -> str:
    return text[:start] + new + text[end:]


def _numbers(text: str, rng: random.Random, _: list[str]) -> str | None:
    found = list(re.finditer(r"\d+", text))
    if not found:
        return None
    m = rng.choice(found)
    value = int(m.group())
    return _replace_token(text, m.start(), m.end(), str(value + rng.choice([1, 2, 3, 5, 10, value + 1])))


def _units(text: str, rng: random.Random, _: list[str]) -> str | None:
    found = [m for m in _WORD.finditer(text) if m.group().lower() in _UNIT_OF]
    if not found:
        return None
    m = rng.choice(found)
    return _replace_token(text, m.start(), m.end(), rng.choice([u for u in _UNIT_OF[m.group().lower()]
                                                                if u != m.group().lower()]))


def _negation(text: str, rng: random.Random, _: list[str]) -> str | None:
    neg = _NEG.search(text)
    if neg:
        return text[:neg.start()] + text[neg.end():]
    aux = _AUX.search(text)
    return None if aux is None else text[:aux.end()] + " not" + text[aux.end():]


def _entities(text: str, rng: random.Random, vocabulary: list[str]) -> str | None:
    # Names: capitalised words that do not open a sentence and are not function words ("Does", "If").
    caps = [m for m in re.finditer(r"\b[A-Z][a-zA-Z]+\b", text) if m.start() > 0
            and text[:m.start()].rstrip()[-1:] not in ".?!:\"" and m.group().lower() not in FUNCTION_WORDS]
    names = list(dict.fromkeys(m.group() for m in caps))
    if len(names) >= 2:
        x, y = rng.sample(names, 2)
        return re.sub(rf"\b({re.escape(x)}|{re.escape(y)})\b", lambda m: y if m.group() == x else x, text)
    if caps:
        m = rng.choice(caps)
        others = [w for w in rng.sample(vocabulary, min(50, len(vocabulary))) if w[:1].isupper() and w != m.group()]
        return _replace_token(text, m.start(), m.end(), others[0]) if others else None
    return None


def _direction(text: str, rng: random.Random, _: list[str]) -> str | None:
    m = _FROM_TO.search(text)
    if m and m.group(1).lower() != m.group(2).lower():
        return text[:m.start()] + f"from {m.group(2)} to {m.group(1)}" + text[m.end():]
    m = _X_TO_Y.search(text)
    if m and m.group(2).lower() != m.group(4).lower():
        return text[:m.start()] + f"{m.group(1)} {m.group(4)} {m.group(3)} {m.group(2)}" + text[m.end():]
    return None


def _antonym(text: str, rng: random.Random, _: list[str]) -> str | None:
    found = [m for m in _WORD.finditer(text) if m.group().lower() in _ANTONYM_OF]
    if not found:
        return None
    m = rng.choice(found)
    return _replace_token(text, m.start(), m.end(), _ANTONYM_OF[m.group().lower()])


def _audience(text: str, rng: random.Random, _: list[str]) -> str | None:
    m = re.search(r"\b(for|to) (a |an |my )?(child|kids?|beginners?|experts?|students?|doctors?|teenagers?|"
                  r"developers?|engineers?|adults?|professionals?)\b", text, re.IGNORECASE)
    if m:
        return text[:m.start()] + f"{m.group(1)} {rng.choice(_AUDIENCES)}" + text[m.end():]
    stem = text.rstrip("?.! ")
    return f"{stem} for {rng.choice(_AUDIENCES)}{text[len(stem):]}" if stem.lower().startswith(("explain", "describe", "what is")) else None


def _substitute(text: str, rng: random.Random, vocabulary: list[str]) -> str | None:
    found = [m for m in _WORD.finditer(text) if len(m.group()) > 3 and m.group().lower() not in FUNCTION_WORDS]
    if not found:
        return None
    m = rng.choice(found)
    new = rng.choice(vocabulary)
    return None if new.lower() == m.group().lower() else _replace_token(text, m.start(), m.end(), new.lower())


NEGATIVE_RULES: dict[str, Callable[[str, random.Random, list[str]], str | None]] = {
    "numbers": _numbers, "units": _units, "negation": _negation, "entities": _entities, "direction": _direction,
    "antonym": _antonym, "audience": _audience, "substitute": _substitute,
}


def content_vocabulary(texts: Iterable[str], top: int = 5000) -> list[str]:
    """The most frequent words of 4+ letters that are not in the verifier's function-word list."""
    counts = Counter(w for t in texts for w in _WORD.findall(t) if len(w) > 3 and w.lower() not in FUNCTION_WORDS)
    return [w for w, _ in counts.most_common(top)]


def hard_negative(text: str, rng: random.Random, vocabulary: list[str]) -> tuple[str, str] | None:
    """(mutated text, rule) from the first applicable rule in a random order; None if none applies."""
    rules = list(NEGATIVE_RULES.items())
    rng.shuffle(rules)
    for kind, rule in rules:
        out = rule(text, rng, vocabulary)
        if out is not None and normalise(out) != normalise(text):
            return normalise(out), kind
    return None


# --- paraphrases ----------------------------------------------------------------------------------------

_FRAMES = [
    ["How do I", "How can I", "How should I", "What is the way to", "What's the best way to", "How would I", "How to"],
    ["What is", "What's", "Can you explain", "Explain", "Tell me what is", "Could you tell me what is"],
    ["Can you", "Could you", "Please", "Would you"],
    ["What are", "Can you list", "Tell me", "Name"],
    ["Why is", "What makes", "How come"],
    ["Write", "Can you write", "Please write", "I need you to write", "Could you write"],
    ["Explain", "Can you explain", "Please explain", "Help me understand"],
    ["Give me", "Can you give me", "Please give me", "I'd like"],
    ["List", "Can you list", "Please list"],
    ["Tell me", "Can you tell me", "Please tell me"],
]
_SWAPS = [("do not", "don't"), ("does not", "doesn't"), ("is not", "isn't"), ("can not", "can't"), ("I am", "I'm"),
          ("it is", "it's"), ("what is", "what's")]


def paraphrase(text: str, rng: random.Random) -> str | None:
    """A rewrite with the same content words (frame, contraction, case, punctuation, politeness)."""
    out = text
    lower = text.lower()
    for frame in _FRAMES:
        head = next((f for f in frame if lower.startswith(f.lower() + " ")), None)
        if head is not None and not (frame is _FRAMES[4] and head != "Why is"):
            new = rng.choice([f for f in frame if f != head])
            out = new + out[len(head):]
            break
    for full, short in _SWAPS:
        if rng.random() < 0.5:
            out = re.sub(rf"\b{full}\b", short, out, flags=re.IGNORECASE) if rng.random() < 0.5 else \
                re.sub(rf"\b{re.escape(short)}", full, out, flags=re.IGNORECASE)
    roll = rng.random()
    if roll < 0.15:
        out = out.lower()
    elif roll < 0.3:
        out = out.rstrip("?.!")
    elif roll < 0.4:
        out = "Hi, " + out[:1].lower() + out[1:]
    elif roll < 0.5:
        out = out.rstrip("?.!") + ", please?"
    out = normalise(out)
    return out if out and out != normalise(text) else None


def chat_prompts(split: str) -> list[str]:
    """First turns of chatterbot-corpus's English conversations of 3+ words; one in five (by text hash) is dev."""
    out: list[str] = []
    with package_wheel("chatterbot-corpus") as wheel:
        for name in sorted(n for n in wheel.namelist() if n.startswith("chatterbot_corpus/data/english/")):
            data = yaml.safe_load(wheel.read(name)) or {}
            firsts = [normalise(talk[0]) for talk in data.get("conversations", []) if talk and isinstance(talk[0], str)]
            out += [t for t in firsts if len(t.split()) >= 3
                    and (int(hashlib.sha256(t.encode()).hexdigest(), 16) % 5 == 0) == (split == "dev")]
    return list(dict.fromkeys(out))


def generated_pairs(questions: list[str], vocabulary: list[str], seed: int) -> list[Pair]:
    """One rule paraphrase (label 1) and one rule hard negative (label 0) per question, where a rule applies."""
    rng = random.Random(seed)
    out: list[Pair] = []
    for q in questions:
        p = paraphrase(q, rng)
        if p is not None:
            out.append({"a": q, "b": p, "label": 1, "kind": "rule_paraphrase"})
        neg = hard_negative(q, rng, vocabulary)
        if neg is not None:
            # Half the negatives are asked in a paraphrased frame: the verifier must not key on the frame.
            query = paraphrase(neg[0], rng) if rng.random() < 0.5 else None
            out.append({"a": q, "b": query or neg[0], "label": 0, "kind": f"rule_{neg[1]}"})
    return out
