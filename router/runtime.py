"""The runtime compiled from one config: policy, classifier and cache, swapped whole on reload.

Each ext_proc stream takes the runtime current when it starts and keeps it to the end, so a reload
never changes the rules under an in-flight request; an old runtime closes after its last stream.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from router.config import RouterConfig, load_config
from router.policy import Policy
from router.signals import Classification, Classifier

log = structlog.get_logger(__name__)


@dataclass(eq=False)
class Runtime:
    cfg: RouterConfig
    policy: Policy
    classifier: Classifier | None
    cache: Any | None  # router.cache.SemanticCache; typed loosely to keep extproc free of Milvus
    streams: int = 0
    retired: bool = False
    _closed: asyncio.Event = field(default_factory=asyncio.Event)

    async def close(self) -> None:
        if self.cache is not None:
            await self.cache.close()
        self._closed.set()


NO_SIGNAL = Classification(category=None, confidence=0.0, source="none")


def build_runtime(cfg: RouterConfig) -> Runtime:
    """Load models and connect backends for `cfg`; blocking, so callers run it in a thread.

    Relative paths in the config (model dir, cache file) resolve against the working directory.
    """
    classifier = _build_classifier(cfg) if cfg.classifier.enabled else None
    cache = _build_cache(cfg) if cfg.semantic_cache.enabled else None
    return Runtime(cfg=cfg, policy=Policy(cfg), classifier=classifier, cache=cache)


def _build_classifier(cfg: RouterConfig) -> Classifier:
    from router.classifier import load_classifier

    return load_classifier(cfg)


def _build_cache(cfg: RouterConfig) -> Any:
    from router.cache import SemanticCache

    return SemanticCache.from_config(cfg)


class RuntimeHolder:
    """Owns the current runtime and swaps it atomically; reloads are serialised."""

    def __init__(self, path: Path, runtime: Runtime, executor: Executor):
        self.path = path
        self.current = runtime
        self._executor = executor
        self._lock = asyncio.Lock()

    @contextlib.contextmanager
    def stream(self) -> Iterator[Runtime]:
        """Pin the current runtime for the lifetime of one ext_proc stream."""
        runtime = self.current
        runtime.streams += 1
        try:
            yield runtime
        finally:
            runtime.streams -= 1
            if runtime.retired and runtime.streams == 0:
                asyncio.get_running_loop().create_task(runtime.close())

    async def reload(self) -> bool:
        """Validate and load the config file; on any error keep serving the old runtime."""
        async with self._lock:
            loop = asyncio.get_running_loop()
            try:
                cfg = await loop.run_in_executor(self._executor, load_config, self.path)
                new = await loop.run_in_executor(self._executor, build_runtime, cfg)
            except Exception as exc:  # noqa: BLE001 - any failure must leave the old runtime serving
                log.error("config_reload_failed", path=str(self.path), error=str(exc))
                return False
            old, self.current = self.current, new
            old.retired = True
            if old.streams == 0:
                await old.close()
            log.info("config_reloaded", path=str(self.path))
            return True
