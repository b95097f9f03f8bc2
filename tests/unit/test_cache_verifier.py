"""The cache verifier: its features, the committed weights, its decisions on real encoder cosines, its data."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from offline.cache_pairs import hard_negative, paraphrase, split_by_question
from router.cache.guard import CHECKS
from router.cache.verifier import (
    ADDITION,
    CLEAN,
    COLUMNS,
    FEATURES,
    VETOED,
    Verifier,
    _order_mismatch,
    _view,
    pair_features,
)

MODEL_DIR = Path(__file__).resolve().parents[2] / "models" / "minilm"
VERIFIER = Verifier.load()


def test_features_are_finite_and_named() -> None:
    x = pair_features("How do I reset my password?", "How can I reset my password?", 0.95)
    assert x.shape == (len(COLUMNS),) and np.isfinite(x).all()
    assert x[FEATURES.index("cosine")] == pytest.approx(0.95)


def test_word_order_among_shared_words_is_seen() -> None:
    """'miles to kilometers' vs 'kilometers to miles': same words, reversed direction."""
    a, b = _view("Convert 5 miles to kilometers").content, _view("Convert 5 kilometers to miles").content
    assert _order_mismatch(a, b) > 0 and _order_mismatch(a, a) == 0


def test_committed_weights_are_sane() -> None:
    assert 0 < VERIFIER.threshold < 1
    assert set(VERIFIER.vetoes) <= set(CHECKS)
    assert VERIFIER.w1.shape == (len(FEATURES), len(VERIFIER.b1))


def test_a_veto_rejects_whatever_the_score() -> None:
    for name in VERIFIER.vetoes:
        x = pair_features("How do I reset my password?", "How do I reset my password?", 1.0)[None, :].copy()
        x[0, FEATURES.index(f"differs_{name}")] = 1.0
        assert VERIFIER.scores(x)[0] == 0.0


def test_judge_scores_each_candidate_and_says_which_a_veto_holds_for() -> None:
    query = "How do I turn on dark mode?"
    candidates = [("How do I turn off dark mode?", 0.99), ("How can I turn on dark mode?", 0.95)]
    scores, states = VERIFIER.judge(query, candidates)
    assert scores[0] == 0.0 and states[0] == VETOED  # on / off: an antonym
    assert scores[1] >= VERIFIER.threshold and states[1] == CLEAN
    assert len(VERIFIER.judge(query, [])[0]) == 0


@pytest.mark.parametrize(("stored", "query", "state"), [
    # a number, unit, audience or negation on one side only: an added detail, for the pair model to judge
    ("How long does it take to learn the violin?", "how many years till im decent at violin", ADDITION),
    ("How do I start knitting?", "total beginner, how do i learn to knit", ADDITION),
    ("What caused World War 1?", "why did the first world war start", ADDITION),
    ("How do I undo my last git commit and keep my changes?", "undo last commit without losing changes git", ADDITION),
    # both sides have one and they differ: still a veto
    ("Best places to visit in Kerala in 5 days", "Best places to visit in Kerala in 3 days", VETOED),
    ("How do I explain quantum physics to a child?", "How do I explain quantum physics to an expert?", VETOED),
    ("How long is the drive in hours?", "How long is the drive in minutes?", VETOED),
    # an addition and another veto (before / after) at once: the other veto holds
    ("Can I eat eggs a week after the date?", "can I eat eggs before the date", VETOED),
])
def test_a_one_sided_difference_is_an_addition_not_a_veto(stored: str, query: str, state: int) -> None:
    scores, states = VERIFIER.judge(query, [(stored, 0.85)])
    assert states[0] == state and bool(scores[0] > 0) == (state == ADDITION)
    assert VERIFIER.scores(pair_features(query, stored, 0.85)[None, :])[0] == 0.0  # the verifier alone never serves it


@pytest.fixture(scope="module")
def cosine() -> object:
    if not (MODEL_DIR / "model_int8.onnx").is_file():
        pytest.skip("encoder not built (semantic-router models build)")
    from router.classifier.encoder import Encoder

    encoder = Encoder(MODEL_DIR)
    assert encoder.model_hash == VERIFIER.encoder, "verifier.npz was trained on another encoder: retrain it"
    return lambda a, b: float(encoder.encode(a).embedding @ encoder.encode(b).embedding)


@pytest.mark.parametrize(("stored", "query", "same_answer"), [
    ("How do I reset my password?", "How can I reset my password?", True),
    ("What's the best way to learn Go?", "How should I go about learning Go?", True),
    ("Convert 10 miles to kilometers", "Convert 10 kilometers to miles", False),
    ("How do I enable notifications on my phone?", "How do I disable notifications on my phone?", False),
    ("Write a 300 word story about a dragon", "Write a 900 word story about a dragon", False),
    ("Is it safe to eat raw eggs?", "Is it not safe to eat raw eggs?", False),
])
def test_decisions_on_real_encoder_cosines(cosine: object, stored: str, query: str, same_answer: bool) -> None:
    cos = cosine(stored, query)  # type: ignore[operator]
    scores, states = VERIFIER.judge(query, [(stored, cos)])
    assert bool(states[0] == CLEAN and scores[0] >= VERIFIER.threshold) is same_answer


def test_split_keeps_every_question_on_one_side() -> None:
    rows = [{"a": f"q{i}", "b": f"q{i + 1}", "label": 1} for i in range(0, 400, 2)]
    rows += [{"a": f"q{i}", "b": f"q{i + 2}", "label": 0} for i in range(0, 400, 4)]  # chains across pairs
    split = split_by_question(rows)
    sides = [{t for r in part for t in (r["a"], r["b"])} for part in split.values()]
    assert sum(len(part) for part in split.values()) == len(rows)
    assert all(not (x & y) for i, x in enumerate(sides) for y in sides[i + 1:])


def test_rules_change_the_answer_or_keep_the_words() -> None:
    rng = random.Random(0)
    vocabulary = ["banana", "router", "Lisbon", "invoice"]
    text = "How do I convert 5 miles to kilometers in Python?"
    for _ in range(20):
        negative = hard_negative(text, rng, vocabulary)
        assert negative is not None and negative[0] != text
        rephrased = paraphrase(text, rng)
        if rephrased is not None:
            words = {w.strip("?,.").lower() for w in rephrased.split()}
            assert {"convert", "5", "miles", "kilometers", "python"} <= words
