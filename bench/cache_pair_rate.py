"""How often a cache lookup on real chat traffic pays a pair-model run, at the shipped operating point and at the
earlier stages of its dev choice (bench/results/cache_pair_dev.json).

ShareGPT DEV first turns (offline/chat_data.py; up to 2,000 characters, the first 2,500) arrive in order; each is
looked up among all earlier ones as the cache searches (top 3 with cosine >= the point's floor, exact repeats aside; one past
`max_semantic_chars` by exact key only: it has no candidates and is none), judged by the verifier and the operating
point (router/cache/pair.py), and the pair model runs when the chosen candidate needs it.

    PYTHONPATH=$PWD .venv/bin/python bench/cache_pair_rate.py    # ~2 min; writes bench/results/cache_pair_rate.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from offline import chat_data
from offline.cache_pair_dev import recorded_stages
from router.cache.keys import normalise
from router.cache.pair import PairModel
from router.cache.semantic_cache import _usable_embedding
from router.cache.verifier import Verifier
from router.classifier.encoder import Encoder
from router.config import CacheConfig


def searchable(texts: list[str], vectors: np.ndarray, cfg: CacheConfig) -> np.ndarray:
    """The vectors the cache searches with and stores (semantic_cache._usable_embedding); a zero row (cosine 0 with
    every text, under any floor) for a prompt it keeps by exact key only."""
    usable = (_usable_embedding(v, t, cfg) for v, t in zip(vectors, texts, strict=True))
    return np.stack([np.zeros(vectors.shape[1], np.float32) if v is None else v for v in usable])


def candidates(texts: list[str], vectors: np.ndarray, i: int, top_k: int, floor: float) -> list[tuple[str, float]]:
    """The candidates (text, cosine) the cache finds for texts[i] among the earlier texts (`vectors`: `searchable`)."""
    sims = vectors[:i] @ vectors[i]
    return [(texts[j], float(sims[j])) for j in np.argsort(-sims)[:top_k]
            if sims[j] >= floor and texts[j] != texts[i]]


def main() -> int:
    texts = [normalise(r.text) for r in chat_data.sharegpt() if r.split == "dev" and len(r.text) <= 2000][:2500]
    encoder, verifier = Encoder(ROOT / "models" / "minilm"), Verifier.load()
    model = PairModel(ROOT / "models" / "cache-pair")
    cfg = CacheConfig()
    vectors = searchable(texts, np.stack([encoder.encode(t).embedding for t in texts]), cfg)
    points = {"shipped": model.operating_point, **recorded_stages()}
    counts = {name: {"pair_runs": 0, "served": 0, "with_candidates": 0} for name in points}
    floor = min(point.floor for point in points.values())
    for i in range(1, len(texts)):
        found = candidates(texts, vectors, i, cfg.top_k, floor)  # judged once; each point keeps those past its floor
        if not found:
            continue
        scores, states = verifier.judge(texts[i], found)
        cosines = np.array([cosine for _, cosine in found])
        pair_scores: dict[int, float] = {}  # a candidate several points pick is scored once
        for name, point in points.items():
            kept = np.flatnonzero(cosines >= point.floor)
            if not len(kept):
                continue
            counts[name]["with_candidates"] += 1
            chosen = point.pick(scores[kept], states[kept])
            if chosen is None:
                continue
            pick, need = int(kept[chosen[0]]), chosen[1]
            if need > 0:
                if pick not in pair_scores:
                    pair_scores[pick] = model.score(found[pick][0], texts[i])
                counts[name]["pair_runs"] += 1
                counts[name]["served"] += int(pair_scores[pick] >= need)
            else:
                counts[name]["served"] += 1
    result = {"lookups": len(texts) - 1, "points": {
        name: {**counts[name], "pair_run_share": round(counts[name]["pair_runs"] / (len(texts) - 1), 4),
               "operating_point": points[name].manifest()} for name in points}}
    out = ROOT / "bench" / "results" / "cache_pair_rate.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
