"""A router worker's side of the supervisor contract: where it reports, and what.

The supervisor (router/extproc/workers.py) starts each worker with WORKER_STATE_ENV naming a JSON file.
Every REPORT_INTERVAL_S the worker's event loop rewrites it (atomically: write then rename) with its pid,
readiness components, the ext_proc streams it has opened and the wall-clock time. That stamp is the
worker's heartbeat: it is written by the serving loop, so a wedged loop goes stale and the supervisor
replaces the worker. The write itself runs on a thread, never on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from router.config import ConfigError, ObservabilityConfig, ServerConfig, load_config

if TYPE_CHECKING:  # the supervisor imports this module before prometheus_client may be imported
    from router.observability.health import Readiness

WORKER_STATE_ENV = "VSR_WORKER_STATE"
WORKER_INDEX_ENV = "VSR_WORKER_INDEX"
REPORT_INTERVAL_S = 0.5


@dataclass(frozen=True)
class WorkerSlot:
    state_file: Path
    index: int = 0  # the supervisor's number for this worker (0 to workers - 1), kept across its restarts

    @classmethod
    def from_env(cls) -> WorkerSlot | None:
        path = os.environ.get(WORKER_STATE_ENV)
        return cls(Path(path), int(os.environ.get(WORKER_INDEX_ENV, "0"))) if path else None

    @property
    def speaks_for_pod(self) -> bool:
        """Every worker reloads the same file; one of them counts it, so an edit is one reload of the Pod (README
        "Router workers"), and logs what reads the same in every worker (the config's warnings, the keys only a
        restart applies, why an edit or the file at start is rejected): N workers wrote each line N times, at every
        start and reload (trial 14). Worker 0's counts survive its restarts: a dead worker's files stay in the sums."""
        return self.index == 0

    def write(self, state: dict[str, Any]) -> None:
        tmp = self.state_file.with_name(f".{self.state_file.name}.{os.getpid()}")
        tmp.write_text(json.dumps(state))
        tmp.replace(self.state_file)

    async def report(self, readiness: Readiness, streams: Callable[[], int], serving: Callable[[], bool],
                     now: asyncio.Event) -> None:
        """Run on the serving loop until cancelled; `now` set: report at once (the port just opened)."""
        while True:
            now.clear()
            snapshot, up = readiness.snapshot(), serving()
            state = {"pid": os.getpid(), "ready": up and snapshot["ready"], "serving": up,
                     "components": snapshot["components"], "config_version": snapshot["config_version"],
                     "streams": streams(), "beat": time.time()}
            await asyncio.to_thread(self.write, state)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(now.wait(), REPORT_INTERVAL_S)


def read_state(path: Path) -> dict[str, Any] | None:
    """A worker's last report, or None before its first one."""
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def bootstrap(path: Path) -> tuple[ServerConfig, ObservabilityConfig]:
    """Ports and logging before the first load, even from an invalid file, so /readyz can say why."""
    try:
        cfg = load_config(path)
        return cfg.server, cfg.observability
    except ConfigError:
        try:
            raw = yaml.safe_load(path.read_bytes().decode("utf-8", "replace"))  # a Latin-1 comment: still its ports
            return ServerConfig.model_validate(raw.get("server") or {}), ObservabilityConfig()
        except Exception:  # noqa: BLE001 - any unreadable server section means defaults
            return ServerConfig(), ObservabilityConfig()


def planned_workers(config_path: Path) -> int:
    """`server.workers` resolved: `auto` is the CPUs this process may run on; 1 when the file is unreadable
    (the single-process router then reports why it cannot start), the server section's own value when the
    rest of the file is invalid (the workers start and wait for a fix)."""
    try:
        config_path.read_bytes()
    except OSError:
        return 1
    setting = bootstrap(config_path)[0].workers
    return available_cpus() if setting == "auto" else setting


def available_cpus(cpu_max: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """The CPUs this process may run on, capped by a cgroup v2 CPU quota (a container's CPU limit: the
    affinity mask there still lists every CPU of the node)."""
    cpus = len(os.sched_getaffinity(0))
    try:
        quota, period = cpu_max.read_text().split()[:2]
    except (OSError, ValueError):
        return cpus
    if quota == "max":
        return cpus
    return max(1, min(cpus, math.ceil(int(quota) / int(period))))
