"""The supervisor of router workers: one process per CPU on one ext_proc port, to escape one GIL.

`semantic-router serve` with `server.workers` > 1 (or `auto` on a multi-core machine) runs this instead of
the router itself. It starts N workers (`semantic-router serve` again, told by WORKER_STATE_ENV that it is
a worker); each binds the ext_proc port with SO_REUSEPORT, so the kernel spreads Envoy's connections over
them, and each loads its own runtime and watches the config file itself (hot reload works per worker). The
supervisor owns what must be one per Pod:

- the metrics port: `/metrics` adds up the workers' series (prometheus-client multiprocess mode; the files
  live in PROMETHEUS_MULTIPROC_DIR, emptied at start, a dead worker's live gauges removed);
  `/readyz` is 200 while at least one worker is serving and ready, with each worker's state in the JSON;
  `/healthz` is the supervisor's own loop;
- the embedded Milvus Lite child (a local cache URI): two processes cannot open one Lite file, so the workers
  connect to the supervisor's child by its socket (router/cache/lite.py `SharedLite`), and the supervisor
  restarts it when it dies;
- restarts: a worker that exits, or whose heartbeat goes stale (a wedged event loop), is replaced, with a
  backoff while it keeps dying young; each restart is logged and counted (`vsr_worker_restarts_total`).
"""

from __future__ import annotations

import ctypes
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, PlatformCollector, ProcessCollector
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from router.accepted import RUNTIME_DIR_ENV, AcceptedConfig, runtime_dir
from router.cache.lite import SHARED_LITE_ENV, LiteProcess, LiteUnavailable, shared_lite_env
from router.config import ConfigError, RouterConfig, drain_s, is_local_uri
from router.extproc.slot import WORKER_INDEX_ENV, WORKER_STATE_ENV, bootstrap, read_state
from router.observability import logs
from router.observability.envoy_stats import envoy_collectors
from router.observability.health import HealthServer, Liveness
from router.observability.logs import LogFormat
from router.observability.metrics import RouterMemory
from router.observability.ops import configure_logs

log = logs.get_logger("router.workers")
TICK_S = 0.2
STOP_MARGIN_S = 5.0  # after a worker's own drain (config.drain_s) it is killed
MAX_BACKOFF_S = 10.0
YOUNG_S = 30.0  # a worker that dies younger than this is restarted after a doubling backoff
PR_SET_PDEATHSIG = 1
# With the embedded Lite child on the same cores, workers run this much nicer than the child: a lookup is a
# few milliseconds of Lite CPU, but at nice 0 the child's threads waited in the run queue behind the
# workers' threads and most lookups missed their 50 ms budget (bench/fault_suite.py, bench/README.md "Fault suite").
# Raising one's own nice value needs no privilege (lowering Lite's would).
LITE_WORKER_NICE = 5
# Each worker applies an edit on its own poll of the file (observability.watch_interval_s) and then builds its runtime,
# so on every valid reload the workers serve two versions for a moment (/readyz said 503 for ~0.2 s each time): only a
# split that outlasts this, plus the poll interval, is a worker left on another config.
RELOAD_SPREAD_S = 10.0


def _worker_preexec(nice: int) -> Callable[[], None]:
    def preexec() -> None:
        """In the child before exec: SIGTERM when the supervisor dies, so no orphan keeps the port."""
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if nice:
            os.nice(nice)
    return preexec


@dataclass
class Worker:
    index: int
    state_file: Path
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    restart_at: float = 0.0
    failures: int = 0  # consecutive young deaths
    served: bool = False  # reported serving at least once in its current life
    was_ready: bool = False  # reported ready at least once in its current life (its live gauges count from then)
    restarts: int = 0

    def state(self) -> dict[str, Any] | None:
        """The current process's last report; a previous life's file is ignored."""
        state = read_state(self.state_file)
        if state is None or self.proc is None or state.get("pid") != self.proc.pid:
            return None
        return state


class WorkersView:
    """`/readyz` and `/metrics` of the supervisor."""

    def __init__(self, workers: list[Worker], metrics_dir: Path, stale_after_s: float, split_grace_s: float):
        self.workers, self.stale_after_s, self.split_grace_s = workers, stale_after_s, split_grace_s
        self._split_since: float | None = None  # since when the serving workers report different config versions
        self.registry = CollectorRegistry()
        _WorkersCollector(self, metrics_dir)
        ProcessCollector(registry=self.registry)  # the supervisor's own process; workers report theirs in logs
        self.registry.register(RouterMemory())  # the supervisor, its workers and Lite together
        PlatformCollector(registry=self.registry)  # python_info, as a single router exports it (README, Metrics)
        Gauge("vsr_workers", "Router worker processes configured.", registry=self.registry).set(len(workers))
        ready = Gauge("vsr_workers_ready", "Router workers serving and ready.", registry=self.registry)
        ready.set_function(lambda: sum(1 for w in self.workers if self._ready(w.state())))
        self.restarts = Counter("vsr_worker_restarts_total", "Router workers replaced after they exited or hung.",
                                registry=self.registry)

    def _ready(self, state: dict[str, Any] | None) -> bool:
        return bool(state and state.get("ready") and time.time() - float(state["beat"]) < self.stale_after_s)

    def starting(self) -> set[int]:
        """Pids of workers not ready yet in their current life, while another worker is ready: their live gauges
        are left out of `/metrics`. A replacement's initial 0s (`vsr_cache_backend_up` before its cache exists,
        `vsr_component_ready` before each component reports) took the Pod's "worst live worker" to 0 for 2-4 s of
        every restart while its sibling served from an untouched cache (trial 14). Before any worker is ready they
        count: a Pod that never gets ready still shows why."""
        for w in self.workers:
            w.was_ready = w.was_ready or self._ready(w.state())
        if not any(w.was_ready for w in self.workers if w.proc is not None):
            return set()
        return {w.proc.pid for w in self.workers if w.proc is not None and not w.was_ready}

    def snapshot(self) -> dict[str, Any]:
        states = [(w, w.state()) for w in self.workers]
        ready = [s for _, s in states if s is not None and self._ready(s)]
        reported = [s for _, s in states if s is not None]
        first: dict[str, Any] = (ready or reported or [{}])[0] or {}
        components = first.get("components") or {
            "workers": {"ok": False, "detail": "no worker has reported yet"}}
        versions = sorted({s["config_version"] for s in reported if s.get("serving") and s.get("config_version")})
        split = self._split(versions)
        if split is not None:
            components = {**components, "workers": split}
        return {"ready": bool(ready) and (split is None or split["ok"]), "components": components,
                "workers_ready": len(ready),
                "workers": [{"index": w.index, "pid": w.proc.pid if w.proc else None,
                             "ready": self._ready(s), "config_version": (s or {}).get("config_version"),
                             "streams": (s or {}).get("streams", 0),
                             "restarts": w.restarts} for w, s in states]}

    def _split(self, versions: list[str]) -> dict[str, Any] | None:
        """Workers serving different configs route the same request differently: not ready once they have
        disagreed for `split_grace_s`; before that they are rolling out a reload, and ready."""
        if len(versions) <= 1:
            self._split_since = None
            return None
        now = time.monotonic()
        since = self._split_since = now if self._split_since is None else self._split_since
        if now - since < self.split_grace_s:
            return {"ok": True, "detail": "workers applying a reload: " + ", ".join(versions)}
        return {"ok": False, "detail": "workers serve different configs: " + ", ".join(versions)}


class _WorkersCollector(MultiProcessCollector):
    """The workers' files added up (counters, histograms, gauges by their `multiprocess_mode`), without the live
    gauges of workers still starting (`WorkersView.starting`)."""

    def __init__(self, view: WorkersView, metrics_dir: Path) -> None:
        super().__init__(view.registry, path=str(metrics_dir))  # type: ignore[no-untyped-call]
        self._view, self._dir = view, metrics_dir

    def collect(self) -> Iterable[Metric]:
        starting = self._view.starting()
        files = [str(f) for f in self._dir.glob("*.db")
                 if not (f.name.startswith("gauge_live") and _file_pid(f) in starting)]
        return self.merge(files, accumulate=True)  # type: ignore[no-any-return,no-untyped-call]


def _file_pid(file: Path) -> int | None:
    """The pid of a live gauge's file (`gauge_livemin_1234.db`)."""
    tail = file.stem.rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else None


def backoff(failures: int) -> float:
    """Seconds before the next start after `failures` in a row: 0.5, doubling, at most MAX_BACKOFF_S."""
    return min(0.5 * 2.0 ** max(failures - 1, 0), MAX_BACKOFF_S)


class LiteSupervisor:
    """The one Milvus Lite child every worker talks to; a thread restarts it when it dies."""

    def __init__(self, db_file: str):
        self.lite = LiteProcess(db_file)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="lite-watch", daemon=True)
        self._failures, self._retry_at = 0, 0.0

    def start(self) -> None:
        self._ensure()
        self._thread.start()

    def _ensure(self) -> None:
        """Start the child; after a failure (a locked file, a read-only directory) retry with the workers' backoff,
        not every tick: five identical error lines a second buried everything else in the logs."""
        try:
            self.lite.ensure_running()  # which publishes the child's URI in lite.uri_file for the workers
        except LiteUnavailable as exc:
            self._failures += 1
            delay = backoff(self._failures)
            self._retry_at = time.monotonic() + delay
            log.error("milvus_lite_unavailable", error=str(exc), retry_in_s=delay,
                      effect="workers serve uncached until it starts")
        else:
            self._failures = 0

    def _watch(self) -> None:
        while not self._stop.wait(TICK_S):
            if not self.lite.alive() and time.monotonic() >= self._retry_at:
                self._ensure()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.lite.stop()


@dataclass
class Supervisor:
    config_path: Path
    log_format: LogFormat | None
    count: int
    metrics_dir: Path | None  # PROMETHEUS_MULTIPROC_DIR as given to the supervisor, else a temporary one
    workers: list[Worker] = field(default_factory=list)
    nice: int = 0  # the workers' nice value: LITE_WORKER_NICE while they share our Lite child
    drain_s: float = 5.0  # how long a stopping worker lets its streams run (config.drain_s of the config at start)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> int:
        server, obs = bootstrap(self.config_path)  # the server section even of an invalid file
        configure_logs(obs, self.log_format)
        if not _port_free(server.host, server.port):  # the workers' SO_REUSEPORT would share another router's
            print(f"semantic-router: cannot start: ext_proc port {server.host}:{server.port} is already in use or "
                  "cannot be bound", file=sys.stderr)
            return 1
        named = runtime_dir()  # kept (the accepted config, the affinity pins); a temporary one is removed at exit
        run_dir = named or Path(tempfile.mkdtemp(prefix="vsr-workers-"))
        run_dir.mkdir(parents=True, exist_ok=True)
        cfg = _accept(self.config_path, AcceptedConfig(run_dir))
        if cfg is not None:
            self.drain_s = drain_s(cfg)
        metrics_dir = self.metrics_dir or run_dir / "metrics"
        _empty(metrics_dir)
        self.workers = [Worker(i, run_dir / f"worker-{i}.json") for i in range(self.count)]
        view = WorkersView(self.workers, metrics_dir, obs.liveness_stale_after_s,
                           split_grace_s=obs.watch_interval_s + RELOAD_SPREAD_S)
        if cfg is not None and cfg.envoy.admin_port:
            for collector in envoy_collectors(cfg):
                view.registry.register(collector)
        liveness = Liveness(stale_after_s=obs.liveness_stale_after_s)
        http = HealthServer(view, liveness, view)
        port = server.metrics_port
        lite = _lite(cfg)
        try:
            if port:
                http.start(obs.metrics_host, port)
        except OSError as exc:
            print(f"semantic-router: cannot start: metrics port {obs.metrics_host}:{port}: {exc.strerror}",
                  file=sys.stderr)
            if named is None:
                shutil.rmtree(run_dir, ignore_errors=True)
            return 1
        env = {**self._worker_env(cfg, metrics_dir, lite), RUNTIME_DIR_ENV: str(run_dir)}
        self._signals()
        log.info("workers_starting", workers=self.count, metrics_dir=str(metrics_dir), nice=self.nice)
        try:
            return self._loop(env, view, liveness, metrics_dir)
        finally:
            self._stop_workers()
            if lite is not None:
                lite.stop()
            http.stop()
            if named is None:
                shutil.rmtree(run_dir, ignore_errors=True)

    def _worker_env(self, cfg: RouterConfig | None, metrics_dir: Path, lite: LiteSupervisor | None,
                    ) -> dict[str, str]:
        """What every worker shares: the metrics directory, the Lite child, the cache's HMAC secret."""
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
        if cfg is not None and cfg.semantic_cache.enabled and not os.environ.get(cfg.semantic_cache.hmac_secret_env):
            # Tenant namespaces are HMACs: a random secret per worker would make one worker's entries
            # invisible to the others. One random secret for all of them, still lost on restart.
            env[cfg.semantic_cache.hmac_secret_env] = secrets.token_hex(32)
            log.warning("cache_hmac_secret_missing", env=cfg.semantic_cache.hmac_secret_env,
                        effect="random secret shared by this supervisor's workers: entries do not survive a restart")
        if lite is not None:
            lite.start()
            self.nice = int(os.environ.get("VSR_LITE_WORKER_NICE", LITE_WORKER_NICE))
            env[SHARED_LITE_ENV] = shared_lite_env(lite.lite.db_file, lite.lite.uri_file)
        return env

    def _signals(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self._stop.set())
        signal.signal(signal.SIGHUP, lambda *_: self._each(signal.SIGHUP))  # every worker reloads

    def _each(self, sig: signal.Signals) -> None:
        for w in self.workers:
            if w.proc is not None and w.proc.poll() is None:
                w.proc.send_signal(sig)

    def _loop(self, env: dict[str, str], view: WorkersView, liveness: Liveness, metrics_dir: Path) -> int:
        while not self._stop.is_set():
            liveness.beat()
            now = time.monotonic()
            for w in self.workers:
                if w.proc is None:
                    if now >= w.restart_at:
                        self._spawn(w, env)
                    continue
                state = w.state()
                w.served = w.served or bool(state and state.get("serving"))
                code = w.proc.poll()
                if code is None and state is not None and time.time() - float(state["beat"]) > view.stale_after_s:
                    log.error("worker_stuck", worker=w.index, worker_pid=w.proc.pid, heartbeat_age_s=round(
                        time.time() - float(state["beat"]), 1), action="killed and replaced")
                    w.proc.kill()
                    code = w.proc.wait()
                if code is not None:
                    if code == 1 and not w.served and not any(x.served for x in self.workers):
                        log.error("worker_cannot_start", worker=w.index, exit_code=code)
                        return 1  # the worker printed why (model missing, port busy): as the router would
                    self._reap(w, code, now, metrics_dir, view)
            self._stop.wait(TICK_S)
        log.info("workers_stopping")
        return 0

    def _spawn(self, w: Worker, env: dict[str, str]) -> None:
        command = [sys.executable, "-m", "router.cli", "serve", "--config", str(self.config_path)]
        if self.log_format:
            command += ["--log-format", self.log_format]
        w.proc = subprocess.Popen(command, env={**env, WORKER_STATE_ENV: str(w.state_file), WORKER_INDEX_ENV: str(w.index)},
                                  preexec_fn=_worker_preexec(self.nice))  # noqa: PLW1509 - prctl and nice only
        w.started, w.served, w.was_ready = time.monotonic(), False, False
        log.info("worker_started", worker=w.index, worker_pid=w.proc.pid)

    def _reap(self, w: Worker, code: int, now: float, metrics_dir: Path, view: WorkersView) -> None:
        assert w.proc is not None
        pid = w.proc.pid
        mark_process_dead(pid, str(metrics_dir))  # type: ignore[no-untyped-call]  # its live gauges go; its counts stay in the sums
        young = now - w.started < YOUNG_S
        w.failures = w.failures + 1 if young else 0
        delay = backoff(w.failures) if young else 0.0
        w.proc, w.restart_at = None, now + delay
        w.restarts += 1
        view.restarts.inc()
        log.warning("worker_exited", worker=w.index, worker_pid=pid, exit_code=code, restart_in_s=delay)

    def _stop_workers(self) -> None:
        self._each(signal.SIGTERM)
        deadline = time.monotonic() + self.drain_s + STOP_MARGIN_S
        for w in self.workers:
            if w.proc is None:
                continue
            try:
                w.proc.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                w.proc.kill()
                w.proc.wait()


def _accept(path: Path, accepted: AcceptedConfig) -> RouterConfig | None:
    """The config the workers start from, recorded as accepted: the file, unless the runtime directory holds an
    accepted config from an earlier start in this Pod whose Envoy config the file would change (then that one)."""
    try:
        text, cfg = accepted.servable(path, None)
    except ConfigError as exc:
        log.error("config_invalid", reason=str(exc), effect="workers start and wait for a fix")
        return None
    accepted.save(text)
    return cfg


def _lite(cfg: RouterConfig | None) -> LiteSupervisor | None:
    """The shared Lite child for the config's local cache file (fixed at start: a reload cannot move it)."""
    if cfg is None or not cfg.semantic_cache.enabled or cfg.semantic_cache.backend == "memory":
        return None
    if not is_local_uri(cfg.semantic_cache.uri):
        return None
    return LiteSupervisor(cfg.semantic_cache.uri)


def _empty(metrics_dir: Path) -> None:
    """Counts from a previous run must not add to this one's."""
    metrics_dir.mkdir(parents=True, exist_ok=True)
    for old in metrics_dir.glob("*.db"):
        old.unlink()


def _port_free(host: str, port: int) -> bool:
    """A bind without SO_REUSEPORT fails while anything listens on the port, a router's workers included.
    SO_REUSEADDR (which grpc sets too) lets it pass over connections a stopped router left in TIME_WAIT, so a
    restart within a minute is not refused."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError:
        return False
    return True


def supervise(config_path: Path, log_format: LogFormat | None, count: int, metrics_dir: str | None) -> int:
    return Supervisor(config_path, log_format, count, Path(metrics_dir) if metrics_dir else None).run()
