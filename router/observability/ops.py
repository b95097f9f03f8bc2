"""One call that starts the operational side of `semantic-router serve`, one that stops it.

The request path should not have to know how logs, probes, metrics and reload are assembled: the
server calls `start_ops` inside its running loop and reports readiness; everything else is here.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from router.config import ObservabilityConfig, RouterConfig
from router.observability import logs
from router.observability.health import HealthServer, Liveness, Readiness
from router.observability.metrics import METRICS, RouterMetrics
from router.observability.reload import Baseline, ConfigWatcher, ReloadFn


class CacheHealth(Protocol):
    """What the probe needs from the cache facade: health from its traffic (`SemanticCache.check`)."""

    async def check(self) -> tuple[bool, str]: ...


def declare_config_labels(cfg: RouterConfig, metrics: RouterMetrics = METRICS) -> None:
    """Close the model/category label sets to the config's names (call after every applied config)."""
    metrics.set_label_values("model", cfg.models)
    metrics.set_label_values("category", [c.name for c in cfg.categories] + [cfg.default_category])


@dataclass
class Ops:
    readiness: Readiness
    liveness: Liveness
    health: HealthServer
    metrics_port: int
    watcher: ConfigWatcher | None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.health.stop()
        asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)


def configure_logs(obs: ObservabilityConfig, log_format: logs.LogFormat | None = None) -> None:
    """Logging as the config says; `--log-format` on the command line wins over the file."""
    logs.configure(log_format or obs.log_format, level=obs.log_level, log_prompts=obs.log_prompts)


async def start_ops(
    obs: ObservabilityConfig,
    metrics_port: int,
    config_path: Path,
    reload: ReloadFn,
    readiness: Readiness | None = None,
    cache: Callable[[], CacheHealth | None] | None = None,
    started_from: Baseline | None = None,
    speaks_for_pod: bool = True,
) -> Ops:
    """Start /metrics + probes, the loop heartbeat and (if enabled) the config watcher + SIGHUP.

    Must run inside the serving loop. `reload` is the runtime holder's reload; it is also what
    SIGHUP triggers, so do not install another SIGHUP handler. `started_from`: the config file as it was before
    the first load (`reload.baseline`), so an edit made since is reloaded. `speaks_for_pod`: False in every router
    worker but one (`WorkerSlot.speaks_for_pod`).
    """
    readiness = readiness or Readiness()
    liveness = Liveness(stale_after_s=obs.liveness_stale_after_s)
    health = HealthServer(readiness, liveness)
    port = health.start(obs.metrics_host, metrics_port) if metrics_port else 0
    ops = Ops(readiness, liveness, health, port, watcher=None)
    ops._tasks.append(asyncio.create_task(liveness.run(), name="liveness-heartbeat"))
    watcher = ConfigWatcher(config_path, reload, interval_s=obs.watch_interval_s, poll=obs.watch_config,
                            started_from=started_from, speaks_for_pod=speaks_for_pod)
    watcher.install_sighup()  # SIGHUP reloads even when file watching is off
    ops._tasks.append(asyncio.create_task(watcher.run(), name="config-watcher"))
    ops.watcher = watcher
    if cache is not None:
        probe = probe_cache(readiness, cache, obs.cache_probe_interval_s, obs.ready_without_cache)
        ops._tasks.append(asyncio.create_task(probe, name="cache-probe"))
    return ops


async def probe_cache(
    readiness: Readiness, cache: Callable[[], CacheHealth | None], interval_s: float, degraded_ok: bool,
    metrics: RouterMetrics = METRICS,
) -> None:
    """Report the cache component from the current runtime's cache until cancelled.

    `cache()` is read on every turn so a reload that swaps the cache is followed. No cache (disabled)
    is ready, and has no `vsr_cache_backend_up` (a Pod without a cache read 0 there, the dead cache's value). A
    failing backend, or one that has not answered yet, leaves the router able to serve (uncached), so it stays
    ready unless the operator set `ready_without_cache: false`; the cache's own detail says whether requests still
    use it.
    """
    while True:
        current = cache()
        up = True
        if current is None:
            readiness.set("cache", True, "disabled")
            metrics.forget_cache_backend()
        else:
            up, detail = await current.check()
            readiness.set("cache", up or degraded_ok, detail if up else f"{'degraded' if degraded_ok else 'not ready'}: {detail}")
        # Not up: asked again within a second, so a backend still connecting at start is ready without a 10 s wait.
        await asyncio.sleep(interval_s if up else min(interval_s, 1.0))
