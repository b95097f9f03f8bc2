"""Latency the sidecar adds: the same requests through Envoy with and without ext_proc, in one run.

Two Envoys share the demo upstreams; one has the ext_proc filter and talks to the real router
(classifier on when the model is built), the other is the same config without the filter. Requests
alternate between them so machine noise hits both equally. Writes bench/results/extproc_overhead.json.

    .venv/bin/python bench/extproc_overhead.py [--requests 2000]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from latency_stats import summary_ms

from devstack.stack import ROOT, Stack, derive_config


def run(requests: int, classifier: bool) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="vsr-bench-"))

    def overrides(cfg: dict[str, Any]) -> None:
        cfg["classifier"]["enabled"] = classifier

    stack = Stack(derive_config(tmp, overrides), tmp, log_to=tmp)
    stack.start()
    urls = {"with_ext_proc": f"{stack.base_url}/chat/completions",
            "without_ext_proc": f"{stack.start_bare_envoy()}/chat/completions"}
    samples: dict[str, list[float]] = {k: [] for k in urls}
    try:
        with httpx.Client(timeout=10) as client:
            for i in range(requests + 100):
                # A new text per request: a repeated one would be answered by the classification memo.
                body = {"model": "auto", "messages": [{"role": "user", "content": f"What is {i} times {i + 7} plus 4?"}]}
                for name, url in urls.items():
                    start = time.perf_counter()
                    r = client.post(url, json=body)
                    elapsed = time.perf_counter() - start
                    r.raise_for_status()
                    if i >= 100:  # warm-up
                        samples[name].append(elapsed)
    finally:
        stack.stop()
    result = {k: summary_ms(v) for k, v in samples.items()}
    w, wo = result["with_ext_proc"], result["without_ext_proc"]
    result["added"] = {"p50_ms": round(w["p50_ms"] - wo["p50_ms"], 3), "p99_ms": round(w["p99_ms"] - wo["p99_ms"], 3),
                       "p50_ratio": round(w["p50_ms"] / wo["p50_ms"], 2)}
    result["config"] = {"requests_each": requests, "classifier": classifier, "prompt_tokens": "short, unique per request"}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--no-classifier", action="store_true", help="keyword rules only")
    parser.add_argument("--out", help="default: bench/results/extproc_overhead[_keyword_only].json")
    args = parser.parse_args()
    result = run(args.requests, classifier=not args.no_classifier)
    name = "extproc_overhead_keyword_only.json" if args.no_classifier else "extproc_overhead.json"
    out = Path(args.out or ROOT / "bench" / "results" / name)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
