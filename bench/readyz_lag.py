"""How long `/readyz` takes to follow the cache backend: seconds from a real Milvus server stopping (its process
gone) to 503, and from it serving again to 200, with `ready_without_cache: false`, one router, with no traffic and
with 5 requests a second. The Kubernetes readiness probe asks every 5 s (deploy/kubernetes/deployment.yaml).
Writes bench/results/readyz_lag.json (`--out`).

    ip netns exec vsr-test .venv/bin/python bench/readyz_lag.py --rounds 2   # as root: the server binds everywhere
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devstack.milvus_server import MilvusServer
from devstack.stack import ROOT, Stack, derive_config


def _status(url: str) -> int:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.HTTPError:
        return 0


def _seconds_until(url: str, status: int, limit_s: float = 120) -> float | None:
    start = time.monotonic()
    while time.monotonic() - start < limit_s:
        if _status(url) == status:
            return round(time.monotonic() - start, 2)
        time.sleep(0.1)
    return None


def _traffic(stack: Stack, stop: threading.Event) -> None:
    """5 cacheable requests a second, each new (a lookup and a write)."""
    with httpx.Client(base_url=stack.base_url, headers={"authorization": "Bearer sk-readyz"}, timeout=10) as client:
        while not stop.is_set():
            try:
                client.post("/chat/completions", json={"model": "auto", "messages": [
                    {"role": "user", "content": f"What is item {uuid.uuid4().hex[:8]}?"}]})
            except httpx.HTTPError:
                pass
            time.sleep(0.2)


def run(rounds: int) -> list[dict[str, Any]]:
    server = MilvusServer(Path(tempfile.mkdtemp(prefix="readyz-lag-milvus-")))
    server.start()
    results = []
    with tempfile.TemporaryDirectory(prefix="readyz-lag-") as tmp:
        def overrides(cfg: dict[str, Any]) -> None:
            cfg["semantic_cache"] = {"enabled": True, "backend": "milvus", "uri": server.uri, "collection": "lag"}
            cfg["observability"]["ready_without_cache"] = False

        stack = Stack(derive_config(Path(tmp), overrides), Path(tmp), log_to=Path(tmp))
        stack.start()
        url = f"http://127.0.0.1:{stack.cfg.server.metrics_port}/readyz"
        try:
            if _seconds_until(url, 200) is None:
                raise RuntimeError("the router never became ready")
            for _ in range(rounds):
                for traffic in (False, True):
                    stop = threading.Event()
                    sender = threading.Thread(target=_traffic, args=(stack, stop)) if traffic else None
                    if sender is not None:
                        sender.start()
                    time.sleep(12)  # idle or steady before the change
                    server.stop()
                    down = _seconds_until(url, 503)
                    server.start()
                    up = _seconds_until(url, 200)
                    stop.set()
                    if sender is not None:
                        sender.join()
                    results.append({"traffic_per_s": 5 if traffic else 0, "stopped_to_503_s": down,
                                    "serving_to_200_s": up})
                    print(results[-1], flush=True)
        finally:
            stack.stop()
            server.stop()
            server.remove_data()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "readyz_lag.json")
    args = parser.parse_args()
    results = run(args.rounds)
    args.out.write_text(json.dumps({"measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                    "load_avg_1m_at_end": round(os.getloadavg()[0], 2), "runs": results},
                                   indent=1) + "\n")


if __name__ == "__main__":
    main()
