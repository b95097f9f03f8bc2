"""Do long prompts slow short ones down? Trial 14's s6 scenario, A/B between two versions of the router code.

A real stack per run (devstack Stack: Envoy, the router with 2 workers, the classifier on, the semantic cache
off, demo upstreams): 16 closed-loop clients send short prompts for `--seconds`, beside 0 or `--long-clients`
clients sending ~8,900-character prompts (trial 14's). The runs interleave the two codes and the two mixes, in
alternating order, `--rounds` times, because the shared machine drifts. The load runs in a process of its own
at the stack's nice value (trial 14's ran 10 nicer, as nice as the long lane it measured). Per run: the short prompts' p50/p99 and answers per second, and the
long prompts' answers by status and error code. The base code is `git archive REF router` (with this checkout's
generated router/_proto); the head is this checkout.

    ip netns exec vsr-NAME env PYTHONPATH=$PWD nice -n 10 .venv/bin/python bench/long_fairness.py --base main

Writes bench/results/long_fairness.json (--out).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import openai

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from latency_stats import summary_ms

from devstack.stack import Stack, derive_config

SHORT = [
    "Prove that sqrt(2) is irrational", "Write a python function that reverses a linked list",
    "What is the capital of France", "Explain the difference between TCP and UDP",
    "Summarise the causes of the first world war", "How do I bake sourdough bread at home",
    "What is the derivative of x squared times sin x", "Translate good morning into Spanish",
    "Is a contract signed under duress enforceable", "What are symptoms of vitamin D deficiency",
    "Give me three ideas for a birthday party", "How does a transformer neural network work",
]
LONG = "The quarterly report covers revenue, costs, hiring plans and the roadmap for the storage product. " * 90
SHORT_CLIENTS = 16


async def _one(client: openai.AsyncOpenAI, kind: str, prompt: str) -> dict[str, Any]:
    rec: dict[str, Any] = {"kind": kind, "t0": time.monotonic()}
    try:
        raw = await client.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": prompt}])
        rec["status"] = raw.status_code
    except openai.APIStatusError as exc:
        rec["status"] = exc.status_code
        rec["code"] = exc.body.get("code") if isinstance(exc.body, dict) else None
        rec["retry_after"] = exc.response.headers.get("retry-after")
    except (openai.APIConnectionError, httpx.HTTPError) as exc:
        rec["status"], rec["code"] = -1, type(exc).__name__
    rec["s"] = time.monotonic() - rec.pop("t0")
    return rec


async def _mix(base: str, seconds: float, long_clients: int) -> list[dict[str, Any]]:
    """Closed-loop clients: each sends its next prompt when its last is answered, until `seconds` are up."""
    client = openai.AsyncOpenAI(base_url=base, api_key="sk-bench", max_retries=0, timeout=40,
                                http_client=openai.DefaultAsyncHttpxClient(limits=httpx.Limits(max_connections=100)))
    end = time.monotonic() + seconds
    n = itertools.count()
    out: list[dict[str, Any]] = []

    async def loop(kind: str) -> None:
        while time.monotonic() < end:
            i = next(n)
            prompt = f"{LONG} Question {i}: summarise the above in two lines." if kind == "long" else \
                f"{random.choice(SHORT)} case {i} {random.randint(0, 10**9)}"
            out.append(await _one(client, kind, prompt))

    await asyncio.gather(*[loop("long") for _ in range(long_clients)], *[loop("short") for _ in range(SHORT_CLIENTS)])
    return out


def _summary(recs: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    short = [r for r in recs if r["kind"] == "short"]
    ok = [r["s"] for r in short if r["status"] == 200]
    long = [r for r in recs if r["kind"] == "long"]
    return {
        "short_answered": len(ok), "short_per_s": round(len(ok) / seconds, 1),
        "short_errors": dict(Counter(f"{r['status']} {r.get('code')}" for r in short if r["status"] != 200)),
        **({f"short_{k}": v for k, v in summary_ms(ok).items()} if ok else {}),
        "long_sent": len(long),
        "long_outcomes": dict(Counter(f"{r['status']} {r.get('code') or ''}".strip() for r in long)),
        "long_503_without_retry_after": sum(r["status"] == 503 and not r.get("retry_after") for r in long),
    }


def _ready(stack: Stack, workers: int, timeout: float = 120) -> None:
    url = f"http://127.0.0.1:{stack.cfg.server.metrics_port}/readyz"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if json.load(r).get("workers_ready") == workers:
                    return
        except (OSError, ValueError):
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{workers} workers not ready after {timeout}s")


def _base_code(ref: str, into: Path) -> Path:
    """`ref`'s router package beside this checkout's generated protobuf modules (not in git)."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "router"], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    shutil.copytree(ROOT / "router" / "_proto", into / "router" / "_proto", dirs_exist_ok=True)
    return into


def run_one(code: Path, long_clients: int, seconds: float, workers: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="vsr-fair-") as tmp:
        work = Path(tmp)

        def overrides(cfg: dict[str, Any]) -> None:
            cfg["server"]["workers"] = workers
            cfg["classifier"]["enabled"] = True
            cfg["classifier"]["model_dir"] = str(ROOT / "models" / "minilm")

        stack = Stack(derive_config(work, overrides), work, log_to=work, cwd=code)
        os.environ["PYTHONPATH"] = str(code)  # the router's workers import this code, the demo upstreams ROOT's
        try:
            stack.start()
            _ready(stack, workers)
            out = work / "load.json"
            subprocess.run([sys.executable, __file__, "--client", stack.base_url, str(out),
                            "--seconds", "3", "--long-clients", "1"], check=True, timeout=120)  # warm both lanes
            subprocess.run([sys.executable, __file__, "--client", stack.base_url, str(out),
                            "--seconds", str(seconds), "--long-clients", str(long_clients)], check=True,
                           timeout=seconds + 120)
            return _summary(json.loads(out.read_text()), seconds)
        finally:
            stack.stop()
            os.environ["PYTHONPATH"] = str(ROOT)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--base", default="main", help="git ref of the code to compare this checkout with")
    p.add_argument("--also", action="append", default=[], metavar="NAME=DIR",
                   help="another version to run beside them: DIR holds its router package (a patched copy)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--seconds", type=float, default=30)
    p.add_argument("--long-clients", type=int, default=4)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "long_fairness.json")
    p.add_argument("--client", nargs=2, metavar=("BASE_URL", "OUT"), help=argparse.SUPPRESS)  # the load process
    a = p.parse_args()
    if a.client:
        Path(a.client[1]).write_text(json.dumps(asyncio.run(_mix(a.client[0], a.seconds, a.long_clients))))
        return
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="vsr-fair-base-") as tmp:
        codes = {a.base: _base_code(a.base, Path(tmp)), "head": ROOT,
                 **{name: Path(path) for name, path in (each.split("=", 1) for each in a.also)}}
        plan = [(code, long) for code in codes for long in (0, a.long_clients)]
        for round_ in range(a.rounds):
            for name, long in plan if round_ % 2 == 0 else plan[::-1]:
                result = {"round": round_, "code": name, "long_clients": long,
                          **run_one(codes[name], long, a.seconds, a.workers)}
                print(json.dumps(result), flush=True)
                runs.append(result)
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], check=True,
                            capture_output=True, text=True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({
        "when": time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime()), "head": commit.stdout.strip(), "base": a.base,
        "setup": {"workers": a.workers, "classifier": "on", "semantic_cache": "off", "short_clients": SHORT_CLIENTS,
                  "long_clients": a.long_clients, "long_chars": len(LONG), "seconds": a.seconds,
                  "nice": os.nice(0), "cpus": os.cpu_count()},
        "runs": runs}, indent=1) + "\n")


if __name__ == "__main__":
    main()
