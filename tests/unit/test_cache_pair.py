"""The cache's pair model: its input layout, the real model's verdicts, and its place in SemanticCache._find."""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from router.cache.memory import MemoryStore
from router.cache.pair import INF, MAX_TOKENS, OperatingPoint, PairModel, pair_ids
from router.cache.semantic_cache import SemanticCache
from router.cache.verifier import ADDITION, CLEAN, FLOOR, VETOED, Verifier
from router.classifier.encoder import CLS_ID, SEP_ID, ModelMissingError
from tests.unit.test_cache_facade import BASE, completion, make_req, near, put
from tests.unit.test_cache_keys import CFG

ROOT = Path(__file__).resolve().parents[2]
MODEL_DIR = ROOT / "models" / "cache-pair"


@pytest.fixture(scope="module")
def model() -> PairModel:
    if not (MODEL_DIR / "model_int8.onnx").is_file():
        pytest.skip("models/cache-pair is not built: run `make models` (python -m offline build)")
    return PairModel(MODEL_DIR)


def test_pair_ids_lay_out_both_prompts_with_segment_ids() -> None:
    ids, types = pair_ids([7, 8], [9])
    assert ids.tolist() == [[CLS_ID, 7, 8, SEP_ID, 9, SEP_ID]]
    assert types.tolist() == [[0, 0, 0, 0, 1, 1]]


def test_pair_ids_cut_the_longer_side_first() -> None:
    ids, types = pair_ids(list(range(1000, 1200)), list(range(2000, 2010)))
    assert ids.shape == (1, MAX_TOKENS) and int(types.sum()) == 11  # the short side and its [SEP] kept whole
    ids, _ = pair_ids(list(range(1000, 1100)), list(range(2000, 2100)))
    assert ids.shape == (1, MAX_TOKENS) and ids[0].tolist().index(SEP_ID) == 1 + (MAX_TOKENS - 3 + 1) // 2


def middling(point: OperatingPoint) -> float:
    """The pair score a clean candidate the verifier scores 0.5 needs (0.94 at the shipped point)."""
    return float(point.required(np.array([0.5]), np.array([CLEAN]))[0])


def test_a_paraphrase_scores_above_the_threshold(model: PairModel) -> None:
    threshold = middling(model.operating_point)
    assert model.score("How do I exit vim?", "how can i quit the vim editor") >= threshold
    assert model.score("How can I rename a local git branch?",
                       "what's the command to change the name of a git branch on my machine") >= threshold


@pytest.mark.parametrize(("stored", "query"), [
    ("What is a synonym for happy?", "What is an antonym for happy?"),
    ("How do I roll back a deployment in Kubernetes?", "How do I roll out a deployment in Kubernetes?"),
    ("What should I give my wife for our anniversary?", "What should I expect to receive for our anniversary?"),
])
def test_a_pair_that_needs_both_prompts_read_together_scores_below(model: PairModel, stored: str, query: str) -> None:
    assert model.score(stored, query) < middling(model.operating_point)


def test_a_missing_model_fails_loudly(tmp_path: Path) -> None:
    with pytest.raises(ModelMissingError, match="pair_model_dir: null"):
        PairModel(tmp_path)


class Recording(PairModel):
    """The real model, noting which thread each score ran on."""

    threads: list[str]

    def score(self, stored: str, query: str, whole: bool = False) -> float:
        self.threads.append(threading.current_thread().name)
        return super().score(stored, query, whole)


class AcceptsAll(Verifier):
    """Judges every candidate CLEAN with a score of `given`, so that the operating point alone decides what the pair
    model must confirm."""

    given = 0.0

    def judge(self, query: str, candidates: list[tuple[str, float]]) -> tuple[np.ndarray, np.ndarray]:
        return np.full(len(candidates), self.given), np.full(len(candidates), CLEAN)


def accepts_all() -> AcceptsAll:
    real = Verifier.load()
    return AcceptsAll(*(getattr(real, f) for f in ("mean", "scale", "w1", "b1", "w2", "b2", "threshold", "vetoes",
                                                     "encoder")))


async def test_the_pair_check_decides_in_its_own_thread(model: PairModel) -> None:
    """lookup -> candidates -> verifier -> pair check: what the verifier passes, the pair model still refuses
    when the two prompts ask for opposite things, and it scores off the event loop."""
    verifier = accepts_all()
    cache = SemanticCache(CFG.semantic_cache.model_copy(update={"pair_model_dir": str(MODEL_DIR)}), MemoryStore(100),
                          verifier=verifier)
    verifier.given = 0.5  # a middling verifier score: the pair model decides
    recording = Recording(MODEL_DIR)
    recording.threads = []
    cache.pair = recording
    other = np.random.default_rng(1).standard_normal(384).astype(np.float32)
    other /= np.linalg.norm(other)
    try:
        await put(cache, make_req("What is a synonym for happy?", BASE), completion("glad"))
        await put(cache, make_req("How do I exit vim?", other), completion(":q"))
        assert await cache.lookup(make_req("What is an antonym for happy?", BASE)) is None
        assert cache.counters["miss:pair_reject"] == 1
        hit = await cache.lookup(make_req("how can i quit the vim editor", other))
        assert hit is not None and hit.completion["choices"][0]["message"]["content"] == ":q"
    finally:
        await cache.close()
    assert len(recording.threads) == 2 and all(t.startswith("cache-pair") for t in recording.threads)


@pytest.mark.parametrize(("verifier_score", "asked"), [(0.97, False), (0.9, True)])
async def test_a_candidate_the_verifier_is_sure_of_skips_the_pair_model(model: PairModel, verifier_score: float,
                                                                        asked: bool) -> None:
    """Past the point's `sure` the verifier alone serves: the pair model turns down reframes that keep every content
    word, which the verifier is nearly certain of. Below it, the pair model is asked and refuses the antonym."""
    verifier = accepts_all()
    verifier.given = verifier_score
    cache = SemanticCache(CFG.semantic_cache.model_copy(update={"pair_model_dir": str(MODEL_DIR)}), MemoryStore(100),
                          verifier=verifier)
    recording = Recording(MODEL_DIR)
    recording.threads = []
    cache.pair = recording
    cache.point = OperatingPoint(FLOOR, ((0.95, 0.0), (0.5, middling(model.operating_point))))
    try:
        await put(cache, make_req("What is a synonym for happy?", BASE), completion("glad"))
        hit = await cache.lookup(make_req("What is an antonym for happy?", BASE))
    finally:
        await cache.close()
    assert (hit is None) == asked and len(recording.threads) == int(asked)


def test_a_cache_without_the_pair_model_serves_on_the_verifier_alone() -> None:
    cache = SemanticCache(CFG.semantic_cache.model_copy(update={"pair_model_dir": None}), MemoryStore(100))
    assert cache.pair is None and cache.point == OperatingPoint(FLOOR, ((Verifier.load().threshold, 0.0),))


def test_a_missing_pair_model_fails_the_cache(tmp_path: Path) -> None:
    with pytest.raises(ModelMissingError):
        SemanticCache(CFG.semantic_cache.model_copy(update={"pair_model_dir": str(tmp_path)}), MemoryStore(100))


POINT = OperatingPoint(0.55, ((0.97, 0.0), (0.8, 0.7), (0.45, 0.94), (0.25, 0.995)), addition_threshold=0.99)


def test_the_operating_point_says_what_pair_score_each_candidate_needs() -> None:
    scores = np.array([0.98, 0.85, 0.6, 0.3, 0.1, 0.5, 0.0])
    states = np.array([CLEAN, CLEAN, CLEAN, CLEAN, CLEAN, ADDITION, VETOED])
    assert POINT.required(scores, states).tolist() == [0.0, 0.7, 0.94, 0.995, INF, 0.99, INF]
    # a configured verifier_threshold floors every path and never loosens one: 1.0 = exact repeats only
    assert POINT.required(scores, states, 0.55).tolist() == [0.0, 0.7, 0.94, INF, INF, INF, INF]
    assert POINT.required(scores, states, 0.2).tolist() == POINT.required(scores, states).tolist()
    assert (POINT.required(scores, states, 1.0) == INF).all()
    # a point without an addition path (the manifest leaves it out) vetoes those candidates
    assert OperatingPoint(0.55, POINT.steps).required(scores, states)[5] == INF
    # a candidate below the point's cosine floor is not served, whatever its scores
    assert POINT.serves(scores[:2], states[:2], np.ones(2), np.array([0.56, 0.54])).tolist() == [True, False]
    # a lookup goes on with the candidate that needs the least pair score, then the best verifier score
    assert POINT.pick(scores[2:], states[2:]) == (0, 0.94)
    assert POINT.pick(np.array([0.3, 0.5]), np.array([CLEAN, ADDITION])) == (1, 0.99)
    assert POINT.pick(np.array([0.6, 0.7]), np.array([CLEAN, CLEAN])) == (1, 0.94)
    assert POINT.pick(np.array([0.1, 0.0]), np.array([CLEAN, VETOED])) is None
    assert POINT.pick(np.zeros(0), np.zeros(0)) is None


def test_the_operating_point_reads_its_further_paths_from_the_manifest(tmp_path: Path) -> None:
    for name in ("model_int8.onnx", "tokenizer.json"):
        (tmp_path / name).symlink_to(MODEL_DIR / name)
    point = {**POINT.manifest(), "chosen_by": "test"}
    assert point["steps"] == [[0.97, 0.0], [0.8, 0.7], [0.45, 0.94], [0.25, 0.995]]
    (tmp_path / "manifest.json").write_text(json.dumps({"operating_point": point}))
    assert PairModel(tmp_path).operating_point == POINT


@pytest.mark.parametrize(("stored", "query", "served"), [
    # a unit or an audience on one side only: the pair model judges it, and serves a true rewording ...
    ("How long does it take to learn to play the piano?", "how many months until i can play piano decently", True),
    ("How do I get started with rock climbing?", "complete beginner - how do i start climbing", True),
    # a negation on one side only: the same request worded the other way round is served ...
    ("How do I get rid of hiccups fast?", "my hiccups won't stop, how do i make them go away quickly", True),
    # ... but not an added condition or a negation that changes the answer
    ("How do I get started with rock climbing?", "how do i get started with rock climbing at 60", False),
    ("Which foods are safe for dogs?", "which foods are not safe for dogs", False),
    # both sides name a number and they differ: vetoed, the pair model is not asked
    ("Best places to visit in Kerala in 5 days", "Best places to visit in Kerala in 3 days", False),
])
async def test_an_added_detail_is_left_to_the_pair_model(model: PairModel, stored: str, query: str,
                                                         served: bool) -> None:
    """Until 2026-11-30 a number, unit or audience word on one side only vetoed the candidate (12% of the written dev
    paraphrases: "how long" / "how many years"), until 2026-12-01 a negation on one side only ("won't stop" / "get
    rid of"); now the pair model decides at its addition threshold."""
    cache = SemanticCache(CFG.semantic_cache.model_copy(update={"pair_model_dir": str(MODEL_DIR)}), MemoryStore(100))
    cache.point = POINT
    try:
        await put(cache, make_req(stored, BASE), completion("stored answer"))
        hit = await cache.lookup(make_req(query, BASE))
    finally:
        await cache.close()
    assert (hit is not None) is served


SHOP = ("I run a small online shop selling handmade candles and soaps, about forty orders a week, mostly shipped within "
        "the country, and I do all of the packing and bookkeeping myself in the evenings after my day job. Sales peak "
        "right before the holidays. ")


async def test_an_addition_is_served_only_when_the_pair_model_reads_both_prompts_whole(model: PairModel) -> None:
    """The pair model reads both prompts in MAX_TOKENS, the longer one cut first: a negation at the end of a long prompt
    ("I do not want to use any paid software") was cut off, the pair model scored what was left (0.99, the score of the
    prompt without it) and served the answer to the prompt without it. Read whole (one sentence less context), the
    same addition scored 0.74."""
    cache = SemanticCache(CFG.semantic_cache.model_copy(update={"pair_model_dir": str(MODEL_DIR)}), MemoryStore(100))
    stored, query = (SHOP + "How should I keep track of my inventory?",
                     SHOP + "what's a good way to track my stock levels? I do not want to use any paid software.")
    _, states = cache.verifier.judge(query, [(stored, 1.0)])
    assert states.tolist() == [ADDITION]  # the negation on one side only
    assert model.score(stored, query) >= model.operating_point.addition_threshold  # what is left once it is cut
    try:
        await put(cache, make_req(stored, BASE), completion("A spreadsheet, or a paid inventory app."))
        assert await cache.lookup(make_req(query, BASE)) is None
    finally:
        await cache.close()
    assert cache.counters["miss:pair_reject"] == 1


class Broken(PairModel):
    """The pair model answering NaN (a corrupt or mis-exported ONNX file): no comparison holds for it."""

    def score(self, stored: str, query: str, whole: bool = False) -> float:
        return float("nan")


async def test_a_pair_score_that_is_not_a_number_refuses(model: PairModel) -> None:
    """`pair < need` is false for NaN, so a candidate the pair model could not score was served as if confirmed."""
    verifier = accepts_all()
    cache = SemanticCache(CFG.semantic_cache.model_copy(update={"pair_model_dir": str(MODEL_DIR)}), MemoryStore(100),
                          verifier=verifier)
    verifier.given = 0.5  # the pair model must confirm it
    cache.pair = Broken(MODEL_DIR)
    try:
        await put(cache, make_req("What is a synonym for happy?", BASE), completion("glad"))
        assert await cache.lookup(make_req("What is an antonym for happy?", BASE)) is None
    finally:
        await cache.close()
    assert cache.counters["miss:pair_reject"] == 1


def test_a_manifest_without_its_floor_or_steps_fails_startup(tmp_path: Path) -> None:
    """A point with a part missing would start a cache that quietly serves nothing (or everything) pair-checked."""
    for name in ("model_int8.onnx", "tokenizer.json"):
        (tmp_path / name).symlink_to(MODEL_DIR / name)
    for point in ({"steps": [[0.45, 0.94]]}, {"floor": 0.55}, {"lower_bound": 0.45, "threshold": 0.94}):
        (tmp_path / "manifest.json").write_text(json.dumps({"operating_point": point}))
        with pytest.raises(ModelMissingError, match="operating_point"):
            PairModel(tmp_path)


@pytest.mark.parametrize("point", [
    '{"floor": 0.7, "steps": [[0.97, 0.7], [0.45, NaN]]}',  # NaN needed: served with no pair check at all
    '{"floor": NaN, "steps": [[0.45, 0.94]]}',
    '{"floor": 0.7, "steps": [[0.45, 0.94]], "addition_threshold": NaN}',
    '{"floor": 0.7, "steps": []}',  # a cache that never serves a rewording, silently
    '{"floor": 0.7, "steps": [["x", 0.94]]}',
    '{"floor": 0.7, "steps": [[0.45]]}',
    '{"floor": 0.7, "steps": 0.45}',
    '{"floor": 1.5, "steps": [[0.45, 0.94]]}',
    '{"floor": 0.7, "steps": [[0.45, -1]]}',
])
def test_a_manifest_with_malformed_numbers_fails_startup(tmp_path: Path, point: str) -> None:
    """Python's json reads NaN: a step needing NaN made `need > 0` false, so every candidate reaching it was served
    without the pair model; other malformed values raised ValueError or TypeError, which left the router running
    unready instead of stopping at start with the file named."""
    for name in ("model_int8.onnx", "tokenizer.json"):
        (tmp_path / name).symlink_to(MODEL_DIR / name)
    (tmp_path / "manifest.json").write_text(f'{{"operating_point": {point}}}')
    with pytest.raises(ModelMissingError, match="operating_point"):
        PairModel(tmp_path)


@pytest.mark.parametrize(("floor", "served"), [(None, False), (0.55, True)])
async def test_the_candidate_floor_is_the_points_unless_configured(model: PairModel, floor: float | None,
                                                                   served: bool) -> None:
    """Rewordings that share few words embed far apart. The search's cosine floor is the operating point's (0.70, in
    its manifest) unless `similarity_threshold` is configured (the request's), which replaces it: at 0.55 such a
    rewording reaches the verifier and the pair model."""
    cache = SemanticCache(CFG.semantic_cache.model_copy(update={"pair_model_dir": str(MODEL_DIR)}), MemoryStore(100))
    try:
        await put(cache, make_req("How do I boil an egg so the yolk stays runny?", BASE), completion("6 minutes"))
        query = make_req("soft boiled egg with liquid yolk - how long", near(0.62))
        hit = await cache.lookup(query if floor is None else replace(query, threshold=floor))
    finally:
        await cache.close()
    assert (hit is not None) is served


async def test_a_candidate_the_verifier_is_sure_of_is_refused_when_the_pair_model_is_sure_it_differs(
        model: PairModel) -> None:
    """Past `sure` the pair model was never asked until 2026-11-30: "zoom in" / "zoom out" (verifier 0.99: every word
    but one the same, and "in"/"out" in no antonym list) was served although the pair model scores it 0.24. The
    shipped point's sure step now needs a pair score too (chosen on dev)."""
    cache = SemanticCache(CFG.semantic_cache.model_copy(update={"pair_model_dir": str(MODEL_DIR)}), MemoryStore(100))
    stored, query = "macbook trackpad gesture to zoom in on a webpage", "macbook trackpad gesture to zoom out on a webpage"
    scores, _ = cache.verifier.judge(query, [(stored, 0.97)])
    assert scores[0] >= max(bound for bound, _ in cache.point.steps)  # the verifier alone would serve it
    try:
        await put(cache, make_req(stored, BASE), completion("pinch outwards"))
        assert await cache.lookup(make_req(query, near(0.97))) is None
        assert cache.counters["miss:pair_reject"] == 1
    finally:
        await cache.close()
