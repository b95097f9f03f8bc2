"""Health for orchestrators: HTTP `/healthz` + `/readyz` + `/metrics`, and gRPC health on ext_proc.

The HTTP server runs in its own thread so a scrape or a probe never waits behind request work on the
event loop. Liveness therefore cannot just answer "200" from that thread: a wedged event loop would
look alive forever. A heartbeat task on the loop stamps `Liveness`, and `/healthz` fails when the
stamp goes stale, which is what a restart can actually fix.
Readiness is a set of named components (config, models, cache) that the runtime reports; the cache
counts as ready when reachable or when the operator allowed degraded mode (the runtime decides).
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as grpc_health_aio  # type: ignore[attr-defined]  # stubs lag
from prometheus_client import CollectorRegistry, disable_created_metrics
from prometheus_client.exposition import choose_encoder

from router.observability.metrics import METRICS, RouterMetrics

REQUIRED_COMPONENTS = ("config", "models", "cache")
EXTPROC_SERVICE = "envoy.service.ext_proc.v3.ExternalProcessor"


@dataclass(frozen=True, slots=True)
class ComponentState:
    ok: bool
    detail: str


class Readiness:
    """Thread-safe component states; ready only when every required component reported ok."""

    def __init__(
        self, required: Iterable[str] = REQUIRED_COMPONENTS, metrics: RouterMetrics = METRICS
    ) -> None:
        self.required = tuple(required)
        self._states: dict[str, ComponentState] = {}
        self._listeners: list[Callable[[bool], None]] = []
        self._lock = threading.Lock()
        self._metrics = metrics
        self.config_version: str | None = None  # of the runtime serving (router/runtime.py)
        for component in self.required:
            metrics.set_component_ready(component, False)

    def set(self, component: str, ok: bool, detail: str = "") -> None:
        """Record a component's state; listeners hear about it only when overall readiness flips."""
        with self._lock:
            before = self._ready_locked()
            self._states[component] = ComponentState(ok, detail)
            after = self._ready_locked()
            listeners = list(self._listeners) if after != before else []
        self._metrics.set_component_ready(component, ok)
        for listener in listeners:
            listener(after)

    def is_ready(self) -> bool:
        with self._lock:
            return self._ready_locked()

    def _ready_locked(self) -> bool:
        return all(self._states.get(c, ComponentState(False, "")).ok for c in self.required) and all(
            s.ok for s in self._states.values()
        )

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            components = {c: {"ok": False, "detail": "not reported yet"} for c in self.required}
            components.update({c: {"ok": s.ok, "detail": s.detail} for c, s in self._states.items()})
            return {"ready": self._ready_locked(), "components": components, "config_version": self.config_version}

    def add_listener(self, listener: Callable[[bool], None]) -> None:
        """`listener(ready)` runs on every flip, in the thread that called `set`."""
        with self._lock:
            self._listeners.append(listener)


class ReadinessView(Protocol):
    """What `/readyz` shows: a Readiness, or the supervisor's view over its workers."""

    def snapshot(self) -> dict[str, Any]: ...


class LivenessView(Protocol):
    def is_alive(self) -> bool: ...

    def age_s(self) -> float | None: ...


class Exposed(Protocol):
    """What `/metrics` serves: RouterMetrics, or the supervisor's registry over its workers' files."""

    @property
    def registry(self) -> CollectorRegistry: ...


class Liveness:
    """Alive while the event loop keeps stamping; a stale stamp means the loop is stuck."""

    def __init__(self, stale_after_s: float = 15.0) -> None:
        self.stale_after_s = stale_after_s
        self._last_beat: float | None = None

    def beat(self) -> None:
        self._last_beat = time.monotonic()

    def age_s(self) -> float | None:
        return None if self._last_beat is None else time.monotonic() - self._last_beat

    def is_alive(self) -> bool:
        age = self.age_s()
        return age is None or age < self.stale_after_s

    async def run(self, interval_s: float = 1.0) -> None:
        """Run as a task on the serving loop until cancelled."""
        while True:
            self.beat()
            await asyncio.sleep(interval_s)


class _Handler(BaseHTTPRequestHandler):
    server: _HealthHTTPServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # name fixed by http.server
        route = self.path.split("?", 1)[0]
        if route == "/metrics":
            encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
            self._send(200, encoder(self.server.metrics.registry), content_type)
        elif route == "/healthz":
            alive, age = self.server.liveness.is_alive(), self.server.liveness.age_s()
            body = {"alive": alive, "heartbeat_age_s": None if age is None else round(age, 3)}
            self._send_json(200 if alive else 503, body)
        elif route == "/readyz":
            snapshot = self.server.readiness.snapshot()
            self._send_json(200 if snapshot["ready"] else 503, snapshot)
        else:
            self._send_json(404, {"error": f"no route {route}; try /metrics, /healthz, /readyz"})

    def _send_json(self, status: int, body: dict[str, Any]) -> None:
        self._send(status, json.dumps(body).encode(), "application/json")

    def _send(self, status: int, payload: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:  # probes every few seconds are noise
        return


class _HealthHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], readiness: ReadinessView, liveness: LivenessView,
                 metrics: Exposed) -> None:  # fmt: skip
        self.readiness, self.liveness, self.metrics = readiness, liveness, metrics
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A scraper or probe that hangs up before its answer is sent is routine, not a traceback on stderr."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class HealthServer:
    """The metrics port: `/metrics`, `/healthz`, `/readyz` served from a daemon thread."""

    def __init__(self, readiness: ReadinessView, liveness: LivenessView, metrics: Exposed = METRICS) -> None:
        self._args = (readiness, liveness, metrics)
        self._httpd: _HealthHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self, host: str, port: int) -> int:
        """Bind and serve; returns the bound port (pass 0 to let the OS pick one, e.g. in tests)."""
        # `_created` series double the counters and nobody graphs them.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self._httpd = _HealthHTTPServer((host, port), *self._args)
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="health-http", daemon=True)
        self._thread.start()
        return int(self._httpd.server_address[1])

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None


def add_grpc_health(
    server: grpc.aio.Server, readiness: Readiness, services: Iterable[str] = ("", EXTPROC_SERVICE)
) -> grpc_health_aio.HealthServicer:
    """Register grpc.health.v1 on the ext_proc server, SERVING exactly while `readiness` is ready.

    Call from inside the running loop (the servicer's state belongs to it); readiness flips may come
    from any thread and are handed to the loop.
    """
    loop = asyncio.get_running_loop()
    servicer = grpc_health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    names = tuple(services)
    pending: set[asyncio.Task[None]] = set()

    async def apply() -> None:
        # Read the state now, not at the flip: flips queued out of order still end on the truth.
        ok = readiness.is_ready()
        status = health_pb2.HealthCheckResponse.SERVING if ok else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in names:
            await servicer.set(name, status)

    def schedule() -> None:
        task = loop.create_task(apply())
        pending.add(task)
        task.add_done_callback(pending.discard)

    def on_flip(_ready: bool) -> None:
        loop.call_soon_threadsafe(schedule)

    readiness.add_listener(on_flip)
    on_flip(readiness.is_ready())
    return servicer
