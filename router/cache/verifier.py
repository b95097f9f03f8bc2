"""The learned "same answer?" check on each semantic candidate: a tiny numpy MLP over pair features.

A fixed cosine threshold cannot tell "How do I exit vim?" / "How can I quit the vim editor?" (cosine
~0.8, same answer) from "Convert 5 miles to kilometers" / "Convert 5 kilometers to miles" (cosine
~0.98, wrong answer). The verifier sees, besides the cosine, what the embedding blurs: the guard's
checks (numbers, negation, entities and their order, antonym side, audience, question word), word
and character overlap, words only one side has, word order among the shared words, and length. The guard's
structural checks (reversed direction, dates, negating verbs, one vs all: `guard.VETO_CHECKS`) are no inputs:
a candidate that differs in one of them scores 0, as do those in the inputs named by `vetoes`.
It reads only the two prompt texts and the cosine the search returned: no second encoder pass.

Weights (`verifier.npz` beside this file) come from `offline/train_cache_verifier.py`, which
records the training data, the split and the default operating point in the file itself.
Runtime cost: ~0.1 ms per candidate for uncached texts (features memoised per text); a vetoed candidate costs only
the guard's checks (`judge` skips its word features, which its score of 0 never reads).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from router.cache.guard import (
    ADDITION_CHECKS,
    CHECKS,
    VETO_CHECKS,
    differences,
    features,
    one_sided,
    veto_differences,
)

WEIGHTS = Path(__file__).with_name("verifier.npz")
# The cosine floor the verifier was trained and its threshold chosen at (offline/train_cache_verifier.py): the
# candidate floor of a cache that serves on the verifier alone.
FLOOR = 0.70
FEATURES = (
    "cosine", *(f"differs_{name}" for name in CHECKS), "char_length_ratio", "word_jaccard",
    "content_jaccard", "query_only_words", "candidate_only_words", "order_mismatch", "trigram_jaccard",
    "log_words",
)  # the MLP's inputs, recorded in verifier.npz
# A pair's row: FEATURES, then the guard's veto-only checks, which reject on their own and which the MLP never reads,
# then whether an addition check's difference is one-sided (guard.ADDITION_CHECKS), which no model reads either.
COLUMNS = (*FEATURES, *(f"differs_{name}" for name in VETO_CHECKS), *(f"one_sided_{name}" for name in ADDITION_CHECKS))
# What the vetoes make of a candidate (Verifier.assess): scored as usual, left to the pair model (an added detail), out.
CLEAN, ADDITION, VETOED = 0, 1, 2
# Words that rephrasing adds, drops or swaps freely; everything else is a content word.
FUNCTION_WORDS = frozenset(
    ["a", "an", "the", "is", "are", "was", "were", "be", "been", "am", "do", "does", "did", "i", "me", "my", "mine", "you", "your", "we", "our", "us", "it", "its", "this", "that", "these", "those", "to", "of", "in", "on", "at", "by", "for", "with", "from", "as", "and", "or", "but", "if", "so", "then", "than", "there", "here", "what", "which", "how", "can", "could", "would", "should", "will", "shall", "may", "might", "must", "please", "tell", "explain", "give", "show", "some", "any", "way", "ways", "best", "good", "easiest", "simplest", "go", "about", "into", "out", "get", "make", "thing", "things", "anyone", "someone", "something", "just", "really", "very", "also", "let", "lets", "i'm", "i'd", "i've", "what's", "how's", "it's", "that's", "there's", "whats", "hows"])


@dataclass(frozen=True, slots=True)
class _View:
    """What the word features need from one text, computed once per text."""

    words: frozenset[str]
    content: tuple[str, ...]  # stemmed content words in text order
    trigrams: frozenset[str]
    length: int


def _stem(word: str) -> str:
    """Crude suffix stripping: 'reversing'/'reverses'/'reversed' ~ 'revers'; enough for overlap features."""
    word = word.removesuffix("'s")
    for suffix in ("ing", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


@lru_cache(maxsize=4096)
def _view(text: str) -> _View:
    tokens = features(text).tokens
    squashed = " ".join(tokens)
    return _View(frozenset(tokens), tuple(_stem(t) for t in tokens if t not in FUNCTION_WORDS),
                 frozenset(squashed[i:i + 3] for i in range(len(squashed) - 2)), len(text))


def _jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def _order_mismatch(a: tuple[str, ...], b: tuple[str, ...]) -> float:
    """1 - LCS / |shared words| over the words both texts have: 'miles to km' vs 'km to miles' -> 0.5."""
    shared = set(a) & set(b)
    x, y = [w for w in a if w in shared], [w for w in b if w in shared]
    if len(shared) < 2:
        return 0.0
    previous = [0] * (len(y) + 1)
    for wx in x:
        current = [0]
        for j, wy in enumerate(y):
            current.append(previous[j] + 1 if wx == wy else max(previous[j + 1], current[j]))
        previous = current
    return 1.0 - previous[-1] / max(len(x), len(y))


# The word features' COLUMNS (after the cosine and the guard's checks): what a candidate's vetoes make moot.
_WORDS = slice(1 + len(CHECKS), len(FEATURES))


def pair_features(query: str, candidate: str, cosine: float) -> np.ndarray:
    """The COLUMNS row of one (query, stored prompt) pair."""
    row = _guard_row(query, candidate, cosine)
    row[_WORDS] = _word_features(query, candidate)
    return row


def _guard_row(query: str, candidate: str, cosine: float) -> np.ndarray:
    """The row with the guard's columns filled and the word features left 0."""
    row = np.zeros(len(COLUMNS), dtype=np.float32)
    row[:_WORDS.start] = (cosine, *differences(query, candidate))
    row[_WORDS.stop:] = (*veto_differences(query, candidate), *one_sided(query, candidate))
    return row


def _word_features(query: str, candidate: str) -> list[float]:
    """Length, word and character overlap and word order: FEATURES between the guard's checks and the end."""
    a, b = _view(query), _view(candidate)
    ca, cb = frozenset(a.content), frozenset(b.content)
    return [
        min(a.length, b.length) / max(a.length, b.length, 1),
        _jaccard(a.words, b.words), _jaccard(ca, cb),
        np.log1p(len(ca - cb)), np.log1p(len(cb - ca)),
        _order_mismatch(a.content, b.content), _jaccard(a.trigrams, b.trigrams),
        np.log1p(max(len(a.words), len(b.words))),
    ]


@lru_cache(maxsize=4)
def _veto_columns(vetoes: tuple[str, ...]) -> tuple[list[int], list[tuple[int, int]]]:
    """The COLUMNS of every veto (the verifier's own, then VETO_CHECKS), and for each addition check among them its
    position there and its `one_sided_` column: looked up once, not on every lookup."""
    names = (*vetoes, *VETO_CHECKS)
    return ([COLUMNS.index(f"differs_{name}") for name in names],
            [(j, COLUMNS.index(f"one_sided_{name}")) for j, name in enumerate(names) if name in ADDITION_CHECKS])


@dataclass(frozen=True)
class Verifier:
    """Standardise, one ReLU layer, sigmoid: P(the stored answer is right for the query)."""

    mean: np.ndarray
    scale: np.ndarray
    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: float
    threshold: float  # default operating point, chosen on the dev split (see the training script)
    vetoes: tuple[str, ...]  # guard checks among the MLP's inputs that also reject on their own (VETO_CHECKS always do)
    encoder: str  # hash of the encoder whose cosines it was trained on

    @classmethod
    def load(cls, path: Path = WEIGHTS) -> Verifier:
        with np.load(path) as z:
            if tuple(z["features"].tolist()) != FEATURES:
                raise ValueError(f"{path} was trained on other features: retrain it (offline/train_cache_verifier.py)")
            return cls(z["mean"], z["scale"], z["w1"], z["b1"], z["w2"], float(z["b2"]), float(z["threshold"]),
                       tuple(z["vetoes"].tolist()), str(z["encoder"]))

    def assess(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per row of a [n, COLUMNS] matrix: the MLP's probability (0 when VETOED) and the state (CLEAN, ADDITION:
        every veto that holds is an addition check whose difference is one-sided, VETOED: another veto holds)."""
        return self._assessed(x, self._states(x))

    def _assessed(self, x: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`assess` given the rows' states (`judge` has them already)."""
        hidden = np.maximum((x[:, :len(FEATURES)] - self.mean) / self.scale @ self.w1 + self.b1, 0.0)
        p: np.ndarray = 1.0 / (1.0 + np.exp(-(hidden @ self.w2 + self.b2)))
        p[state == VETOED] = 0.0
        return p, state

    def _states(self, x: np.ndarray) -> np.ndarray:
        """Per row, what its vetoes make of it (CLEAN, ADDITION, VETOED): the guard's columns alone decide."""
        differs, one_sided_of = _veto_columns(self.vetoes)
        held = x[:, differs] > 0
        added = np.zeros_like(held)
        for j, column in one_sided_of:
            added[:, j] = x[:, column] > 0
        return np.where((held & ~added).any(axis=1), VETOED, np.where(held.any(axis=1), ADDITION, CLEAN))

    def scores(self, x: np.ndarray) -> np.ndarray:
        """Probabilities for a [n, COLUMNS] matrix; a row any veto holds for (additions too) scores 0: the verifier
        on its own, as trained and as served without the pair model."""
        p, state = self.assess(x)
        p[state != CLEAN] = 0.0
        return p

    def judge(self, query: str, candidates: list[tuple[str, float]]) -> tuple[np.ndarray, np.ndarray]:
        """`assess` of each candidate (stored text, cosine) for the query. A vetoed candidate scores 0 whatever its
        word features, so they are computed only for the others (most of the verifier's cost: `_view`, word order)."""
        if not candidates:
            return np.zeros(0), np.zeros(0, dtype=np.int64)
        x = np.stack([_guard_row(query, text, cos) for text, cos in candidates])
        state = self._states(x)  # from the guard's columns only: the word features filled below do not change it
        for i in np.flatnonzero(state != VETOED):
            x[i, _WORDS] = _word_features(query, candidates[i][0])
        return self._assessed(x, state)
