"""Fixtures that start the real stack (Envoy binary, router process, demo upstreams) per test module."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.milvus_server import milvus_server  # noqa: F401 - defined once: one server per session
from tests.stack import ROOT, Stack, derive_config


@pytest.fixture(scope="module")
def make_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Stack]]:
    """Start a stack for a config derived from config/config.yaml; stopped at module end."""
    started: list[Stack] = []

    def _make(overrides: Callable[[dict[str, Any]], None] | None = None) -> Stack:
        tmp = tmp_path_factory.mktemp("stack")
        stack = Stack(derive_config(tmp, overrides), tmp, log_to=tmp)
        started.append(stack)
        try:
            stack.start()
        except Exception:
            stack.stop()
            raise
        return stack

    yield _make
    for stack in started:
        stack.stop()


@pytest.fixture(scope="module")
def stack(make_stack: Callable[..., Stack]) -> Stack:
    return make_stack()


@pytest.fixture(scope="session")
def require_model() -> None:
    """The exported encoder; `make test` builds it first, so its absence is a broken set-up."""
    if not (ROOT / "models" / "minilm" / "manifest.json").exists():
        pytest.fail("models/minilm is missing: run `make models` (make test does it for you)")
