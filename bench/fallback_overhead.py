"""What fallback chains cost on the healthy path: the same routed requests with `fallback` on and off.

Chain-routed requests go through an aggregate cluster whose upstream filter chain can call the router
again (router/resilience.py); Envoy skips that call when the attempt lands on the chain's first model.
This measures latency and the router process's CPU per request for both settings, alternating runs so
machine noise hits both. Writes bench/results/fallback_overhead.json.

    .venv/bin/python bench/fallback_overhead.py [--requests 800] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from latency_stats import summary_ms

from devstack.stack import ROOT, Stack, derive_config

MATH = "Prove the theorem that the sum of two even numbers is even."  # keyword rule: a two-model chain


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().split()
    return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")


def run(requests: int, fallback: bool) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="vsr-bench-"))

    def overrides(cfg: dict[str, Any]) -> None:
        cfg["fallback"] = {"enabled": fallback}
        cfg["affinity"] = {"enabled": False}

    stack = Stack(derive_config(tmp, overrides), tmp, log_to=tmp)
    stack.start()
    body = {"model": "auto", "messages": [{"role": "user", "content": MATH}]}
    try:
        with httpx.Client(timeout=10) as client:
            url = f"{stack.base_url}/chat/completions"
            for _ in range(100):  # warm-up
                client.post(url, json=body).raise_for_status()
            pid = stack.procs["router"].pid
            cpu0, samples = _cpu_seconds(pid), []
            for _ in range(requests):
                start = time.perf_counter()
                client.post(url, json=body).raise_for_status()
                samples.append(time.perf_counter() - start)
            cpu = _cpu_seconds(pid) - cpu0
    finally:
        stack.stop()
    return {**summary_ms(samples), "router_cpu_ms_per_request": round(cpu / requests * 1000, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=800)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "fallback_overhead.json"))
    args = parser.parse_args()
    rounds = [{name: run(args.requests, fallback=on) for name, on in (("fallback_off", False), ("fallback_on", True))}
              for _ in range(args.rounds)]
    result = {"rounds": rounds, "config": {"requests_each": args.requests, "classifier": False,
                                           "prompt": "one keyword-routed prompt (math: a two-model chain)"}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
