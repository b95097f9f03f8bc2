"""Envoy's edge in front of the router, through the real Envoy binary, router and demo upstreams (trial 4).

Slow clients, more requests in flight than Envoy's old default, a memory budget, HTTP/1.0 clients and a restarted
router worker: each must end in an answer a client can read (an OpenAI error with the right status) while the
others keep being served, never in a lock-out, an empty reply or an OOM-killed Envoy.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from devstack.stack import Stack
from router.envoy_config import SPREAD_CONNECTION_S

CHAT = json.dumps({"model": "auto", "messages": [{"role": "user", "content": "hello from a slow client"}]}).encode()
HELD = 1100  # past the 1,024 of Envoy's default circuit breakers, which locked every other client out
REQUEST_TIMEOUT_S = 12


@pytest.fixture(scope="module")
def stack(make_stack: Callable[..., Stack]) -> Stack:
    """Two router workers (one ext_proc connection per stream, as in the Pod)."""
    def overrides(cfg: dict[str, Any]) -> None:
        cfg["server"]["workers"] = 2
        cfg["envoy"]["request_timeout_s"] = REQUEST_TIMEOUT_S

    s = make_stack(overrides)
    wait_workers(s)
    return s


@pytest.fixture(scope="module")
def small(make_stack: Callable[..., Stack]) -> Stack:
    """An Envoy with room for 24 requests and a 64 MiB heap."""
    return make_stack(lambda cfg: cfg["envoy"].update(max_requests=24, max_heap_mb=64))


def readyz(stack: Stack) -> dict[str, Any]:
    return dict(httpx.get(f"http://127.0.0.1:{stack.cfg.server.metrics_port}/readyz", timeout=5).json())


def wait_workers(stack: Stack, timeout_s: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        body = readyz(stack)
        if body.get("workers_ready") == 2:
            return body
        time.sleep(0.2)
    raise AssertionError(f"not 2 workers ready: {body}")


def chat(client: httpx.Client, stack: Stack, **headers: str) -> httpx.Response:
    return client.post(f"{stack.base_url}/chat/completions", content=CHAT,
                       headers={"content-type": "application/json", **headers})


@contextmanager
def held(stack: Stack, n: int, body: bytes = CHAT, wave: int | None = None) -> Iterator[list[socket.socket]]:
    """`n` connections that sent their headers and all but the last 10 bytes of the body, then stall. With `wave`,
    opened that many at a time, each wave once the router holds it: 1,100 at once are new ext_proc connections whose
    set-up and headers took 2 shared cores past message_timeout_ms for 100-250 of them (a 503 each, as any burst past
    capacity gets), which is not what the test is about."""
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body))
    socks: list[socket.socket] = []
    try:
        for i in range(n):
            s = socket.create_connection((stack.cfg.envoy.host, stack.cfg.envoy.port))
            s.sendall(head + body[:-10])
            socks.append(s)
            if wave and (i + 1) % wave == 0:
                wait_streams(stack, i + 1)
        yield socks
    finally:
        for s in socks:
            s.close()


def reply(s: socket.socket, timeout_s: float) -> bytes:
    """Everything the server sends until it closes the connection (b"" if it sends nothing in time)."""
    s.settimeout(timeout_s)
    data = b""
    try:
        while chunk := s.recv(65536):
            data += chunk
    except TimeoutError:
        return data
    return data + b"<closed>"


def still_open(s: socket.socket) -> bool:
    s.settimeout(0.001)
    try:
        return not s.recv(1)  # b"": closed
    except TimeoutError:
        return True


def wait_streams(stack: Stack, n: int, timeout_s: float = REQUEST_TIMEOUT_S / 2) -> None:
    """Until the router holds `n` streams (one per held request, from its headers on)."""
    deadline = time.monotonic() + timeout_s
    while (active := router_streams(stack)) < n:
        assert time.monotonic() < deadline, (f"{active} of {n} held requests reached the router", envoy_stats(stack))
        time.sleep(0.05)


def router_streams(stack: Stack) -> int:
    stat = "cluster.semantic_router.upstream_rq_active"
    text = httpx.get(f"http://127.0.0.1:{stack.cfg.envoy.admin_port}/stats?filter=^{stat}$", timeout=5).text
    return int(text.split(":")[1])


def envoy_stats(stack: Stack) -> str:
    """Envoy's counters that say where held requests stopped (for a failure's message)."""
    url = f"http://127.0.0.1:{stack.cfg.envoy.admin_port}/stats?filter=semantic_router|downstream_cx_active|downstream_rq"
    return "\n".join(line for line in httpx.get(url, timeout=5).text.splitlines() if not line.endswith(": 0"))


def error_of(raw: bytes) -> tuple[int, dict[str, Any]]:
    assert raw.startswith(b"HTTP/"), f"not an HTTP answer: {raw[:100]!r}"  # b"<closed>": an empty reply
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body.removesuffix(b"<closed>"))["error"]


def test_stalled_clients_neither_lock_others_out_nor_stay(stack: Stack) -> None:
    """1,100 clients that send headers and part of a body: others are still served (Envoy's default 1,024 router
    streams refused them all with a misleading `per-message_timeout_exceeded`), and each stalled one gets a 408
    and is closed after envoy.request_timeout_s (nothing ended them before the 5 min idle timeout)."""
    with held(stack, HELD, wave=100) as socks, httpx.Client(timeout=30) as client:
        wait_streams(stack, HELD)
        answers = [chat(client, stack) for _ in range(3)]
        assert [r.status_code for r in answers] == [200] * 3, answers[0].text
        assert all(still_open(s) for s in socks)  # all held meanwhile: none was refused to make room
        replies = [reply(s, REQUEST_TIMEOUT_S * 3) for s in socks]
    assert all(r.endswith(b"<closed>") for r in replies), {r[:40] for r in replies}
    status, error = error_of(replies[0])
    assert status == 408 and error["code"] == "request_timeout", error
    assert {r.split(b"\r\n", 1)[0] for r in replies} == {b"HTTP/1.1 408 Request Timeout"}


def test_an_answer_outlasting_both_bounds_streams_to_its_end(stack: Stack) -> None:
    """Neither bound is on the answer: a streamed one that starts after envoy.request_timeout_s and whose router
    connection is retired (SPREAD_CONNECTION_S) while it runs arrives whole."""
    delay_ms = (max(REQUEST_TIMEOUT_S, SPREAD_CONNECTION_S) + 2) * 1000
    body = {"model": "auto", "stream": True, "messages": [{"role": "user", "content": "Tell me about long rivers"}]}
    with httpx.Client(timeout=60) as client, client.stream(
            "POST", f"{stack.base_url}/chat/completions", json=body, headers={"x-demo-delay-ms": str(delay_ms)}) as r:
        events = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert r.status_code == 200 and events[-1] == "data: [DONE]" and len(events) > 3, events[-3:]


def test_http10_gets_a_426_with_an_openai_error(stack: Stack) -> None:
    """nginx's proxy_pass speaks HTTP/1.0 by default: Envoy's own 426 never reached the client (an empty reply) while
    the router's filter held it."""
    for request in (b"POST /v1/chat/completions HTTP/1.0\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n" % len(CHAT) + CHAT, b"GET /v1/models HTTP/1.0\r\n\r\n"):
        with socket.create_connection((stack.cfg.envoy.host, stack.cfg.envoy.port)) as s:
            s.sendall(request)
            status, error = error_of(reply(s, 10))
        assert status == 426 and error["code"] == "unsupported_http_version", error
        assert "proxy_http_version 1.1" in error["message"]


_HEAD = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"


@pytest.mark.parametrize(("request_bytes", "status", "code", "details"), [
    (_HEAD + b"X-Big: " + b"a" * 70_000 + b"\r\nContent-Length: %d\r\n\r\n" % len(CHAT) + CHAT,
     431, "headers_too_large", "http1.headers_too_large"),
    (_HEAD + b"Transfer-Encoding: chunked\r\nContent-Length: %d\r\n\r\n%x\r\n" % (len(CHAT), len(CHAT)) + CHAT
     + b"\r\n0\r\n\r\n", 400, "invalid_http_message", "http1.content_length_and_chunked_not_allowed"),
    (_HEAD + b"Content-Length: %d\r\nContent-Length: %d\r\n\r\n" % (len(CHAT), len(CHAT)) + CHAT,
     400, "invalid_http_message", "http1.codec_error"),
    (_HEAD + b"".join(b"X-H%d: v\r\n" % i for i in range(120)) + b"Content-Length: %d\r\n\r\n" % len(CHAT) + CHAT,
     431, "too_many_headers", "http1.too_many_headers"),
], ids=["headers past 60 KiB", "transfer-encoding and content-length", "content-length twice", "120 headers"])
def test_a_request_envoys_codec_refuses_gets_an_openai_error_then_the_connection_closes(
        stack: Stack, request_bytes: bytes, status: int, code: str, details: str) -> None:
    """Envoy's HTTP/1 codec refuses these before the router sees them, then closes the connection (HTTP/1.1 cannot
    find the next request in a message it cannot frame). Its reply went to the router's filter for the response
    headers while the connection closed, so the client got an empty reply (envoyproxy/envoy#29440): now the router's
    filter reads a response only when the router asked for it, and the client gets the status and an OpenAI error."""
    with socket.create_connection((stack.cfg.envoy.host, stack.cfg.envoy.port)) as s:
        s.sendall(request_bytes)
        raw = reply(s, 10)
    assert raw.endswith(b"<closed>")
    got, error = error_of(raw)
    assert (got, error["code"], error["details"], error["type"]) == (status, code, details, "invalid_request_error")


def test_a_restarted_worker_takes_streams_again(stack: Stack) -> None:
    """After a burst Envoy held many ext_proc connections to the surviving worker and kept reusing them: the
    replacement served 0 of 800 later requests. Connections now retire SPREAD_CONNECTION_S after they open. The
    clients pause between rounds so that no connection reaches 100 requests (the old recycling) in the window."""
    with httpx.Client(timeout=30, limits=httpx.Limits(max_connections=64)) as client, ThreadPoolExecutor(64) as pool:
        burst = list(pool.map(lambda _: chat(client, stack, **{"x-demo-delay-ms": "500"}), range(64)))
        assert [r.status_code for r in burst] == [200] * 64
        before = {w["pid"] for w in wait_workers(stack)["workers"]}
        os.kill(min(before), signal.SIGKILL)
        deadline = time.monotonic() + 30
        while (len(pids := {w["pid"] for w in readyz(stack)["workers"]} - before) != 1
               or readyz(stack)["workers_ready"] < 2):
            assert time.monotonic() < deadline, "the worker was not replaced"
            time.sleep(0.2)
        replacement = pids.pop()
        start = streams(stack)[replacement]
        deadline = time.monotonic() + 2.5 * SPREAD_CONNECTION_S
        while (served := streams(stack)[replacement] - start) == 0 and time.monotonic() < deadline:
            answers = list(pool.map(lambda _: chat(client, stack), range(4)))
            assert [r.status_code for r in answers] == [200] * 4
            time.sleep(0.3)
    assert served > 0, "the replacement worker got no stream"


def streams(stack: Stack) -> dict[int, int]:
    return {w["pid"]: w["streams"] for w in readyz(stack)["workers"]}


def envoy_counts(stack: Stack) -> dict[str, float]:
    """The router's /metrics series read from Envoy's admin port: refusals for the router, and for Envoy being full."""
    text = httpx.get(f"http://127.0.0.1:{stack.cfg.server.metrics_port}/metrics", timeout=5).text
    return {s.name + "".join(f":{v}" for v in s.labels.values()): s.value for f in text_string_to_metric_families(text)
            for s in f.samples if s.name in ("vsr_envoy_failed_closed_total", "vsr_envoy_overloaded_total")}


def test_past_max_requests_a_request_is_refused_at_once_as_overloaded(small: Stack) -> None:
    """More requests in flight than envoy.max_requests: refused with what it is, not after waiting
    message_timeout_ms for a router connection as `per-message_timeout_exceeded` (a slow router, to on-call). Counted
    as Envoy being full, not in vsr_envoy_failed_closed_total: SemanticRouterUnavailable fired on plain overload."""
    before = envoy_counts(small)
    with held(small, small.cfg.envoy.max_requests), httpx.Client(timeout=30) as client:
        r = chat(client, small)
    assert r.status_code == 503 and r.headers["retry-after"] == "1", r.text
    assert r.json()["error"]["code"] == "gateway_overloaded" and "overflow" in r.json()["error"]["details"]
    after = envoy_counts(small)
    assert after["vsr_envoy_failed_closed_total"] == before["vsr_envoy_failed_closed_total"]
    assert after["vsr_envoy_overloaded_total:max_requests"] == before["vsr_envoy_overloaded_total:max_requests"] + 1
    with httpx.Client(timeout=30) as client:
        assert chat(client, small).status_code == 200  # room again once they are gone


def test_envoy_refuses_new_requests_before_its_heap_budget_is_spent(small: Stack) -> None:
    """Near-4 MiB bodies held open grew Envoy by ~4 MiB each with no bound (its Pod limit then OOM-kills it and
    every stream of the Pod): past 90 % of envoy.max_heap_mb new requests get 503 `gateway_overloaded` instead.
    (Requests already accepted keep their bodies: 20 sent at once may all be in before the heap is sampled.)"""
    big = json.dumps({"model": "auto", "messages": [{"role": "user", "content": "word " * 800_000}]}).encode()
    before = envoy_counts(small)["vsr_envoy_overloaded_total:max_heap_mb"]
    with held(small, 20, big), httpx.Client(timeout=30) as client:
        r = poll(lambda: chat(client, small), lambda r: r.status_code != 200)
        assert r.status_code == 503 and r.headers["retry-after"] == "1", r.text
        assert (r.json()["error"]["code"], r.json()["error"]["details"]) == ("gateway_overloaded", "overload")
    assert envoy_counts(small)["vsr_envoy_overloaded_total:max_heap_mb"] > before
    with httpx.Client(timeout=30) as client:  # the same Envoy serves again once they are gone
        assert poll(lambda: chat(client, small), lambda r: r.status_code == 200).status_code == 200


def poll(call: Callable[[], httpx.Response], done: Callable[[httpx.Response], bool],
         timeout_s: float = 20) -> httpx.Response:
    """The first answer `done` accepts, or the last one after `timeout_s` (Envoy samples its heap every 0.25 s)."""
    deadline = time.monotonic() + timeout_s
    while not done(r := call()) and time.monotonic() < deadline:
        time.sleep(0.25)
    return r
