"""Fixtures that start the real stack (Envoy binary, router process, demo upstreams) per test module."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from devstack.milvus_server import NETNS_HINT, MilvusServer, network_is_isolated
from devstack.stack import ROOT, Stack, derive_config


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


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MilvusServer | str]:
    """Defined once here, so every module shares one server. A running server: the one named by VSR_MILVUS_URI (a str), else one started for the session."""
    if uri := os.environ.get("VSR_MILVUS_URI"):
        yield uri
        return
    if not network_is_isolated():
        message = f"real Milvus server needs an isolated network namespace: {NETNS_HINT}"
        if os.environ.get("VSR_REQUIRE_MILVUS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    server = MilvusServer(ROOT / "var" / "milvus-test")
    server.start()
    yield server
    server.stop()
    server.remove_data()
