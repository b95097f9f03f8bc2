"""Fallback and retries through the real Envoy, router and demo upstreams, with injected faults.

`x-demo-fault: MODEL=ACTION` makes only that model's demo upstream fail, so the next model of the
chain answers normally. Math prompts (keyword rule) go to gpt-oss-120b first, then qwen3-4b.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from devstack.stack import Stack

MATH = "Prove the theorem that the sum of two even numbers is even."
BIG, SMALL = "gpt-oss-120b", "qwen3-4b"


def _quick_ejection(cfg: dict[str, Any]) -> None:
    for model in cfg["models"].values():
        model["outlier_detection"] = {"consecutive_5xx": 3, "consecutive_gateway_failure": 3,
                                      "interval_s": 1, "base_ejection_time_s": 60}


def _no_ejection(cfg: dict[str, Any]) -> None:
    """The faults of one test must not eject a model for the next ones."""
    for model in cfg["models"].values():
        model["outlier_detection"] = None


@pytest.fixture(scope="module")
def stack(make_stack: Callable[..., Stack]) -> Stack:
    return make_stack(_no_ejection)


def _post(stack: Stack, fault: str | None = None, model: str = "auto", **extra: Any) -> httpx.Response:
    headers = {"x-demo-fault": fault} if fault else {}
    body = {"model": model, "messages": [{"role": "user", "content": MATH}], **extra}
    return httpx.post(f"{stack.base_url}/chat/completions", json=body, headers=headers, timeout=15)


def _metric(stack: Stack, name: str, **labels: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{stack.cfg.server.metrics_port}/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return s.value
    return 0.0


def test_a_healthy_chain_answers_from_the_first_model_in_one_attempt(stack: Stack) -> None:
    r = _post(stack)
    assert r.status_code == 200
    assert r.json()["x_demo"]["upstream"] == BIG
    assert r.headers["x-vsr-selected-model"] == BIG
    assert r.headers["x-vsr-upstream-model"] == BIG
    assert r.headers["x-vsr-attempts"] == "1"
    assert "x-vsr-fallback-from" not in r.headers


def test_503_on_the_chosen_model_is_answered_by_the_next_one_rewritten_for_it(stack: Stack) -> None:
    before = _metric(stack, "vsr_fallbacks_total", model=BIG, answered_by=SMALL)
    r = _post(stack, fault=f"{BIG}=503")
    assert r.status_code == 200
    body = r.json()
    assert body["x_demo"]["upstream"] == SMALL
    # The retry's body was written for the fallback model: its name and its family's reasoning switch
    # (math keeps reasoning on), without the first model's reasoning_effort.
    assert body["x_demo"]["received"] == {"model": SMALL, "chat_template_kwargs": {"enable_thinking": True}}
    assert r.headers["x-vsr-selected-model"] == BIG
    assert r.headers["x-vsr-upstream-model"] == SMALL
    assert r.headers["x-vsr-fallback-from"] == BIG
    assert r.headers["x-vsr-attempts"] == "2"
    assert _metric(stack, "vsr_fallbacks_total", model=BIG, answered_by=SMALL) == before + 1


def test_a_chain_that_fails_throughout_is_counted_as_failed_not_as_answered(stack: Stack) -> None:
    """With both models failing the client got a 503 while vsr_fallbacks_total said qwen3-4b had answered."""
    answered = _metric(stack, "vsr_fallbacks_total", model=BIG, answered_by=SMALL)
    failed = _metric(stack, "vsr_fallbacks_failed_total", model=BIG)
    r = _post(stack, fault=f"{BIG}=503,{SMALL}=503")
    assert r.status_code == 503 and r.headers["x-vsr-upstream-model"] == SMALL
    assert _metric(stack, "vsr_fallbacks_failed_total", model=BIG) == failed + 1
    assert _metric(stack, "vsr_fallbacks_total", model=BIG, answered_by=SMALL) == answered


def test_a_connection_closed_by_the_chosen_model_falls_back(stack: Stack) -> None:
    r = _post(stack, fault=f"{BIG}=close")
    assert r.status_code == 200
    assert r.headers["x-vsr-upstream-model"] == SMALL


def test_the_openai_sdk_sees_a_normal_answer_from_the_fallback(stack: Stack) -> None:
    client = openai.OpenAI(base_url=stack.base_url, api_key="sk-test", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": MATH}], extra_headers={"x-demo-fault": f"{BIG}=502"})
    assert raw.parse().model == SMALL
    assert raw.headers["x-vsr-upstream-model"] == SMALL


def test_streaming_is_retried_before_the_first_byte(stack: Stack) -> None:
    client = openai.OpenAI(base_url=stack.base_url, api_key="sk-test", max_retries=0)
    with client.chat.completions.with_streaming_response.create(
            model="auto", stream=True, messages=[{"role": "user", "content": MATH}],
            extra_headers={"x-demo-fault": f"{BIG}=503"}) as response:
        assert response.headers["x-vsr-upstream-model"] == SMALL
        chunks = list(response.parse())
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == \
        "This is qwen3-4b answering a 12-word question."


def test_an_error_event_after_streaming_began_ends_the_stream_cleanly(stack: Stack) -> None:
    client = openai.OpenAI(base_url=stack.base_url, api_key="sk-test", max_retries=0, timeout=10)
    start = time.monotonic()
    stream = client.chat.completions.create(model="auto", stream=True, messages=[{"role": "user", "content": MATH}],
                                            extra_headers={"x-demo-fault": f"{BIG}=error-event"})
    with pytest.raises(openai.APIError, match="injected failure mid-stream"):
        for _ in stream:
            pass
    assert time.monotonic() - start < 5
    # Nothing is retried once bytes reached the client, and the broken answer is not cached or billed twice.
    r = _post(stack)
    assert r.status_code == 200


def test_a_connection_dropped_after_streaming_began_fails_fast_never_hangs(stack: Stack) -> None:
    """The router logged such an answer as a plain 200 and counted nothing: only Envoy's access log (flags UPE) said
    the client got half an answer. Its request line now says `answer_cut` and vsr_answers_cut_total counts it, for a
    stream whose chunks pass the router: one it stores or, as here, one whose usage it counts (include_usage). A
    stream with neither goes by the router (test_stream_cost_e2e.py): its cut is in Envoy's access log alone."""
    cut_before = _metric(stack, "vsr_answers_cut_total", model=BIG)
    start = time.monotonic()
    with httpx.stream("POST", f"{stack.base_url}/chat/completions", timeout=10,
                      headers={"x-demo-fault": f"{BIG}=midstream"},
                      json={"model": "auto", "stream": True, "stream_options": {"include_usage": True},
                            "messages": [{"role": "user", "content": MATH}]}) as r:
        assert r.status_code == 200
        assert r.headers["x-vsr-upstream-model"] == BIG  # the first byte came from the first model
        with pytest.raises(httpx.RemoteProtocolError):  # Envoy resets the client's stream
            for _ in r.iter_bytes():
                pass
    assert time.monotonic() - start < 5
    line = _request_line(stack, r.headers["x-request-id"])
    assert line["status"] == 200 and line.get("answer_cut") is True
    assert _metric(stack, "vsr_answers_cut_total", model=BIG) == cut_before + 1
    whole = _post(stack, stream=True, stream_options={"include_usage": True})  # a whole stream is not counted
    assert whole.status_code == 200 and _request_line(stack, whole.headers["x-request-id"]).get("answer_cut") is None
    assert _metric(stack, "vsr_answers_cut_total", model=BIG) == cut_before + 1


def _request_line(stack: Stack, request_id: str) -> dict[str, Any]:
    """The router's request line for `request_id` (written when its stream closes, just after the answer)."""
    for _ in range(50):
        for line in (stack.workdir / "router.log").read_text().splitlines():
            if line.startswith("{") and request_id in line and '"event": "request"' in line:
                return dict(json.loads(line))
        time.sleep(0.1)
    raise AssertionError(f"no request line for {request_id}")


def test_an_explicit_model_is_never_switched(stack: Stack) -> None:
    r = _post(stack, fault=f"{BIG}=503", model=BIG)
    assert r.status_code == 503
    assert r.headers["x-vsr-upstream-model"] == BIG


def test_a_model_that_keeps_failing_is_ejected_and_skipped(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(_quick_ejection)
    for _ in range(3):  # consecutive_5xx: 3
        assert _post(stack, fault=f"{BIG}=503").headers["x-vsr-attempts"] == "2"
    r = _post(stack)  # no fault now, but the ejected model is skipped without an attempt
    assert r.status_code == 200
    assert r.headers["x-vsr-upstream-model"] == SMALL
    assert r.json()["x_demo"]["received"]["model"] == SMALL  # a first attempt on the fallback is rewritten too
    assert r.headers["x-vsr-attempts"] == "1"
    assert r.headers["x-vsr-fallback-from"] == BIG


def test_a_refused_connection_falls_back(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack()
    stack._stop(f"upstream-{BIG}-0")
    r = _post(stack)
    assert r.status_code == 200
    assert r.headers["x-vsr-upstream-model"] == SMALL
    assert r.json()["x_demo"]["received"]["model"] == SMALL


def test_timeouts_a_hung_model_falls_back_and_a_stalled_stream_ends(make_stack: Callable[..., Stack]) -> None:
    def timeouts(cfg: dict[str, Any]) -> None:
        _no_ejection(cfg)
        for model in cfg["models"].values():
            model["retry"] = {"per_try_timeout_s": 1, "stream_idle_timeout_s": 2}

    stack = make_stack(timeouts)
    start = time.monotonic()
    r = _post(stack, fault=f"{BIG}=stall")  # accepts the request, never answers
    assert r.status_code == 200 and r.headers["x-vsr-upstream-model"] == SMALL
    assert time.monotonic() - start < 5
    # per_try_timeout stops at the first byte: a stream slower than it (0.3 s a chunk) is not cut.
    with httpx.stream("POST", f"{stack.base_url}/chat/completions", timeout=20,
                      headers={"x-demo-fault": f"{BIG}=slow-stream"},
                      json={"model": "auto", "stream": True, "messages": [{"role": "user", "content": MATH}]}) as s:
        assert b"data: [DONE]" in b"".join(s.iter_bytes())
    # A stream that goes silent after its first byte is ended by the idle timeout, not left hanging.
    start = time.monotonic()
    with httpx.stream("POST", f"{stack.base_url}/chat/completions", timeout=20,
                      headers={"x-demo-fault": f"{BIG}=stall"},
                      json={"model": "auto", "stream": True, "messages": [{"role": "user", "content": MATH}]}) as s:
        assert s.status_code == 200
        with pytest.raises(httpx.RemoteProtocolError):
            for _ in s.iter_bytes():
                pass
    assert time.monotonic() - start < 6


def test_a_chain_whose_every_model_fails_answers_the_last_error_at_once(stack: Stack) -> None:
    """num_retries 2 on a chain of 2 sent a third attempt back to the first model. Envoy skips the upstream filter
    there, but the headers the filter had set for the second model stayed (content-length of the body rewritten for
    it) while the body was the first model's again: the model server waited for bytes that never came, and the
    client got nothing until the route's 300 s timeout. A retry now never returns to a model already tried."""
    start = time.monotonic()
    r = _post(stack, fault=f"{BIG}=503,{SMALL}=503")
    assert r.status_code == 503 and time.monotonic() - start < 5


def _answered_by(stack: Stack) -> str | None:
    """The model that answered a math request, or None when it did not come back in a few seconds (hung)."""
    try:
        r = httpx.post(f"{stack.base_url}/chat/completions", timeout=3,
                       json={"model": "auto", "messages": [{"role": "user", "content": MATH}]})
    except httpx.TimeoutException:
        return None
    assert r.status_code == 200
    return r.headers["x-vsr-upstream-model"]


def _within(seconds: float, condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"not within {seconds} s"
        time.sleep(0.5)


def test_a_frozen_model_is_found_by_its_health_checks_and_skipped_until_it_answers_again(
        make_stack: Callable[..., Stack]) -> None:
    """Trial 18: a model server frozen with SIGSTOP accepts connections and never answers, so no request failed and
    every one routed to it hung until its client gave up (the route allows 300 s). With the shipped health checks
    Envoy marks it down and the chain's next model answers new requests; after SIGCONT it is back. Bounds are
    generous (the shipped probes take ~16 s; the machine is loaded): they tell a hang from a fallback, nothing more."""
    stack = make_stack(_no_ejection)  # only the health checks may take the frozen model out
    assert _answered_by(stack) == BIG
    frozen = stack.procs[f"upstream-{BIG}-0"]
    frozen.send_signal(signal.SIGSTOP)
    try:
        _within(90, lambda: _answered_by(stack) == SMALL)
        r = _post(stack)
        assert r.status_code == 200 and r.json()["x_demo"]["received"]["model"] == SMALL
        assert r.headers["x-vsr-fallback-from"] == BIG and r.headers["x-vsr-attempts"] == "1"  # no try on the frozen
        assert _metric(stack, "vsr_model_endpoints_healthy", model=BIG) == 0
        assert _metric(stack, "vsr_model_endpoints_healthy", model=SMALL) == 1
        # A client that names the frozen model has no fallback: a 503 at once, not a hang (Envoy's panic mode sent
        # requests to a model whose every replica was down).
        lone = _post(stack, model=BIG)
        assert lone.status_code == 503 and lone.json()["error"]["code"] == "upstream_unavailable"
        assert lone.headers["retry-after"] == "5"  # when the next health check may find it back, not at once
        assert lone.json()["error"]["message"].startswith("Every replica of the model is down")
    finally:
        frozen.send_signal(signal.SIGCONT)
    _within(90, lambda: _answered_by(stack) == BIG)
    assert _metric(stack, "vsr_model_endpoints_healthy", model=BIG) == 1
