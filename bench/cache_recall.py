"""Top-1 recall of the memory store's sketch shortlist against an exact scan, on real MiniLM embeddings.

Random vectors are the easy case for sign sketches (bench/cache_latency.py measures them); real
embeddings cluster by topic, so many stored rows sit close to a query. Here every QQP question that
is never a query goes into ONE scope (~66k rows, past `exact_below`), then the other side of
duplicate pairs (paraphrases: the cache's real case) and of non-duplicate pairs (same-topic hard
negatives) are looked up. recall_at_1 = share of queries whose store top-1 is as similar as the
exact top-1 (ties count: case-only variants embed identically); `above_threshold` counts only
queries whose exact top-1 reaches the default similarity threshold, the ones a cache would answer.
Embeddings come from (and are cached by) the production encoder (offline/features.py, as for bench/cache_eval.py).

    .venv/bin/python bench/cache_recall.py [--shortlists 32 64 128 256] [--queries 2000]

writes bench/results/cache_recall.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from offline.cache_pairs import load_jsonl
from offline.train_cache_verifier import QQP as DEFAULT_QQP
from offline.train_cache_verifier import embeddings
from router.cache.memory import SHORTLIST, MemoryStore
from router.cache.semantic_cache import candidate_floor
from router.cache.store import CacheEntry
from router.config import CacheConfig


async def recall(vectors: np.ndarray, stored: np.ndarray, queries: np.ndarray, shortlist: int,
                 threshold: float) -> dict[str, Any]:
    store = MemoryStore(len(stored), exact_below=0, shortlist=shortlist)
    for row in stored:
        await store.upsert(CacheEntry(str(row), "s", "n", "m", vectors[row], "", "", 0.0, float("inf")))
    best = np.max(vectors[queries] @ vectors[stored].T, axis=1)
    agree, above, above_agree, times = 0, 0, 0, []
    for q, want in zip(queries, best, strict=True):
        start = time.perf_counter()
        got = (await store.search("s", vectors[q], 1, -1.0, 0.0))[0]
        times.append(time.perf_counter() - start)
        right = got.similarity >= want - 1e-6  # a tie is right: case-only variants embed identically
        agree += right
        if want >= threshold:
            above += 1
            above_agree += right
    return {"shortlist": shortlist, "recall_at_1": round(agree / len(queries), 4),
            "above_threshold": above, "above_threshold_recall_at_1": round(above_agree / max(above, 1), 4),
            "search_p50_ms": round(float(np.percentile(times, 50)) * 1000, 3)}


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    pairs = load_jsonl(args.qqp)
    emb = embeddings(pairs, args.model_dir)
    texts = sorted(emb)
    vectors = np.stack([emb[t] for t in texts]).astype(np.float32)
    row = {t: i for i, t in enumerate(texts)}
    asked = {row[r["b"]] for r in pairs}
    stored = np.array(sorted(set(range(len(texts))) - asked))
    rng = np.random.default_rng(0)
    threshold = candidate_floor(CacheConfig())
    results = []
    for label, kind in ((1, "paraphrase"), (0, "hard_negative")):
        pool = [row[r["b"]] for r in pairs if r["label"] == label and row[r["a"]] not in asked]
        queries = rng.choice(np.array(pool), size=min(args.queries, len(pool)), replace=False)
        for shortlist in args.shortlists:
            results.append({"queries": kind, "n": len(queries),
                            **await recall(vectors, stored, queries, shortlist, threshold)})
            print(json.dumps(results[-1]), file=sys.stderr)
    return {"method": __doc__.split("\n\n")[1], "stored_rows": len(stored), "threshold": threshold,
            "results": results}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--qqp", type=Path, default=DEFAULT_QQP)
    p.add_argument("--model-dir", type=Path, default=ROOT / "models" / "minilm")
    p.add_argument("--queries", type=int, default=2000, help="per query kind")
    p.add_argument("--shortlists", nargs="+", type=int, default=[SHORTLIST])
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "cache_recall.json")
    args = p.parse_args()
    if not args.qqp.exists():
        print(f"no QQP pairs at {args.qqp}", file=sys.stderr)
        return 1
    args.out.write_text(json.dumps(asyncio.run(measure(args)), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
