"""The runtime compiled from one config: policy, classifier and cache, swapped whole on reload.

Each ext_proc stream takes the runtime current when it starts and keeps it to the end, so a reload
never changes the rules under an in-flight request; an old runtime closes after its last stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from router.accepted import AcceptedConfig, runtime_dir
from router.affinity import PinStore, open_pins
from router.cache import CACHE_REASONS, SemanticCache
from router.classifier import load_classifier
from router.classifier.encoder import ModelMissingError
from router.classifier.memo import MemoizedClassifier
from router.classifier.model import shared_models
from router.config import ConfigError, RouterConfig, config_version, config_warnings, restart_only_changes
from router.observability import logs, metrics
from router.observability.health import Readiness
from router.observability.ops import declare_config_labels
from router.policy import Policy
from router.tracing import Tracing, build_tracing

log = structlog.get_logger(__name__)


@dataclass(eq=False)
class Runtime:
    cfg: RouterConfig
    policy: Policy
    classifier: MemoizedClassifier | None  # every runtime's classifier is memoised: a repeat skips the pass
    cache: SemanticCache | None
    affinity: PinStore | None = None
    tracing: Tracing | None = None
    version: str = ""  # config_version(cfg): logged per request, reported per worker
    streams: int = 0
    # A broken encoder or a burst past capacity fails every request: one error line per spell, not one per request
    # (each request's line names its failure, vsr_classifier_failures_total counts them).
    classifier_failures: logs.FailureSpell = field(
        default_factory=lambda: logs.FailureSpell(log, "classifier_failed", "classifier_recovered"))
    retired: bool = False
    closed: bool = False

    async def close(self) -> None:
        """Idempotent: a shared cache must be released exactly once per runtime."""
        if self.closed:
            return
        self.closed = True
        if self.cache is not None:
            await CACHES.release(self.cache)
        if self.affinity is not None:  # pins are written behind the requests: store the queued ones
            await self.affinity.flush()
        if self.tracing is not None:  # flushes the last spans; blocking, so off the event loop
            await asyncio.get_running_loop().run_in_executor(None, self.tracing.shutdown)


class SharedCaches:
    """One SemanticCache per cache config, shared by the runtimes that reloads create.

    A reload that leaves `semantic_cache` unchanged keeps the cache it had: its backend connection, write
    queue and health carry over, instead of every reload opening a new connection whose first lookups time
    out while it connects (a reload every second cost ~80 % of lookups in bench/fault_suite.py). The last
    runtime to let go closes it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: dict[str, tuple[SemanticCache, int]] = {}

    def acquire(self, cfg: RouterConfig) -> SemanticCache:
        key = cfg.semantic_cache.model_dump_json()
        with self._lock:
            cache, users = self._live.get(key) or (SemanticCache.from_config(cfg), 0)
            self._live[key] = (cache, users + 1)
            return cache

    async def release(self, cache: SemanticCache) -> None:
        with self._lock:
            key = next((k for k, (c, _) in self._live.items() if c is cache), None)
            users = self._live[key][1] - 1 if key is not None else 0
            if key is not None and users > 0:
                self._live[key] = (cache, users)
                return
            if key is not None:
                del self._live[key]
        await cache.close()


CACHES = SharedCaches()


def build_runtime(cfg: RouterConfig) -> Runtime:
    """Load models and connect backends for `cfg`; blocking, so callers run it in a thread.

    Relative paths in the config (model dir, cache file) resolve against the working directory. The cache is
    acquired last: a step failing after it left the cache acquired by no runtime, so never closed.
    """
    classifier = MemoizedClassifier(load_classifier(cfg)) if cfg.classifier.enabled else None
    affinity = open_pins(cfg.affinity, runtime_dir())  # also who created each stored response, affinity on or off
    policy, tracing, version = Policy(cfg), build_tracing(cfg.tracing), config_version(cfg)
    cache = CACHES.acquire(cfg) if cfg.semantic_cache.enabled else None
    if cache is not None and classifier is not None:
        encoder = shared_models(cfg.classifier).encoder.model_hash
        if encoder != cache.verifier.encoder:  # its cosine feature was calibrated on another encoder
            log.warning("cache_verifier_encoder_mismatch", encoder=encoder, verifier_trained_on=cache.verifier.encoder,
                        fix="retrain: python -m offline.train_cache_verifier")
    return Runtime(cfg=cfg, policy=policy, classifier=classifier, cache=cache, affinity=affinity, tracing=tracing,
                   version=version)


class RuntimeHolder:
    """Owns the current runtime and swaps it atomically; reloads are serialised by the watcher.

    Loading a runtime (reading ONNX files, embedding example utterances, connecting the cache) runs on
    a thread of its own, so a reload never takes the workers that classify requests.
    """

    def __init__(self, path: Path, readiness: Readiness, accepted: AcceptedConfig | None = None,
                 speaks_for_pod: bool = True):
        self.path = path
        self.accepted = accepted or AcceptedConfig(None)  # where a Pod's workers keep the config they serve
        self.current: Runtime | None = None
        self._started_with: RouterConfig | None = None  # the first config applied: what RESTART_ONLY keys keep
        self.loaded = asyncio.Event()
        self._loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="router-reload")
        self._readiness = readiness
        self._closing: set[asyncio.Task[None]] = set()  # retired runtimes closing; referenced until done
        self._speaks_for_pod = speaks_for_pod  # logs the config's warnings (WorkerSlot.speaks_for_pod)

    def _retire(self, runtime: Runtime) -> None:
        task = asyncio.get_running_loop().create_task(runtime.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def aclose(self) -> None:
        """Close the current runtime and wait for retired ones; stops the loader thread."""
        if self.current is not None:
            await self.current.close()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
        self._loader.shutdown(wait=False, cancel_futures=True)

    @contextlib.contextmanager
    def stream(self) -> Iterator[Runtime]:
        """Pin the current runtime for the lifetime of one ext_proc stream."""
        runtime = self.current
        if runtime is None:
            raise RuntimeError("no runtime loaded")  # the gRPC port only opens after the first load
        runtime.streams += 1
        try:
            yield runtime
        finally:
            runtime.streams -= 1
            if runtime.retired and runtime.streams == 0:
                self._retire(runtime)

    async def reload(self, first: bool = False) -> bool:
        """Load and build the config file's runtime; on failure the old runtime keeps serving.

        Raises ConfigError for an invalid file or one that changes Envoy's config (the watcher logs the reason and
        counts it; at start, the Pod's accepted config serves in its place when there is one), and on the `first`
        load ModelMissingError, which no config edit can fix. An applied config becomes the Pod's accepted one.
        """
        loop = asyncio.get_running_loop()
        try:
            text, cfg = await loop.run_in_executor(self._loader, self.accepted.servable, self.path,
                                                   self.current.cfg if self.current else None)
            new = await loop.run_in_executor(self._loader, build_runtime, cfg)
        except ConfigError as exc:
            if self.current is None:
                self._readiness.set("config", False, str(exc))
            else:  # still ready (the running config serves), but /readyz said `ok, <path>` as if the edit applied
                self._readiness.set("config", True, f"serving version {self.current.version}: the edit of {self.path} "
                                                    f"is rejected: {exc}")
            raise
        except Exception as exc:  # a model or backend that fails to load keeps the old runtime
            if first and isinstance(exc, ModelMissingError):
                raise
            log.error("runtime_build_failed", path=str(self.path), error=f"{type(exc).__name__}: {exc}")
            if self.current is None:
                self._readiness.set("models", False, f"{type(exc).__name__}: {exc}")
            return False
        self._apply(new)
        await loop.run_in_executor(self._loader, self.accepted.save, text)
        return True

    def _warn(self, new: Runtime) -> None:
        """What `validate` warns of, and the keys only a restart applies: the same in every worker of a Pod."""
        for warning in config_warnings(new.cfg):
            log.warning("config_warning", version=new.version, warning=warning)
        restart = restart_only_changes(self._started_with or new.cfg, new.cfg)
        if restart:
            log.warning("config_restart_needed", version=new.version, keys=restart,
                        effect="the rest of the edit is applied; these keys are read at start only: restart the router")

    def _apply(self, new: Runtime) -> None:
        old, self.current = self.current, new
        if old is not None and old.affinity is not None and new.affinity is not None:
            new.affinity = old.affinity.configure(new.cfg.affinity)  # conversations survive a reload
        declare_config_labels(new.cfg)
        metrics.set_label_values("cache_reason", CACHE_REASONS)
        self._readiness.config_version = new.version
        metrics.set_config_version(new.version)
        log.info("config_applied", version=new.version, previous=old.version if old else None)
        self._started_with = self._started_with or new.cfg
        if self._speaks_for_pod:
            self._warn(new)
        self._readiness.set("config", True, str(self.path))
        self._readiness.set("models", True, "classifier loaded" if new.classifier else "classifier disabled")
        self.loaded.set()
        if old is None:  # a reload's own verdict is counted by the watcher
            metrics.record_config_applied()
        if old is not None:
            old.retired = True
            if old.streams == 0:
                self._retire(old)
