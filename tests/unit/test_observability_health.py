"""Health: real HTTP probes and metrics on a real port, real gRPC health checks over a real channel."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry

from router.observability.health import EXTPROC_SERVICE, HealthServer, Liveness, Readiness, add_grpc_health
from router.observability.metrics import RouterMetrics


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers["Content-Type"], err.read().decode()


@pytest.fixture()
def metrics() -> RouterMetrics:
    return RouterMetrics(CollectorRegistry())


@pytest.fixture()
def served(metrics: RouterMetrics) -> Iterator[tuple[str, Readiness, Liveness]]:
    readiness, liveness = Readiness(metrics=metrics), Liveness(stale_after_s=0.2)
    server = HealthServer(readiness, liveness, metrics)
    port = server.start("127.0.0.1", 0)
    yield f"http://127.0.0.1:{port}", readiness, liveness
    server.stop()


def test_readyz_needs_every_required_component(served: tuple[str, Readiness, Liveness]) -> None:
    base, readiness, _ = served
    status, ctype, body = get(base + "/readyz")
    assert status == 503 and ctype == "application/json"
    assert json.loads(body)["components"]["models"] == {"ok": False, "detail": "not reported yet"}
    readiness.set("config", True)
    readiness.set("models", True, "minilm int8")
    assert get(base + "/readyz")[0] == 503
    readiness.set("cache", True, "degraded: milvus unreachable, serving without cache")
    status, _, body = get(base + "/readyz")
    assert status == 200 and json.loads(body)["ready"] is True
    assert json.loads(body)["components"]["cache"]["detail"].startswith("degraded")
    readiness.set("config", False, "invalid: models.x.port: must be <= 65535")
    assert get(base + "/readyz")[0] == 503


def test_healthz_follows_the_loop_heartbeat(served: tuple[str, Readiness, Liveness]) -> None:
    base, _, liveness = served
    assert get(base + "/healthz")[0] == 200  # no heartbeat yet: starting up counts as alive
    liveness.beat()
    status, _, body = get(base + "/healthz")
    assert status == 200 and json.loads(body)["heartbeat_age_s"] < 0.2
    time.sleep(0.3)  # the loop stops stamping: a wedged loop must fail liveness
    assert get(base + "/healthz")[0] == 503


def test_metrics_endpoint_serves_the_router_registry(
    served: tuple[str, Readiness, Liveness], metrics: RouterMetrics
) -> None:
    base, readiness, _ = served
    metrics.record_request("qwen3-4b", "math", "upstream")
    readiness.set("models", True)
    status, ctype, body = get(base + "/metrics")
    assert status == 200 and ctype.startswith("text/plain")
    assert 'vsr_requests_total{category="math",model="qwen3-4b",path="upstream"} 1.0' in body
    assert 'vsr_component_ready{component="models"} 1.0' in body
    assert 'vsr_component_ready{component="cache"} 0.0' in body
    assert "process_resident_memory_bytes" in body and "vsr_requests_created" not in body
    assert get(base + "/nope")[0] == 404


async def test_grpc_health_tracks_readiness(metrics: RouterMetrics) -> None:
    readiness = Readiness(metrics=metrics)
    server = grpc.aio.server()
    add_grpc_health(server, readiness)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)

            async def status(service: str) -> int:
                await asyncio.sleep(0.05)  # flips are applied on the loop, not inline
                return (await stub.Check(health_pb2.HealthCheckRequest(service=service))).status

            assert await status(EXTPROC_SERVICE) == health_pb2.HealthCheckResponse.NOT_SERVING
            for component in readiness.required:
                readiness.set(component, True)
            assert await status(EXTPROC_SERVICE) == health_pb2.HealthCheckResponse.SERVING
            assert await status("") == health_pb2.HealthCheckResponse.SERVING
            readiness.set("cache", False, "milvus down, degraded mode not allowed")
            assert await status("") == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        await server.stop(None)


def test_a_client_hanging_up_leaves_no_traceback_but_a_bug_still_does(capsys: pytest.CaptureFixture[str]) -> None:
    metrics = RouterMetrics(CollectorRegistry())
    server = HealthServer(Readiness(metrics=metrics), Liveness(), metrics)
    server.start("127.0.0.1", 0)
    httpd = server._httpd
    assert httpd is not None
    try:
        for error in (ConnectionResetError(104, "Connection reset by peer"), BrokenPipeError(32, "Broken pipe")):
            try:
                raise error
            except ConnectionError:
                httpd.handle_error(None, ("127.0.0.1", 50000))
        assert capsys.readouterr().err == ""
        try:
            raise ValueError("a bug in a handler")
        except ValueError:
            httpd.handle_error(None, ("127.0.0.1", 50000))
        assert "ValueError: a bug in a handler" in capsys.readouterr().err
    finally:
        server.stop()


def test_the_cache_detail_says_answering_only_after_an_answer_and_never_while_it_fails() -> None:
    """/readyz said "backend answering" for a Lite backend that had never answered (read-only directory) and
    between its first failures and the streak that marks it down."""
    from router.cache.health import BackendHealth

    health = BackendHealth(streak=5)
    assert health.up and health.detail() == "backend not asked yet"
    health.failure("LiteUnavailable: Read-only file system")
    assert health.up and health.detail() == ("backend not answered since start: 1 failed call in a row, breaker closed "
                                             "(opens at 5), lookups still try it: LiteUnavailable: Read-only file system")
    health.success()
    assert health.detail() == "backend answering"
    never = BackendHealth(streak=5)
    for _ in range(5):
        never.failure("probe: refused")
    assert never.detail() == ("serving without cache: backend not answered since start, breaker open (5 failed calls "
                              "in a row), a probe lookup a second: probe: refused")


def test_the_cache_detail_says_serving_without_cache_only_while_the_breaker_keeps_requests_from_it() -> None:
    """Trial 14: one slow probe read "degraded: serving without cache: failing (1 in a row): probe: timeout after
    50 ms" while the breaker was closed (it opens at 5 in a row) and requests still hit the cache."""
    from router.cache.health import BackendHealth

    health = BackendHealth(streak=5)
    health.success()
    health.failure("probe: timeout after 50 ms")
    assert health.admit() and health.detail() == ("serving from the cache: 1 failed call in a row, breaker closed "
                                                   "(opens at 5): probe: timeout after 50 ms")
    for _ in range(4):
        health.failure("probe: connection refused")
    assert health.blocked and health.detail() == ("serving without cache: breaker open (5 failed calls in a row), a "
                                                 "probe lookup a second: probe: connection refused")
    health.success()
    assert health.admit() and health.detail() == ("breaker half open: backend answering again, lookups try it (1 of 5 "
                                                  "answers in a row close the breaker)")
