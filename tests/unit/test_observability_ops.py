"""start_ops wires probes, metrics, heartbeat and reload together on a real port and a real signal."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import urllib.error
import urllib.request
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from router.config import ObservabilityConfig, load_config
from router.observability.health import Readiness
from router.observability.metrics import OTHER, RouterMetrics
from router.observability.ops import declare_config_labels, probe_cache, start_ops

ROOT = Path(__file__).resolve().parents[2]


def status_of(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


async def test_start_ops_serves_probes_and_reloads_on_sighup(tmp_path: Path, unused_tcp_port: int) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("x: 1\n")
    calls: list[str] = []

    async def reload() -> bool:
        calls.append(config.read_text())
        return True

    obs = ObservabilityConfig(watch_config=False, liveness_stale_after_s=5)
    ops = await start_ops(obs, unused_tcp_port, config, reload)
    base = f"http://127.0.0.1:{ops.metrics_port}"
    try:
        await asyncio.sleep(0.05)  # let the heartbeat task stamp once
        code, body = await asyncio.to_thread(status_of, base + "/healthz")
        assert code == 200 and body["heartbeat_age_s"] is not None
        code, body = await asyncio.to_thread(status_of, base + "/readyz")
        assert code == 503 and body["ready"] is False
        for component in ops.readiness.required:
            ops.readiness.set(component, True)
        assert (await asyncio.to_thread(status_of, base + "/readyz"))[0] == 200
        config.write_text("x: 2\n")  # polling is off: an edit alone does nothing ...
        await asyncio.sleep(0.2)
        assert calls == []
        os.kill(os.getpid(), signal.SIGHUP)  # ... SIGHUP does
        for _ in range(100):
            if calls:
                break
            await asyncio.sleep(0.02)
        assert calls == ["x: 2\n"]
    finally:
        await ops.aclose()


def test_declared_labels_come_from_the_config() -> None:
    cfg = load_config(ROOT / "config" / "config.yaml")
    metrics = RouterMetrics(CollectorRegistry())
    declare_config_labels(cfg, metrics)
    model = next(iter(cfg.models))
    assert metrics.label_sets["model"](model) == model
    assert metrics.label_sets["model"]("gpt-5-from-a-client") == OTHER
    assert metrics.label_sets["category"](cfg.default_category) == cfg.default_category


class Backend:
    """A cache facade whose backend can be switched off, like a Milvus that goes away."""

    def __init__(self) -> None:
        self.up = True

    async def check(self) -> tuple[bool, str]:
        return (True, "backend answering") if self.up else (False, "serving without cache: breaker open: connection refused")


async def run_probe_once(readiness: Readiness, cache: Backend | None, degraded_ok: bool,
                         metrics: RouterMetrics | None = None) -> None:
    task = asyncio.create_task(probe_cache(readiness, lambda: cache, 60, degraded_ok,
                                           metrics or RouterMetrics(CollectorRegistry())))
    await asyncio.sleep(0.02)
    task.cancel()


async def test_cache_probe_reports_reachable_unreachable_and_degraded() -> None:
    readiness = Readiness(metrics=RouterMetrics(CollectorRegistry()))
    backend = Backend()
    await run_probe_once(readiness, backend, degraded_ok=False)
    assert readiness.snapshot()["components"]["cache"] == {"ok": True, "detail": "backend answering"}
    backend.up = False
    await run_probe_once(readiness, backend, degraded_ok=False)
    state = readiness.snapshot()["components"]["cache"]
    assert state["ok"] is False and "connection refused" in state["detail"]
    await run_probe_once(readiness, backend, degraded_ok=True)
    state = readiness.snapshot()["components"]["cache"]
    assert state["ok"] is True and state["detail"].startswith("degraded")
    await run_probe_once(readiness, None, degraded_ok=False)
    assert readiness.snapshot()["components"]["cache"] == {"ok": True, "detail": "disabled"}


async def test_a_router_without_a_cache_has_no_cache_backend_series() -> None:
    """With the cache disabled vsr_cache_backend_up read 0, a dead backend's value: SemanticRouterCacheDegraded
    (min by instance == 0) would fire on a Pod that has no cache at all. The series comes with the first cache."""
    metrics = RouterMetrics(CollectorRegistry())
    readiness = Readiness(metrics=metrics)
    await run_probe_once(readiness, None, degraded_ok=True, metrics=metrics)
    assert readiness.snapshot()["components"]["cache"] == {"ok": True, "detail": "disabled"}
    assert metrics.registry.get_sample_value("vsr_component_ready", {"component": "cache"}) == 1
    assert b"vsr_cache_backend_up" not in generate_latest(metrics.registry)
    metrics.set_cache_backend_up(False)  # a cache whose breaker opened, then a reload that turned the cache off
    assert metrics.registry.get_sample_value("vsr_cache_backend_up") == 0
    await run_probe_once(readiness, None, degraded_ok=True, metrics=metrics)
    assert metrics.registry.get_sample_value("vsr_cache_backend_up") == 1  # no open breaker left to alert on
