"""End-to-end latency of a semantic-cache hit through Envoy, against a miss routed upstream.

Starts the real stack (Envoy, router with the ONNX classifier, demo upstreams) with the chosen
cache backend and primes it with the first question of QQP duplicate pairs (../shared/data). Then,
per pair, it times three requests:
- paraphrase: the pair's other question, never sent before, so the classifier runs; only the
  requests answered from the cache count (the hit rate is reported), the rest are misses;
- exact repeat: the primed question again (its classification is memoised, router/classifier/memo.py);
- miss: a fresh question that goes to the demo upstream (which answers at once).
Writes bench/results/cache_hit_e2e_<backend>.json (`--no-pair`: the cache's pair model off, `_no_pair.json`).

    .venv/bin/python bench/cache_hit_e2e.py --backend milvus-lite
    ip netns exec vsr-test .venv/bin/python bench/cache_hit_e2e.py --backend milvus-server   # as root
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from latency_stats import summary_ms

from devstack.milvus_server import MilvusServer
from devstack.stack import ROOT, Stack, derive_config

HEADERS = {"authorization": "Bearer sk-bench"}
QQP = ROOT.parent / "shared" / "data" / "qqp_pairs.jsonl.gz"


def _pairs(count: int) -> list[tuple[str, str]]:
    """Short labelled-duplicate QQP pairs, a fixed sample: (stored question, paraphrase)."""
    with gzip.open(QQP, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    dupes = [(r["a"], r["b"]) for r in rows if r["label"] == 1 and max(len(r["a"]), len(r["b"])) <= 200]
    return random.Random(7).sample(dupes, count)


def _body(text: str) -> dict[str, Any]:
    return {"model": "auto", "messages": [{"role": "user", "content": text}]}


def _cache_cfg(backend: str, tmp: Path, server_uri: str | None, pair: bool) -> dict[str, Any]:
    cfg: dict[str, Any] = {"enabled": True} if pair else {"enabled": True, "pair_model_dir": None}
    if backend == "memory":
        return {**cfg, "backend": "memory"}
    uri = server_uri if backend == "milvus-server" else str(tmp / "cache.db")
    return {**cfg, "backend": "milvus", "uri": uri}


def run(backend: str, requests: int, pair: bool = True) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="vsr-hit-"))
    server = MilvusServer(tmp / "milvus") if backend == "milvus-server" else None
    if server:
        server.start()

    def overrides(cfg: dict[str, Any]) -> None:
        cfg["classifier"]["enabled"] = True
        cfg["semantic_cache"] = _cache_cfg(backend, tmp, server.uri if server else None, pair)

    stack = Stack(derive_config(tmp, overrides), tmp, log_to=tmp)
    stack.start()
    url = f"{stack.base_url}/chat/completions"
    pairs = _pairs(requests)
    series: dict[str, list[float]] = {"paraphrase_hit": [], "exact_repeat_hit": [], "miss": []}

    def timed(client: httpx.Client, text: str) -> tuple[float, bool]:
        start = time.perf_counter()
        r = client.post(url, json=_body(text))
        elapsed = time.perf_counter() - start
        if r.status_code == 403:  # blocked by the policy (PII the models may not see, jailbreak score)
            return elapsed, False
        r.raise_for_status()
        return elapsed, r.headers.get("x-vsr-cache-hit") == "true"

    try:
        with httpx.Client(timeout=10, headers=HEADERS) as client:
            # A blocked question is never stored: its pair is dropped (the paraphrase is not sent before timing).
            pairs = [(a, b) for a, b in pairs if client.post(url, json=_body(a)).status_code == 200]
            deadline = time.monotonic() + 60  # writes are asynchronous; Milvus search is eventually consistent
            while not timed(client, pairs[-1][0])[1]:
                if time.monotonic() > deadline:
                    raise RuntimeError("the primed answers never became hits")
                time.sleep(0.2)
            for i, (stored, paraphrase) in enumerate(pairs):
                elapsed, hit = timed(client, paraphrase)
                if hit:
                    series["paraphrase_hit"].append(elapsed)
                elapsed, hit = timed(client, stored)
                if hit:  # a miss here is a write that failed or is not yet visible: reported as the hit rate
                    series["exact_repeat_hit"].append(elapsed)
                elapsed, hit = timed(client, f"Tell me fact number {i} about the Roman empire.")
                if hit:
                    raise RuntimeError("a fresh question hit the cache")
                series["miss"].append(elapsed)
    finally:
        stack.stop()
        if server:
            server.stop()
            server.remove_data()
    return {"backend": backend, "pair_model": pair, "pairs": len(pairs),
            "paraphrase_hit_rate": round(len(series["paraphrase_hit"]) / len(pairs), 3),
            "exact_repeat_hit_rate": round(len(series["exact_repeat_hit"]) / len(pairs), 3),
            **{name: {**summary_ms(samples), "n": len(samples)} for name, samples in series.items()},
            "note": "QQP duplicate pairs (seed 7, <= 200 chars); demo upstream answers instantly; serial requests"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["memory", "milvus-lite", "milvus-server"], default="milvus-lite")
    parser.add_argument("--requests", type=int, default=600, help="QQP pairs to prime and query")
    parser.add_argument("--no-pair", action="store_true", help="the cache's pair model off (verifier alone)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    result = run(args.backend, args.requests, pair=not args.no_pair)
    suffix = "_no_pair" if args.no_pair else ""
    out = Path(args.out or ROOT / "bench" / "results" / f"cache_hit_e2e_{args.backend}{suffix}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
