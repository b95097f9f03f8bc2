"""End-to-end latency of a semantic-cache hit through Envoy, against a miss routed upstream.

Starts the real stack (Envoy, router with the ONNX classifier, demo upstreams) with the chosen
cache backend, primes one answer, then times repeated paraphrase hits and, for contrast, fresh
misses. Writes bench/results/cache_hit_e2e.json.

    .venv/bin/python bench/cache_hit_e2e.py --backend milvus-lite
    ip netns exec vsr-test .venv/bin/python bench/cache_hit_e2e.py --backend milvus-server   # as root
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.milvus_server import MilvusServer
from tests.stack import ROOT, Stack, derive_config

HEADERS = {"authorization": "Bearer sk-bench"}


def _body(text: str) -> dict[str, Any]:
    return {"model": "auto", "messages": [{"role": "user", "content": text}]}


def _stats(samples: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in samples)
    return {"p50_ms": round(statistics.median(ms), 3), "p99_ms": round(statistics.quantiles(ms, n=100)[98], 3),
            "mean_ms": round(statistics.fmean(ms), 3), "n": len(ms)}


def _cache_cfg(backend: str, tmp: Path, server_uri: str | None) -> dict[str, Any]:
    if backend == "memory":
        return {"enabled": True, "backend": "memory"}
    uri = server_uri if backend == "milvus-server" else str(tmp / "cache.db")
    return {"enabled": True, "backend": "milvus", "uri": uri}


def run(backend: str, requests: int) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="vsr-hit-"))
    server = MilvusServer(tmp / "milvus") if backend == "milvus-server" else None
    if server:
        server.start()

    def overrides(cfg: dict[str, Any]) -> None:
        cfg["classifier"]["enabled"] = True
        cfg["semantic_cache"] = _cache_cfg(backend, tmp, server.uri if server else None)

    stack = Stack(derive_config(tmp, overrides), tmp, log_to=tmp)
    stack.start()
    url = f"{stack.base_url}/chat/completions"
    hits: list[float] = []
    misses: list[float] = []
    try:
        with httpx.Client(timeout=10, headers=HEADERS) as client:
            deadline = time.monotonic() + 60  # the first lookups wait for the collection to exist
            while client.post(url, json=_body("How do I reset my password?")).headers.get("x-vsr-cache-hit") != "true":
                if time.monotonic() > deadline:
                    raise RuntimeError("the primed answer never became a hit")
                time.sleep(0.2)
            for i in range(requests):
                start = time.perf_counter()
                r = client.post(url, json=_body("How can I reset my password?"))
                hits.append(time.perf_counter() - start)
                assert r.headers["x-vsr-cache-hit"] == "true"
                start = time.perf_counter()
                r = client.post(url, json=_body(f"Tell me fact number {i} about the Roman empire."))
                misses.append(time.perf_counter() - start)
                assert r.headers.get("x-vsr-cache-hit") == "false"
    finally:
        stack.stop()
        if server:
            server.stop()
            server.remove_data()
    return {"backend": backend, "hit_through_envoy": _stats(hits), "miss_through_envoy_to_upstream": _stats(misses),
            "note": "paraphrase hits ('How can I...' against a stored 'How do I...'); demo upstream answers instantly"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["memory", "milvus-lite", "milvus-server"], default="milvus-lite")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    result = run(args.backend, args.requests)
    out = Path(args.out or ROOT / "bench" / "results" / f"cache_hit_e2e_{args.backend}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
