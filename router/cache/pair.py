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
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from router.cache.verifier import ADDITION, CLEAN
from router.classifier.encoder import CLS_ID, SEP_ID, ModelMissingError, load_model

MAX_TOKENS = 128  # both prompts and the three specials; as in training (offline/train_cache_pair.MAX_TOKENS)
INF = float("inf")  # a pair score no candidate reaches: the path is off


@dataclass(frozen=True, slots=True)
class OperatingPoint:
    """The pair score a candidate needs, from the verifier's view of it (`Verifier.assess`); every field chosen on dev
    data by offline/cache_pair_dev.py and stored in the model's manifest.json:
    - CLEAN, verifier >= sure: none, served on the verifier alone (the pair model turns down many reframes that keep
      every content word, "could you tell me how to X" / "how to X", which the verifier is nearly certain of);
    - CLEAN, verifier >= lower_bound: threshold;
    - CLEAN, verifier >= second_lower_bound: second_threshold (a near-certain pair score outweighs a middling verifier
      score: the verifier's word features mark down rewordings that share few words, "prune an apple tree" / "apple
      tree trimming - how should i do it");
    - ADDITION (a number, unit or audience on one side only): addition_threshold;
    - otherwise (VETOED, or below every bound): not served."""

    lower_bound: float
    threshold: float
    sure: float = INF
    second_lower_bound: float = INF
    second_threshold: float = INF
    addition_threshold: float = INF

    def required(self, scores: np.ndarray, states: np.ndarray, lower_bound: float | None = None) -> np.ndarray:
        """Per candidate the pair score it needs: 0 = none, inf = not served. `lower_bound` (the config's
        `verifier_threshold`, per category too) replaces the point's own and is a floor on every path, additions
        included: 1.0 serves exact repeats only."""
        floor = 0.0 if lower_bound is None else lower_bound
        first = self.lower_bound if lower_bound is None else lower_bound
        clean, addition = states == CLEAN, (states == ADDITION) & (scores >= floor)
        need = np.where(addition, self.addition_threshold, INF)
        need = np.where(clean & (scores >= max(self.second_lower_bound, floor)), self.second_threshold, need)
        need = np.where(clean & (scores >= first), np.minimum(need, self.threshold), need)
        return np.where(clean & (scores >= max(self.sure, floor)), 0.0, need)

    def pick(self, scores: np.ndarray, states: np.ndarray, lower_bound: float | None = None) -> tuple[int, float] | None:
        """The candidate a lookup goes on with (the least pair score needed, then the best verifier score) and the
        pair score it needs; None when no candidate may be served."""
        need = self.required(scores, states, lower_bound)
        if not len(need) or need.min() == INF:
            return None
        best = int(np.lexsort((-scores, need))[0])
        return best, float(need[best])

    def serves(self, scores: np.ndarray, states: np.ndarray, pair: np.ndarray) -> np.ndarray:
        """Which candidates the point serves given each one's pair score (the offline figures' decision)."""
        return pair >= self.required(scores, states)

    def first_step(self) -> OperatingPoint:
        """The point without its second step and addition path (the decision before 2026-11-30's stage 2)."""
        return replace(self, second_lower_bound=INF, second_threshold=INF, addition_threshold=INF)

    @classmethod
    def from_manifest(cls, point: dict[str, float]) -> OperatingPoint:
        return cls(*(float(point.get(name, INF)) for name in MANIFEST_KEYS))


# The manifest's operating_point keys, in the order of OperatingPoint's fields ("verifier_sure" is `sure`).
MANIFEST_KEYS = ("lower_bound", "threshold", "verifier_sure", "second_lower_bound", "second_threshold",
                 "addition_threshold")


def pair_ids(first: list[int], second: list[int], budget: int = MAX_TOKENS) -> tuple[np.ndarray, np.ndarray]:
    """input_ids and token_type_ids of "[CLS] first [SEP] second [SEP]", the longer side cut first, one token at a
    time (what the training tokenizer's "longest_first" does), so the two never exceed `budget` together."""
    a, b = list(first), list(second)
    while len(a) + len(b) > budget - 3:
        (a if len(a) > len(b) else b).pop()
    ids = np.array([[CLS_ID, *a, SEP_ID, *b, SEP_ID]], dtype=np.int64)
    types = np.array([[0] * (len(a) + 2) + [1] * (len(b) + 1)], dtype=np.int64)
    return ids, types


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
        point = json.loads(manifest_path.read_text()).get("operating_point")
        # The later keys may be missing (a model chosen before them: those paths stay off); the first step's may not.
        if require_point and (point is None or not {"lower_bound", "threshold"} <= point.keys()):
            raise ModelMissingError(f"{manifest_path} has no operating_point with lower_bound and threshold: run "
                                    "offline/cache_pair_dev.py --write")
        # (0, 0) only for offline/cache_pair_dev.py, which is about to choose one.
        self.operating_point = OperatingPoint.from_manifest(point) if point is not None else OperatingPoint(0.0, 0.0)
        self._session, self._tokenizer, self.model_hash = load_model(model_path, tokenizer_path, threads=1)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cache-pair")

    def score(self, stored: str, query: str) -> float:
        """P(the answer stored for `stored` is right for `query`); blocking, one ONNX run."""
        first, second = (self._tokenizer.encode(t, add_special_tokens=False).ids
                         for t in (stored, query))
        ids, types = pair_ids(first, second)
        (probability,) = self._session.run(None, {"input_ids": ids, "token_type_ids": types})
        return float(probability[0])

    async def check(self, stored: str, query: str) -> float:
        """`score` in the model's own thread, so the event loop keeps serving meanwhile."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, self.score, stored, query)
