"""A burst beyond the encoder's capacity through the real Envoy and router (issue 13's overload behaviour).

`classifier.max_pending` is 2 and 96 new prompts arrive at once, so most of them find the encoder busy. Each
request must end in a normal, classified answer or in the fallback `classifier.on_failure` names (closed: 503
with Retry-After; open: routed unguarded with x-vsr-guards-skipped), every fallback must be counted in
/metrics under its reason, and no request may outlast Envoy's message timeout: the bound past which Envoy stops
waiting and refuses the request (503 `router_unavailable`; with `failure_mode_allow: true` it forwards it
undecided), which would show here as an answer carrying no decision at all.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from devstack.stack import Stack

pytestmark = pytest.mark.usefixtures("require_model")

BURST = 96
MAX_PENDING = 2
REASONS = ("overload", "timeout", "error")


@pytest.fixture(scope="module", params=["closed", "open"])
def stack(request: pytest.FixtureRequest, make_stack: Callable[..., Stack]) -> Stack:
    def overrides(cfg: dict[str, Any]) -> None:
        cfg["classifier"].update(enabled=True, max_pending=MAX_PENDING, on_failure=request.param)

    return make_stack(overrides)


def failures(stack: Stack) -> Counter[str]:
    """vsr_classifier_failures_total by reason, for the stack's on_failure policy."""
    text = httpx.get(f"http://127.0.0.1:{stack.cfg.server.metrics_port}/metrics", timeout=5).text
    policy = stack.cfg.classifier.on_failure
    return Counter({s.labels["reason"]: int(s.value) for family in text_string_to_metric_families(text)
                    for s in family.samples
                    if s.name == "vsr_classifier_failures_total" and s.labels.get("policy") == policy})


@dataclass(frozen=True)
class Answer:
    status: int
    headers: Mapping[str, str]
    body: dict[str, Any]
    elapsed_s: float


async def burst(stack: Stack, n: int) -> list[Answer]:
    """`n` new prompts at once (new, so the classification memo cannot answer them), each with its wall time.

    aiohttp, not httpx: httpx's async pool spread 96 concurrent requests over ~2 s on this machine, so the
    router saw them one by one and never the burst.
    """
    run = uuid.uuid4().hex[:8]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=n)) as client:
        # One connection per request opened beforehand, so the burst is not spread out by TCP handshakes.
        await asyncio.gather(*(_read(client.get(f"{stack.base_url}/models")) for _ in range(n)))

        async def one(i: int) -> Answer:
            body = {"model": "auto",
                    "messages": [{"role": "user", "content": f"Explain idea {i} of batch {run} in simple words."}]}
            start = time.perf_counter()
            async with client.post(f"{stack.base_url}/chat/completions", json=body) as r:
                answer = await r.json()
                return Answer(r.status, r.headers, answer, time.perf_counter() - start)

        return await asyncio.gather(*(one(i) for i in range(n)))


async def _read(request: Any) -> None:
    async with request as r:
        await r.read()


def test_a_burst_past_capacity_ends_in_answers_or_counted_fallbacks_within_the_bound(stack: Stack) -> None:
    before = failures(stack)
    results = asyncio.run(burst(stack, BURST))
    after = failures(stack)
    policy, bound_s = stack.cfg.classifier.on_failure, stack.cfg.envoy.message_timeout_ms / 1000
    seen: Counter[str] = Counter()
    for r in results:
        assert r.elapsed_s < bound_s, f"a request took {r.elapsed_s * 1000:.0f} ms"
        skipped = r.headers.get("x-vsr-guards-skipped")
        if policy == "closed" and r.status == 503:  # refused, not routed: no x-vsr-guards-skipped, the metric says why
            assert r.headers["retry-after"] == "1" and skipped is None
            assert r.body["error"]["code"] == "classifier_unavailable"
            seen["refused"] += 1
            continue
        if skipped is None:  # a normal answer: classified, routed, answered by the model
            assert r.status == 200, r.body
            assert r.headers["x-vsr-selected-category"] and r.body["x_demo"]["upstream"]
            seen["answered"] += 1
            continue
        assert policy == "open" and r.status == 200, (policy, r.status)  # routed without the guards, default category
        assert r.body["x_demo"]["upstream"] == r.headers["x-vsr-selected-model"] == stack.cfg.default_model
        seen[{"classifier_overload": "overload", "classifier_timeout": "timeout", "classifier_failed": "error"}[skipped]] += 1
    assert sum(seen.values()) == BURST
    assert seen["answered"] >= MAX_PENDING, seen  # the encoder kept serving what it had room for
    counted = {reason: after[reason] - before[reason] for reason in REASONS}
    assert counted["overload"] > 0, counted  # the burst was beyond capacity, and turned away rather than queued
    if policy == "closed":
        assert sum(counted.values()) == seen["refused"], (counted, seen)
    else:
        assert counted == {r: seen[r] for r in REASONS}
