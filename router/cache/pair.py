"""The pair model ("cross-check"): a cross-encoder that reads the stored prompt and the query in one pass.

The verifier (`verifier.py`) scores word-overlap features and one cosine, so it cannot see what only reading both
prompts together shows: "synonym" vs "antonym", "receive" vs "give" a gift, who does what to whom, an added
condition ("as a woman", "worst case"). This model reads "[CLS] stored [SEP] query [SEP]" through the first layers
of MiniLM (int8 ONNX, `offline/train_cache_pair.py`) and returns P(the stored answer is right for the query).
It runs only on a would-be hit (a candidate the operating point lets through if the pair score is high enough),
once per lookup, in a thread of its own: ~1-2 ms of ONNX would stall every request on the event loop.

The operating point (`OperatingPoint`: what pair score a candidate needs, from its verifier score and state) was
chosen on dev data only (`offline/cache_pair_dev.py`) and is stored in the model's manifest.json beside it.
"""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from router.cache.verifier import ADDITION, CLEAN
from router.classifier.encoder import CLS_ID, SEP_ID, ModelMissingError, ModelUnreadableError, load_model

MAX_TOKENS = 128  # both prompts and the three specials; as in training (offline/train_cache_pair.MAX_TOKENS)
INF = float("inf")  # a pair score no candidate reaches: the path is off


@dataclass(frozen=True, slots=True)
class OperatingPoint:
    """Which candidates a lookup may serve and what pair score each needs; every number chosen on dev data by
    offline/cache_pair_dev.py and stored in the model's manifest.json (`operating_point`):
    - `floor`: the cosine a stored prompt needs to be a candidate at all (the search returns none below it);
    - `steps`, (verifier score, pair score) pairs: a CLEAN candidate needs the least pair score among the steps whose
      verifier score it reaches. A staircase: 0 past a near-certain verifier score (the pair model turns down many
      reframes that keep every content word, "could you tell me how to X" / "how to X"), more pair score the less
      the verifier vouches (its word features mark down rewordings that share few words, "prune an apple tree" /
      "apple tree trimming - how should i do it", which only a near-certain pair score serves);
    - `addition_threshold`: an ADDITION candidate (a number, unit, audience or negation on one side only) needs it;
    - otherwise (VETOED, or below every step): not served."""

    floor: float
    steps: tuple[tuple[float, float], ...]
    addition_threshold: float = INF

    def required(self, scores: np.ndarray, states: np.ndarray, min_score: float | None = None) -> np.ndarray:
        """Per candidate the pair score it needs: 0 = none, inf = not served. `min_score` (the config's
        `verifier_threshold`, per category too) floors every path, additions included: it can only make the cache
        stricter than the measured point; 1.0 serves exact repeats only."""
        floor = 0.0 if min_score is None else min_score
        need = np.where((states == ADDITION) & (scores >= floor), self.addition_threshold, INF)
        clean = states == CLEAN
        for bound, pair in self.steps:
            need = np.where(clean & (scores >= max(bound, floor)), np.minimum(need, pair), need)
        return need

    def pick(self, scores: np.ndarray, states: np.ndarray, min_score: float | None = None) -> tuple[int, float] | None:
        """The candidate a lookup goes on with (the least pair score needed, then the best verifier score) and the
        pair score it needs; None when no candidate may be served."""
        need = self.required(scores, states, min_score)
        if not len(need) or need.min() == INF:
            return None
        best = int(np.lexsort((-scores, need))[0])
        return best, float(need[best])

    def serves(self, scores: np.ndarray, states: np.ndarray, pair: np.ndarray, cosine: np.ndarray) -> np.ndarray:
        """Which candidates (cosine >= their own search's floor) the point serves, given each one's pair score: the
        offline figures' decision."""
        return (cosine >= self.floor) & (pair >= self.required(scores, states))

    def manifest(self) -> dict[str, object]:
        """The point as manifest.json stores it, steps from the highest verifier score down (an addition path that is
        off is left out: JSON has no inf)."""
        steps = [list(step) for step in sorted(self.steps, reverse=True)]
        out: dict[str, object] = {"floor": self.floor, "steps": steps}
        return out if self.addition_threshold == INF else out | {"addition_threshold": self.addition_threshold}

    @classmethod
    def from_manifest(cls, point: dict[str, Any]) -> OperatingPoint:
        """ValueError for a value no cache can serve with: json reads NaN, and a step needing NaN served unchecked
        (`need > 0` is false for it); no steps served no rewording at all."""
        try:
            op = cls(float(point["floor"]), tuple((float(b), float(n)) for b, n in point["steps"]),
                     float(point.get("addition_threshold", INF)))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"unreadable operating point: {exc}") from None
        numbers = [op.floor, *(x for step in op.steps for x in step)]
        numbers += [] if op.addition_threshold == INF else [op.addition_threshold]
        if not op.steps or op.floor <= 0 or not all(0 <= x <= 1 for x in numbers):  # NaN fails every comparison
            raise ValueError("an operating point needs steps and every number in [0, 1] (floor above 0)")
        return op


def manifest_point(model_dir: str | Path) -> OperatingPoint:
    """The operating point stored beside a pair model, without loading the model (scripts that only need its floor)."""
    path = Path(model_dir) / "manifest.json"
    point = json.loads(path.read_text()).get("operating_point") if path.is_file() else None
    if not isinstance(point, dict) or not {"floor", "steps"} <= point.keys():
        raise ModelMissingError(f"{path} has no operating_point with a floor and steps: run "
                                "offline/cache_pair_dev.py --write")
    try:
        return OperatingPoint.from_manifest(point)
    except ValueError as exc:
        raise ModelUnreadableError(f"{path}: operating_point: {exc}: run offline/cache_pair_dev.py --write") from None


def pair_ids(first: list[int], second: list[int], budget: int = MAX_TOKENS) -> tuple[np.ndarray, np.ndarray]:
    """input_ids and token_type_ids of "[CLS] first [SEP] second [SEP]", the longer side cut first, one token at a
    time (what the training tokenizer's "longest_first" does), so the two never exceed `budget` together."""
    a, b = list(first), list(second)
    while not _fits(a, b, budget):
        (a if len(a) > len(b) else b).pop()
    ids = np.array([[CLS_ID, *a, SEP_ID, *b, SEP_ID]], dtype=np.int64)
    types = np.array([[0] * (len(a) + 2) + [1] * (len(b) + 1)], dtype=np.int64)
    return ids, types


def _fits(first: list[int], second: list[int], budget: int = MAX_TOKENS) -> bool:
    """Whether both sides and the three specials fit in `budget`, so `pair_ids` cuts neither."""
    return len(first) + len(second) <= budget - 3


class PairModel:
    """One onnxruntime session (one thread) and the tokenizer; `check` runs it off the event loop."""

    def __init__(self, model_dir: str | Path, require_point: bool = True) -> None:
        model_dir = Path(model_dir)
        model_path, tokenizer_path, manifest_path = (model_dir / n for n in ("model_int8.onnx", "tokenizer.json",
                                                                             "manifest.json"))
        missing = [p for p in (model_path, tokenizer_path, manifest_path) if not p.is_file()]
        if missing:
            raise ModelMissingError(
                f"{missing[0]} is missing: run `make models` (python -m offline build), or set "
                "semantic_cache.pair_model_dir: null to serve on the verifier alone (router/cache/README.md)")
        # (0, no steps) only for offline/cache_pair_dev.py, which is about to choose one.
        self.operating_point = manifest_point(model_dir) if require_point else OperatingPoint(0.0, ())
        self._session, self._tokenizer, self.model_hash = load_model(model_path, tokenizer_path, threads=1)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cache-pair")

    def score(self, stored: str, query: str, whole: bool = False) -> float:
        """P(the answer stored for `stored` is right for `query`); blocking, one ONNX run. `whole` (an ADDITION: the
        detail one prompt adds is what the model is asked about, and sits anywhere, often at the end): 0.0 unless it
        reads both prompts whole; cut, it scored the rest and vouched for a detail it never read."""
        first, second = (self._tokenizer.encode(t, add_special_tokens=False).ids
                         for t in (stored, query))
        if whole and not _fits(first, second):
            return 0.0
        ids, types = pair_ids(first, second)
        (probability,) = self._session.run(None, {"input_ids": ids, "token_type_ids": types})
        return float(probability[0])

    async def check(self, stored: str, query: str, whole: bool = False) -> float:
        """`score` in the model's own thread, so the event loop keeps serving meanwhile."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, self.score, stored, query, whole)
