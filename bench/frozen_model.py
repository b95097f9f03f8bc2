"""How long a frozen model server keeps its chain's requests: seconds from SIGSTOP of the first model until a new
request is answered by the fallback, and from SIGCONT until the first model answers again.

A frozen server (a wedged engine, a GPU hang) accepts connections and never answers, so only Envoy's health checks
(`models.<name>.health_check`, the shipped settings) find it; outlier detection is off here so that they alone act.
A math request (a two-model chain) is sent every 0.2 s with a 1 s client timeout; a timeout counts as not answered.
Writes bench/results/frozen_model.json.

    .venv/bin/python bench/frozen_model.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devstack.stack import ROOT, Stack, derive_config

MATH = "Prove the theorem that the sum of two even numbers is even."  # keyword rule: gpt-oss-120b, then qwen3-4b
FIRST, FALLBACK = "gpt-oss-120b", "qwen3-4b"


def _answered_by(client: httpx.Client, url: str) -> str | None:
    try:
        r = client.post(url, json={"model": "auto", "messages": [{"role": "user", "content": MATH}]}, timeout=1)
    except httpx.TimeoutException:
        return None
    return r.headers.get("x-vsr-upstream-model")


def _seconds_until(condition: Callable[[], bool]) -> float:
    start = time.monotonic()
    while not condition():
        time.sleep(0.2)
    return round(time.monotonic() - start, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "frozen_model.json"))
    args = parser.parse_args()

    def no_ejection(cfg: dict[str, Any]) -> None:
        for model in cfg["models"].values():
            model["outlier_detection"] = None

    tmp = Path(tempfile.mkdtemp(prefix="vsr-bench-"))
    stack = Stack(derive_config(tmp, no_ejection), tmp, log_to=tmp)
    stack.start()
    frozen = stack.procs[f"upstream-{FIRST}-0"]
    url = f"{stack.base_url}/chat/completions"
    rounds = []
    try:
        with httpx.Client() as client:
            for _ in range(args.rounds):
                _seconds_until(lambda: _answered_by(client, url) == FIRST)
                frozen.send_signal(signal.SIGSTOP)
                down = _seconds_until(lambda: _answered_by(client, url) == FALLBACK)
                frozen.send_signal(signal.SIGCONT)
                back = _seconds_until(lambda: _answered_by(client, url) == FIRST)
                rounds.append({"fallback_after_s": down, "back_after_s": back})
    finally:
        frozen.send_signal(signal.SIGCONT)
        stack.stop()
    result = {"rounds": rounds, "config": {"health_check": stack.cfg.models[FIRST].model_dump()["health_check"],
                                           "probe": "a math request every 0.2 s, 1 s client timeout"}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
