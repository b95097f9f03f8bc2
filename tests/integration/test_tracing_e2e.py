"""OpenTelemetry through the real stack: Envoy and the router export to an in-memory OTLP collector
run by the test, and a request sent with a W3C traceparent yields spans with the right parents."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
import httpx
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from devstack.stack import Stack

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
PROMPT = "Prove the theorem that the sum of two even numbers is even."


class Collector(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
    """An OTLP/gRPC trace receiver that keeps every span in memory: (service name, span)."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, Any]] = []

    def Export(self, request: Any, context: Any) -> Any:
        for resource_spans in request.resource_spans:
            service = next((a.value.string_value for a in resource_spans.resource.attributes
                            if a.key == "service.name"), "")
            for scope in resource_spans.scope_spans:
                self.spans.extend((service, span) for span in scope.spans)
        return trace_service_pb2.ExportTraceServiceResponse()

    def named(self, name: str) -> list[Any]:
        return [s for _, s in self.spans if s.name == name]


@pytest.fixture(scope="module")
def collector() -> Iterator[tuple[Collector, int]]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    servicer = Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(servicer, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    yield servicer, port
    server.stop(0)


@pytest.fixture(scope="module")
def stack(make_stack: Callable[..., Stack], collector: tuple[Collector, int]) -> Stack:
    def traced(cfg: dict[str, Any]) -> None:
        cfg["tracing"] = {"enabled": True, "endpoint": f"http://127.0.0.1:{collector[1]}", "batch_delay_ms": 100}
        cfg["semantic_cache"] = {"enabled": True, "backend": "memory"}

    return make_stack(traced)


def _wait(predicate: Callable[[], bool], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "spans did not arrive"
        time.sleep(0.1)


def _post(stack: Stack, trace_id: str) -> httpx.Response:
    return httpx.post(f"{stack.base_url}/chat/completions", timeout=10,
                      headers={"traceparent": f"00-{trace_id}-{CLIENT_SPAN}-01", "authorization": "Bearer sk-t"},
                      json={"model": "auto", "messages": [{"role": "user", "content": PROMPT}]})


def test_router_spans_continue_envoys_trace_with_the_decision_and_never_the_prompt(
        stack: Stack, collector: tuple[Collector, int]) -> None:
    spans = collector[0]
    assert _post(stack, TRACE_ID).status_code == 200
    ours = bytes.fromhex(TRACE_ID)
    _wait(lambda: any(s.trace_id == ours for s in spans.named("vsr.request"))
          and any(svc == "envoy" and s.trace_id == ours for svc, s in spans.spans))
    trace = [(svc, s) for svc, s in spans.spans if s.trace_id == ours]
    envoy_ids = {s.span_id for svc, s in trace if svc == "envoy"}
    root = next(s for _, s in trace if s.name == "vsr.request")
    # Envoy's span for the ext_proc stream is the parent; Envoy's own root continues the client's span.
    assert root.parent_span_id in envoy_ids
    assert any(s.parent_span_id == bytes.fromhex(CLIENT_SPAN) for svc, s in trace if svc == "envoy")
    children = {s.name: s for _, s in trace if s.parent_span_id == root.span_id}
    assert {"vsr.classify", "vsr.decision", "vsr.cache_lookup"} <= set(children)
    attrs = {a.key: a.value for a in children["vsr.decision"].attributes}
    assert attrs["vsr.category"].string_value == "math"
    assert attrs["vsr.model"].string_value == "gpt-oss-120b"
    cache = {a.key: a.value for a in children["vsr.cache_lookup"].attributes}
    assert cache["vsr.cache_result"].string_value == "miss"
    for _, span in trace:
        for a in span.attributes:
            assert "even numbers" not in str(a.value), (span.name, a.key)


def test_envoys_spans_hold_neither_the_query_string_nor_the_user_agent(
        stack: Stack, collector: tuple[Collector, int]) -> None:
    """Trial 10: Envoy's span exported `http.url` with the query (`?api-key=...&user=<e-mail>`) and the User-Agent as
    sent, where the access log keeps the path without its query."""
    trace_id = "6bf92f3577b34da6a3ce929d0e0e4736"
    r = httpx.post(f"{stack.base_url}/chat/completions?api-key=sk-SECRETQUERY&user=marker@example.com", timeout=10,
                   headers={"traceparent": f"00-{trace_id}-{CLIENT_SPAN}-01", "authorization": "Bearer sk-t",
                            "user-agent": "SECRETAGENT/1.0"},
                   json={"model": "auto", "messages": [{"role": "user", "content": "What is 2 + 2?"}]})
    assert r.status_code == 200
    ours = bytes.fromhex(trace_id)
    _wait(lambda: any(svc == "envoy" and s.trace_id == ours and s.parent_span_id == bytes.fromhex(CLIENT_SPAN)
                      for svc, s in collector[0].spans))
    ingress = next(s for svc, s in collector[0].spans
                   if svc == "envoy" and s.trace_id == ours and s.parent_span_id == bytes.fromhex(CLIENT_SPAN))
    attrs = {a.key: a.value.string_value for a in ingress.attributes}
    assert attrs["http.url"] == "/v1/chat/completions" and attrs["user_agent"] == "-"
    for svc, span in collector[0].spans:
        for a in span.attributes if span.trace_id == ours else ():
            assert not any(m in str(a.value) for m in ("SECRETQUERY", "marker@", "SECRETAGENT")), (svc, span.name, a.key)


def test_a_cache_hit_is_traced_as_one(stack: Stack, collector: tuple[Collector, int]) -> None:
    """The prompt's first answer is stored (this test's own request, or the test before it); a repeat is traced as a
    hit. Repeats until the write has landed (the write queue stores in batches), so the test stands alone."""
    assert _post(stack, "5bf92f3577b34da6a3ce929d0e0e4700").status_code == 200
    for attempt in range(1, 40):
        trace_id = f"5bf92f3577b34da6a3ce929d0e0e47{attempt:02x}"
        assert _post(stack, trace_id).status_code == 200
        ours = bytes.fromhex(trace_id)
        _wait(lambda ours=ours: any(s.trace_id == ours for s in collector[0].named("vsr.cache_lookup")))
        lookup = next(s for s in collector[0].named("vsr.cache_lookup") if s.trace_id == ours)
        if {a.key: a.value.string_value for a in lookup.attributes}["vsr.cache_result"] == "hit":
            return
        time.sleep(0.25)
    pytest.fail("a repeated prompt was never traced as a cache hit")
