"""The semantic cache through real Envoy, the router process, the ONNX encoder and a real Milvus server.

Each test uses prompts of its own, so entries from one test never satisfy another.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest
import yaml

from devstack.milvus_server import MilvusServer
from devstack.stack import ROOT, Stack

pytestmark = pytest.mark.usefixtures("require_model")


def _client(stack: Stack, api_key: str = "sk-tenant-a") -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.base_url, api_key=api_key, max_retries=0)


def ask(client: openai.OpenAI, text: str, system: str | None = None, **kw: Any) -> tuple[str, dict[str, str]]:
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=messages, **kw)
    return raw.parse().choices[0].message.content or "", dict(raw.headers)


def eventually_hit(client: openai.OpenAI, text: str, timeout_s: float = 30, **kw: Any) -> tuple[str, dict[str, str]]:
    """Writes are asynchronous (they never delay the answer): allow them a moment to land."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        content, headers = ask(client, text, **kw)
        if headers.get("x-vsr-cache-hit") == "true":
            return content, headers
        time.sleep(0.1)
    raise AssertionError(f"never a cache hit for {text!r}")


def milvus_cache_stack(make_stack: Callable[..., Stack], milvus_server: MilvusServer | str, prefix: str,
                       **cache: Any) -> Stack:
    """A stack with the classifier and the cache on the test's Milvus server, in a collection of its own."""
    uri = milvus_server if isinstance(milvus_server, str) else milvus_server.uri

    def overrides(cfg: dict[str, Any]) -> None:
        cfg["classifier"]["enabled"] = True
        # hot_answers 0: a repeat must reach Milvus, so an exact hit proves the write landed there.
        cfg["semantic_cache"] = {"enabled": True, "backend": "milvus", "uri": uri, "hot_answers": 0,
                                 "collection": f"{prefix}_{int(time.time())}", **cache}

    return make_stack(overrides)


@pytest.fixture(scope="module")
def stack(make_stack: Callable[..., Stack], milvus_server: MilvusServer | str) -> Stack:
    return milvus_cache_stack(make_stack, milvus_server, "e2e")


def test_a_paraphrase_is_answered_from_the_cache_without_the_upstream(stack: Stack) -> None:
    client = _client(stack)
    first, headers = ask(client, "How do I reset my password?")
    assert headers["x-vsr-cache-hit"] == "false"
    eventually_hit(client, "How do I reset my password?")  # the write has landed
    calls = stack.upstream_requests()
    again, headers = ask(client, "How can I reset my password?")
    assert headers["x-vsr-cache-hit"] == "true"
    assert again == first
    assert 0.8 < float(headers["x-vsr-cache-similarity"]) < 1.0  # a semantic hit, not the exact path
    assert stack.upstream_requests() == calls


def test_another_tenant_never_sees_the_answer(stack: Stack) -> None:
    eventually_hit(_client(stack, "sk-tenant-a"), "Which port does HTTPS use by default?")
    _, headers = ask(_client(stack, "sk-tenant-b"), "Which port does HTTPS use by default?")
    assert headers["x-vsr-cache-hit"] == "false"


def test_an_app_key_shares_answers_across_its_end_users_by_default(stack: Stack) -> None:
    """`scope: tenant` (the default): the end users of one app key share entries, as the README says."""
    client, prompt = _client(stack), "What are the opening hours of the British Museum?"
    eventually_hit(client, prompt, user="alice")
    _, headers = ask(client, prompt, user="bob")
    assert headers["x-vsr-cache-hit"] == "true"


def test_under_user_scope_an_end_user_the_app_names_never_sees_another_end_users_answer(
        make_stack: Callable[..., Stack], milvus_server: MilvusServer | str) -> None:
    """Trial 10: under `scope: user` one app key serving many end users (the `user` field, no user header) shared
    entries, so alice's answer was a hit for bob."""
    client = _client(milvus_cache_stack(make_stack, milvus_server, "e2e_user", scope="user"))
    prompt = "What did my last blood test say about my cholesterol?"
    eventually_hit(client, prompt, user="alice")
    _, headers = ask(client, prompt, user="bob")
    assert headers["x-vsr-cache-hit"] == "false" and "x-vsr-cache-skip" not in headers  # a miss: bob's own scope
    _, headers = ask(client, prompt)  # and the app's requests that name no end user
    assert headers["x-vsr-cache-hit"] == "false"


def test_a_different_system_prompt_misses(stack: Stack) -> None:
    client = _client(stack)
    eventually_hit(client, "Summarise the plot of Hamlet.", system="Answer in English.")
    _, headers = ask(client, "Summarise the plot of Hamlet.", system="Answer in French.")
    assert headers["x-vsr-cache-hit"] == "false"


def test_an_upstream_error_is_not_cached(stack: Stack) -> None:
    client = _client(stack)
    with pytest.raises(openai.InternalServerError):
        ask(client, "What is the boiling point of water?", extra_headers={"x-demo-status": "500"})
    time.sleep(0.5)
    _, headers = ask(client, "What is the boiling point of water?")
    assert headers["x-vsr-cache-hit"] == "false"


def test_a_streamed_answer_is_cached_and_replayed_as_a_valid_stream(stack: Stack) -> None:
    client = _client(stack)
    text = "Name three famous painters from Spain."
    stream = client.chat.completions.create(model="auto", stream=True, messages=[{"role": "user", "content": text}])
    first = list(stream)
    original = "".join(c.choices[0].delta.content or "" for c in first if c.choices)
    for _ in range(50):
        with client.chat.completions.with_streaming_response.create(
                model="auto", stream=True, messages=[{"role": "user", "content": text}]) as response:
            hit = response.headers.get("x-vsr-cache-hit") == "true"
            chunks = list(response.parse())
        if hit:
            break
        time.sleep(0.1)
    assert hit
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == original
    assert chunks[-1].choices[0].finish_reason == "stop" or chunks[-2].choices[0].finish_reason == "stop"
    assert {c.model for c in chunks} == {c.model for c in first} != {"auto"}  # the model that answered


def test_milvus_down_means_misses_not_failures(stack: Stack, milvus_server: MilvusServer | str) -> None:
    if isinstance(milvus_server, str):
        pytest.skip("an external Milvus (VSR_MILVUS_URI) is not ours to stop")
    client = _client(stack)
    eventually_hit(client, "What is the capital of Australia?")
    milvus_server.stop()
    try:
        for _ in range(5):
            content, headers = ask(client, "What is the capital of Australia?")
            assert content and headers["x-vsr-cache-hit"] == "false"
        metrics = httpx.get(f"http://127.0.0.1:{stack.cfg.server.metrics_port}/metrics").text
        assert 'vsr_dependency_errors_total{dependency="cache"}' in metrics
    finally:
        milvus_server.start()
    # reconnected, collection recreated on the fresh server, caching again
    eventually_hit(client, "What is the capital of Australia?", timeout_s=90)


def _metric(stack: Stack, series: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{stack.cfg.server.metrics_port}/metrics").text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(series))


def _router_lines(stack: Stack, event: str) -> list[dict[str, Any]]:
    lines = (stack.workdir / "router.log").read_text().splitlines()
    return [j for j in (json.loads(line) for line in lines if line.startswith("{")) if j.get("event") == event]


def _request_lines(stack: Stack, ids: list[str]) -> dict[str, dict[str, Any]]:
    """The router's request lines of `ids`, by id."""
    lines: dict[str, dict[str, Any]] = {}
    for _ in range(50):  # a request's line is written when its stream closes, just after the answer
        lines = {j["request_id"]: j for j in _router_lines(stack, "request") if j.get("request_id") in ids}
        if len(lines) == len(ids):
            break
        time.sleep(0.1)
    return lines


def test_a_hanging_milvus_is_skipped_once_marked_down_and_caching_resumes(
        stack: Stack, milvus_server: MilvusServer | str) -> None:
    """A SIGSTOPped server accepts connections and answers nothing: every cacheable request paid the whole lookup
    budget for as long as the hang lasted, and each logged a warning. Once the backend is marked down, lookups now
    skip it (one probe a second) and the request line says so; after SIGCONT the cache stores and serves again."""
    if isinstance(milvus_server, str) or milvus_server.proc is None:
        pytest.skip("an external Milvus (VSR_MILVUS_URI) is not ours to stop")
    client = _client(stack)
    eventually_hit(client, "How many legs does a spider have?")
    down = 'vsr_cache_events_total{event="miss",reason="backend_down"}'
    skipped_before = _metric(stack, down)
    os.killpg(milvus_server.proc.pid, signal.SIGSTOP)
    try:
        for i in range(80):  # lookups time out (2 s of silence, then a streak of 5) until the backend is marked down
            if _metric(stack, "vsr_cache_backend_up") == 0:
                break
            assert ask(client, f"Hang question number {i}: what is {i} plus {i}?")[1]["x-vsr-cache-hit"] == "false"
        assert _metric(stack, "vsr_cache_backend_up") == 0
        errors_before = len(_router_lines(stack, "cache_backend_error"))
        ids = []
        for i in range(10):
            raw = client.chat.completions.with_raw_response.create(
                model="auto", messages=[{"role": "user", "content": f"While down, spell the number {i}."}])
            assert raw.headers["x-vsr-cache-hit"] == "false" and raw.parse().choices[0].message.content
            ids.append(raw.headers["x-request-id"])
        lines = _request_lines(stack, ids)
        skipped = [rid for rid in ids if lines[rid]["cache"] == "skip:backend_down"]
        assert len(skipped) >= 5  # one probe a second reaches the hanging server (0 skipped on the old code)
        assert _metric(stack, down) - skipped_before >= len(skipped)
        assert len(_router_lines(stack, "cache_backend_error")) - errors_before < 5  # no warning per request once down
    finally:
        os.killpg(milvus_server.proc.pid, signal.SIGCONT)
    eventually_hit(client, "Which planet is known as the red planet?", timeout_s=60)
    assert _metric(stack, "vsr_cache_backend_up") == 1


def cache_requiring_stack(make_stack: Callable[..., Stack], milvus_server: MilvusServer, prefix: str) -> Stack:
    """A stack on the test's own Milvus server whose router is unready while its cache does not answer."""

    def overrides(cfg: dict[str, Any]) -> None:
        cfg["semantic_cache"] = {"enabled": True, "backend": "milvus", "uri": milvus_server.uri,
                                 "collection": f"{prefix}_{int(time.time())}"}
        cfg["observability"]["ready_without_cache"] = False

    return make_stack(overrides)


def _readyz(stack: Stack) -> tuple[int, dict[str, Any]]:
    r = httpx.get(f"http://127.0.0.1:{stack.cfg.server.metrics_port}/readyz")
    return r.status_code, r.json()["components"]["cache"]


def test_a_milvus_unreachable_at_start_keeps_a_cache_requiring_router_unready_until_it_answers(
        make_stack: Callable[..., Stack], milvus_server: MilvusServer | str) -> None:
    """With `ready_without_cache: false` the router said ready ("not asked yet", then "failing (1 in a row)") for the
    ~50 s its probes took to mark an unreachable Milvus down. Now it is 503 until the backend has answered."""
    if isinstance(milvus_server, str):
        pytest.skip("an external Milvus (VSR_MILVUS_URI) is not ours to stop")

    milvus_server.stop()
    try:
        stack = cache_requiring_stack(make_stack, milvus_server, "late")  # the router starts without its cache
        states = []
        for _ in range(10):
            states.append(_readyz(stack))
            time.sleep(0.5)
        assert all(status == 503 and not cache["ok"] for status, cache in states), states
        assert "backend not answered since start" in states[-1][1]["detail"], states[-1]
    finally:
        milvus_server.start()
    deadline = time.monotonic() + 90
    while _readyz(stack)[0] != 200 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _readyz(stack) == (200, {"ok": True, "detail": "backend answering"})
    eventually_hit(_client(stack), "What colour is a ripe banana?", timeout_s=30)


def _readiness_period_s() -> float:
    """The period of the Kubernetes readiness probe on /readyz (deploy/kubernetes/deployment.yaml): how soon an
    operator's orchestrator asks again, so how soon /readyz must show a change."""
    for doc in yaml.safe_load_all((ROOT / "deploy" / "kubernetes" / "deployment.yaml").read_text()):
        for container in ((doc or {}).get("spec") or {}).get("template", {}).get("spec", {}).get("containers", []):
            probe = container.get("readinessProbe") or {}
            if probe.get("httpGet", {}).get("path") == "/readyz":
                return float(probe["periodSeconds"])
    raise AssertionError("no /readyz readiness probe in the Kubernetes manifest")


def test_readyz_follows_a_stopped_and_a_restarted_milvus_within_the_readiness_probe_period(
        make_stack: Callable[..., Stack], milvus_server: MilvusServer | str) -> None:
    """With `ready_without_cache: false` and no traffic, /readyz said 503 only 47 s after Milvus stopped and 200 68 s
    after it served again (one outcome of the streak of 5 per 10 s turn, a reconnect wait doubling up to 30 s). The
    readiness probe asks every `periodSeconds` (5): one period after Milvus stops it must see 503. Back up, this
    server starts empty, so the router first recreates its collection (3.5-5.5 s in all, bench/readyz_lag.py): 200 by
    the probe after next."""
    if isinstance(milvus_server, str):
        pytest.skip("an external Milvus (VSR_MILVUS_URI) is not ours to stop")

    stack = cache_requiring_stack(make_stack, milvus_server, "readyz")
    deadline = time.monotonic() + 60
    while _readyz(stack)[0] != 200 and time.monotonic() < deadline:
        time.sleep(0.5)
    period = _readiness_period_s()
    time.sleep(period)  # no traffic: what the router knows of the backend comes from its own probes
    milvus_server.stop()
    try:
        time.sleep(period)
        status, cache = _readyz(stack)
        assert status == 503 and not cache["ok"] and "serving without cache: breaker open" in cache["detail"], cache
    finally:
        milvus_server.start()
    time.sleep(2 * period)
    assert _readyz(stack) == (200, {"ok": True, "detail": "backend answering"})


# Last in the file: its repeats get 500s from the upstream, which get the model ejected by outlier detection for a
# while, so a test after it got every answer from the fallback model (never cached) and never saw a hit.
def test_a_streamed_answer_is_served_from_the_cache_with_its_logprobs(stack: Stack) -> None:
    """The stream assembler stored `logprobs: null`, so the repeat of a streamed `logprobs: true` request was a hit
    without them, where a miss has them: the SDK's `choice.logprobs` was None."""
    client = _client(stack)
    messages: Any = [{"role": "user", "content": "Name four primary colours used in painting."}]
    first = list(client.chat.completions.create(model="auto", stream=True, logprobs=True, top_logprobs=2,
                                                messages=messages))
    streamed = [t.token for c in first if c.choices and c.choices[0].logprobs
                for t in c.choices[0].logprobs.content or []]
    assert len(streamed) > 3  # the upstream sent them
    failing = {"x-demo-status": "500"}  # a repeat that misses fails upstream and stores nothing of its own
    for _ in range(100):
        try:
            raw = client.chat.completions.with_raw_response.create(
                model="auto", logprobs=True, top_logprobs=2, messages=messages, extra_headers=failing)
            break
        except openai.InternalServerError:
            time.sleep(0.1)
    else:
        raise AssertionError("the streamed answer was never served from the cache")
    assert raw.headers["x-vsr-cache-hit"] == "true"
    logprobs = raw.parse().choices[0].logprobs
    assert logprobs is not None and [t.token for t in logprobs.content or []] == streamed
    assert all(len(t.top_logprobs) == 2 for t in logprobs.content or [])
    with client.chat.completions.with_streaming_response.create(
            model="auto", stream=True, logprobs=True, top_logprobs=2, messages=messages, extra_headers=failing,
    ) as response:
        assert response.headers["x-vsr-cache-hit"] == "true"
        replayed = [t.token for c in response.parse() if c.choices and c.choices[0].logprobs
                    for t in c.choices[0].logprobs.content or []]
    assert replayed == streamed
