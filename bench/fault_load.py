"""Concurrent load, readiness sampling and metric reading for bench/fault_suite.py.

Clients are asyncio tasks over one aiohttp session (cheap next to Envoy, the router and Milvus Lite
on a 2-core machine). Half of the prompts are new (a miss, a classifier pass, a cache write), half
repeat one of the earlier ones (a hit), so the cache carries reads and writes at once.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

TOPICS = ["reset my password", "integrate x squared", "bake sourdough bread", "learn the guitar",
          "file my taxes", "train for a marathon", "repair a bike tyre", "write a cover letter",
          "care for a cactus", "speed up a slow laptop", "plan a trip to Lisbon", "explain photosynthesis"]


@dataclass
class LoadResult:
    """What the clients saw: statuses, latencies and which requests failed how."""

    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    cache_hits: int = 0

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies)

        def pct(p: float) -> float:
            return round(lat[min(int(p * len(lat)), len(lat) - 1)] * 1000, 1) if lat else 0.0

        total = sum(self.statuses.values()) + sum(self.errors.values())
        return {"requests": total, "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
                "client_errors": dict(self.errors), "cache_hits_seen": self.cache_hits,
                "failed": total - self.statuses.get(200, 0),
                "latency_ms": {"p50": pct(0.5), "p99": pct(0.99), "max": pct(1.0)}}


# A long prompt's body: a report pasted before the question (the trial's long clients sent 60k-240k characters).
REPORT = ("The committee reviewed the quarterly figures for the northern warehouses, noted that deliveries arrived "
          "later in winter than in summer, and asked the planning team to compare routes, staffing and the cost of "
          "keeping spare stock near the busiest stores before the next meeting.\n\n")


def prompt(rng: random.Random, n: int, long_chars: tuple[int, int] | None = None) -> str:
    """A new, plain question (unique by its numbers); odd templates make the jailbreak head nervous. With
    `long_chars` (low, high): after a report of that many characters."""
    budget = f"{rng.randint(2, 400)} {rng.choice(['minutes a day', 'dollars', 'weeks'])}"
    question = f"What is the best way to {rng.choice(TOPICS)} with {budget} and {n % 997 + 3} friends?"
    if long_chars is None:
        return question
    chars = rng.randint(*long_chars)
    return f"Report {n}.\n\n" + (REPORT * (chars // len(REPORT) + 1))[:chars] + question


async def run_load(base_url: str, clients: int, seconds: float, result: LoadResult,
                   headers: dict[str, str] | None = None, repeat_share: float = 0.5,
                   long_chars: tuple[int, int] | None = None, seed: int = 0) -> None:
    """`clients` concurrent clients for `seconds`; every response is tallied into `result`. `long_chars`: each new
    prompt follows a report of that many characters (`prompt`)."""
    sent: list[str] = []
    counter = iter(range(10**9))
    stop_at = time.monotonic() + seconds
    timeout = aiohttp.ClientTimeout(total=30)
    hdrs = {"authorization": "Bearer sk-fault-suite", "content-type": "application/json", **(headers or {})}

    async def client(seed: int, session: aiohttp.ClientSession) -> None:
        rng = random.Random(seed)
        while time.monotonic() < stop_at:
            if sent and rng.random() < repeat_share:
                text = rng.choice(sent[-500:])
            else:
                text = prompt(rng, next(counter), long_chars)
                sent.append(text)
            body = json.dumps({"model": "auto", "messages": [{"role": "user", "content": text}]})
            start = time.perf_counter()
            try:
                async with session.post(f"{base_url}/chat/completions", data=body, headers=hdrs) as r:
                    await r.read()
                    result.statuses[r.status] += 1
                    result.cache_hits += r.headers.get("x-vsr-cache-hit") == "true"
            except (aiohttp.ClientError, TimeoutError) as exc:
                result.errors[type(exc).__name__] += 1
            result.latencies.append(time.perf_counter() - start)

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        await asyncio.gather(*(client(seed + i, session) for i in range(clients)))


async def sample_readyz(metrics_port: int, stop: asyncio.Event, out: Counter[int], interval_s: float = 0.5) -> None:
    """GET /readyz every interval until stop; counts statuses (0 = no answer)."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        out[await loop.run_in_executor(None, http_status, f"http://127.0.0.1:{metrics_port}/readyz")] += 1
        await asyncio.sleep(interval_s)


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def scrape(metrics_port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the router's /metrics as {(name, sorted labels): value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def total(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    """Sum of a series over every label set that includes `labels`."""
    want = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and want <= set(lab))


def delta(before: dict[Any, float], after: dict[Any, float], name: str, **labels: str) -> float:
    return total(after, name, **labels) - total(before, name, **labels)


def cache_figures(before: dict[Any, float], after: dict[Any, float]) -> dict[str, Any]:
    """Lookups within budget and writes stored-or-dropped, from the router's own counters."""
    events = "vsr_cache_events_total"
    hits, misses = delta(before, after, events, event="hit"), delta(before, after, events, event="miss")
    lookup_errors = delta(before, after, events, event="error", reason="lookup")
    stored = delta(before, after, events, event="write")
    dropped_full = delta(before, after, events, event="dropped", reason="queue_full")
    dropped_failed = delta(before, after, events, event="dropped", reason="backend_error")
    lookups = hits + misses + lookup_errors
    writes = stored + dropped_full + dropped_failed
    return {
        "lookups": int(lookups), "lookups_within_budget": int(hits + misses),
        "lookups_within_budget_share": round((hits + misses) / lookups, 4) if lookups else None,
        "hits": int(hits), "lookup_errors": int(lookup_errors),
        "writes_queued": int(writes), "writes_stored": int(stored), "writes_dropped_queue_full": int(dropped_full),
        "writes_dropped_backend_error": int(dropped_failed),
        "write_attempt_errors": int(delta(before, after, events, event="error", reason="write")),
        # The breaker (router/cache/health.py): times it opened, and what it cost while open.
        "breaker_openings": int(delta(before, after, "vsr_cache_backend_down_total")),
        "lookups_skipped_backend_down": int(delta(before, after, events, event="miss", reason="backend_down")),
        "writes_dropped_backend_down": int(delta(before, after, events, event="dropped", reason="backend_down")),
        "writes_stored_or_dropped_by_policy_share": round((stored + dropped_full) / writes, 4) if writes else None,
        "classifier_failures": int(delta(before, after, "vsr_classifier_failures_total")),
        "phase_share_within_s": {phase: {le: _share(before, after, phase, le) for le in ("0.01", "0.05", "0.1")}
                                 for phase in ("classify", "cache_lookup", "total")},
        # Where the lookup budget goes (router/cache/milvus.py): waiting for a read thread, in Milvus, and from
        # Milvus's answer until the event loop picks it up; and where the lookups out of budget ran out.
        "lookups_late_but_in_budget": int(delta(before, after, "vsr_cache_lookups_late_total")),
        "lookup_timeouts_by_where": {where: int(delta(before, after, "vsr_cache_lookup_timeouts_total", where=where))
                                     for where in ("queue", "backend", "loop")},
        "lookup_stage_share_within_s": {
            stage: {le: _share(before, after, stage, le, "vsr_cache_lookup_stage_seconds_bucket", "stage")
                    for le in ("0.005", "0.01", "0.03", "0.05")} for stage in ("queue", "backend", "resume")},
    }


def _share(before: dict[Any, float], after: dict[Any, float], phase: str, le: str,
           name: str = "vsr_phase_duration_seconds_bucket", label: str = "phase") -> float | None:
    """Share of a phase's observations at or under `le` seconds (router histogram)."""
    count = delta(before, after, name, **{label: phase, "le": "+Inf"})
    return round(delta(before, after, name, **{label: phase, "le": le}) / count, 4) if count else None
