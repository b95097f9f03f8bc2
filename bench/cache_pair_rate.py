"""How often a cache lookup on real chat traffic pays a pair-model run, at the shipped operating point and at the
same point with its first step only (no second step, no additions).

ShareGPT DEV first turns (offline/chat_data.py; up to 2,000 characters, the first 2,500) arrive in order; each is
looked up among all earlier ones as the cache searches (top 3 with cosine >= 0.70, exact repeats aside), judged by the
verifier and the operating point (router/cache/pair.py), and the pair model runs when the chosen candidate needs it.

    PYTHONPATH=$PWD .venv/bin/python bench/cache_pair_rate.py    # ~2 min; writes bench/results/cache_pair_rate.json
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from offline import chat_data
from router.cache.keys import normalise
from router.cache.pair import INF, PairModel
from router.cache.verifier import Verifier
from router.classifier.encoder import Encoder
from router.config import CacheConfig


def main() -> int:
    texts = [normalise(r.text) for r in chat_data.sharegpt() if r.split == "dev" and len(r.text) <= 2000][:2500]
    encoder, verifier = Encoder(ROOT / "models" / "minilm"), Verifier.load()
    model = PairModel(ROOT / "models" / "cache-pair")
    vectors = np.stack([encoder.encode(t).embedding for t in texts])
    points = {"shipped": model.operating_point,
              "first_step_only": replace(model.operating_point, second_lower_bound=INF, second_threshold=INF,
                                         addition_threshold=INF)}
    floor, top_k = CacheConfig().similarity_threshold, CacheConfig().top_k
    counts = {name: {"pair_runs": 0, "served": 0} for name in points}
    with_candidates = 0
    for i in range(1, len(texts)):
        sims = vectors[:i] @ vectors[i]
        candidates = [(texts[j], float(sims[j])) for j in np.argsort(-sims)[:top_k]
                      if sims[j] >= floor and texts[j] != texts[i]]
        if not candidates:
            continue
        with_candidates += 1
        scores, states = verifier.judge(texts[i], candidates)
        for name, point in points.items():
            chosen = point.pick(scores, states)
            if chosen is None:
                continue
            pick, need = chosen
            if need > 0:
                counts[name]["pair_runs"] += 1
                counts[name]["served"] += int(model.score(candidates[pick][0], texts[i]) >= need)
            else:
                counts[name]["served"] += 1
    result = {"lookups": len(texts) - 1, "with_candidates": with_candidates, "points": {
        name: {**counts[name], "pair_run_share": round(counts[name]["pair_runs"] / (len(texts) - 1), 4),
               "operating_point": {k: v for k, v in asdict(points[name]).items() if v != INF}} for name in points}}
    out = ROOT / "bench" / "results" / "cache_pair_rate.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
