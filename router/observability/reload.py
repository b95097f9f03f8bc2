"""Hot reload: notice config edits (file polling and SIGHUP) and ask the runtime to apply them.

Polling the file's stat every second and hashing it only when the stat moved is cheap and works
everywhere, including Kubernetes ConfigMap volumes, which swap a symlink rather than write the file
(inotify-based watchers miss that unless they watch the directory). The content hash keeps `touch`
and no-op saves from causing reloads. A change is applied only once the file has stopped changing
for one short settle interval, so an editor's truncate-then-write is not read half-written.

This module decides *when* to reload; the runtime's `reload()` decides *whether* the new config is
valid, builds the new runtime and swaps it atomically. On `False` (or an exception) the old runtime
keeps serving; both outcomes are logged with the reason and counted in `vsr_config_reloads_total`, once per Pod:
with router workers only one of them counts (`counts`), and each sets `vsr_config_last_reload_successful`.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

from router.config import ConfigError
from router.observability.logs import get_logger
from router.observability.metrics import METRICS, RouterMetrics

ReloadFn = Callable[[], Awaitable[bool]]
# A config file's (stat, content hash) at one moment: what a watcher compares later edits with.
Baseline = tuple[tuple[int, int] | None, str | None]

log = get_logger("router.reload")


def _fingerprint(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()  # follows symlinks: a ConfigMap's ..data swap changes the target's stat
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def baseline(path: str | os.PathLike[str]) -> Baseline:
    """The file as it is now. Take it before the config is first loaded: an edit that lands between that load
    and the watcher's start (a fix written while a worker boots) is then still a change, not the starting point."""
    return _fingerprint(Path(path)), _digest(Path(path))


class ConfigWatcher:
    """Runs on the serving loop; triggers `reload()` on content changes and on SIGHUP."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        reload: ReloadFn,
        interval_s: float = 1.0,
        settle_s: float = 0.1,
        metrics: RouterMetrics = METRICS,
        poll: bool = True,
        started_from: Baseline | None = None,
        speaks_for_pod: bool = True,
    ) -> None:
        self.path = Path(path)
        self._reload = reload
        self.interval_s = interval_s
        self.settle_s = settle_s
        self.poll = poll  # False: only SIGHUP / request_reload() trigger a reload
        self._metrics = metrics
        self.speaks_for_pod = speaks_for_pod  # counts the Pod's reloads and logs a rejected file's reason
        # The content the runtime was started from (by default: the file as it is now).
        self._stat, self._hash = started_from if started_from is not None else baseline(self.path)
        self._wake = asyncio.Event()
        self._forced = False
        self._lock = asyncio.Lock()

    def request_reload(self) -> None:
        """Reload on the next turn even if the content looks unchanged (SIGHUP, admin action)."""
        self._forced = True
        self._wake.set()

    def install_sighup(self) -> None:
        """SIGHUP means "re-read your config", as for most daemons. Call from the serving loop."""
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.request_reload)

    async def run(self) -> None:
        """Poll until cancelled."""
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.interval_s if self.poll else None)
            except TimeoutError:
                pass
            self._wake.clear()
            await self.check()

    async def check(self) -> bool | None:
        """One poll: reload if forced or the content changed. Returns the outcome, None if no reload ran."""
        forced, self._forced = self._forced, False
        stat = _fingerprint(self.path)
        if not forced and (stat is None or stat == self._stat):
            return None
        stat = await self._settled(stat)
        self._stat = stat
        digest = _digest(self.path)
        if not forced and (digest is None or digest == self._hash):
            return None
        self._hash = digest
        return await self.reload_now("signal" if forced else "file_changed")

    async def _settled(self, stat: tuple[int, int] | None) -> tuple[int, int] | None:
        """Wait until the file's stat holds still for one settle interval."""
        while True:
            await asyncio.sleep(self.settle_s)
            again = _fingerprint(self.path)
            if again == stat:
                return stat
            stat = again

    async def reload_now(self, trigger: str) -> bool:
        """Call the runtime's reload once (never concurrently), then count and log the verdict.

        `reload()` returns True when applied, False after logging its own reason, or raises: a
        ConfigError's message is the reason; anything else is a bug and is logged with its traceback.
        """
        where = {"path": str(self.path), "trigger": trigger}
        async with self._lock:
            try:
                ok = await self._reload()
            except ConfigError as exc:  # the same file, so the same reason, in every worker: one says it
                if self.speaks_for_pod:
                    log.warning("config_reload_rejected", reason=str(exc), **where)
                ok = False
            except Exception:  # a broken reload must never stop the watcher; the old config serves on
                log.exception("config_reload_crashed", **where)
                ok = False
            else:
                if ok:
                    log.info("config_reload_applied", **where)
                else:  # reload() logged the build error itself (runtime_build_failed) just before
                    log.warning("config_reload_rejected", reason="runtime build failed (runtime_build_failed)",
                                **where)
        self._metrics.record_config_reload(ok, counted=self.speaks_for_pod)
        return ok
